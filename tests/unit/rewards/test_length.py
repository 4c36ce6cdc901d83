"""Tests of the Kimi k1.5 and cosine-scaled length rewards (values worked out by hand)."""

from __future__ import annotations

import doctest
import math

import pytest

from r1pipe.rewards import length as length_mod
from r1pipe.rewards.length import cosine_length_reward, kimi_length_rewards

# --- Kimi k1.5 -----------------------------------------------------------------------------------


def test_kimi_by_hand():
    # min 100, max 500, span 400: lambda = 0.5 - (len - 100) / 400.
    lengths = [100, 200, 300, 500, 100, 400]
    correct = [True, True, True, True, False, False]
    # lambdas: 0.5, 0.25, 0.0, -0.5, 0.5, -0.25
    assert kimi_length_rewards(lengths, correct) == pytest.approx(
        [0.5, 0.25, 0.0, -0.5, 0.0, -0.25]
    )


def test_kimi_wrong_answers_never_gain_from_being_short():
    rewards = kimi_length_rewards([10, 20, 30], [False, False, False])
    assert rewards == pytest.approx([0.0, 0.0, -0.5])
    assert all(r <= 0 for r in rewards)


def test_kimi_equal_lengths_give_zero():
    assert kimi_length_rewards([7, 7, 7], [True, False, True]) == [0.0, 0.0, 0.0]


def test_kimi_empty_group():
    assert kimi_length_rewards([], []) == []


def test_kimi_rejects_bad_input():
    with pytest.raises(ValueError, match="lengths"):
        kimi_length_rewards([1, 2], [True])
    with pytest.raises(ValueError, match=">= 0"):
        kimi_length_rewards([-1, 2], [True, True])
    with pytest.raises(TypeError):
        kimi_length_rewards([1.5, 2], [True, True])  # type: ignore[list-item]


# --- cosine (Yeo et al. 2025) ----------------------------------------------------------------


def test_cosine_correct_at_zero_half_and_max():
    # r = vL + 0.5 * (v0 - vL) * (1 + cos(pi t / L)) with v0 = 1.0, vL = 0.5.
    assert cosine_length_reward(0, True, 1000) == pytest.approx(1.0)  # cos 0 = 1 -> v0
    assert cosine_length_reward(500, True, 1000) == pytest.approx(0.75)  # cos pi/2 = 0 -> mean
    assert cosine_length_reward(1000, True, 1000) == pytest.approx(0.5)  # cos pi = -1 -> vL


def test_cosine_wrong_at_zero_half_and_max():
    # Short wrong answers are punished MORE: v0 = -0.5, vL = 0.0.
    assert cosine_length_reward(0, False, 1000) == pytest.approx(-0.5)
    assert cosine_length_reward(500, False, 1000) == pytest.approx(-0.25)
    assert cosine_length_reward(1000, False, 1000) == pytest.approx(0.0)


def test_cosine_quarter_point_by_hand():
    # t/L = 1/4: 1 + cos(pi/4) = 1 + sqrt(2)/2.
    expected = 0.5 + 0.5 * 0.5 * (1 + math.sqrt(2) / 2)
    assert cosine_length_reward(250, True, 1000) == pytest.approx(expected)


def test_cosine_monotone_in_the_right_direction():
    correct = [cosine_length_reward(t, True, 100) for t in range(0, 101, 10)]
    wrong = [cosine_length_reward(t, False, 100) for t in range(0, 101, 10)]
    assert all(a > b for a, b in zip(correct, correct[1:], strict=False))
    assert all(a < b for a, b in zip(wrong, wrong[1:], strict=False))


def test_cosine_clamps_beyond_max_len():
    assert cosine_length_reward(5000, True, 1000) == cosine_length_reward(1000, True, 1000)
    assert cosine_length_reward(5000, False, 1000) == cosine_length_reward(1000, False, 1000)


def test_cosine_custom_values():
    # max_value_correct is the reward at length 0, min_value_correct the one at max_len.
    kwargs = dict(max_value_correct=2.0, min_value_correct=1.0, min_value_wrong=-10.0)
    assert cosine_length_reward(0, True, 10, **kwargs) == pytest.approx(2.0)
    assert cosine_length_reward(10, True, 10, **kwargs) == pytest.approx(1.0)
    assert cosine_length_reward(0, False, 10, **kwargs) == pytest.approx(-10.0)
    # wrong at t/L = 1/2: vL + 0.5 * (v0 - vL) * 1 = 0 + 0.5 * (-10 - 0) = -5
    assert cosine_length_reward(5, False, 10, **kwargs) == pytest.approx(-5.0)


def test_cosine_open_r1_settings_mean_what_they_mean_in_open_r1():
    # open-r1's get_cosine_scaled_reward defaults: min_value_wrong=-1.0, max_value_wrong=-0.5,
    # min_value_correct=0.5, max_value_correct=1.0. There a correct answer gets its maximum
    # (1.0) at length 0 and its minimum (0.5) at max_len; a wrong answer its minimum (-1.0) at
    # length 0 and its maximum (-0.5) at max_len.
    open_r1 = dict(
        min_value_wrong=-1.0, max_value_wrong=-0.5, min_value_correct=0.5, max_value_correct=1.0
    )
    assert cosine_length_reward(0, True, 1000, **open_r1) == pytest.approx(1.0)
    assert cosine_length_reward(1000, True, 1000, **open_r1) == pytest.approx(0.5)
    assert cosine_length_reward(0, False, 1000, **open_r1) == pytest.approx(-1.0)
    assert cosine_length_reward(1000, False, 1000, **open_r1) == pytest.approx(-0.5)
    # halfway, cos(pi/2) = 0: the mean of the two ends
    assert cosine_length_reward(500, True, 1000, **open_r1) == pytest.approx(0.75)
    assert cosine_length_reward(500, False, 1000, **open_r1) == pytest.approx(-0.75)
    # a quarter in, 1 + cos(pi/4) = 1 + sqrt(2)/2: 0.5 + 0.25 * 1.7071... = 0.92677...
    assert cosine_length_reward(250, True, 1000, **open_r1) == pytest.approx(0.9267767, abs=1e-6)
    # a setting that is not symmetric: correct answers from 2.0 (short) down to 0.1 (max_len)
    wide = dict(min_value_correct=0.1, max_value_correct=2.0)
    assert cosine_length_reward(0, True, 100, **wide) == pytest.approx(2.0)
    assert cosine_length_reward(100, True, 100, **wide) == pytest.approx(0.1)


def test_cosine_rejects_bad_input():
    with pytest.raises(ValueError, match="max_len"):
        cosine_length_reward(1, True, 0)
    with pytest.raises(ValueError, match=">= 0"):
        cosine_length_reward(-1, True, 10)


def test_length_docstring_examples_run():
    result = doctest.testmod(length_mod)
    assert result.attempted > 0
    assert result.failed == 0
