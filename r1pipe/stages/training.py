"""The training stages' shared wiring: :func:`train` runs the library's fit loop in a stage
(checkpoints, metrics and the final model in the stage directory, resume, progress bar,
stop signals, the crash tests' fault hook); :func:`run_sft` and :func:`run_grpo` build an
SFT or a GRPO trainer from the config and train it (cold-start, rejection-sft and distill
share the first; rl-reasoning and rl-all the second)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.progress import Progress

from r1pipe.config.schema import GRPOConfig, SFTConfig
from r1pipe.data.general import example_prompt
from r1pipe.data.types import Example
from r1pipe.generation.build import build_generator
from r1pipe.models import load_policy, load_tokenizer
from r1pipe.rl.build import build_grpo_trainer
from r1pipe.rl.prompts import Prompts
from r1pipe.rl.scoring import RewardFn
from r1pipe.stages import stop
from r1pipe.stages.common import (
    StageContext,
    evaluate_sharded,
    fit_prompts,
    interrupted,
    train_source,
)
from r1pipe.training.engine import TrainEngine
from r1pipe.training.loop import Callback, Every, FitOutputs, FitPlan, FitResult, Trainer, fit
from r1pipe.training.metrics import TrackerSettings
from r1pipe.training.order import set_seed
from r1pipe.training.packing import TokenizedSFT, tokenize_sft
from r1pipe.training.sft import SFTTrainer, sft_plan, sft_schedule


def train(
    ctx: StageContext,
    trainer: Trainer,
    plan: FitPlan,
    *,
    info: Callable[[dict[str, Any]], str],
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Run :func:`r1pipe.training.loop.fit` for this stage: checkpoints, metrics and the final
    model in the stage directory, resume from ``ctx.resume_candidates``, a progress bar
    showing ``info(record)``, SIGTERM/SIGINT as an interruption, and the fault-injection
    hook of the crash tests (``R1PIPE_FAULT_AT_STEP``)."""
    outputs = FitOutputs(
        checkpoints_dir=ctx.checkpoints_dir,
        final_dir=ctx.final_dir,
        metrics_file=ctx.stage_dir / "metrics.jsonl",
        resume_candidates=ctx.resume_candidates,
        log=ctx.log,
        name=ctx.name,
        trackers=trackers(ctx),
    )
    progress = ctx.progress()
    with progress:
        result = fit(
            trainer,
            plan,
            outputs,
            ctx.dist,
            callbacks=[*callbacks, ProgressBar(progress, ctx.name, info), *fault_injection()],
            stop=lambda: stop.requested(ctx.dist.device),
            interrupted=lambda signum, done: interrupted(ctx, signum, done, plan.total_steps),
            t0=ctx.t0,
        )
    ctx.resume_from = result.resumed_from
    ctx.log(f"exported {ctx.run_dir.rel(ctx.final_dir)}")
    return result


def trackers(ctx: StageContext) -> TrackerSettings | None:
    """``logging.*`` for :class:`~r1pipe.training.metrics.MetricsLogger`, with the stage's
    lineage (its parent and config hash, as in the manifest) as tags."""
    lg = ctx.cfg.logging
    if not (lg.wandb or lg.mlflow):
        return None
    start = ctx.start_model
    parent = ctx.run_dir.rel(start) if isinstance(start, Path) else str(start)
    tags = {"parent": parent, "config_hash": ctx.config_hash}
    return TrackerSettings(**dataclasses.asdict(lg), tags=tags)


def run_sft(ctx: StageContext, sft: SFTConfig, examples: list[Example]) -> dict[str, Any]:
    """Fine-tune ``ctx.start_model`` on ``examples`` (prompt by source -> response); the
    checkpoints, ``metrics.jsonl`` and the final model go to ``ctx.stage_dir``. Shared by
    cold-start, rejection-sft and distillation (the SFT block sits at ``stage.KEY``)."""
    cfg, dist = ctx.cfg, ctx.dist
    set_seed(cfg.run.seed)
    tokenizer = load_tokenizer(ctx.start_model, cfg.model.trust_remote_code)

    def prompt(e: Example) -> str:
        return example_prompt(e, cfg.task, tokenizer)

    # A prompt that fills max_seq_len leaves no response token to learn from.
    examples = fit_prompts(
        ctx,
        examples,
        prompt,
        tokenizer,
        reserve=1,
        where=train_source(cfg),
        context_cap=sft.max_seq_len,
    )
    data: list[TokenizedSFT] = []
    for e in examples:
        assert e.response is not None
        data.append(tokenize_sft(prompt(e), e.response, tokenizer, sft.max_seq_len))
    n_truncated = sum(d.truncated for d in data)
    total_steps, grad_accum = sft_schedule(sft, len(data), dist.world_size, f"stage.{ctx.key}")
    model = load_policy(
        ctx.start_model, cfg.model, cfg.deepspeed, dist, optim=sft, grad_accum=grad_accum
    )
    engine = TrainEngine(
        model,
        ds_cfg=cfg.deepspeed,
        dist=dist,
        optim=sft,
        total_steps=total_steps,
        grad_accum=grad_accum,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        max_nonfinite_steps=cfg.run.max_nonfinite_steps,
    )
    trainer = SFTTrainer(
        engine,
        data,
        sft,
        dist,
        tokenizer,
        seed=cfg.run.seed,
        attn_implementation=cfg.model.attn_implementation,
    )
    ctx.log(
        f"SFT on {len(data)} examples ({n_truncated} truncated to {sft.max_seq_len} tokens), "
        f"{total_steps} steps x {sft.global_batch_size} sequences, grad accum {grad_accum}, "
        f"ZeRO-{cfg.deepspeed.zero_stage}, {'bf16' if engine.bf16 else 'fp32'}, "
        f"packing {'on' if sft.packing else 'off'}"
    )
    result = train(ctx, trainer, sft_plan(sft, total_steps), info=lambda r: f"loss {r['loss']:.4f}")
    keep_trained(ctx, engine)
    return {
        "steps": total_steps,
        "train_loss": result.last.get("loss"),
        "train_examples": len(data),
        "truncated_examples": n_truncated,
    }


