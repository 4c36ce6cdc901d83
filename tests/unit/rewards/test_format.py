"""Tests of the think/answer parsing and of the R1 format reward (hand-worked cases)."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

import r1pipe.rewards as rewards_pkg
from r1pipe.rewards import format as format_mod
from r1pipe.rewards import parsing as parsing_mod
from r1pipe.rewards.format import format_reward
from r1pipe.rewards.parsing import (
    extract_answer,
    extract_boxed,
    extract_gsm8k_reference,
    split_think,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets"

GOOD = "<think>\n16 - 3 - 4 = 9 eggs; 9 * 2 = 18.\n</think>\nShe makes $18.\n<answer>18</answer>"


# --- split_think -------------------------------------------------------------------------------


def test_split_think_well_formed_strips_both_parts():
    assert split_think(GOOD) == (
        "16 - 3 - 4 = 9 eggs; 9 * 2 = 18.",
        "She makes $18.\n<answer>18</answer>",
    )


@pytest.mark.parametrize(
    "completion",
    [
        "no tags at all <answer>1</answer>",
        "<think>a</think><think>b</think> <answer>1</answer>",  # two blocks
        "</think> x <think> <answer>1</answer>",  # closed before opened
        "<think> never closed <answer>1</answer>",
        "reasoning only closed </think> <answer>1</answer>",
    ],
)
def test_split_think_malformed_returns_whole_completion(completion):
    assert split_think(completion) == (None, completion)


def test_split_think_empty_reasoning_is_empty_string_not_none():
    assert split_think("<think>  </think> rest") == ("", "rest")


# --- extract_answer ----------------------------------------------------------------------------


def test_extract_answer_tag_takes_last_and_strips():
    assert extract_answer("<answer>1</answer> then <answer>\n 2 \n</answer>", "answer_tag") == "2"


def test_extract_answer_tag_absent_or_empty_is_none():
    assert extract_answer("the answer is 2", "answer_tag") is None
    assert extract_answer("<answer>  </answer>", "answer_tag") is None
    assert extract_answer("<answer>2", "answer_tag") is None


def test_extract_answer_tag_spans_lines():
    assert extract_answer("<answer>x = 1\ny = 2</answer>", "answer_tag") == "x = 1\ny = 2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),  # nested braces
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        # An escaped brace does not count: here the only unescaped group is the box itself.
        (r"\boxed{\left\{ x \right.} then", r"\left\{ x \right."),
        (r"\boxed{\}} then", r"\}"),
        (r"\boxed{a \\ b}", r"a \\ b"),  # "\\" (line break) is not an escaped brace
        (r"first \boxed{1} then \boxed{2}", "2"),  # last box wins
        (r"\fbox{7}", "7"),
        (r"\boxed {7}", "7"),  # a space before the brace is valid LaTeX
        (r"\boxed{\boxed{7}}", r"\boxed{7}"),  # inner box is part of the outer one
        (r"\boxed{3} but \boxed{\frac{1}{2}", None),  # truncated final box: no answer
        (r"\boxed{}", None),
        (r"\boxed 7", None),
        ("no box", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected
    assert extract_answer(text, "boxed") == expected


def test_extract_answer_auto_prefers_tag_then_box():
    assert extract_answer(r"\boxed{1} <answer>2</answer>", "auto") == "2"
    assert extract_answer(r"\boxed{1}", "auto") == "1"
    # An empty tag is not silently replaced by a box the model wrote elsewhere.
    assert extract_answer(r"\boxed{1} <answer></answer>", "auto") is None


def test_extract_answer_unknown_format_raises():
    with pytest.raises(ValueError, match="answer_format"):
        extract_answer("<answer>1</answer>", "answer-tag")


def test_extract_gsm8k_reference_hand_cases():
    assert extract_gsm8k_reference("blah\n#### 18") == "18"
    assert extract_gsm8k_reference("#### 1,000 ") == "1000"
    assert extract_gsm8k_reference("#### -3") == "-3"
    with pytest.raises(ValueError):
        extract_gsm8k_reference("no marker")


def test_extract_gsm8k_reference_real_rows():
    rows = [json.loads(line) for line in (ASSETS / "gsm8k_sample.jsonl").read_text().splitlines()]
    refs = [extract_gsm8k_reference(row["answer"]) for row in rows]
    # Hand-checked against the first rows of the GSM8K test split.
    assert refs[:5] == ["18", "3", "70000", "540", "20"]
    assert all(ref.lstrip("-").replace(".", "", 1).isdigit() for ref in refs), refs


# --- format_reward -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion",
    [
        GOOD,
        "<think>r</think><answer>1</answer>",  # minimal, no whitespace
        "  \n<think>r</think> text <answer>1</answer> trailing text",  # leading whitespace ok
    ],
)
def test_format_well_formed_answer_tag(completion):
    assert format_reward(completion) == 1.0
    assert format_reward(completion, answer_format="auto") == 1.0


@pytest.mark.parametrize(
    ("completion", "why"),
    [
        ("r</think> <answer>1</answer>", "missing <think>"),
        ("<think>r <answer>1</answer>", "missing </think>"),
        ("<answer>1</answer>", "no think block at all"),
        ("Sure! <think>r</think> <answer>1</answer>", "text before <think>"),
        ("<think>a<think>b</think> <answer>1</answer>", "two <think>"),
        ("<think>a</think>b</think> <answer>1</answer>", "two </think>"),
        ("<think>a</think><think>b</think> <answer>1</answer>", "two think blocks"),
        ("</think>r<think> <answer>1</answer>", "</think> before <think>"),
        ("<think> \n </think> <answer>1</answer>", "empty reasoning"),
        ("<think>r</think>", "no summary"),
        ("<think>r</think>   \n", "whitespace-only summary"),
        ("<think>r</think> the answer is 1", "no answer tag"),
        ("<think>r</think> <answer></answer>", "empty answer"),
        ("<think>r</think> <answer> \n</answer>", "whitespace answer"),
        ("<think>r</think> <answer>1</answer> <answer>1</answer>", "two answer tags"),
        ("<think>r</think> <answer>1 <answer>2</answer></answer>", "nested answer tags"),
        ("<think>r</think> <answer>1", "unclosed answer"),
        ("<think>r</think> 1</answer>", "close tag only"),
        ("<think>r</think> </answer>1<answer>", "answer tags reversed"),
        ("<think>r <answer>1</answer></think> <answer>1</answer>", "answer inside think"),
        ("<think>r <answer>1</answer></think> so that is it", "answer only inside think"),
        ("<think>r</think> <answer>1</answer> <answer>", "stray extra open tag"),
    ],
)
def test_format_malformed_answer_tag_scores_zero(completion, why):
    assert format_reward(completion) == 0.0, why


def test_format_boxed_mode():
    assert format_reward(r"<think>r</think> So $\boxed{\frac{1}{2}}$.", "boxed") == 1.0
    # Several boxes are allowed: the last one is the answer (as in MATH solutions).
    assert format_reward(r"<think>r</think> \boxed{1} and \boxed{2}", "boxed") == 1.0
    assert format_reward(r"<think>r</think> the answer is 1/2", "boxed") == 0.0
    assert format_reward(r"<think>r \boxed{1}</think> so that is it", "boxed") == 0.0
    assert format_reward(r"<think>r</think> \boxed{}", "boxed") == 0.0
    assert format_reward(r"<think>r</think> \boxed{\frac{1}{2}", "boxed") == 0.0
    assert format_reward(r"\boxed{1}", "boxed") == 0.0  # no think block
    assert format_reward(r"<think></think> \boxed{1}", "boxed") == 0.0
    # The answer tag is not what "boxed" checks for.
    assert format_reward("<think>r</think> <answer>1</answer>", "boxed") == 0.0


def test_format_auto_mode_picks_rules_by_tag_presence():
    assert format_reward(r"<think>r</think> \boxed{1}", "auto") == 1.0
    assert format_reward(r"<think>r</think> \boxed{1} <answer>1</answer>", "auto") == 1.0
    # Once an answer tag appears the tag rules apply, so a box cannot rescue a broken tag.
    assert format_reward(r"<think>r</think> \boxed{1} <answer>1", "auto") == 0.0


def test_format_answer_tag_mode_ignores_boxes():
    assert format_reward(r"<think>r</think> \boxed{1}") == 0.0


def test_format_unknown_answer_format_raises():
    with pytest.raises(ValueError, match="answer_format"):
        format_reward(GOOD, answer_format="tag")


@pytest.mark.parametrize("module", [parsing_mod, format_mod, rewards_pkg])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
