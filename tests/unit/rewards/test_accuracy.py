"""Tests of the accuracy reward: hand-worked cases plus real MATH-500 and GSM8K rows."""

from __future__ import annotations

import doctest
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from math_verify.errors import TimeoutException

from r1pipe.rewards import accuracy as accuracy_mod
from r1pipe.rewards.accuracy import accuracy_reward, math_equal, parse_number
from r1pipe.rewards.format import format_reward
from r1pipe.rewards.parsing import extract_gsm8k_reference

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (ASSETS / name).read_text().splitlines() if line]


MATH500 = _load("math500_sample.jsonl")
GSM8K = _load("gsm8k_sample.jsonl")


def _tagged(answer: str) -> str:
    return f"<think>\nLet me work it out.\n</think>\nSo the result is <answer>{answer}</answer>"


def _boxed(answer: str) -> str:
    return "<think>...</think> The answer is \\boxed{" + answer + "}"


def test_assets_have_expected_size():
    assert len(MATH500) == 50
    assert len(GSM8K) == 50


# --- MATH-500 (real data) ----------------------------------------------------------------------

# unique_ids of sample rows whose reference solution math_verify cannot match to the reference
# answer. Empty: all 50 (indeed all 500) reference solutions verify with our box extraction.
KNOWN_UNVERIFIABLE_SOLUTIONS: list[str] = []


def test_math500_reference_solutions_verify():
    # A whole MATH solution (no think tags, several $...$ and one final \boxed{}) must score 1:
    # this is the "no think block -> search the whole completion" path.
    failing = [
        row["unique_id"]
        for row in MATH500
        if accuracy_reward(row["solution"], row["answer"], verifier="math", answer_format="boxed")
        != 1.0
    ]
    assert failing == KNOWN_UNVERIFIABLE_SOLUTIONS


def test_math500_reference_solutions_verify_with_auto_format():
    # "auto" falls back to the box when there is no answer tag.
    failing = [
        row["unique_id"]
        for row in MATH500
        if accuracy_reward(row["solution"], row["answer"], verifier="math", answer_format="auto")
        != 1.0
    ]
    assert failing == KNOWN_UNVERIFIABLE_SOLUTIONS


def test_math500_answer_in_r1_format_scores_one():
    for row in MATH500:
        boxed = _boxed(row["answer"])
        assert format_reward(boxed, answer_format="boxed") == 1.0, row["unique_id"]
        assert (
            accuracy_reward(boxed, row["answer"], verifier="math", answer_format="boxed") == 1.0
        ), row["unique_id"]
        tagged = _tagged(row["answer"])
        assert format_reward(tagged) == 1.0, row["unique_id"]
        assert accuracy_reward(tagged, row["answer"], verifier="math") == 1.0, row["unique_id"]


def _norm(answer: str) -> str:
    return "".join(answer.split())


def test_math500_other_rows_answer_scores_zero():
    # For row i, the wrong answer is the next row's answer. "Different" is decided by string
    # (ignoring whitespace), not by math_equal, so the test is not circular: the only skipped
    # pair in the sample is two rows whose answer is literally "13".
    n = len(MATH500)
    false_positives = []
    checked = 0
    for i, row in enumerate(MATH500):
        j = (i + 1) % n
        while _norm(MATH500[j]["answer"]) == _norm(row["answer"]):
            j = (j + 1) % n
        wrong = MATH500[j]["answer"]
        checked += 1
        score = accuracy_reward(
            _boxed(wrong), row["answer"], verifier="math", answer_format="boxed"
        )
        if score != 0.0:
            false_positives.append((row["unique_id"], row["answer"], wrong))
    assert checked == n
    # The brief allows up to 4%; on this sample there are none (listed here if that changes).
    assert len(false_positives) <= 0.04 * n, false_positives
    assert false_positives == []


# --- GSM8K (real data) -------------------------------------------------------------------------


def test_gsm8k_references_score_one_and_off_by_one_scores_zero():
    for row in GSM8K:
        ref = extract_gsm8k_reference(row["answer"])
        assert ref.lstrip("-").isdigit(), ref  # the sample's references are all integers
        off_by_one = str(int(ref) + 1)
        for verifier in ("numeric", "math", "exact"):
            assert accuracy_reward(_tagged(ref), ref, verifier=verifier) == 1.0, (ref, verifier)
            assert accuracy_reward(_tagged(off_by_one), ref, verifier=verifier) == 0.0, (
                ref,
                verifier,
            )


def test_gsm8k_formatted_numbers_score_one_numeric_and_math():
    # "$70,000." is how a model writes GSM8K row 3's answer (reference "70000").
    ref = extract_gsm8k_reference(GSM8K[2]["answer"])
    assert ref == "70000"
    for verifier in ("numeric", "math"):
        assert accuracy_reward(_tagged("$70,000."), ref, verifier=verifier) == 1.0, verifier
        assert accuracy_reward(_tagged("70000.0"), ref, verifier=verifier) == 1.0, verifier
    assert accuracy_reward(_tagged("$70,000."), ref, verifier="exact") == 0.0


# --- where the answer is looked for ------------------------------------------------------------


