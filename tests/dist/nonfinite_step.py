"""Steps with a non-finite loss through the real engine; run with 1 or 2 ranks (torchrun).

argv: OUT ZERO_STAGE. Writes from rank 0 to OUT: whether the weights after a NaN step equal
those before it (and the Adam moments too), whether the next good step moved them, and the
error after three NaN steps in a row. Used by tests/unit/training/test_nonfinite.py.
"""

import json
import sys
from pathlib import Path

import deepspeed
import torch

from r1pipe.config.schema import DeepSpeedConfig, OptimizerConfig
from r1pipe.training.dist import init_distributed
from r1pipe.training.engine import NonFiniteTraining, TrainEngine


def snapshot(engine: TrainEngine) -> list[torch.Tensor]:
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=engine.zero3):
        return [p.detach().clone() for p in params]


def moments(engine: TrainEngine) -> list[torch.Tensor]:
    inner = engine.engine.optimizer
    while getattr(inner, "optimizer", None) is not None:
        inner = inner.optimizer
    return [v.clone() for state in inner.state.values() for v in state.values() if v.dim()]


def main() -> None:
    out, zero = sys.argv[1], int(sys.argv[2])
    dist = init_distributed()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    engine = TrainEngine(
        model,
        ds_cfg=DeepSpeedConfig(zero_stage=zero),
        dist=dist,
        optim=OptimizerConfig(
            lr=1e-2,
            adam_beta2=0.999,
            lr_scheduler="constant",
            warmup_ratio=0.0,
            min_lr_ratio=0.0,
            micro_batch_size=2,
        ),
        total_steps=10,
        grad_accum=2,
        max_nonfinite_steps=3,
    )
    engine.zero3 = zero == 3

    def batches(bad: bool) -> list[dict[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(dist.rank)
        x = [torch.randn(2, 8, generator=g) for _ in range(2)]
        if bad and dist.rank == dist.world_size - 1:  # one rank only: the others must agree
            x[1][0, 0] = float("nan")
        return [{"x": t} for t in x]

    def loss_fn(model, batch):
        return model(batch["x"]).pow(2).sum(), {}

    normalizer = 2 * 2 * 4 * dist.world_size
    engine.train_step(batches(False), loss_fn, normalizer)
    before, m_before = snapshot(engine), moments(engine)
    bad = engine.train_step(batches(True), loss_fn, normalizer)
    after, m_after = snapshot(engine), moments(engine)
    good = engine.train_step(batches(False), loss_fn, normalizer)
    moved = snapshot(engine)
    error = ""
    try:
        for _ in range(3):
            engine.train_step(batches(True), loss_fn, normalizer)
    except NonFiniteTraining as e:
        error = str(e)
    if dist.is_main:
        result = {
            "bad_loss": bad["loss"],
            "skipped_after_bad": bad["skipped_steps"],
            "weights_kept": all(torch.equal(a, b) for a, b in zip(before, after, strict=True)),
            "moments_kept": all(torch.equal(a, b) for a, b in zip(m_before, m_after, strict=True)),
            "moments_checked": len(m_before),
            "good_moved": any(not torch.equal(a, b) for a, b in zip(after, moved, strict=True)),
            "good_finite": all(bool(t.isfinite().all()) for t in moved),
            "skipped_after_good": good["skipped_steps"],
            "error": error,
        }
        Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
