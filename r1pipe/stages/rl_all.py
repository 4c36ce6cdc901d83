"""Stage 4, RL for all scenarios: GRPO on reasoning prompts (rule rewards) mixed with general
prompts scored by reward models.

Each step, in order:

1. **Prompts.** ``prompts_per_step`` prompts, ``general_fraction`` of them general (whole
   prompts, the same number on every rank) from step ``preference_start_frac * max_steps``
   on; before that, all reasoning. The paper brought the preference rewards in only for the
   last part of training, to limit reward hacking.
2. **Rollout.** ``group_size`` completions per prompt at ``temperature`` (the paper: 0.7).
3. **Reward.** Reasoning prompts: the rule rewards in ``rewards`` (accuracy, format, ...).
   General prompts: the helpfulness reward model on the final summary only (the text after
   ``</think>``), the harmlessness reward model on the whole response, each times its
   weight, plus ``general_rewards`` (a think-block format rule).
4. **Advantage and loss.** As in rl-reasoning (:class:`~r1pipe.rl.trainer.GRPOTrainer`):
   advantages are normalised within each prompt's group, so a reward model's scale never
   competes with the rule rewards' across prompts.

So rl-all is rl-reasoning with another prompt mix (:class:`~r1pipe.rl.prompts.PromptMix`) and
more rewards (:class:`~r1pipe.rl.scoring.BySource`: rule rewards for reasoning prompts,
:class:`~r1pipe.rl.scoring.GeneralRewards` for general ones).

``metrics.jsonl`` splits by prompt source: ``reasoning/{reward,prompts}`` and
``reward/{accuracy,format}`` (reasoning prompts only), ``general/{reward,helpfulness,
harmlessness,format,prompts}`` (general prompts only). At the end: the held-out reasoning
evaluation (``eval.json``) and the reward models' mean scores of the final model's greedy
answers to held-out general prompts (``general_helpfulness``, ... in the stage metrics,
answers in ``eval_general.jsonl``).

Starts from the ``rejection-sft`` checkpoint in the manifest (or ``model.path``). Reward
models are any ``AutoModelForSequenceClassification`` with one output, by path
(``stage.rl_all.helpfulness.path=...``); with ``path: null`` the tiny ones of
:mod:`r1pipe.rewards.tiny_rm` are built into ``RUN_DIR/reward-models/``.

Departures from the paper: its general data and reward models are DeepSeek-V3's; here the
general prompts are a small shipped file (``r1pipe/data/assets/general_prompts.jsonl``) and
the default reward models are tiny hand-set ones.

Launch: ``r1pipe stage rl-all [OVERRIDES]``;
``torchrun --nproc_per_node 2 -m r1pipe stage rl-all deepspeed=zero2``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from r1pipe.config.schema import R1Config, RewardModelConfig, RLAllConfig
from r1pipe.data.general import example_prompt, general_prompt, load_general
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.rewards.reward_model import RewardModel, general_format_reward, preference_rewards
from r1pipe.rl.prompts import PromptMix
from r1pipe.rl.scoring import PREFERENCE, BySource, GeneralRewards, RuleRewards
from r1pipe.stages.common import (
    StageContext,
    begin_stage,
    checkpoint_generator,
    finish_stage,
    fit_prompts,
    heldout_eval,
    stage_guard,
)
from r1pipe.stages.training import rl_task_prompts, run_grpo
from r1pipe.training.dist import barrier, broadcast_object
from r1pipe.training.metrics import read_metrics

NAME, KEY = "rl-all", "rl_all"


def run(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    """Run the rl-all stage; return its final metrics (held-out evaluations included)."""
    ctx = begin_stage(NAME, KEY, cfg, dcfg)
    if ctx.skipped is not None:
        return dict(ctx.skipped.get("metrics", {}))
    with stage_guard(ctx):
        rl = cfg.stage.rl_all
        tokenizer, reasoning, held_out = rl_task_prompts(ctx, rl)
        general, general_held_out = split_general(rl, cfg.run.seed)
        general = fit_prompts(
            ctx,
            general,
            lambda e: example_prompt(e, cfg.task, tokenizer),
            tokenizer,
            reserve=rl.max_new_tokens,
            where=f"stage.{KEY}.general_file={rl.general_file}",
        )
        scorers = load_reward_models(ctx, rl)
        mix = PromptMix(reasoning, general, rl, ctx.dist.world_size, cfg.run.seed)
        rewards = BySource(
            {"reasoning": RuleRewards(cfg.task, rl), "general": GeneralRewards(rl, scorers)},
            rl.group_size,
            ctx.dist.world_size,
        )
        ctx.log(
            f"prompts: {len(reasoning)} reasoning, {len(general)} general "
            f"({mix.general_per_rank(rl.max_steps - 1) * ctx.dist.world_size} a step from step "
            f"{mix.start_step + 1}); reward models: "
            + ", ".join(f"{k}={v.path if v else 'off'}" for k, v in scorers.items())
        )
        metrics = run_grpo(ctx, rl, tokenizer, rewards, mix, held_out)
        if ctx.dist.is_main:
            last = (read_metrics(ctx.stage_dir / "metrics.jsonl") or [{}])[-1]
            metrics.update(
                {
                    f"train_{k}": v
                    for k, v in last.items()
                    if k.startswith(("general/", "reasoning/"))
                }
            )
        metrics.update(heldout_eval(ctx, ctx.final_dir, held_out))
        metrics.update(general_eval(ctx, ctx.final_dir, general_held_out, scorers))
        finish_stage(ctx, metrics)
    return metrics


def split_general(rl: RLAllConfig, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held-out) general prompts: a seeded ``general_eval_size`` are held out."""
    key = f"stage.{KEY}.general_file"
    rows = load_general(rl.general_file, key)
    examples = [Example(id=r.id, question=r.prompt, reference="", source="general") for r in rows]
    random.Random(seed).shuffle(examples)
    held, train = examples[: rl.general_eval_size], examples[rl.general_eval_size :]
    if rl.general_fraction > 0 and not train:
        raise UserError(
            f"{key}={rl.general_file}: {len(rows)} prompts, all held out by "
            f"stage.{KEY}.general_eval_size={rl.general_eval_size}; none left to train on"
        )
    return train, held


