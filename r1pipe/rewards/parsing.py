"""Pure string parsing shared by the rule rewards: think blocks, final answers, GSM8K references.

Everything here is deterministic string work (no model, no I/O, no sympy) so that the format
reward and the accuracy reward agree on what "the reasoning", "the summary" and "the answer" of
a completion are.
"""

from __future__ import annotations

import re

__all__ = [
    "ANSWER_FORMATS",
    "THINK_OPEN",
    "THINK_CLOSE",
    "ANSWER_OPEN",
    "ANSWER_CLOSE",
    "split_think",
    "extract_answer",
    "extract_boxed",
    "extract_gsm8k_reference",
]

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"

#: The answer formats understood by :func:`extract_answer` and the rewards.
ANSWER_FORMATS = ("answer_tag", "boxed", "auto")

# Non-greedy so that each match is one open/close pair; DOTALL because answers may span lines.
_ANSWER_TAG_RE = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)
# `\s*` accepts "\boxed {x}" (valid LaTeX); the `{` is required so "\boxed 5" and macros that
# merely start with "boxed" (e.g. "\boxedtext") are not mistaken for an answer.
_BOXED_OPEN_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def split_think(completion: str) -> tuple[str | None, str]:
    """Split a completion into its reasoning and the summary that follows it.

    A think block is well-formed when the completion contains exactly one ``<think>`` and exactly
    one ``</think>``, in that order. Text before ``<think>`` is ignored here (the format reward is
    the one that penalises it). Both returned parts are stripped of surrounding whitespace.

    Args:
        completion: The generated text.

    Returns:
        ``(reasoning, summary)`` for a well-formed block, otherwise ``(None, completion)`` with the
        completion unchanged, so callers can still look for an answer in the whole text.

    Example:
        >>> split_think("<think> 2+2 is 4 </think> The answer is <answer>4</answer>")
        ('2+2 is 4', 'The answer is <answer>4</answer>')
        >>> split_think("no reasoning, just 4")
        (None, 'no reasoning, just 4')
    """
    # Counting first (rather than regex-matching) makes repeated or stray tags an explicit
    # "not well-formed" instead of silently picking one of several blocks.
    if completion.count(THINK_OPEN) != 1 or completion.count(THINK_CLOSE) != 1:
        return None, completion
    start = completion.index(THINK_OPEN)
    end = completion.index(THINK_CLOSE)
    if end < start:
        return None, completion
    reasoning = completion[start + len(THINK_OPEN) : end]
    summary = completion[end + len(THINK_CLOSE) :]
    return reasoning.strip(), summary.strip()


def _balanced_group_end(text: str, open_brace: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_brace``, or None if it is never closed."""
    depth = 0
    i = open_brace
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            # A backslash escapes the next character: "\{" and "\}" are literal braces in LaTeX
            # (set notation such as \boxed{\{1,2\}}) and must not change the depth; "\\" is a
            # line break, so skipping its second backslash is also right.
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    r"""Return the content of the last top-level ``\boxed{...}`` (or ``\fbox{...}``) in ``text``.

    Braces are matched by depth, so nested groups such as ``\boxed{\frac{1}{2}}`` come back
    whole. A box nested inside another box is part of the outer box's content, not a separate
    candidate. If the last box is never closed (a truncated generation), there is no final
    answer and the result is None rather than an earlier box the model moved past.

    Args:
        text: Text that may contain boxed answers.

    Returns:
        The stripped content of the last box, or None if there is none or it is empty/unclosed.

    Example:
        >>> extract_boxed(r"first \boxed{1}, then \boxed{\frac{1}{2}}.")
        '\\frac{1}{2}'
        >>> extract_boxed(r"\boxed{\frac{1}{2}") is None
        True
    """
    last: str | None = None
    pos = 0
    while True:
        match = _BOXED_OPEN_RE.search(text, pos)
        if match is None:
            return last
        open_brace = match.end() - 1
        close = _balanced_group_end(text, open_brace)
        if close is None:
            # The final box is unterminated: report "no answer" instead of an earlier box.
            return None
        content = text[open_brace + 1 : close].strip()
        last = content or None
        # Continue after the closing brace so inner boxes are not treated as separate answers.
        pos = close + 1


def _extract_answer_tag(text: str) -> str | None:
    # What the last match of _ANSWER_TAG_RE.findall would be, in linear time: the lazy pattern
    # scans to the end once per unclosed <answer> (22 s for 12,000 of them). The last match
    # ends at the last </answer> that has an <answer> after the </answer> before it, and
    # starts at the first such <answer>.
    end = len(text)
    while True:
        close = text.rfind(ANSWER_CLOSE, 0, end)
        if close < 0:
            return None
        previous = text.rfind(ANSWER_CLOSE, 0, close)
        start = text.find(ANSWER_OPEN, previous + len(ANSWER_CLOSE) if previous >= 0 else 0, close)
        if start >= 0:
            break
        end = close
    content = text[start + len(ANSWER_OPEN) : close].strip()
    # An empty tag carries nothing to check; treating it as absent keeps callers from comparing
    # "" against a reference.
    return content or None


def extract_answer(text: str, answer_format: str) -> str | None:
    r"""Extract the final answer from ``text``.

    Args:
        text: Usually the summary after ``</think>``, but any text works.
        answer_format: ``"answer_tag"`` for the content of the last ``<answer>...</answer>``;
            ``"boxed"`` for the content of the last ``\boxed{...}``/``\fbox{...}`` (nested
            braces handled); ``"auto"`` for the answer tag when one is present, else the box.

    Returns:
        The stripped answer, or None when there is no (non-empty) answer in that format.

    Raises:
        ValueError: If ``answer_format`` is not one of :data:`ANSWER_FORMATS`; a typo in a
            config must fail loudly rather than score every sample 0.

    Example:
        >>> extract_answer("so <answer> 42 </answer>", "answer_tag")
        '42'
        >>> extract_answer(r"hence $\boxed{\frac{1}{2}}$", "boxed")
        '\\frac{1}{2}'
        >>> extract_answer(r"\boxed{3}", "auto")
        '3'
        >>> extract_answer("nothing here", "auto") is None
        True
    """
    if answer_format == "answer_tag":
        return _extract_answer_tag(text)
    if answer_format == "boxed":
        return extract_boxed(text)
    if answer_format == "auto":
        # Decide on the presence of the tag, not on success, so that a malformed/empty tag does
        # not silently fall through to a box the model may have written while reasoning.
        if ANSWER_OPEN in text:
            return _extract_answer_tag(text)
        return extract_boxed(text)
    raise ValueError(f"unknown answer_format {answer_format!r}; expected one of {ANSWER_FORMATS}")


def extract_gsm8k_reference(answer_field: str) -> str:
    r"""Return the numeric reference from a GSM8K ``answer`` field.

    GSM8K answers end with ``#### N``; thousands separators are removed so that the reference
    compares equal to a model's ``1000`` (``"1,000"`` -> ``"1000"``).

    Args:
        answer_field: The full ``answer`` string of a GSM8K row.

    Returns:
        The text after the last ``####``, stripped, without commas.

    Raises:
        ValueError: If the field has no ``####`` marker (not a GSM8K answer).

    Example:
        >>> extract_gsm8k_reference("She makes 9 * 2 = $18.\n#### 1,018")
        '1018'
    """
    if "####" not in answer_field:
        raise ValueError("GSM8K answer field has no '####' marker")
    return answer_field.rsplit("####", 1)[1].strip().replace(",", "")
