"""Stage 1, cold start: SFT on long chain-of-thought data in the R1 format.

What it does, in order:

1. Finds its start model: ``model.path``, or the tiny base model built offline into
   ``RUN_DIR/base-model`` (the default).
2. Builds the task's train and held-out examples; every train example's target is
   ``<think> reasoning </think>`` then a summary with the checkable answer.
3. Tokenizes prompt and response separately; the loss is on response tokens only.
4. Trains with the DeepSpeed engine: global batches drawn in a seeded order, split over ranks
   and micro-batches, each micro-batch packed into one row (no padding compute). The loss is
   the sum over response tokens divided by the response tokens of the whole global batch.
5. Saves a resumable checkpoint every ``save_every`` steps; resumes from the last complete one
   when the manifest says the stage was interrupted with the same config.
6. Exports the final model in HF format to ``cold-start/checkpoint`` and evaluates it on the
   held-out prompts (``eval.json``: pass@1, format_rate).

Departures from the paper: the paper's cold-start data is thousands of curated long CoTs; the
tiny default generates its CoTs from the synthetic task (``r1pipe/data/synthetic.py``).

Raises:
    UserError: the task has no worked solutions, a data file or row is bad, the start model
        cannot be loaded.

Launch: ``r1pipe stage cold-start [OVERRIDES]``, or for data parallel
``torchrun --nproc_per_node 2 -m r1pipe stage cold-start deepspeed=zero2``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from omegaconf import DictConfig

from r1pipe.config.schema import R1Config, SFTConfig
from r1pipe.data.tasks import load_task
from r1pipe.data.templates import build_prompt
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.models import load_model, load_tokenizer
from r1pipe.stages import stop
from r1pipe.stages.common import (
    StageContext,
    begin_stage,
    finish_stage,
    fit_prompts,
    heldout_eval,
    interrupted,
    maybe_fault,
    resume_engine,
    set_seed,
    stage_guard,
    train_source,
)
from r1pipe.training.dist import all_reduce_sum
from r1pipe.training.engine import TrainEngine
from r1pipe.training.packing import (
    TokenizedSFT,
    collate,
    num_loss_tokens,
    sft_loss_sum,
    tokenize_sft,
)

NAME, KEY = "cold-start", "cold_start"


def run(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    """Run the cold-start stage; return its final metrics (held-out eval included)."""
    ctx = begin_stage(NAME, KEY, cfg, dcfg)
    if ctx.skipped is not None:
        return dict(ctx.skipped.get("metrics", {}))
    with stage_guard(ctx):
        train, held_out = load_task(cfg.task)
        missing = [e.id for e in train if not e.response]
        if missing:
            raise UserError(
                f"task {cfg.task.name}: {len(missing)} train examples have no worked solution "
                f"(first id {missing[0]}); cold-start needs task.solution_field"
            )
        sft = cfg.stage.cold_start
        metrics = run_sft(ctx, sft, train[: sft.max_examples] if sft.max_examples else train)
        metrics.update(heldout_eval(ctx, ctx.final_dir, held_out))
        finish_stage(ctx, metrics)
    return metrics


def sample_order(step: int, global_batch: int, n: int, seed: int) -> list[int]:
    """Indices of the global batch of ``step``: a seeded permutation per epoch, consumed in
    order. A pure function of the step, so resume needs no sampler state.

    >>> sample_order(0, 4, 6, 0) + sample_order(1, 4, 6, 0)[:2] == sample_order(0, 6, 6, 0)
    True
    """
    out = []
    for pos in range(step * global_batch, (step + 1) * global_batch):
        epoch, i = divmod(pos, n)
        out.append(_epoch_order(n, seed, epoch)[i])
    return out


@functools.lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The seeded permutation of one epoch (computed once, not once per sample)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def rank_micro_batches(batch: list[int], rank: int, world: int, micro: int) -> Iterator[list[int]]:
    """This rank's contiguous share of the global batch, cut into micro-batches."""
    per_rank = len(batch) // world
    mine = batch[rank * per_rank : (rank + 1) * per_rank]
    for i in range(0, len(mine), micro):
        yield mine[i : i + micro]


