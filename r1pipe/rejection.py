"""Rejection sampling, the pure part: which sampled completions become SFT data, and why not.

The R1 paper keeps, of the completions sampled from the RL checkpoint, those with a correct
answer (rule-checked, or judged by DeepSeek-V3 against the reference) and drops "chain-of-
thought with mixed languages, long paragraphs, and code blocks". Each filter here is a pure
function that returns the reason it rejects a completion, or None when it lets it pass; the
stage records the first reason of each sample in ``samples.jsonl``.

Reasons, in the order they are checked (:data:`REASONS`): ``no_format``, ``too_long``,
``long_paragraph``, ``mixed_language``, ``code_in_reasoning`` (readability, cheap, first so that
the judge is asked only about readable samples), ``incorrect``, ``judge_unknown``
(correctness), ``duplicate``, ``over_k`` (per prompt), else ``accepted``.

Example:
    >>> from r1pipe.config.schema import ReadabilityFilters
    >>> good = "<think>7+8=15</think> <answer>15</answer>"
    >>> readability_reason(good, 12, "stop", ReadabilityFilters(), "answer_tag") is None
    True
    >>> keep_per_prompt(["a", "a", "a"], [good, good + " ", "x"], [None, None, "incorrect"],
    ...                 dedupe=True, max_per_prompt=2)
    ['accepted', 'duplicate', 'incorrect']
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from r1pipe.config.schema import ReadabilityFilters
from r1pipe.data.jsonl import read_jsonl
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.rewards.format import format_reward
from r1pipe.rewards.language import mixed_language
from r1pipe.rewards.parsing import split_think

REASONS = (
    "accepted",
    "no_format",
    "too_long",
    "long_paragraph",
    "mixed_language",
    "code_in_reasoning",
    "incorrect",
    "judge_unknown",
    "duplicate",
    "over_k",
)

# A blank line (only whitespace on it): where one paragraph ends and the next begins.
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# A fenced block (``` or ~~~) or HTML code markup anywhere in the reasoning.
_FENCE = re.compile(r"^\s*(?:```|~~~)|<(?:code|pre)\b", re.MULTILINE | re.IGNORECASE)
# Lines that read as program text rather than prose or math; two of them make a code block.
_CODE_LINE = re.compile(
    r"""^\s*(?:
        def\s+\w+\s*\(.*\)\s*(?:->.*)?:\s*$         # python def
      | class\s+\w+\s*(?:\(.*\))?\s*:\s*$           # python class
      | (?:import\s+[\w.]+|from\s+[\w.]+\s+import\s)   # python import
      | (?:for|while|if|elif|with)\s+.*:\s*$        # python block header
      | print\s*\(.*\)\s*$
      | \#include\s*[<"]
      | (?:int|void|long|double|bool|auto|public|private|static)\s+[\w:<>*&\s]+[({=;].*$
      | (?:const|let|var)\s+\w+\s*=.*;?\s*$
      | function\s*\w*\s*\(
      | [{}]\s*;?\s*$
      | .*\)\s*\{\s*$
    )""",
    re.VERBOSE,
)


def reasoning_text(completion: str) -> str:
    """The chain of thought: the think block, or the whole completion without one."""
    reasoning, _ = split_think(completion)
    return completion if reasoning is None else reasoning


def has_code_block(text: str) -> bool:
    """Whether ``text`` holds a code block: a fence, ``<code>``/``<pre>``, or two lines that
    read as program text.

    >>> has_code_block("```python\\nx = 1\\n```")
    True
    >>> has_code_block("def f(x):\\n    return x\\nfor i in range(3):\\n    f(i)")
    True
    >>> has_code_block("7+8=15, carry 1\\nIf x > 2, then y = x + 1; so y = 4.")
    False
    """
    if _FENCE.search(text):
        return True
    return sum(bool(_CODE_LINE.match(line)) for line in text.splitlines()) >= 2


def format_filter(completion: str, answer_format: str) -> str | None:
    """``no_format`` unless the completion follows the R1 format (think block, then answer)."""
    return None if format_reward(completion, answer_format) == 1.0 else "no_format"


def length_filter(
    num_tokens: int, finish_reason: str, max_tokens: int, reject_truncated: bool = True
) -> str | None:
    """``too_long`` for a completion over ``max_tokens`` (0: no cap) or one cut off.

    >>> length_filter(50, "stop", 40), length_filter(50, "length", 0), length_filter(5, "stop", 0)
    ('too_long', 'too_long', None)
    """
    if max_tokens and num_tokens > max_tokens:
        return "too_long"
    if reject_truncated and finish_reason == "length":
        return "too_long"
    return None


def longest_paragraph(text: str) -> int:
    """Characters in the longest paragraph of ``text``: paragraphs are split on blank lines and
    counted without surrounding whitespace (the line breaks inside one count).

    >>> longest_paragraph("7+8=15\\n4+3=7\\n\\n  \\nso 75")
    12
    >>> longest_paragraph("")
    0
    """
    return max(len(p.strip()) for p in _PARAGRAPH_BREAK.split(text))


def paragraph_filter(completion: str, max_chars: int) -> str | None:
    """``long_paragraph`` when a paragraph of the chain of thought (the think block, or the
    whole completion without one) is over ``max_chars`` characters (0: no limit).

    >>> paragraph_filter("<think>7+8=15\\n\\ncarry 1</think> <answer>15</answer>", 7)
    >>> paragraph_filter("<think>7+8=15, carry 1</think> <answer>15</answer>", 7)
    'long_paragraph'
    """
    if max_chars and longest_paragraph(reasoning_text(completion)) > max_chars:
        return "long_paragraph"
    return None


def language_filter(completion: str, target_language: str, threshold: float) -> str | None:
    """``mixed_language`` when the chain of thought mixes languages."""
    return "mixed_language" if mixed_language(completion, target_language, threshold) else None


def code_filter(completion: str) -> str | None:
    """``code_in_reasoning`` when the chain of thought contains a code block."""
    return "code_in_reasoning" if has_code_block(reasoning_text(completion)) else None


def readability_reason(
    completion: str,
    num_tokens: int,
    finish_reason: str,
    filters: ReadabilityFilters,
    answer_format: str,
) -> str | None:
    """The first readability filter (of those switched on) that rejects the completion."""
    if filters.require_format and (r := format_filter(completion, answer_format)):
        return r
    if r := length_filter(
        num_tokens, finish_reason, filters.max_response_tokens, filters.reject_truncated
    ):
        return r
    if r := paragraph_filter(completion, filters.max_paragraph_chars):
        return r
    if filters.mixed_language and (
        r := language_filter(completion, filters.target_language, filters.language_threshold)
    ):
        return r
    if filters.code_in_reasoning and (r := code_filter(completion)):
        return r
    return None


def correctness_reason(correct: bool | None) -> str | None:
    """``incorrect`` for a wrong answer, ``judge_unknown`` when the judge gave no verdict."""
    if correct is None:
        return "judge_unknown"
    return None if correct else "incorrect"


def dedupe_key(completion: str) -> str:
    """Completions equal up to whitespace are duplicates."""
    return " ".join(completion.split())


def keep_per_prompt(
    prompt_ids: list[str],
    completions: list[str],
    reasons: list[str | None],
    *,
    dedupe: bool,
    max_per_prompt: int,
) -> list[str]:
    """Final reasons: a completion that passed every filter (reason None) is ``accepted``
    unless it repeats one already accepted for its prompt (``duplicate``) or its prompt
    already has ``max_per_prompt`` (``over_k``). Earlier samples win."""
    kept: dict[str, set[str]] = {}
    out: list[str] = []
    for pid, text, reason in zip(prompt_ids, completions, reasons, strict=True):
        if reason is not None:
            out.append(reason)
            continue
        seen = kept.setdefault(pid, set())
        key = dedupe_key(text)
        if dedupe and key in seen:
            out.append("duplicate")
        elif len(seen) >= max_per_prompt:
            out.append("over_k")
        else:
            seen.add(key if dedupe else f"{len(seen)}:{key}")
            out.append("accepted")
    return out


def acceptance_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the manifest records about one rejection-sampling pass over ``samples.jsonl`` rows.

    >>> acceptance_stats([
    ...     {"source": "reasoning", "prompt_id": "a", "accepted": True, "reason": "accepted"},
    ...     {"source": "reasoning", "prompt_id": "a", "accepted": False, "reason": "incorrect"},
    ...     {"source": "general", "prompt_id": "g", "accepted": True, "reason": "accepted"},
    ... ])["acceptance_rate"]
    0.5
    """
    reasoning = [r for r in rows if r["source"] == "reasoning"]
    general = [r for r in rows if r["source"] == "general" and r["accepted"]]
    accepted = [r for r in reasoning if r["accepted"]]
    reasons = Counter(r["reason"] for r in reasoning if not r["accepted"])
    return {
        "reasoning_prompts": len({r["prompt_id"] for r in reasoning}),
        "reasoning_samples": len(reasoning),
        "accepted_reasoning": len(accepted),
        "acceptance_rate": len(accepted) / max(1, len(reasoning)),
        "prompts_with_accepted": len({r["prompt_id"] for r in accepted}),
        "general_examples": len(general),
        "general_with_cot": sum(bool(r.get("cot")) for r in general),
        "sft_examples": len(accepted) + len(general),
        "judge_calls": sum("judge" in r for r in reasoning),
        "judge_failed": sum("judge" in r and r["judge"] is None for r in reasoning),
        **{f"rejected/{k}": reasons.get(k, 0) for k in REASONS[1:]},
    }


def sft_examples(rows: list[dict[str, Any]]) -> list[Example]:
    """The accepted rows of a ``samples.jsonl`` as SFT examples, each with its source
    (reasoning rows get the task's template, general rows the template without the task's
    instruction: :func:`r1pipe.data.general.example_prompt`). Shared with distillation."""
    return [
        Example(
            id=f"{r['prompt_id']}#{i}",
            question=r["prompt"],
            reference=r["reference"],
            response=r["completion"],
            source="general" if r["source"] == "general" else "reasoning",
        )
        for i, r in enumerate(r for r in rows if r["accepted"])
    ]


SAMPLE_FIELDS = ("prompt_id", "source", "prompt", "reference", "completion", "accepted", "reason")


def read_samples(path: Path, key: str) -> list[dict[str, Any]]:
    """Rows of a ``samples.jsonl``; a bad line is a UserError naming the file and line."""
    rows = []
    for lineno, row in read_jsonl(path, key):
        missing = [k for k in SAMPLE_FIELDS if k not in row]
        if missing:
            raise UserError(f"{path}:{lineno}: row has no field(s) {', '.join(missing)}")
        rows.append(row)
    return rows
