"""Stage 3, rejection sampling and SFT: keep the RL model's verified, readable reasoning, mix in
general data, fine-tune.

What it does, in order:

1. Samples ``num_samples`` (N) completions for each of ``num_prompts`` train prompts with the
   ``rl-reasoning`` checkpoint (or ``model.path``); every rank samples its share of the prompts.
2. Rejects, per completion, for the first reason that applies (:mod:`r1pipe.rejection`):
   readability (``no_format``, ``too_long``, ``long_paragraph``, ``mixed_language``,
   ``code_in_reasoning``, each switchable under ``filters``), then correctness: the task's rule
   verifier, a generative judge (``verify=judge``: a causal LM by path or an OpenAI-compatible
   endpoint compares the answer with the reference) or both (``rule_then_judge``); then
   ``duplicate`` and ``over_k``: at most ``max_per_prompt`` (K) distinct completions kept per
   prompt.
3. Mixes in general (non-reasoning) data: ``general_mix`` examples per accepted reasoning sample
   (at least ``min_general``) from ``general_file``; simple queries get an empty think block,
   those flagged ``complex`` a chain of thought written by the policy or the judge when
   ``cot_for_complex``.
4. Writes every sample to ``rejection-sft/samples.jsonl`` (``accepted``, ``reason``) and the
   acceptance statistics into the manifest entry's metrics.
5. SFT with cold-start's code (:func:`r1pipe.stages.training.run_sft`) from ``start``: ``base``
   (the model cold-start began from, as in the paper) or ``previous`` (the sampled checkpoint),
   then the held-out evaluation.

A resumed stage reuses ``samples.jsonl`` (written once, before SFT) and continues SFT from its
last complete checkpoint.

Departures from the paper: the paper sampled ~600k reasoning samples and judged non-verifiable
ones with DeepSeek-V3; the tiny default samples a few hundred prompts, checks them by rule, and
fine-tunes from ``previous`` with a low learning rate (from ``base``, a few hundred samples
cannot rebuild what cold-start and RL taught the tiny model).

Raises:
    UserError: no completed rl-reasoning stage and no ``model.path``; a bad general file; no
        base model for ``start=base``; every judge request failed; nothing passed the filters.

Launch: ``r1pipe stage rejection-sft [OVERRIDES]``;
``torchrun --nproc_per_node 2 -m r1pipe stage rejection-sft deepspeed=zero2``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from r1pipe.config.schema import R1Config, RejectionSFTConfig
from r1pipe.data.general import (
    load_general,
)
from r1pipe.data.tasks import load_task
from r1pipe.errors import UserError
from r1pipe.generation.build import build_generator
from r1pipe.models import load_model, load_tokenizer, resolve_dtype
from r1pipe.rejection import (
    acceptance_stats,
    read_samples,
    sft_examples,
)
from r1pipe.rejection_sampler import RejectionSampler, choose_prompts
from r1pipe.run_dir import RunDir, atomic_write_text
from r1pipe.stages.common import (
    StageContext,
    begin_stage,
    finish_stage,
    heldout_eval,
    stage_guard,
)
from r1pipe.stages.training import run_sft
from r1pipe.training.dist import barrier

NAME, KEY = "rejection-sft", "rejection_sft"


def run(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    """Run the rejection-sft stage; return its final metrics (acceptance and held-out eval)."""
    ctx = begin_stage(NAME, KEY, cfg, dcfg)
    if ctx.skipped is not None:
        return dict(ctx.skipped.get("metrics", {}))
    with stage_guard(ctx):
        rs = cfg.stage.rejection_sft
        # Everything that can be wrong with the input fails here, before any sampling.
        train, held_out = load_task(cfg.task)
        general = (
            load_general(rs.general_file, f"stage.{KEY}.general_file") if rs.general_file else []
        )
        sft_start = sft_start_model(ctx.run_dir, rs, ctx.start_model)

        samples_file = ctx.stage_dir / "samples.jsonl"
        t0 = time.perf_counter()
        if ctx.resume_from is not None and samples_file.is_file():
            rows = read_samples(samples_file, "samples")
            ctx.log(f"reusing {len(rows)} samples from {ctx.run_dir.rel(samples_file)}")
        else:
            prompts = choose_prompts(train, rs.num_prompts, cfg.run.seed)
            sampler = load_sampler(ctx, rs)
            rows = sampler.sample_reasoning(prompts)
            rows += sampler.general_rows(general, sum(r["accepted"] for r in rows))
            sampler.close()
            if ctx.dist.is_main:
                atomic_write_text(samples_file, "".join(json.dumps(r) + "\n" for r in rows))
            barrier()
        stats = acceptance_stats(rows)
        stats["sample_seconds"] = round(time.perf_counter() - t0, 1)
        ctx.log(describe(stats))
        examples = sft_examples(rows)
        if not examples:
            raise UserError(
                f"rejection-sft: no sample passed the filters and no general data is mixed in "
                f"(see {samples_file}); sample more (stage.{KEY}.num_prompts, num_samples) or "
                f"set stage.{KEY}.min_general"
            )
        ctx.log(f"SFT from {start_label(ctx.run_dir, sft_start)} (start={rs.start})")
        sft_ctx = dataclasses.replace(ctx, key=f"{KEY}.sft", start_model=sft_start)
        metrics = {
            **stats,
            "sft_start": start_label(ctx.run_dir, sft_start),
            **run_sft(sft_ctx, rs.sft, examples),
        }
        metrics.update(heldout_eval(ctx, ctx.final_dir, held_out))
        finish_stage(ctx, metrics)
    return metrics


def load_sampler(ctx: StageContext, rs: RejectionSFTConfig) -> RejectionSampler:
    """The sampler over the stage's start model (the rl-reasoning checkpoint)."""
    cfg, dist = ctx.cfg, ctx.dist
    tokenizer = load_tokenizer(ctx.start_model, cfg.model.trust_remote_code)
    dtype = resolve_dtype(cfg.model, dist.device)
    model = load_model(ctx.start_model, cfg.model, dtype=dtype, device=dist.device)
    policy = build_generator(
        model, tokenizer, cfg.generation, model_path=ctx.start_model, dist=dist, seed=cfg.run.seed
    )
    return RejectionSampler(cfg, rs, dist, policy, tokenizer)


