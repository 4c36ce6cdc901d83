"""Three GRPO updates on one fixed rollout batch, the reference reset to the policy before the
third; run with torchrun. Writes rank 0's ``[stats, stats, stats]`` to argv[2].

Used by tests/stages/test_rl_reasoning.py: ``mu > 1`` must reuse the log-probs of the policy
that sampled (so its inner steps clip), and a refreshed reference must equal the policy."""

import json
import sys
from pathlib import Path

from grpo_step import build_trainer, global_batch


def main() -> None:
    base, out, *overrides = sys.argv[1:]
    cfg, dist, trainer = build_trainer(base, overrides)
    rl = cfg.stage.rl_reasoning
    batch = global_batch(
        rl.prompts_per_step * rl.group_size, rl.group_size, 6, 9, len(trainer.tokenizer)
    )
    stats = [trainer.train_on(batch), trainer.train_on(batch)]
    trainer.reference.refresh_from(trainer.engine.module)
    stats.append(trainer.train_on(batch))
    if dist.is_main:
        Path(out).write_text(json.dumps(stats))


if __name__ == "__main__":
    main()
