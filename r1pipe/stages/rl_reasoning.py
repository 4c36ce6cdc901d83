"""Stage 2, reasoning RL: GRPO with rule-based rewards.

Each step, in order:

1. **Rollout.** Every rank takes its share of ``prompts_per_step`` prompts (a seeded order,
   a pure function of the step) and samples ``group_size`` completions per prompt with the
   current policy. With ``dynamic_sampling``, groups whose accuracy is all 0 or all 1 are
   dropped and more prompts are sampled until the rank's quota is full (DAPO;
   ``dynamic_sampling_filter=reward`` filters on equal total rewards instead). When
   ``max_sampling_rounds`` run out, flat groups fill the batch (``flat_groups_in_batch``).
2. **Reward.** Rule rewards (accuracy, ``<think>`` format, language consistency, optional
   length rewards and the soft overlong penalty), weighted per config; a reward that raises
   or times out gives 0 for that sample and is counted.
3. **Advantage.** Normalised within each group (``(r - mean) / std``, or mean-only).
4. **Loss.** The clipped GRPO objective with separate low/high epsilon, k3 KL to a frozen
   reference when ``kl_coef > 0`` (reset every ``ref_update_every`` steps, as the paper does),
   aggregated per ``loss_aggregation``; ``mu`` optimizer steps per batch with the old log-probs
   fixed. Log-probs come from :func:`r1pipe.training.logprobs.completion_logprobs` (chunked,
   never the full fp32 logits).

The algorithm is :class:`r1pipe.rl.trainer.GRPOTrainer` (rollout, reward, advantage, loss),
run by the one fit loop; this file builds its parts: the prompts (a seeded order over the
task's train split), the rule rewards, the trainer from ``cfg``.

Starts from the ``cold-start`` checkpoint in the manifest, or from ``model.path`` (R1-Zero
mode: ``conf=r1_zero`` uses the paper's R1-Zero template). Periodic checkpoints resume exactly
(optimizer, scheduler, RNG, reference model; the data order is a function of the step).

Departures from the paper: the tiny default uses a small group and short completions to fit
2 CPU cores.

Launch: ``r1pipe stage rl-reasoning [OVERRIDES]``;
``torchrun --nproc_per_node 2 -m r1pipe stage rl-reasoning deepspeed=zero2``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from r1pipe.config.schema import R1Config
from r1pipe.rl.prompts import SeededPrompts
from r1pipe.rl.scoring import RuleRewards
from r1pipe.stages.common import (
    begin_stage,
    finish_stage,
    heldout_eval,
    stage_guard,
)
from r1pipe.stages.training import rl_task_prompts, run_grpo

NAME, KEY = "rl-reasoning", "rl_reasoning"


def run(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    """Run the rl-reasoning stage; return its final metrics (held-out eval included)."""
    ctx = begin_stage(NAME, KEY, cfg, dcfg)
    if ctx.skipped is not None:
        return dict(ctx.skipped.get("metrics", {}))
    with stage_guard(ctx):
        rl = cfg.stage.rl_reasoning
        tokenizer, examples, held_out = rl_task_prompts(ctx, rl)
        prompts = SeededPrompts(examples, rl, cfg.run.seed)
        metrics = run_grpo(ctx, rl, tokenizer, RuleRewards(cfg.task, rl), prompts, held_out)
        metrics.update(heldout_eval(ctx, ctx.final_dir, held_out))
        finish_stage(ctx, metrics)
    return metrics
