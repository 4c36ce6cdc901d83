"""Rejection sampling from the RL checkpoint: sample, filter for readability, check
correctness (rule verifier, generative judge, or both), keep at most K distinct completions
per prompt, and mix in general data (with a chain of thought for complex queries). The
filters themselves are the pure functions of :mod:`r1pipe.rejection`; the rejection-sft stage
builds a :class:`RejectionSampler` and writes what it returns to ``samples.jsonl``."""

from __future__ import annotations

import gc
import random
from typing import Any

import torch

from r1pipe.config.schema import R1Config, RejectionSFTConfig
from r1pipe.data.general import GeneralExample, general_prompt, general_response, mix_general
from r1pipe.data.templates import build_prompt
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.generation.base import Generator, SamplingParams
from r1pipe.rejection import (
    code_filter,
    correctness_reason,
    keep_per_prompt,
    language_filter,
    paragraph_filter,
    readability_reason,
)
from r1pipe.rewards.accuracy import accuracy_reward, is_correct
from r1pipe.rewards.judge import Judge, build_judge, fill_prompt, judge_answers
from r1pipe.rewards.parsing import THINK_CLOSE, THINK_OPEN, split_think
from r1pipe.training.dist import DistInfo, all_gather_objects

#: Where its knobs sit in the config (for messages).
CONFIG_KEY = "stage.rejection_sft"


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

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = build_judge(self.rs.judge, self.dist.device, self.cfg.generation)
        return self._judge

    def close(self) -> None:
        """Free the models before SFT loads its own."""
        close = getattr(self.policy, "close", None)
        if close is not None:  # a vLLM engine holds its memory until closed
            close()
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
            raise UserError(f"{CONFIG_KEY}.judge: every judge request failed ({errors[-1]})")
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
