"""Tests of the language consistency reward (hand-counted words per script)."""

from __future__ import annotations

import doctest

import pytest

from r1pipe.rewards import language as language_mod
from r1pipe.rewards.language import (
    LANGUAGE_SCRIPTS,
    language_consistency_reward,
    mixed_language,
)


def test_english_reasoning_is_fully_consistent():
    completion = "<think>First add the eggs, then multiply by two.</think> <answer>18</answer>"
    assert language_consistency_reward(completion, "en") == 1.0


def test_brief_example_two_of_three_words():
    # "The", "answer" are Latin, "是" is one Han word; "42" is neutral.
    assert language_consistency_reward("<think>The answer 是 42</think>", "en") == pytest.approx(
        2 / 3
    )


def test_chinese_counts_one_word_per_han_character():
    # 因 此 答 案 是 = 5 Han words; "so" and "the" = 2 Latin words.
    completion = "<think>因此 so the 答案是</think>"
    assert language_consistency_reward(completion, "zh") == pytest.approx(5 / 7)
    assert language_consistency_reward(completion, "en") == pytest.approx(2 / 7)


def test_pure_chinese_target_zh():
    assert language_consistency_reward("<think>所以答案是四十二</think>", "zh") == 1.0
    assert language_consistency_reward("<think>所以答案是四十二</think>", "en") == 0.0


@pytest.mark.parametrize(
    "reasoning",
    [
        "3 + 4 = 7",
        "(12 * 3) / 4 = 9; 9 >= 2!",
        "",
        "１２３ ＋ ４５６",  # fullwidth digits and plus
    ],
)
def test_no_letters_scores_one_for_any_target(reasoning):
    for target in ("en", "zh", "ru"):
        assert language_consistency_reward(f"<think>{reasoning}</think>", target) == 1.0


def test_without_think_block_the_whole_completion_is_scored():
    assert language_consistency_reward("just english words here", "en") == 1.0
    # Two Latin words, two Han words.
    assert language_consistency_reward("hello world 你好", "en") == pytest.approx(0.5)


def test_only_the_think_block_is_scored_when_present():
    completion = "<think>reasoning in english</think> 答案是 <answer>4</answer>"
    assert language_consistency_reward(completion, "en") == 1.0


def test_unclosed_think_tag_is_not_a_word():
    # A truncated completion keeps its "<think>" tag; the tag must not count as English.
    assert language_consistency_reward("<think>答案是", "zh") == 1.0


def test_latex_commands_and_math_symbols_are_neutral():
    completion = r"<think>\frac{1}{2} + \sqrt{9} \begin{aligned} π θ 𝑥 ∈ ℝ \end{aligned}</think>"
    assert language_consistency_reward(completion, "zh") == 1.0
    # \text{...} holds words though: the command goes, its content is counted.
    assert language_consistency_reward(r"<think>\text{所以} so</think>", "zh") == pytest.approx(
        2 / 3
    )


def test_greek_words_count_but_lone_greek_letters_do_not():
    assert language_consistency_reward("<think>let α be the angle</think>", "en") == 1.0
    assert language_consistency_reward("<think>the λόγος word</think>", "en") == pytest.approx(
        2 / 3
    )
    # For a Greek target a lone letter is a Greek word.
    assert language_consistency_reward("<think>α beta</think>", "el") == pytest.approx(0.5)


def test_other_scripts():
    assert language_consistency_reward("<think>Привет мир hello</think>", "ru") == pytest.approx(
        2 / 3
    )
    assert language_consistency_reward("<think>안녕하세요 세계 hi</think>", "ko") == pytest.approx(
        2 / 3
    )
    assert language_consistency_reward("<think>مرحبا بالعالم</think>", "ar") == 1.0
    assert language_consistency_reward("<think>café naïve über</think>", "fr") == 1.0


def test_japanese_mixes_han_and_kana():
    # Kana runs are words and Han characters one word each: "コーヒーを" (katakana with the
    # Common-script "ー", then hiragana), "食", "べる" = 3 Japanese words, one of them Han.
    assert language_consistency_reward("<think>コーヒーを食べる</think>", "ja") == 1.0
    assert language_consistency_reward("<think>コーヒーを食べる</think>", "zh") == pytest.approx(
        1 / 3
    )
    # Alone, "ー" belongs to no language's script: neutral.
    assert language_consistency_reward("<think>ー</think>", "en") == 1.0


def test_decomposed_accents_stay_in_their_word():
    # "cafe" + combining acute accent: one Latin word, not a word and a stray mark.
    assert language_consistency_reward("<think>cafe\u0301 time</think>", "en") == 1.0


def test_mixed_script_word_is_not_target():
    # "Сat" starts with a Cyrillic "С" (homoglyph): not an English word.
    assert language_consistency_reward("<think>\u0421at dog</think>", "en") == pytest.approx(0.5)


def test_unknown_language_raises():
    with pytest.raises(ValueError, match="target_language"):
        language_consistency_reward("<think>hi</think>", "klingon")
    with pytest.raises(ValueError, match="target_language"):
        mixed_language("<think>hi</think>", "xx")


def test_mixed_language_threshold():
    mixed = "<think>" + "word " * 19 + "词</think>"  # 19/20 = 0.95 English
    assert not mixed_language(mixed, "en", threshold=0.95)
    assert mixed_language(mixed, "en", threshold=0.96)
    assert mixed_language("<think>The answer 是 42</think>")
    assert not mixed_language("<think>3 + 4 = 7</think>")
    with pytest.raises(ValueError, match="threshold"):
        mixed_language("<think>hi</think>", threshold=1.5)


def test_language_table_covers_the_brief():
    for code in ("en", "fr", "de", "es", "zh", "ja", "ko", "ru", "ar"):
        assert code in LANGUAGE_SCRIPTS


def test_language_docstring_examples_run():
    result = doctest.testmod(language_mod)
    assert result.attempted > 0
    assert result.failed == 0