def run_sft(
    ctx: StageContext,
    sft: SFTConfig,
    examples: list[Example],
    prompt_fn: Callable[[Example, Any], str] | None = None,
) -> dict[str, Any]:
    """Supervised fine-tuning of ``ctx.start_model`` on ``examples`` (prompt -> response).

    Shared by cold-start, rejection-sft and distillation. Writes periodic checkpoints,
    ``metrics.jsonl`` and the final HF checkpoint into ``ctx.stage_dir``. ``prompt_fn(example,
    tokenizer)`` gives an example's prompt text (default: the task's template).
    """
    cfg, dist = ctx.cfg, ctx.dist
    set_seed(cfg.run.seed)
    tokenizer = load_tokenizer(ctx.start_model, cfg.model.trust_remote_code)

    def prompt(e: Example) -> str:
        return (
            prompt_fn(e, tokenizer) if prompt_fn else build_prompt(e.question, cfg.task, tokenizer)
        )

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
    world = dist.world_size
    if sft.global_batch_size % (sft.micro_batch_size * world):
        raise UserError(
            f"config error: stage.{ctx.key}.global_batch_size={sft.global_batch_size} must be a "
            f"multiple of micro_batch_size x world size = {sft.micro_batch_size} x {world}"
        )
    grad_accum = sft.global_batch_size // (sft.micro_batch_size * world)
    total_steps = (
        sft.max_steps
        if sft.max_steps > 0
        else math.ceil(sft.epochs * len(data) / sft.global_batch_size)
    )
    warmup = int(sft.warmup_ratio * total_steps)

    model = load_model(ctx.start_model, cfg.model, dtype=torch.float32)
    engine = TrainEngine(
        model,
        ds_cfg=cfg.deepspeed,
        dist=dist,
        lr=sft.lr,
        weight_decay=sft.weight_decay,
        betas=(sft.adam_beta1, sft.adam_beta2),
        eps=sft.adam_eps,
        total_steps=total_steps,
        warmup_steps=warmup,
        lr_scheduler=sft.lr_scheduler,
        min_lr_ratio=sft.min_lr_ratio,
        micro_batch_size=sft.micro_batch_size,
        grad_accum=grad_accum,
        max_grad_norm=sft.max_grad_norm,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        max_nonfinite_steps=cfg.run.max_nonfinite_steps,
    )
    start_step = resume_engine(ctx, engine)
    log = ctx.metrics_logger(start_step)
    ctx.log(
        f"SFT on {len(data)} examples ({n_truncated} truncated to {sft.max_seq_len} tokens), "
        f"{total_steps} steps x {sft.global_batch_size} sequences, grad accum {grad_accum}, "
        f"ZeRO-{cfg.deepspeed.zero_stage}, {'bf16' if engine.bf16 else 'fp32'}, "
        f"packing {'on' if sft.packing else 'off'}"
    )

    def loss_fn(
        model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        loss, n = sft_loss_sum(model, batch)
        return loss, {"loss_tokens": float(n)}

    attn = cfg.model.attn_implementation
    last: dict[str, Any] = {}
    window_tokens, window_t0 = 0.0, time.perf_counter()
    progress = ctx.progress()
    with progress:
        bar = progress.add_task("sft", total=total_steps, completed=start_step, info="")
        for step in range(start_step, total_steps):
            order = sample_order(step, sft.global_batch_size, len(data), cfg.run.seed)
            micro_idx = list(rank_micro_batches(order, dist.rank, world, sft.micro_batch_size))
            batches = [
                collate(
                    [data[i] for i in mb],
                    packing=sft.packing,
                    pad_id=tokenizer.pad_token_id,
                    attn_implementation=attn,
                    pack_length=sft.pack_length,
                )
                for mb in micro_idx
            ]
            local_tokens = sum(num_loss_tokens(b) for b in batches)
            local_input = sum(len(data[i].input_ids) for mb in micro_idx for i in mb)
            normalizer = all_reduce_sum(local_tokens, dist.device)
            out = engine.train_step(batches, loss_fn, normalizer)
            window_tokens += all_reduce_sum(local_input, dist.device)
            done = step + 1
            progress.update(bar, completed=done, info=f"loss {out['loss']:.4f}")
            if done % sft.log_every == 0 or done == total_steps:
                dt = time.perf_counter() - window_t0
                last = {
                    "step": done,
                    "loss": out["loss"],
                    "grad_norm": out["grad_norm"],
                    "lr": out["lr"],
                    "loss_tokens": int(normalizer),
                    "skipped_steps": engine.skipped_steps,
                    "tokens_per_s": window_tokens / dt,
                    "epoch": done * sft.global_batch_size / len(data),
                    "elapsed_s": time.time() - ctx.t0,
                }
                log.log(last)
                window_tokens, window_t0 = 0.0, time.perf_counter()
            saved = sft.save_every and done % sft.save_every == 0 and done < total_steps
            if saved:
                engine.save_checkpoint(ctx.checkpoints_dir, done, {"step": done}, sft.keep_last)
            maybe_fault(done)
            signum = stop.requested(dist.device) if done < total_steps else None
            if signum:
                if not saved:
                    engine.save_checkpoint(ctx.checkpoints_dir, done, {"step": done}, sft.keep_last)
                raise interrupted(ctx, signum, done, total_steps)
    engine.export_hf(ctx.final_dir, tokenizer)
    ctx.log(f"exported {ctx.run_dir.rel(ctx.final_dir)}")
    return {
        "steps": total_steps,
        "train_loss": last.get("loss"),
        "train_examples": len(data),
        "truncated_examples": n_truncated,
    }
