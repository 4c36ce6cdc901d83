"""One GRPO update on a fixed global rollout batch; run with 1 or 2 ranks (torchrun).

Writes ``{"stats": ..., "param_sum": ..., "param_abs_sum": ...}`` from rank 0 to argv[2].
Used by tests/stages/test_rl_reasoning.py to show that 2 ranks equal 1 rank.
"""

import json
import sys
from pathlib import Path

import torch

from r1pipe.config import compose
from r1pipe.models import load_tokenizer
from r1pipe.rl.build import build_grpo_trainer
from r1pipe.rl.grpo import group_advantages
from r1pipe.rl.prompts import SeededPrompts
from r1pipe.rl.scoring import RuleRewards
from r1pipe.rl.trainer import Rollout
from r1pipe.training.dist import init_distributed


def global_batch(n: int, group: int, P: int, T: int, vocab: int) -> Rollout:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, vocab, (n, P + T), generator=g)
    mask = torch.ones(n, P + T, dtype=torch.long)
    comp_len = torch.randint(3, T + 1, (n,), generator=g)
    prompt_len = torch.randint(2, P + 1, (n // group,), generator=g).repeat_interleave(group)
    for i in range(n):
        mask[i, : P - prompt_len[i]] = 0
        mask[i, P + comp_len[i] :] = 0
    ids = ids * mask
    loss_mask = mask[:, P:].bool()
    rewards = torch.randint(0, 2, (n,), generator=g).float()
    return Rollout(ids, mask, loss_mask, P, group_advantages(rewards, group), rewards)


def build_trainer(base: str, overrides: list[str]):
    """(cfg, dist, GRPOTrainer) for the smoke config from ``base`` (no run directory)."""
    cfg, _ = compose(["conf=smoke", f"model.path={base}", *overrides])
    rl, dist = cfg.stage.rl_reasoning, init_distributed()
    tokenizer = load_tokenizer(base)
    trainer = build_grpo_trainer(
        cfg,
        rl,
        "rl_reasoning",
        base,
        tokenizer,
        dist,
        rewards=RuleRewards(cfg.task, rl),
        prompts=SeededPrompts([], rl, cfg.run.seed),  # train_on only: never sampled
    )
    return cfg, dist, trainer


def main() -> None:
    base, out, *overrides = sys.argv[1:]
    cfg, dist, trainer = build_trainer(base, overrides)
    rl = cfg.stage.rl_reasoning
    n = rl.prompts_per_step * rl.group_size
    full = global_batch(n, rl.group_size, 6, 9, len(trainer.tokenizer))
    per = n // dist.world_size
    sl = slice(dist.rank * per, (dist.rank + 1) * per)
    mine = Rollout(
        full.input_ids[sl],
        full.attention_mask[sl],
        full.loss_mask[sl],
        full.prompt_len,
        full.advantages[sl],
        full.rewards[sl],
    )
    stats = [trainer.train_on(mine) for _ in range(2)]
    import deepspeed

    params = list(trainer.engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=cfg.deepspeed.zero_stage == 3):
        psum = float(sum(p.detach().double().sum() for p in params))
        pabs = float(sum(p.detach().double().abs().sum() for p in params))
    if dist.is_main:
        Path(out).write_text(json.dumps({"stats": stats, "param_sum": psum, "param_abs_sum": pabs}))


if __name__ == "__main__":
    main()