def test_answer_only_counts_after_think():
    # The tag inside the reasoning is not the final answer; the summary has none.
    assert accuracy_reward("<think><answer>18</answer></think> done", "18") == 0.0
    # With a valid think block, only the summary's answer counts.
    assert accuracy_reward("<think><answer>18</answer></think> <answer>19</answer>", "18") == 0.0
    assert accuracy_reward("<think><answer>19</answer></think> <answer>18</answer>", "18") == 1.0


def test_no_think_block_searches_whole_completion():
    assert accuracy_reward("I think it is <answer>18</answer>", "18") == 1.0
    # Two think blocks are not well-formed either: the last answer in the whole text counts.
    assert accuracy_reward("<think>a</think><think>b</think><answer>18</answer>", "18") == 1.0


def test_answer_must_be_in_requested_format():
    assert accuracy_reward(r"<think>r</think> \boxed{18}", "18") == 0.0  # answer_tag default
    assert accuracy_reward("<think>r</think> the answer is 18", "18", verifier="math") == 0.0
    assert accuracy_reward("<think>r</think> <answer>18</answer>", "18", answer_format="boxed") == 0
    assert accuracy_reward(r"<think>r</think> \boxed{18}", "18", answer_format="auto") == 1.0


# --- exact -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("18", "18", 1.0),
        ("  18 \n", " 18", 1.0),  # both sides stripped
        ("18.0", "18", 0.0),  # exact means exact
        ("$18", "18", 0.0),
        ("a", "A", 0.0),  # case-sensitive
        ("Evelyn", "Evelyn", 1.0),
    ],
)
def test_exact_verifier(answer, reference, expected):
    assert accuracy_reward(_tagged(answer), reference, verifier="exact") == expected


# --- numeric -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18", 18.0),
        ("-3", -3.0),
        ("+4", 4.0),
        ("$18", 18.0),
        (r"\$18", 18.0),
        ("-$5", -5.0),
        ("1,000", 1000.0),
        ("1,234,567.5", 1234567.5),
        ("18.", 18.0),  # sentence period
        ("0.5", 0.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("\u22127", -7.0),  # unicode minus sign
        ("1,2", None),  # not a thousands separator: a list
        ("10,00", None),
        ("18 dollars", None),
        (r"\frac{1}{2}", None),
        ("1/2", None),
        ("", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("answer", "reference", "tolerance", "expected"),
    [
        ("0.3333333", "0.33333333", 1e-6, 1.0),  # |diff| = 3.3e-8 <= 1e-6
        ("0.33", "0.33333333", 1e-6, 0.0),
        ("0.33", "0.33333333", 1e-2, 1.0),
        ("1000000.5", "1000000", 1e-6, 1.0),  # relative: 0.5 <= 1e-6 * 1e6
        ("1000002", "1000000", 1e-6, 0.0),  # 2 > 1
        ("0.0000005", "0", 1e-6, 1.0),  # absolute floor max(1, |ref|) = 1
        ("0.000002", "0", 1e-6, 0.0),
        # Real GSM8K reference (test row "1450000"): relative tolerance accepts off-by-one at
        # this size; tolerance=0 is what makes integer answers exact.
        ("1450001", "1450000", 1e-6, 1.0),
        ("1450001", "1450000", 0.0, 0.0),
        ("18", "18", 0.0, 1.0),
        ("18.0000001", "18", 0.0, 0.0),
        ("-3", "3", 1e-6, 0.0),
        ("$1,000.", "1000", 1e-6, 1.0),
        ("1e3", "1,000", 1e-6, 1.0),
        (r"\frac{1}{2}", "0.5", 1e-6, 0.0),  # LaTeX is the math verifier's job
        ("18 dollars", "18", 1e-6, 0.0),
        ("18", "eighteen", 1e-6, 0.0),
    ],
)
def test_numeric_verifier_tolerance(answer, reference, tolerance, expected):
    score = accuracy_reward(_tagged(answer), reference, verifier="numeric", tolerance=tolerance)
    assert score == expected


# --- math --------------------------------------------------------------------------------------


def test_nested_brace_boxed_answer():
    completion = r"<think>half of it</think> The answer is $\boxed{\frac{1}{2}}$."
    kwargs = {"answer_format": "boxed"}
    assert accuracy_reward(completion, r"\frac{1}{2}", verifier="math", **kwargs) == 1.0
    assert accuracy_reward(completion, "0.5", verifier="math", **kwargs) == 1.0
    assert accuracy_reward(completion, r"\frac{1}{3}", verifier="math", **kwargs) == 0.0
    # Exact equality proves the whole nested content was extracted, not "\frac{1".
    assert accuracy_reward(completion, r"\frac{1}{2}", verifier="exact", **kwargs) == 1.0


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("0.5", r"\frac{1}{2}", True),
        ("1/2", r"\frac{1}{2}", True),
        (r"\dfrac12", r"\frac{1}{2}", True),
        ("$\\frac{1}{2}$", r"\frac{1}{2}", True),  # already delimited
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}", True),
        ("50", r"50\%", True),  # only parses when wrapped in $...$, not \boxed{}
        ("18.", "18", True),
        ("1,000", "1000", True),
        (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", True),
        (r"\{2, 1\}", r"\{1, 2\}", True),
        ("1+x^2", "x^2+1", True),
        ("Evelyn", r"\text{Evelyn}", True),
        ("C", r"\text{(C)}", True),
        (r"\frac{1}{3}", r"\frac{1}{2}", False),
        ("(1,2)", "[1,2)", False),
        (r"\text{Bob}", r"\text{Evelyn}", False),
        ("1.414", r"\sqrt{2}", False),
        ("", "18", False),
        ("18", "", False),
    ],
)
def test_math_equal_cases(prediction, reference, expected):
    assert math_equal(prediction, reference) is expected