def run_grpo(
    ctx: StageContext,
    rl: GRPOConfig,
    tokenizer: Any,
    rewards: RewardFn,
    prompts: Prompts,
    held_out: list[Example],
) -> dict[str, Any]:
    """Build the GRPO trainer for ``rl`` and run it in the stage (checkpoints, metrics,
    export), with a held-out evaluation every ``eval_every`` steps. Shared with rl-all."""
    trainer = build_grpo_trainer(
        ctx.cfg,
        rl,
        ctx.key,
        ctx.start_model,
        tokenizer,
        ctx.dist,
        rewards=rewards,
        prompts=prompts,
        log=ctx.log,
    )
    ctx.log(
        f"GRPO: {rl.max_steps} steps x {rl.prompts_per_step} prompts x G={rl.group_size}, "
        f"{trainer.grad_accum} micro-batches/rank, mu={rl.mu}, kl_coef={rl.kl_coef}, "
        f"loss {rl.loss_aggregation}, ZeRO-{ctx.cfg.deepspeed.zero_stage}"
    )

    def evaluate(done: int, record: dict[str, Any]) -> None:
        generator = trainer.generator  # a back end with its own weights: they are current
        if ctx.cfg.generation.backend == "hf":  # the live model, in eval's batch size
            generator = build_generator(
                trainer.engine.module,
                tokenizer,
                ctx.cfg.generation,
                synced_gpus=trainer.zero3,
                batch_size=ctx.cfg.eval.batch_size,
            )
        summary, _ = evaluate_sharded(ctx, generator, tokenizer, held_out)
        record.update(
            {f"eval/{k}": v for k, v in summary.items() if k in ("pass@1", "format_rate")}
        )

    result = train(
        ctx,
        trainer,
        FitPlan(rl.max_steps, rl.log_every, rl.save_every, rl.keep_last),
        info=lambda r: f"reward {r['reward']:.3f} acc {r['accuracy'] or 0:.2f}",
        callbacks=[Every(rl.eval_every, evaluate, rl.max_steps)],
    )
    # a back end with its own weights (vLLM) got the last step's: the held-out evaluation
    # of the export uses it as it is
    own_weights = ctx.cfg.generation.backend != "hf"
    keep_trained(ctx, trainer.engine, generator=trainer.generator if own_weights else None)
    keep = ("reward", "accuracy", "format_rate", "response_length_mean", "kl", "entropy")
    return {"steps": rl.max_steps, **{f"train_{k}": result.last.get(k) for k in keep}}


def keep_trained(ctx: StageContext, engine: TrainEngine, *, generator: Any = None) -> None:
    """After the export: keep the trained model (and a ``generator`` that holds its weights)
    in ``ctx.trained`` for the held-out evaluation, and let the rest of the engine go.

    DeepSpeed's optimizer hooks on the parameters would keep its states (fp32 master weights,
    Adam's moments) alive as long as the model, so the engine is destroyed first. Under ZeRO-3
    the hf back end evaluates the exported checkpoint (whole weights on every rank), so the
    partitioned model is not kept for it."""
    engine.engine.destroy()
    zero3 = ctx.cfg.deepspeed.zero_stage == 3
    model = None if zero3 and ctx.cfg.generation.backend == "hf" else engine.module
    ctx.trained.keep(ctx.final_dir, model, generator=generator, zero3=zero3)


class ProgressBar(Callback):
    """The stage's progress bar: steps done and ``info(record)``."""

    def __init__(self, progress: Progress, name: str, info: Callable[[dict[str, Any]], str]):
        self.progress, self.name, self.info = progress, name, info

    def on_fit_start(self, start_step: int, total_steps: int) -> None:
        self.bar = self.progress.add_task(
            self.name, total=total_steps, completed=start_step, info=""
        )

    def on_step_end(self, done: int, record: dict[str, Any]) -> None:
        self.progress.update(self.bar, completed=done, info=self.info(record))


class FaultAtStep(Callback):
    """Kills the process right after step ``at`` (and its checkpoint), as a crash would: no
    cleanup, no manifest update. The crash-resume tests attach it."""

    def __init__(self, at: int):
        self.at = at

    def after_checkpoint(self, done: int) -> None:
        if done == self.at:
            os._exit(137)


def fault_injection() -> list[Callback]:
    """``R1PIPE_FAULT_AT_STEP=N`` in the environment: a :class:`FaultAtStep` (test hook)."""
    at = os.environ.get("R1PIPE_FAULT_AT_STEP")
    return [FaultAtStep(int(at))] if at else []


def rl_task_prompts(ctx: StageContext, rl: GRPOConfig) -> tuple[Any, list[Example], list[Example]]:
    """The start model's tokenizer, the task's train prompts that leave ``max_new_tokens`` of
    its context free (the others skipped or refused per ``task.overlong_prompts``), and the
    held-out split."""
    from r1pipe.data.tasks import load_task

    cfg = ctx.cfg
    train, held_out = load_task(cfg.task)
    tokenizer = load_tokenizer(ctx.start_model, cfg.model.trust_remote_code)
    train = fit_prompts(
        ctx,
        train,
        lambda e: example_prompt(e, cfg.task, tokenizer),
        tokenizer,
        reserve=rl.max_new_tokens,
        where=train_source(cfg),
    )
    return tokenizer, train, held_out
