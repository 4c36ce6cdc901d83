"""Rejection-sampling filters, worked by hand: each filter alone, their order and switches,
dedupe and the per-prompt cap, and the statistics the manifest records."""

import pytest

from r1pipe.config.schema import ReadabilityFilters
from r1pipe.rejection import (
    REASONS,
    acceptance_stats,
    code_filter,
    correctness_reason,
    format_filter,
    has_code_block,
    keep_per_prompt,
    language_filter,
    length_filter,
    longest_paragraph,
    paragraph_filter,
    readability_reason,
)

GOOD = "<think>\n7+8=15, carry 1\n4+3+1=8, carry 0\n</think>\n47+38 = <answer>85</answer>"
MIXED = "<think>\nThe sum of 7 and 8 是 15, 然后 carry 1\n</think>\n<answer>85</answer>"
CODE = "<think>\n```python\nprint(47 + 38)\n```\n</think>\n<answer>85</answer>"


# ---- format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        (GOOD, None),
        ("47+38 = <answer>85</answer>", "no_format"),  # no think block
        ("<think>7+8=15</think>", "no_format"),  # no answer
        ("<think>x</think> <answer>85</answer> <answer>86</answer>", "no_format"),
        ("<think>x</think> <think>y</think> <answer>85</answer>", "no_format"),
    ],
)
def test_format_filter(completion, reason):
    assert format_filter(completion, "answer_tag") == reason


def test_format_filter_boxed():
    assert format_filter(r"<think>7+8=15</think> so \boxed{15}", "boxed") is None
    assert format_filter(r"<think>7+8=15</think> so 15", "boxed") == "no_format"


# ---- length -------------------------------------------------------------------------------


def test_length_filter_cap_and_truncation():
    assert length_filter(40, "stop", 40) is None  # the cap is inclusive
    assert length_filter(41, "stop", 40) == "too_long"
    assert length_filter(10, "length", 0) == "too_long"  # cut off at max_new_tokens
    assert length_filter(10, "length", 0, reject_truncated=False) is None
    assert length_filter(10_000, "stop", 0) is None  # 0: no cap


# ---- long paragraphs ---------------------------------------------------------------------


def test_longest_paragraph_splits_on_blank_lines():
    # one paragraph: 6 + 1 (the line break) + 7 characters
    assert longest_paragraph("7+8=15\n4+3+1=8") == 14
    # a blank line, one with only spaces and a tab, or a CRLF one ends a paragraph
    assert longest_paragraph("7+8=15\n\n4+3+1=8") == 7
    assert longest_paragraph("7+8=15\n \t\n4+3+1=8") == 7
    assert longest_paragraph("7+8=15\r\n\r\n4+3+1=8") == 7
    # whitespace around a paragraph is not counted, nor are runs of blank lines
    assert longest_paragraph("  carry 1  \n\n\n\nab") == 7
    assert longest_paragraph("") == 0


def test_paragraph_filter_limit_and_think_block():
    # GOOD's chain of thought is one paragraph: 15 + 1 + 16 = 32 characters
    assert paragraph_filter(GOOD, 32) is None  # the limit is inclusive
    assert paragraph_filter(GOOD, 31) == "long_paragraph"
    assert paragraph_filter(GOOD, 0) is None  # 0: off
    split = "<think>\n7+8=15, carry 1\n\n4+3+1=8, carry 0\n</think>\n<answer>85</answer>"
    assert paragraph_filter(split, 16) is None  # paragraphs of 15 and 16
    assert paragraph_filter(split, 15) == "long_paragraph"
    # a long summary after </think> is not the chain of thought
    long_answer = "<think>\n7+8=15\n</think>\n" + "so " * 40 + "<answer>15</answer>"
    assert paragraph_filter(long_answer, 6) is None
    assert paragraph_filter("<think>\n7+8=15\n</think>\n<answer>15</answer>", 5) == (
        "long_paragraph"
    )