def test_math_equal_passes_reference_as_gold():
    # math_verify.verify is order-sensitive: an interval prediction matches a relation
    # reference, but a relation prediction does not match an interval reference.
    assert math_equal("(1,2)", "1 < x < 2") is True
    assert math_equal("1 < x < 2", "(1,2)") is False


def test_math_verifier_works_in_worker_threads():
    # math_verify's default signal-based timeout raises outside the main thread; if that were
    # swallowed, every score here would silently be 0.0.
    rows = MATH500[:8]

    def score(row: dict) -> float:
        return accuracy_reward(
            row["solution"], row["answer"], verifier="math", answer_format="boxed"
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(score, rows)) == [1.0] * len(rows)
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(math_equal, "0.5", r"\frac{1}{2}").result() is True


def test_timeouts_kept_in_main_thread_and_dropped_in_workers(monkeypatch):
    # Main thread: math_verify's signal timeout guards against pathological sympy inputs.
    # Worker threads: signals are unavailable, so the timeout must be off (None).
    seen: list[tuple[object, object]] = []
    real_parse, real_verify = accuracy_mod.parse, accuracy_mod.verify

    def parse_spy(*args, **kwargs):
        seen.append(("parse", kwargs["parsing_timeout"]))
        return real_parse(*args, **kwargs)

    def verify_spy(*args, **kwargs):
        seen.append(("verify", kwargs["timeout_seconds"]))
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(accuracy_mod, "parse", parse_spy)
    monkeypatch.setattr(accuracy_mod, "verify", verify_spy)
    accuracy_mod._parse_math_cached.cache_clear()  # parse again, so that the spy sees it
    assert math_equal("0.5", r"\frac{1}{2}") is True
    assert {name for name, _ in seen} == {"parse", "verify"}
    assert all(isinstance(t, int) and t > 0 for _, t in seen), seen
    seen.clear()
    accuracy_mod._parse_math_cached.cache_clear()
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(math_equal, "0.5", r"\frac{1}{2}").result() is True
    assert seen and all(t is None for _, t in seen), seen


# --- never raises on data, raises on config ----------------------------------------------------


@pytest.mark.parametrize("verifier", ["exact", "numeric", "math"])
def test_bad_inputs_score_zero_instead_of_raising(verifier):
    assert accuracy_reward(_tagged("18"), None, verifier=verifier) == 0.0  # type: ignore[arg-type]
    assert accuracy_reward(None, "18", verifier=verifier) == 0.0  # type: ignore[arg-type]
    assert accuracy_reward(_tagged("18"), ["18"], verifier=verifier) == 0.0  # type: ignore[arg-type]
    assert accuracy_reward(_tagged("18"), True, verifier=verifier) == 0.0  # type: ignore[arg-type]


def test_math_equal_never_raises():
    assert math_equal(None, "1") is False  # type: ignore[arg-type]
    assert math_equal("1", None) is False  # type: ignore[arg-type]


def test_math_verify_timeout_is_caught(monkeypatch):
    # math_verify's TimeoutException derives from BaseException, so a bare `except Exception`
    # would let it escape and kill the caller.
    def timing_out(*args, **kwargs):
        raise TimeoutException("Operation timed out!")

    monkeypatch.setattr(accuracy_mod, "verify", timing_out)
    assert math_equal("1", "1") is False
    assert accuracy_reward(_tagged("1"), "1", verifier="math") == 0.0


@pytest.mark.parametrize(
    ("reference", "answer"),
    [(27.0, "27"), (25, "25"), (0.5, "0.5")],  # AMC23 floats, AIME25 ints
)
def test_numeric_references_from_json_are_accepted(reference, answer):
    for verifier in ("exact", "numeric", "math"):
        assert accuracy_reward(_tagged(answer), reference, verifier=verifier) == 1.0, verifier


def test_config_errors_raise():
    with pytest.raises(ValueError, match="verifier"):
        accuracy_reward(_tagged("1"), "1", verifier="sympy")
    with pytest.raises(ValueError, match="answer_format"):
        accuracy_reward(_tagged("1"), "1", answer_format="tags")
    with pytest.raises(ValueError, match="tolerance"):
        accuracy_reward(_tagged("1"), "1", verifier="numeric", tolerance=-1.0)


def test_accuracy_docstring_examples_run():
    result = doctest.testmod(accuracy_mod)
    assert result.attempted > 0
    assert result.failed == 0
