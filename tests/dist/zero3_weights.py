"""The weights a vLLM push sends, from a ZeRO-3 partitioned model; run with torchrun.

argv: OUT. Every rank iterates ``hf_weights(engine.module, zero3=True)`` and writes its
``(name, shape, sum, abs-sum)`` list to ``OUT.rankN.json``; rank 0 also writes those of the
unpartitioned model (``OUT.full.json``). Used by tests/unit/generation/test_vllm_backend.py.
"""

import json
import sys

import torch

from r1pipe.config import compose
from r1pipe.config.schema import DeepSpeedConfig, OptimizerConfig
from r1pipe.generation.vllm import hf_weights
from r1pipe.models import build_char_tokenizer, build_tiny_model
from r1pipe.training.dist import init_distributed
from r1pipe.training.engine import TrainEngine


def describe(pairs):
    return [[n, list(t.shape), float(t.double().sum()), float(t.double().abs().sum())] for n, t in pairs]


def main() -> None:
    out = sys.argv[1]
    dist = init_distributed()
    cfg, _ = compose([])
    model = build_tiny_model(cfg.model, build_char_tokenizer(), seed=0)
    full = describe(hf_weights(model))
    engine = TrainEngine(
        model,
        ds_cfg=DeepSpeedConfig(zero_stage=3),
        dist=dist,
        optim=OptimizerConfig(lr=1e-3, micro_batch_size=1),
        total_steps=1,
        grad_accum=1,
    )
    local = [p.numel() for p in engine.module.parameters()]
    assert sum(local) < sum(p.ds_numel for p in engine.module.parameters())  # partitioned
    with open(f"{out}.rank{dist.rank}.json", "w") as f:
        json.dump(describe(hf_weights(engine.module, zero3=True)), f)
    if dist.is_main:
        with open(f"{out}.full.json", "w") as f:
            json.dump(full, f)
    torch.distributed.barrier()


if __name__ == "__main__":
    main()