def sft_start_model(run_dir: RunDir, rs: RejectionSFTConfig, previous: Path | str) -> Path | str:
    """Where SFT starts: the sampled checkpoint (``previous``) or the base model (``base``):
    ``base_path``, else the model the run's cold-start began from."""
    if rs.start == "previous":
        return previous
    if rs.base_path:
        return rs.base_path
    entry = run_dir.stage_entry("cold-start")
    if not entry or not entry.get("parent"):
        raise UserError(
            f"stage.{KEY}.start=base: {run_dir.manifest_path} has no cold-start stage to take the "
            f"base model from; pass stage.{KEY}.base_path=... or stage.{KEY}.start=previous"
        )
    parent = str(entry["parent"])
    local = run_dir.resolve(parent)
    return local if local.exists() else parent  # a hub id stays as it is


def start_label(run_dir: RunDir, start: Path | str) -> str:
    return run_dir.rel(start) if isinstance(start, Path) else str(start)


def describe(stats: dict[str, Any]) -> str:
    """One log line about the acceptance statistics."""
    rejected = ", ".join(
        f"{k.split('/', 1)[1]} {v}" for k, v in stats.items() if k.startswith("rejected/") and v
    )
    return (
        f"{stats['reasoning_samples']} samples for {stats['reasoning_prompts']} prompts in "
        f"{stats['sample_seconds']}s: accepted {stats['accepted_reasoning']} "
        f"({stats['acceptance_rate']:.0%}) from {stats['prompts_with_accepted']} prompts; "
        f"rejected: {rejected or 'none'}; + {stats['general_examples']} general examples "
        f"({stats['general_with_cot']} with a chain of thought)"
    )
