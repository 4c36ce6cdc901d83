"""Length-aware rewards that counter the "overthinking" of long chain-of-thought RL.

Two published shapes, both pure arithmetic on completion lengths (usually in tokens):

* :func:`kimi_length_rewards` — Kimi k1.5 (2025), section 2.3.3: a *group-relative* penalty;
  within the samples of one prompt, the shortest gets +0.5 and the longest -0.5, but a wrong
  answer never gains from being short.
* :func:`cosine_length_reward` — Yeo et al. (2025), "Demystifying Long Chain-of-Thought
  Reasoning in LLMs": a *per-sample* cosine schedule over ``[0, max_len]``; a correct answer
  earns more the shorter it is, a wrong answer is punished more the shorter it is (so the model
  keeps thinking when it has not found the answer yet).
"""

from __future__ import annotations

import math
import operator

__all__ = ["cosine_length_reward", "kimi_length_rewards"]


def _check_length(length: int) -> int:
    # operator.index accepts numpy/torch integer scalars but not floats: a length of 12.7 means
    # the caller passed something other than a token count.
    value = operator.index(length)
    if value < 0:
        raise ValueError(f"lengths must be >= 0, got {value}")
    return value


def kimi_length_rewards(lengths: list[int], correct: list[bool]) -> list[float]:
    """Kimi k1.5 length rewards for one group of completions of the same prompt.

    With ``min_len``/``max_len`` the shortest/longest length in the group,
    ``lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len)`` (0 for every sample when all
    lengths are equal), and the reward is ``lambda_i`` for a correct sample and
    ``min(0, lambda_i)`` for a wrong one.

    Args:
        lengths: Length of each completion of the group (e.g. in tokens), all >= 0.
        correct: Whether each completion's answer is correct, aligned with ``lengths``.

    Returns:
        One reward in [-0.5, 0.5] per completion; an empty group gives ``[]``.

    Raises:
        ValueError: If the lists differ in length or a length is negative.

    Example:
        >>> kimi_length_rewards([100, 200, 300], [True, True, False])
        [0.5, 0.0, -0.5]
        >>> kimi_length_rewards([100, 300], [False, False])
        [0.0, -0.5]
    """
    if len(lengths) != len(correct):
        raise ValueError(f"got {len(lengths)} lengths but {len(correct)} correctness flags")
    values = [_check_length(length) for length in lengths]
    if not values:
        return []
    min_len, max_len = min(values), max(values)
    if max_len == min_len:
        # No length signal inside the group: every sample is "average" (lambda = 0).
        return [0.0] * len(values)
    span = max_len - min_len
    rewards = []
    for value, ok in zip(values, correct, strict=True):
        lam = 0.5 - (value - min_len) / span
        # A wrong answer keeps the penalty for being long but never a bonus for being short,
        # otherwise the policy would learn to give up early.
        rewards.append(lam if ok else min(0.0, lam))
    return rewards


def cosine_length_reward(
    length: int,
    correct: bool,
    max_len: int,
    *,
    min_value_wrong: float = -0.5,
    max_value_wrong: float = 0.0,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
) -> float:
    """Cosine-scaled length reward of Yeo et al. (2025).

    The parameters have the names and the meaning of open-r1's
    ``get_cosine_scaled_reward(min_value_wrong, max_value_wrong, min_value_correct,
    max_value_correct, max_len)``, so settings copied from open-r1 behave the same:

    =====================  ==================================================
    parameter              reward it sets
    =====================  ==================================================
    ``max_value_correct``  a correct answer of length 0 (the shortest)
    ``min_value_correct``  a correct answer of length ``max_len``
    ``min_value_wrong``    a wrong answer of length 0
    ``max_value_wrong``    a wrong answer of length ``max_len``
    =====================  ==================================================

    With ``(v0, vL)`` the pair for the sample's correctness (reward at length 0, reward at
    ``max_len``), the reward at ``t = min(length, max_len)`` is
    ``vL + 0.5 * (v0 - vL) * (1 + cos(pi * t / max_len))``: it moves from ``v0`` to ``vL``
    along half a cosine period (flat near both ends, steepest at ``max_len / 2``). So a
    correct answer earns more the shorter it is and a wrong one is punished more the shorter
    it is, as long as the ``min_*`` value is below the ``max_*`` one.

    The defaults are ours, not open-r1's (-1.0, -0.5, 0.5, 1.0): a correct answer earns 1.0
    when short and 0.5 at ``max_len``, a wrong answer -0.5 when short and 0.0 at ``max_len``.
    Two further differences from open-r1: lengths beyond ``max_len`` are clamped to it (open-r1
    keeps following the cosine, so its reward turns back; the paper's separate exceed-length
    penalty is left to the truncation handling), and ``length`` is whatever unit the caller
    counts (:func:`~r1pipe.rewards.combine.compute_rewards` passes tokens; open-r1 counts
    characters).

    Args:
        length: Length of the completion (e.g. in tokens), >= 0.
        correct: Whether the completion's answer is correct.
        max_len: The length at which the schedule ends, > 0 (usually the generation limit).
        min_value_wrong: Reward of a wrong answer of length 0.
        max_value_wrong: Reward of a wrong answer of length ``max_len``.
        min_value_correct: Reward of a correct answer of length ``max_len``.
        max_value_correct: Reward of a correct answer of length 0.

    Returns:
        The reward, between the two values for the sample's correctness.

    Raises:
        ValueError: If ``length`` is negative or ``max_len`` is not positive.

    Example:
        >>> cosine_length_reward(0, True, 1000), cosine_length_reward(1000, True, 1000)
        (1.0, 0.5)
        >>> cosine_length_reward(0, False, 1000), cosine_length_reward(5000, False, 1000)
        (-0.5, 0.0)
        >>> round(cosine_length_reward(500, True, 1000), 6)
        0.75
        >>> cosine_length_reward(0, True, 1000, min_value_correct=0.1, max_value_correct=2.0)
        2.0
    """
    value = _check_length(length)
    if operator.index(max_len) <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    if correct:
        at_zero, at_max = max_value_correct, min_value_correct
    else:
        at_zero, at_max = min_value_wrong, max_value_wrong
    progress = min(value, max_len) / max_len
    return at_max + 0.5 * (at_zero - at_max) * (1.0 + math.cos(math.pi * progress))