def test_default_paragraph_limit_is_generous():
    # a real model's long paragraph: 100 sentences of 40 characters, the last space stripped
    sentence = "Wait, let me check the carry once more. "
    assert len(sentence) == 40

    def reason(paragraph):
        cot = f"<think>\n{paragraph}\n\nSo the sum is 1.\n</think>\n<answer>1</answer>"
        return readability_reason(cot, 1100, "stop", ReadabilityFilters(), "answer_tag")

    paragraph = (sentence * 100).rstrip()
    assert reason(paragraph) is None  # 3999 characters
    assert reason(paragraph + "!") is None  # 4000: the default limit, inclusive
    assert reason(paragraph + "!!") == "long_paragraph"  # 4001
    # the tiny task's chain of thought (r1pipe/data/synthetic.py), e.g. 99+99: 47 characters
    tiny = "<think>\n9+9=18, carry 1\n9+9+1=19, carry 1\nfinal carry 1\n</think>\n"
    assert (
        readability_reason(
            tiny + "99+99 = <answer>198</answer>", 60, "stop", ReadabilityFilters(), "answer_tag"
        )
        is None
    )


# ---- mixed language -----------------------------------------------------------------------


def test_language_filter():
    assert language_filter(GOOD, "en", 0.95) is None  # digits and symbols are neutral
    assert language_filter(MIXED, "en", 0.95) == "mixed_language"
    # 5 English words (The sum of and carry) and 3 Han characters: 62.5% English
    assert language_filter(MIXED, "en", 0.6) is None
    assert language_filter(MIXED, "en", 0.65) == "mixed_language"
    assert language_filter("<think>答案是 15</think><answer>15</answer>", "zh", 0.95) is None
    with pytest.raises(ValueError):
        language_filter(GOOD, "xx", 0.95)


def test_language_filter_looks_at_the_reasoning_only():
    # a Chinese summary after an English chain of thought is not a mixed chain of thought
    assert (
        language_filter(
            "<think>seven plus eight is 15</think> 答案 <answer>15</answer>", "en", 0.95
        )
        is None
    )


# ---- code in the reasoning ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "```python\nprint(47 + 38)\n```",
        "~~~\n47 + 38\n~~~",
        "Use <code>sum(xs)</code> here.",
        "def add(a, b):\n    return a + b\nprint(add(47, 38))",
        "import math\nx = math.sqrt(2)\nfor i in range(3):\n    pass",
        "#include <stdio.h>\nint main() {\n  return 0;\n}",
        "const x = 47 + 38;\nfunction f() {\n}",
    ],
)
def test_code_blocks_detected(text):
    assert has_code_block(text)


@pytest.mark.parametrize(
    "text",
    [
        "7+8=15, carry 1\n4+3+1=8, carry 0",
        "Let x = 5. If x > 2, then y = x + 1; so y = 6.",
        "First, for each apple: count it.\nThen add them up.",  # one code-like line is prose
        "We have f(x) = 2x + 1 and g(x) = x^2, so f(g(2)) = 9.",
        "The set {1, 2, 3} has 3 elements.",
    ],
)
def test_prose_and_math_are_not_code(text):
    assert not has_code_block(text)


def test_code_filter_looks_at_the_reasoning_only():
    assert code_filter(CODE) == "code_in_reasoning"
    summary_code = "<think>7+8=15</think> In Python: ```print(15)``` so <answer>15</answer>"
    assert code_filter(summary_code) is None


# ---- order and switches -------------------------------------------------------------------


def test_readability_reason_order_and_switches():
    on = ReadabilityFilters()
    both = "<think>\n答案 is here\n```\nprint(1)\n```\n</think>\n<answer>1</answer>"
    assert readability_reason(GOOD, 30, "stop", on, "answer_tag") is None
    assert readability_reason("no think", 3, "length", on, "answer_tag") == "no_format"
    assert readability_reason(GOOD, 30, "length", on, "answer_tag") == "too_long"
    assert readability_reason(both, 30, "stop", on, "answer_tag") == "mixed_language"
    no_lang = ReadabilityFilters(mixed_language=False)
    assert readability_reason(both, 30, "stop", no_lang, "answer_tag") == "code_in_reasoning"
    off = ReadabilityFilters(
        require_format=False, mixed_language=False, code_in_reasoning=False, reject_truncated=False
    )
    for text in ("no think", MIXED, CODE, both):
        assert readability_reason(text, 30, "length", off, "answer_tag") is None
    capped = ReadabilityFilters(max_response_tokens=20)
    assert readability_reason(GOOD, 30, "stop", capped, "answer_tag") == "too_long"


