"""Evaluation: the held-out evaluation every stage runs at its end, and pass@k / cons@k.

``evaluate(generator, examples, ...)`` samples k completions per prompt, scores each with the
task's rule rewards and returns ``pass@1`` (mean accuracy over all k samples), ``format_rate``
and, for k > 1, ``pass@k`` (unbiased estimator) and ``cons@k`` (majority vote).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from transformers import PreTrainedTokenizerBase

from r1pipe.config.schema import EvalConfig, TaskConfig
from r1pipe.data.templates import build_prompt
from r1pipe.data.types import Example
from r1pipe.generation.base import Generator, SamplingParams
from r1pipe.rewards import accuracy_reward, format_reward
from r1pipe.rewards.parsing import extract_answer, split_think


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 0, 2), pass_at_k(4, 3, 2)
    (0.25, 0.0, 1.0)
    """
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_answer(answers: list[str | None]) -> str | None:
    """Most frequent extracted answer (ties: the one seen first); None if none was extracted.

    >>> majority_answer(["3", "4", "4", None, "3"])
    '3'
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def score_completion(text: str, reference: str, task: TaskConfig) -> dict[str, Any]:
    _, summary = split_think(text)
    return {
        "answer": extract_answer(summary, task.answer_format),
        "correct": accuracy_reward(
            text,
            reference,
            verifier=task.verifier,
            answer_format=task.answer_format,
            tolerance=task.tolerance,
        ),
        "format": format_reward(text, task.answer_format),
    }


def evaluate(
    generator: Generator,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    task: TaskConfig,
    cfg: EvalConfig,
    seed: int = 0,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Evaluate on ``examples``; return the summary and one record per completion."""
    t0 = time.perf_counter()
    prompts = [build_prompt(e.question, task, tokenizer) for e in examples]
    params = SamplingParams(
        n=cfg.num_samples,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=seed,
    )
    groups = generator.generate(prompts, params)
    records: list[dict[str, Any]] = []
    for ex, comps in zip(examples, groups, strict=True):
        for c in comps:
            records.append(
                {
                    "id": ex.id,
                    "question": ex.question,
                    "reference": ex.reference,
                    "completion": c.text,
                    "finish_reason": c.finish_reason,
                    "num_tokens": len(c.token_ids),
                    **score_completion(c.text, ex.reference, task),
                }
            )
    summary = summarize(records, cfg.num_samples)
    summary["seconds"] = time.perf_counter() - t0
    return summary, records


def summarize(records: list[dict[str, Any]], k: int) -> dict[str, float]:
    """pass@1 (mean over all samples), format rate, lengths; pass@k and cons@k for k > 1.

    Records are grouped by ``id``; each record has ``correct``, ``format``, ``answer``,
    ``num_tokens`` and ``finish_reason``.
    """
    n_total = max(1, len(records))
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_id.setdefault(str(r["id"]), []).append(r)
    summary: dict[str, float] = {
        "pass@1": sum(r["correct"] for r in records) / n_total,
        "format_rate": sum(r["format"] for r in records) / n_total,
        "mean_response_tokens": sum(r["num_tokens"] for r in records) / n_total,
        "truncation_rate": sum(r["finish_reason"] == "length" for r in records) / n_total,
        "num_problems": len(by_id),
        "num_samples": k,
    }
    if k > 1 and by_id:
        passk, cons = [], []
        for group in by_id.values():
            c = int(sum(r["correct"] for r in group))
            passk.append(pass_at_k(len(group), c, min(k, len(group))))
            maj = majority_answer([r["answer"] for r in group])
            cons.append(
                next((r["correct"] for r in group if r["answer"] == maj), 0.0)
                if maj is not None
                else 0.0
            )
        summary[f"pass@{k}"] = sum(passk) / len(passk)
        summary[f"cons@{k}"] = sum(cons) / len(cons)
    return summary
