"""Loading under ZeRO-3 with ``zero.Init``; run with torchrun on 2 ranks.

argv: DIR. Rank 0 writes a small model to ``DIR/base``; every rank then loads it as the
policy (:func:`r1pipe.models.load_policy`, partitioned at construction) and as the frozen
reference (:meth:`r1pipe.rl.reference.Reference.load`), and trains the policy two steps; the
same two steps also run on a whole-model load (the load of earlier versions, partitioned by
``deepspeed.initialize``). Rank 0 writes ``DIR/out.json``: what each rank held after each
load, both runs' losses, and whether the reference's gathered weights equal the checkpoint's.
Used by tests/unit/test_model_loading.py.
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from r1pipe.config import compose
from r1pipe.config.schema import DeepSpeedConfig, OptimizerConfig
from r1pipe.models import load_model, load_policy, save_tiny_base
from r1pipe.rl.reference import REFERENCE_FILE, Reference
from r1pipe.training.dist import all_gather_objects, barrier, init_distributed
from r1pipe.training.engine import TrainEngine

# A little wider than the smoke model, so that every tensor has elements to share out.
MODEL = [
    "conf=smoke",
    "model.hidden_size=128",
    "model.intermediate_size=256",
    "model.num_heads=4",
    "model.num_kv_heads=2",
]
ZERO3 = DeepSpeedConfig(zero_stage=3)
OPTIM = OptimizerConfig(lr=1e-3, micro_batch_size=2)
SEQ = 24


def held(model: torch.nn.Module) -> dict:
    """What this rank holds of ``model``: partitioned tensors (with their ZeRO-3 attributes),
    elements held here, elements of the whole model."""
    params = list(model.parameters())
    return {
        "params": len(params),
        "with_ds_id": sum(hasattr(p, "ds_id") and hasattr(p, "ds_numel") for p in params),
        # a partitioned tensor: no data of its own, a shard in ds_tensor
        "partitioned": sum(
            p.numel() == 0 and 0 < p.ds_tensor.numel() < p.ds_numel
            for p in params
            if hasattr(p, "ds_tensor")
        ),
        "local": sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params),
        "full": sum(getattr(p, "ds_numel", p.numel()) for p in params),
    }


def loss_fn(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
    ids = batch["input_ids"]
    logits = model(input_ids=ids).logits[:, :-1].float()
    flat = logits.reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(flat, ids[:, 1:].reshape(-1), reduction="sum")
    return loss, {}


def train(model: torch.nn.Module, dist) -> list[float]:
    """The losses of two steps of ZeRO-3 training (the same data for every load)."""
    engine = TrainEngine(model, ds_cfg=ZERO3, dist=dist, optim=OPTIM, total_steps=2, grad_accum=1)
    losses = []
    for step in range(2):
        g = torch.Generator().manual_seed(1000 * step + dist.rank)
        shape = (OPTIM.micro_batch_size, SEQ)
        batch = {"input_ids": torch.randint(0, model.config.vocab_size, shape, generator=g)}
        normalizer = dist.world_size * OPTIM.micro_batch_size * (SEQ - 1)
        losses.append(engine.train_step([batch], loss_fn, normalizer)["loss"])
    return losses


def main() -> None:
    root = Path(sys.argv[1])
    path = root / "base"
    dist = init_distributed()
    cfg, _ = compose(MODEL)
    if dist.is_main:
        save_tiny_base(cfg.model, path, seed=0)
    barrier()

    policy = load_policy(path, cfg.model, ZERO3, dist, optim=OPTIM, grad_accum=1)
    policy_held = held(policy)  # before deepspeed.initialize
    losses_init = train(policy, dist)
    del policy

    whole = load_model(path, cfg.model, dtype=torch.float32)
    whole_held = held(whole)
    losses_whole = train(whole, dist)
    del whole

    ref = Reference.load(path, cfg.model, dist, bf16=False, zero3=True)
    ref_held = held(ref.model)
    ref.save(root / "ref")
    ref_equal = None
    if dist.is_main:
        saved = torch.load(root / "ref" / REFERENCE_FILE, weights_only=True)
        base = load_file(path / "model.safetensors")
        ref_equal = all(torch.equal(saved[k], base[k]) for k in base) and set(base) <= set(saved)

    held_all = all_gather_objects(
        {"policy": policy_held, "whole": whole_held, "reference": ref_held}
    )
    if dist.is_main:
        out = {
            "world_size": dist.world_size,
            "held": held_all,
            "losses_init": losses_init,
            "losses_whole": losses_whole,
            "reference_equal": ref_equal,
        }
        (root / "out.json").write_text(json.dumps(out, indent=1))
    barrier()


if __name__ == "__main__":
    main()
