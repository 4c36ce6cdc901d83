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
5. SFT with cold-start's code (:func:`r1pipe.stages.common.run_sft`) from ``start``: ``base``
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
import gc
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from r1pipe.config.schema import R1Config, RejectionSFTConfig
from r1pipe.data.general import (
    GeneralExample,
    general_prompt,
    general_response,
    load_general,
    mix_general,
)
from r1pipe.data.tasks import load_task
from r1pipe.data.templates import build_prompt
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.generation.base import Generator, SamplingParams
from r1pipe.generation.build import build_generator
from r1pipe.models import load_model, load_tokenizer, resolve_dtype
from r1pipe.rejection import (
    acceptance_stats,
    code_filter,
    correctness_reason,
    keep_per_prompt,
    language_filter,
    paragraph_filter,
    read_samples,
    readability_reason,
    sft_examples,
)
from r1pipe.rewards.accuracy import accuracy_reward, is_correct
from r1pipe.rewards.judge import Judge, build_judge, fill_prompt, judge_answers
from r1pipe.rewards.parsing import THINK_CLOSE, THINK_OPEN, split_think
from r1pipe.run_dir import RunDir, atomic_write_text
from r1pipe.stages.common import (
    StageContext,
    begin_stage,
    finish_stage,
    heldout_eval,
    run_sft,
    stage_guard,
)
from r1pipe.training.dist import DistInfo, all_gather_objects, barrier

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
            sampler = RejectionSampler.load(ctx, rs)
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


