"""The R1 format reward: reasoning in one think block, then a summary with one checkable answer.

DeepSeek-R1-Zero is rewarded for putting its thinking between ``<think>`` and ``</think>`` and
its final answer in a fixed, machine-checkable place. The rules here are deliberately strict
(all-or-nothing, no partial credit): a lenient format reward is the classic reward-hacking
surface, e.g. a policy learns to emit several answer tags and lets the checker pick one.
"""

from __future__ import annotations

from r1pipe.rewards.parsing import (
    ANSWER_CLOSE,
    ANSWER_FORMATS,
    ANSWER_OPEN,
    THINK_OPEN,
    extract_answer,
    extract_boxed,
    split_think,
)

__all__ = ["format_reward"]


def _has_single_answer_tag(completion: str, summary: str) -> bool:
    # Counting over the whole completion (not just the summary) is what rejects answer tags
    # inside the think block: the one allowed pair must then be the one in the summary.
    if completion.count(ANSWER_OPEN) != 1 or completion.count(ANSWER_CLOSE) != 1:
        return False
    if summary.count(ANSWER_OPEN) != 1:
        return False
    start = summary.index(ANSWER_OPEN)
    end = summary.find(ANSWER_CLOSE)
    if end < start:
        return False
    return extract_answer(summary, "answer_tag") is not None


def format_reward(completion: str, answer_format: str = "answer_tag") -> float:
    r"""Score whether a completion follows the R1 output format.

    The completion earns 1.0 iff all of these hold, and 0.0 otherwise:

    * it starts (after optional whitespace) with ``<think>``;
    * it has exactly one ``<think>`` and exactly one ``</think>``, in that order;
    * the reasoning between them is non-empty;
    * the summary after ``</think>`` is non-empty and holds exactly one checkable answer:

      - ``"answer_tag"``: exactly one non-empty ``<answer>...</answer>`` pair in the whole
        completion, located in the summary (so none in the think block, no nesting, no repeats);
      - ``"boxed"``: at least one closed, non-empty ``\boxed{...}`` in the summary (the last one
        is the answer, as in :func:`~r1pipe.rewards.parsing.extract_answer`);
      - ``"auto"``: the ``"answer_tag"`` rules if the completion contains any answer tag,
        otherwise the ``"boxed"`` rules.

    Args:
        completion: The generated text (without the prompt).
        answer_format: ``"answer_tag"``, ``"boxed"`` or ``"auto"``.

    Returns:
        1.0 if the format is followed, else 0.0.

    Raises:
        ValueError: If ``answer_format`` is unknown (a config error, not a property of the
            completion, so it should not be silently scored 0).

    Example:
        >>> format_reward("<think>2+2=4</think> So <answer>4</answer>")
        1.0
        >>> format_reward("<think>2+2=4</think> <answer>4</answer> <answer>5</answer>")
        0.0
        >>> format_reward(r"<think>2+2=4</think> It is $\boxed{4}$.", answer_format="boxed")
        1.0
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(
            f"unknown answer_format {answer_format!r}; expected one of {ANSWER_FORMATS}"
        )
    # Text before <think> would let a policy put its answer outside the structure entirely.
    if not completion.lstrip().startswith(THINK_OPEN):
        return 0.0
    reasoning, summary = split_think(completion)
    # split_think returns None for repeated, missing or out-of-order think tags.
    if reasoning is None or not reasoning or not summary:
        return 0.0

    if answer_format == "auto":
        has_tag = ANSWER_OPEN in completion or ANSWER_CLOSE in completion
        answer_format = "answer_tag" if has_tag else "boxed"
    if answer_format == "answer_tag":
        ok = _has_single_answer_tag(completion, summary)
    else:
        ok = extract_boxed(summary) is not None
    return 1.0 if ok else 0.0
