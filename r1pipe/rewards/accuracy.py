r"""The R1 accuracy reward: does the final answer in the summary match the reference?

Three verifiers of increasing leniency:

* ``"exact"``: string equality after stripping (multiple-choice letters, exact strings);
* ``"numeric"``: both sides parse as plain numbers, compared with a relative tolerance
  (GSM8K-style integer answers written as ``1,000``, ``$18`` or ``18.``);
* ``"math"``: symbolic equivalence via `math_verify` (MATH-style LaTeX answers such as
  ``\frac{1}{2}`` vs ``0.5``, intervals, sets, tuples);
* ``"code"``: the program in the answer is run against the tests in the reference, in a
  sandboxed process (:mod:`r1pipe.rewards.code`); the reward is the passed fraction or
  all-or-nothing, as the reference says.

The reward is 1.0 / 0.0 and never raises on bad data: during RL one malformed completion must
not take down a whole batch. Bad *configuration* (an unknown verifier or answer format) does
raise, because silently scoring every sample 0 would look like a policy that learns nothing.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from sympy import Basic
from sympy.matrices import MatrixBase

from r1pipe.rewards.code import code_accuracy, code_passes
from r1pipe.rewards.parsing import ANSWER_FORMATS, extract_answer, split_think

__all__ = [
    "VERIFIERS",
    "accuracy_reward",
    "answer_matches",
    "final_answer",
    "is_correct",
    "math_equal",
    "parse_number",
]

#: The verifiers understood by :func:`accuracy_reward`.
VERIFIERS = ("exact", "numeric", "math", "code")

# math_verify bounds each parse/compare with signal.alarm, which only works in the main thread
# (elsewhere it raises ValueError, which would be swallowed into a silent 0.0). We keep that
# protection against pathological sympy inputs where it is available and drop it in worker
# threads. It is no hard bound either way: an alarm cannot interrupt C code such as a huge
# integer power, so the RL reward step verifies in killable processes
# (:mod:`r1pipe.rewards.math_workers`, which pass ``signal_timeout=False``).
_MAIN_THREAD_TIMEOUT_S = 5

# Boxed answers get priority so that, in a wrapped answer, the box content is what is parsed;
# ExprExtractionConfig catches plain-text answers such as "1/2" or "0.5".
_EXTRACTION_CONFIG = (
    LatexExtractionConfig(boxed_match_priority=0),
    ExprExtractionConfig(),
)

# A plain decimal number; thousands separators are accepted only in groups of three so that a
# tuple like "1,2" is not read as 12.
_NUMBER_RE = re.compile(
    r"(?P<sign>[+-]?)\s*\$?\s*"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)"
    r"(?P<exp>[eE][+-]?\d+)?"
)


def _timeout_s(signal_timeout: bool) -> int | None:
    if signal_timeout and threading.current_thread() is threading.main_thread():
        return _MAIN_THREAD_TIMEOUT_S
    return None


def _is_sympy(value: Any) -> bool:
    return isinstance(value, Basic | MatrixBase)


# Parsing is most of math_equal's time (~60% on MATH-500 answers), and RL scoring parses the
# same strings again and again: a reference once per distinct answer to its problem, a common
# answer once per problem it answers. Short texts only, so the cache stays small (the texts are
# its keys).
_PARSE_CACHE_SIZE = 4096
_PARSE_CACHE_MAX_CHARS = 512


def _parse_math(text: str, timeout: int | None) -> list[Any]:
    if len(text) > _PARSE_CACHE_MAX_CHARS:
        return _parse_math_uncached(text, timeout)
    # A copy of each mutable matrix, so that no caller can change the cached result; sympy
    # expressions and strings are immutable.
    return [
        item.copy() if isinstance(item, MatrixBase) and not isinstance(item, Basic) else item
        for item in _parse_math_cached(text, timeout)
    ]


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def _parse_math_cached(text: str, timeout: int | None) -> tuple[Any, ...]:
    return tuple(_parse_math_uncached(text, timeout))


def _parse_math_uncached(text: str, timeout: int | None) -> list[Any]:
    """Parse one answer string with math_verify, trying the delimiters that make it parse.

    math_verify only extracts LaTeX from a delimited context (``$...$``, ``\\boxed{}``,
    ``\\[...\\]``), so a bare answer like ``\\frac{1}{2}`` must be wrapped. ``\\boxed{}`` works
    for every MATH-500 answer; ``$...$`` rescues the few forms the boxed path leaves as a raw
    string, e.g. ``50\\%`` and ``18.``.
    """
    text = text.strip()
    if not text:
        return []
    if "\\boxed" in text or "\\fbox" in text:
        candidates = [text]
    elif "$" in text.replace("\\$", "") or "\\(" in text or "\\[" in text:
        # Already delimited: wrapping again would nest math mode.
        candidates = [text, "\\boxed{" + text + "}"]
    else:
        candidates = ["\\boxed{" + text + "}", "$" + text + "$", text]
    fallback: list[Any] = []
    for candidate in candidates:
        parsed = parse(candidate, extraction_config=_EXTRACTION_CONFIG, parsing_timeout=timeout)
        if any(_is_sympy(item) for item in parsed):
            return parsed
        # A string-only result still allows a string comparison (e.g. "\text{(C)}"), so keep
        # the first one in case no wrapping yields a sympy expression.
        if parsed and not fallback:
            fallback = parsed
    return fallback


def math_equal(prediction: str, reference: str, *, signal_timeout: bool = True) -> bool:
    r"""Whether two answer strings are mathematically equivalent according to math_verify.

    Both strings are parsed the same way (wrapped in ``\boxed{}``/``$...$`` as needed), and the
    reference is passed to ``verify`` as the gold side: ``verify`` is not symmetric (an interval
    prediction ``(1,2)`` matches a reference ``1 < x < 2``, but not the other way round).

    Args:
        prediction: The model's answer, e.g. ``"0.5"`` or ``"\frac12"``.
        reference: The reference answer, e.g. ``"\frac{1}{2}"``.
        signal_timeout: Bound parsing and comparing by math_verify's 5 s ``signal.alarm`` when
            called in the main thread (a timeout gives False). False where the caller enforces
            its own deadline, as the reward worker processes do by being killed.

    Returns:
        True if equivalent; False if not, if either side cannot be parsed, or on any error or
        timeout (this function never raises on its inputs).

    Example:
        >>> math_equal("0.5", r"\frac{1}{2}")
        True
        >>> math_equal(r"\left( 3, \frac{\pi}{2} \right)", r"(3, \frac{\pi}{2})")
        True
        >>> math_equal("3", "4")
        False
    """
    timeout = _timeout_s(signal_timeout)
    try:
        gold = _parse_math(reference, timeout)
        pred = _parse_math(prediction, timeout)
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=timeout))
    except (Exception, TimeoutException):
        # TimeoutException derives from BaseException, so it must be named explicitly.
        return False


def parse_number(text: str) -> float | None:
    """Parse a plain number as written in an answer, or return None.

    Accepts a sign, a leading ``$`` (also ``\\$``), thousands separators in groups of three,
    decimals, scientific notation and a trailing sentence period; anything else (units, words,
    LaTeX, fractions) is not a plain number.

    Args:
        text: The answer text, e.g. ``"$1,000."``.

    Returns:
        The value as a float, or None if ``text`` is not a plain finite number.

    Example:
        >>> parse_number("$1,000.")
        1000.0
        >>> parse_number("-2.5e3")
        -2500.0
        >>> parse_number("1,2") is None
        True
    """
    cleaned = text.strip().replace("\\$", "$").replace("\u2212", "-")
    # A final "." is punctuation ("The answer is 18."), not a decimal point.
    if cleaned.endswith("."):
        cleaned = cleaned[:-1].rstrip()
    match = _NUMBER_RE.fullmatch(cleaned)
    if match is None:
        return None
    value = float(match["sign"] + match["num"].replace(",", "") + (match["exp"] or ""))
    return value if math.isfinite(value) else None


def _reference_to_str(reference: Any) -> str:
    # Datasets store some references as numbers (AIME25 ints, AMC23 floats such as 27.0);
    # "27" is the form a model writes, so integral floats lose their ".0".
    if isinstance(reference, str):
        return reference
    if isinstance(reference, bool):
        raise TypeError("a bool is not a reference answer")
    if isinstance(reference, int):
        return str(reference)
    if isinstance(reference, float):
        return str(int(reference)) if reference.is_integer() else repr(reference)
    raise TypeError(f"unsupported reference type {type(reference).__name__}")


def accuracy_reward(
    completion: str,
    reference: str,
    *,
    verifier: str = "exact",
    answer_format: str = "answer_tag",
    tolerance: float = 1e-6,
) -> float:
    r"""Score the final answer of a completion against a reference answer.

    The answer is taken from the summary (the text after ``</think>``); a completion without a
    well-formed think block is searched as a whole, so a plain solution text such as a MATH
    reference solution with a ``\boxed{}`` also works. Only the answer in ``answer_format`` is
    considered: an unformatted "the answer is 4" scores 0, as in the R1 recipe.

    Args:
        completion: The generated text.
        reference: The reference answer (a string; int/float references from JSON datasets are
            accepted and formatted, e.g. ``27.0`` -> ``"27"``).
        verifier: ``"exact"`` (equality after strip), ``"numeric"`` (see :func:`parse_number`;
            ``|pred - ref| <= tolerance * max(1, |ref|)``), ``"math"`` (:func:`math_equal`) or
            ``"code"`` (:func:`~r1pipe.rewards.code.code_accuracy`: the reference is the JSON
            test spec, the reward the fraction of tests passed or all-or-nothing).
        answer_format: Where the answer is: ``"answer_tag"``, ``"boxed"`` or ``"auto"``.
        tolerance: Relative tolerance of the numeric verifier. It is relative above 1, so with
            the default 1e-6 an integer reference of 1,450,000 also accepts 1,450,001 (this
            happens on 2 of the 1319 GSM8K test rows); pass ``tolerance=0`` where integer
            answers must match exactly.

    Returns:
        1.0 if the answer matches, else 0.0 (also for a missing answer or any error on the
        data, e.g. ``reference=None``); for ``"code"`` a value in [0, 1].

    Raises:
        ValueError: For an unknown ``verifier`` or ``answer_format`` or a negative
            ``tolerance``: configuration errors must not masquerade as wrong answers. With
            ``"code"`` also for a reference that is not a test spec.
        SandboxError: With ``"code"``, when the sandbox cannot start a program.

    Example:
        >>> accuracy_reward("<think>9*2</think> <answer>18</answer>", "18")
        1.0
        >>> accuracy_reward("<think>...</think> <answer>$1,000.</answer>", "1000",
        ...                 verifier="numeric")
        1.0
        >>> accuracy_reward(r"<think>...</think> It is \boxed{0.5}.", r"\frac{1}{2}",
        ...                 verifier="math", answer_format="boxed")
        1.0
        >>> accuracy_reward("<think>...</think> <answer>19</answer>", "18", verifier="math")
        0.0
    """
    if verifier not in VERIFIERS:
        raise ValueError(f"unknown verifier {verifier!r}; expected one of {VERIFIERS}")
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(
            f"unknown answer_format {answer_format!r}; expected one of {ANSWER_FORMATS}"
        )
    if not tolerance >= 0:  # also rejects NaN
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    if verifier == "code":
        # Not under the catch-all below: a reference that is no test spec, or a sandbox that
        # cannot start, is a setup problem that must be seen (compute_rewards counts it).
        return code_accuracy(completion, reference, answer_format)
    try:
        prediction = final_answer(completion, answer_format)
        if prediction is None:
            return 0.0
        return 1.0 if answer_matches(prediction, reference, verifier, tolerance) else 0.0
    except (Exception, TimeoutException):
        return 0.0


def final_answer(completion: str, answer_format: str) -> str | None:
    r"""The answer that :func:`accuracy_reward` checks: the one in ``answer_format`` in the
    summary after ``</think>`` (in the whole completion when the think block is not
    well-formed), or None. String work only, the same the format reward does; no sympy.

    Example:
        >>> final_answer(r"<think>\boxed{1}?</think> So \boxed{2}.", "boxed")
        '2'
    """
    _, summary = split_think(completion)
    return extract_answer(summary, answer_format)


def is_correct(accuracy: float) -> bool:
    """Whether an accuracy reward means a correct answer: ``accuracy >= 1``.

    The one definition of "correct" for everything built on :func:`accuracy_reward`: the
    length rewards (:mod:`r1pipe.rewards.combine`), pass@k and cons@k
    (:mod:`r1pipe.evaluation`) and rejection sampling. It matters for ``"code"``, whose
    reward with ``scoring="fraction"`` is the share of tests passed: a program is correct
    only if it passes every test (Chen et al., 2021), not if it passes some.

    Example:
        >>> is_correct(1.0), is_correct(0.75), is_correct(0.0)
        (True, False, False)
    """
    return accuracy >= 1.0


def answer_matches(
    prediction: str,
    reference: Any,
    verifier: str = "exact",
    tolerance: float = 1e-6,
    *,
    signal_timeout: bool = True,
) -> bool:
    """Whether an extracted answer matches a reference under ``verifier`` (see
    :func:`accuracy_reward`, which extracts the answer first). Never raises on its inputs.
    ``signal_timeout`` is passed to :func:`math_equal`.

    Example:
        >>> answer_matches("$1,000", "1000", "numeric"), answer_matches("0.5", "1/2", "math")
        (True, True)
    """
    if verifier not in VERIFIERS:
        raise ValueError(f"unknown verifier {verifier!r}; expected one of {VERIFIERS}")
    try:
        ref = _reference_to_str(reference)
        if verifier == "exact":
            return prediction.strip() == ref.strip()
        if verifier == "numeric":
            pred_value = parse_number(prediction)
            ref_value = parse_number(ref)
            return (
                pred_value is not None
                and ref_value is not None
                and abs(pred_value - ref_value) <= tolerance * max(1.0, abs(ref_value))
            )
        if verifier == "code":
            return code_passes(prediction, ref)
        return math_equal(prediction, ref, signal_timeout=signal_timeout)
    except (Exception, TimeoutException):
        return False
