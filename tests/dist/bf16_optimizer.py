"""One bf16 training step under DeepSpeed ZeRO-0 on this machine; prints the optimizer
DeepSpeed wrapped and the step's loss as JSON (tests/unit/training/test_engine_units.py)."""

import json

import torch

from r1pipe.config import compose
from r1pipe.models import build_char_tokenizer, build_tiny_model
from r1pipe.training.dist import init_distributed
from r1pipe.training.engine import TrainEngine
from r1pipe.training.packing import collate, tokenize_sft
from r1pipe.training.sft import sft_loss


def main() -> None:
    cfg, _ = compose(["conf=smoke", "deepspeed=zero0", "deepspeed.bf16=true"])
    tok = build_char_tokenizer()
    dist = init_distributed()
    model = build_tiny_model(cfg.model, tok, seed=0)
    engine = TrainEngine(
        model,
        ds_cfg=cfg.deepspeed,
        dist=dist,
        optim=cfg.stage.cold_start,
        total_steps=2,
        grad_accum=1,
    )
    data = [tokenize_sft("1+2=?", "<answer>3</answer>", tok, 64)] * 2
    batch = collate(data, packing=True, pad_id=tok.pad_token_id)
    losses = [engine.train_step([batch], sft_loss, 2 * 20)["loss"] for _ in range(2)]
    print(
        json.dumps(
            {
                "optimizer": type(engine.engine.optimizer).__name__,
                "zero_stage": engine.engine.zero_optimization_stage(),
                "dtype": str(next(engine.module.parameters()).dtype),
                "losses": losses,
            }
        )
    )


if __name__ == "__main__":
    main()