def test_long_paragraph_comes_after_length_and_before_language():
    short = ReadabilityFilters(max_paragraph_chars=10)
    both = "<think>\n答案 is here\n```\nprint(1)\n```\n</think>\n<answer>1</answer>"
    assert readability_reason(GOOD, 30, "length", short, "answer_tag") == "too_long"
    assert readability_reason(GOOD, 30, "stop", short, "answer_tag") == "long_paragraph"
    assert readability_reason(both, 30, "stop", short, "answer_tag") == "long_paragraph"
    off = ReadabilityFilters(max_paragraph_chars=0)
    assert readability_reason(both, 30, "stop", off, "answer_tag") == "mixed_language"


def test_correctness_reason():
    assert correctness_reason(True) is None
    assert correctness_reason(False) == "incorrect"
    assert correctness_reason(None) == "judge_unknown"


def test_long_paragraph_counted_in_stats():
    rows = [
        {"prompt_id": "a", "source": "reasoning", "accepted": True, "reason": "accepted"},
        {"prompt_id": "a", "source": "reasoning", "accepted": False, "reason": "long_paragraph"},
        {"prompt_id": "b", "source": "reasoning", "accepted": False, "reason": "long_paragraph"},
        {"prompt_id": "b", "source": "reasoning", "accepted": False, "reason": "too_long"},
    ]
    s = acceptance_stats(rows)
    assert s["rejected/long_paragraph"] == 2 and s["rejected/too_long"] == 1
    assert s["acceptance_rate"] == pytest.approx(0.25)


# ---- dedupe and K -------------------------------------------------------------------------


def test_keep_per_prompt_dedupe_and_k():
    ids = ["a", "a", "a", "a", "a", "b", "b"]
    texts = ["x", "x \n", "y", "z", "w", "x", "x"]
    reasons = [None, None, None, None, "incorrect", None, None]
    out = keep_per_prompt(ids, texts, reasons, dedupe=True, max_per_prompt=2)
    # whitespace-only differences are duplicates; the third distinct one of "a" is over K;
    # earlier reasons stay; prompt "b" has its own budget and its own duplicates
    assert out == [
        "accepted",
        "duplicate",
        "accepted",
        "over_k",
        "incorrect",
        "accepted",
        "duplicate",
    ]


def test_keep_per_prompt_without_dedupe():
    out = keep_per_prompt(["a"] * 3, ["x", "x", "x"], [None] * 3, dedupe=False, max_per_prompt=2)
    assert out == ["accepted", "accepted", "over_k"]


def test_a_rejected_sample_does_not_block_its_duplicate():
    out = keep_per_prompt(
        ["a", "a"], ["x", "x"], ["incorrect", None], dedupe=True, max_per_prompt=2
    )
    assert out == ["incorrect", "accepted"]


# ---- statistics ---------------------------------------------------------------------------


def test_acceptance_stats():
    def row(pid, reason, source="reasoning", **kw):
        return {
            "prompt_id": pid,
            "source": source,
            "accepted": reason == "accepted",
            "reason": reason,
            **kw,
        }

    rows = [
        row("a", "accepted"),
        row("a", "duplicate"),
        row("a", "incorrect", judge=None),
        row("b", "no_format"),
        row("c", "accepted", judge="Verdict: correct"),
        row("g1", "accepted", "general", cot=True),
        row("g2", "accepted", "general", cot=False),
    ]
    s = acceptance_stats(rows)
    assert s["reasoning_prompts"] == 3 and s["reasoning_samples"] == 5
    assert s["accepted_reasoning"] == 2 and s["acceptance_rate"] == pytest.approx(0.4)
    assert s["prompts_with_accepted"] == 2
    assert s["general_examples"] == 2 and s["general_with_cot"] == 1
    assert s["sft_examples"] == 4
    assert s["judge_calls"] == 2 and s["judge_failed"] == 1
    assert s["rejected/duplicate"] == s["rejected/incorrect"] == s["rejected/no_format"] == 1
    assert {k for k in s if k.startswith("rejected/")} == {f"rejected/{r}" for r in REASONS[1:]}