def load_reward_models(ctx: StageContext, rl: RLAllConfig) -> dict[str, RewardModel | None]:
    """The two reward models (None where the weight is 0); tiny ones are built on rank 0."""
    from r1pipe.models import resolve_dtype

    out: dict[str, RewardModel | None] = {}
    for kind in PREFERENCE:
        rm: RewardModelConfig = getattr(rl, kind)
        if rm.weight == 0:
            out[kind] = None
            continue
        path: str | Path | None = rm.path
        if path is None:
            path = ensure_tiny_reward_model(ctx, kind)
        out[kind] = RewardModel(
            path,
            device=ctx.dist.device,
            dtype=resolve_dtype(ctx.cfg.model, ctx.dist.device),
            batch_size=rm.batch_size,
            max_length=rm.max_length,
            use_chat_template=rm.use_chat_template,
            trust_remote_code=rm.trust_remote_code,
            key=f"stage.{KEY}.{kind}.path",
        )
    return out


def ensure_tiny_reward_model(ctx: StageContext, kind: str) -> Path:
    """``RUN_DIR/reward-models/KIND``, built once (offline, milliseconds) by rank 0."""
    from r1pipe.rewards.tiny_rm import build_tiny_reward_model

    path = ctx.run_dir.path / "reward-models" / kind
    if ctx.dist.is_main and not (path / "config.json").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_tiny_reward_model(kind, path)
    barrier()
    return path


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# ---- held-out general prompts ---------------------------------------------------------------


def general_eval(
    ctx: StageContext,
    checkpoint: Path,
    prompts: list[Example],
    scorers: dict[str, RewardModel | None],
) -> dict[str, Any]:
    """Greedy answers of ``checkpoint`` to held-out general prompts, scored by the reward
    models; rank 0 does it (a few prompts) and writes ``STAGE/eval_general.jsonl``."""
    summary: dict[str, Any] = {}
    if ctx.dist.is_main and prompts:
        from r1pipe.generation.base import SamplingParams
        from r1pipe.models import load_tokenizer

        cfg = ctx.cfg
        tokenizer = load_tokenizer(checkpoint)
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.eval.max_new_tokens)
        with checkpoint_generator(ctx, checkpoint, tokenizer, this_rank_only=True) as gen:
            groups = gen.generate(
                [general_prompt(e.question, cfg.task, tokenizer) for e in prompts], params
            )
        texts = [g[0].text for g in groups]
        questions = [e.question for e in prompts]
        parts = preference_rewards(
            questions,
            texts,
            helpfulness=scorers["helpfulness"],
            harmlessness=scorers["harmlessness"],
        )
        parts["format"] = [general_format_reward(t) for t in texts]
        summary = {f"general_{k}": _mean(v) for k, v in parts.items()}
        with (ctx.stage_dir / "eval_general.jsonl").open("w") as f:
            for j, (q, t) in enumerate(zip(questions, texts, strict=True)):
                row = {"prompt": q, "completion": t, **{k: v[j] for k, v in parts.items()}}
                f.write(json.dumps(row) + "\n")
    return broadcast_object(summary)