class RejectionSampler:
    """Sampling, filtering and judging on one rank, with the policy already in memory.

    Args:
        cfg: The run's config (task, seed, generation).
        rs: The stage's knobs.
        dist: This rank.
        policy: Any :class:`~r1pipe.generation.Generator` over the sampled checkpoint.
        tokenizer: The policy's tokenizer (prompts are built with its chat template).
        judge: The generative judge; None builds ``rs.judge`` on first use.
    """

    def __init__(
        self,
        cfg: R1Config,
        rs: RejectionSFTConfig,
        dist: DistInfo,
        policy: Generator,
        tokenizer: Any,
        judge: Judge | None = None,
    ):
        self.cfg, self.rs, self.dist = cfg, rs, dist
        self.policy, self.tokenizer, self._judge = policy, tokenizer, judge
        self.seed = cfg.run.seed + 7919 * dist.rank  # ranks sample differently

    @classmethod
    def load(cls, ctx: StageContext, rs: RejectionSFTConfig) -> RejectionSampler:
        """Load the stage's start model (the rl-reasoning checkpoint) as the policy."""
        cfg, dist = ctx.cfg, ctx.dist
        tokenizer = load_tokenizer(ctx.start_model, cfg.model.trust_remote_code)
        dtype = resolve_dtype(cfg.model, dist.device)
        model = load_model(ctx.start_model, cfg.model, dtype=dtype).to(dist.device)
        policy = build_generator(model, tokenizer, cfg.generation)
        return cls(cfg, rs, dist, policy, tokenizer)

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = build_judge(self.rs.judge, self.dist.device, self.cfg.generation)
        return self._judge

    def close(self) -> None:
        """Free the models before SFT loads its own."""
        self.policy = self._judge = None  # type: ignore[assignment]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _sample(self, prompts: list[str], n: int) -> list[list[Any]]:
        rs = self.rs
        params = SamplingParams(
            n=n,
            temperature=rs.temperature,
            top_p=rs.top_p,
            max_new_tokens=rs.max_new_tokens,
            seed=self.seed,
        )
        return self.policy.generate(prompts, params)

    # ---- reasoning prompts -------------------------------------------------------------

    def sample_reasoning(self, examples: list[Example]) -> list[dict[str, Any]]:
        """Sample, filter and judge this rank's share of ``examples``; every rank gets all
        rows, in prompt order."""
        rs, task, dist = self.rs, self.cfg.task, self.dist
        mine = examples[dist.rank :: dist.world_size]
        groups = self._sample(
            [build_prompt(e.question, task, self.tokenizer) for e in mine], rs.num_samples
        )
        rows: list[dict[str, Any]] = []
        for e, group in zip(mine, groups, strict=True):
            for c in group:
                rows.append(
                    {
                        "prompt_id": e.id,
                        "source": "reasoning",
                        "prompt": e.question,
                        "reference": e.reference,
                        "completion": c.text,
                        "num_tokens": len(c.token_ids),
                        "finish_reason": c.finish_reason,
                        "correct": None,
                        "accepted": False,
                        "reason": readability_reason(
                            c.text,
                            len(c.token_ids),
                            c.finish_reason,
                            rs.filters,
                            task.answer_format,
                        ),
                    }
                )
        readable = [r for r in rows if r["reason"] is None]
        for r, correct in zip(readable, self.correctness(readable), strict=True):
            r["correct"] = correct
            r["reason"] = correctness_reason(correct)
        final = keep_per_prompt(
            [r["prompt_id"] for r in rows],
            [r["completion"] for r in rows],
            [r["reason"] for r in rows],
            dedupe=rs.filters.dedupe,
            max_per_prompt=rs.max_per_prompt,
        )
        for r, reason in zip(rows, final, strict=True):
            r["reason"], r["accepted"] = reason, reason == "accepted"
        order = {e.id: i for i, e in enumerate(examples)}
        gathered = [r for part in all_gather_objects(rows) for r in part]
        return sorted(gathered, key=lambda r: order[r["prompt_id"]])  # stable within a prompt

    def correctness(self, rows: list[dict[str, Any]]) -> list[bool | None]:
        """Per row: the rule verifier, the judge, or the judge on what the rule rejects."""
        rs, task = self.rs, self.cfg.task
        if rs.verify == "judge":
            out: list[bool | None] = [None] * len(rows)
        else:
            out = [
                is_correct(  # verified: a code answer must pass every test, not some
                    accuracy_reward(
                        r["completion"],
                        r["reference"],
                        verifier=task.verifier,
                        answer_format=task.answer_format,
                        tolerance=task.tolerance,
                    )
                )
                for r in rows
            ]
        if rs.verify == "rule":
            return out
        ask = [i for i, ok in enumerate(out) if not ok]
        verdicts, raw = judge_answers(
            self.judge,
            rs.judge.prompt,
            [rows[i]["prompt"] for i in ask],
            [rows[i]["reference"] for i in ask],
            [rows[i]["completion"] for i in ask],
        )
        if ask and all(t is None for t in raw):
            errors = getattr(self.judge, "errors", None) or ["no answer"]
            raise UserError(f"stage.{KEY}.judge: every judge request failed ({errors[-1]})")
        for i, verdict, text in zip(ask, verdicts, raw, strict=True):
            out[i] = verdict
            rows[i]["judge"] = text
        return out

    # ---- general data ------------------------------------------------------------------

    def general_rows(self, general: list[GeneralExample], n_accepted: int) -> list[dict[str, Any]]:
        """The general examples mixed in: ``general_mix`` per accepted reasoning sample, at
        least ``min_general``; complex ones with a generated chain of thought if configured."""
        rs = self.rs
        if not general:
            return []
        n = max(round(rs.general_mix * n_accepted), rs.min_general)
        chosen = mix_general(general, n, self.cfg.run.seed)
        cots: dict[str, str | None] = {}
        if rs.cot_for_complex:
            unique = sorted({g.id: g for g in chosen if g.complex}.values(), key=lambda g: g.id)
            mine = unique[self.dist.rank :: self.dist.world_size]
            for part in all_gather_objects(
                dict(zip([g.id for g in mine], self.write_cots(mine), strict=True))
            ):
                cots.update(part)
        return [
            {
                "prompt_id": g.id,
                "source": "general",
                "prompt": g.prompt,
                "reference": g.response,
                "completion": general_response(g.response, cots.get(g.id)),
                "complex": g.complex,
                "cot": cots.get(g.id) is not None,
                "accepted": True,
                "reason": "accepted",
            }
            for g in chosen
        ]

    def write_cots(self, examples: list[GeneralExample]) -> list[str | None]:
        """A chain of thought for each complex query, by the policy (its think block) or the
        judge (asked with ``cot_prompt``); None where it is empty or unreadable."""
        rs = self.rs
        if rs.cot_generator == "judge":
            texts = self.judge.complete(
                [
                    fill_prompt(rs.cot_prompt, question=g.prompt, reference=g.response)
                    for g in examples
                ]
            )
        else:
            prompts = [general_prompt(g.prompt, self.cfg.task, self.tokenizer) for g in examples]
            texts = [split_think(group[0].text)[0] for group in self._sample(prompts, 1)]
        return [self._readable_cot(t) for t in texts]

    def _readable_cot(self, text: str | None) -> str | None:
        if not text:
            return None
        cot = text.replace(THINK_OPEN, "").replace(THINK_CLOSE, "").strip()
        f = self.rs.filters
        if not cot or (f.code_in_reasoning and code_filter(cot)):
            return None
        if paragraph_filter(cot, f.max_paragraph_chars):
            return None
        if f.mixed_language and language_filter(cot, f.target_language, f.language_threshold):
            return None
        return cot


def choose_prompts(train: list[Example], num_prompts: int, seed: int) -> list[Example]:
    """A seeded subset of ``num_prompts`` train prompts, in train order (0: all of them)."""
    if num_prompts == 0 or num_prompts >= len(train):
        return list(train)
    picked = sorted(random.Random(seed).sample(range(len(train)), num_prompts))
    return [train[i] for i in picked]


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
