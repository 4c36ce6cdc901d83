"""The rule rewards by name: one :class:`RewardSpec` per reward, in two registries.

* :data:`REASONING_REWARDS`: what :func:`~r1pipe.rewards.combine.compute_rewards` computes
  for reasoning prompts (which have a reference answer), and what the config accepts in
  ``stage.rl_reasoning.rewards`` and ``stage.rl_all.rewards``.
* :data:`GENERAL_REWARDS`: the rule rewards of rl-all's general prompts, which have no
  reference (``stage.rl_all.general_rewards``), computed by :func:`general_rule_rewards`.

Each entry holds the reward's batch scorer: how its pure function is called over a
:class:`RewardBatch` and how it is protected (see :mod:`r1pipe.rewards.combine`: direct
``try/except`` per sample, sandbox threads for code, killable workers for math). The built-in
scorers live in :mod:`r1pipe.rewards.scorers`, next to those protections.

Adding a reward is one entry here (plus its test): a name, a scorer (written here or pointed
at), a one-line doc, and, when it needs them, the accuracy verdicts (``needs_correct``) and a
configuration check. ``compute_rewards``, ``BUILTIN_REWARDS`` and the config's checks read
the registries, so nothing else changes.

Example:
    >>> list(REASONING_REWARDS), list(GENERAL_REWARDS)
    (['accuracy', 'format', 'language', 'kimi_length', 'cosine_length'], ['format', 'language'])
    >>> general_rule_rewards(["<think>hm</think> Hi!", "Hi!"], {"format": 1.0}, "en")
    {'format': [1.0, 0.0]}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from r1pipe.rewards.scorers import (
    RewardBatch,
    Scorer,
    check_cosine_length,
    check_kimi_length,
    check_target_language,
    score_accuracy,
    score_cosine_length,
    score_format,
    score_general_format,
    score_kimi_length,
    score_language,
)

__all__ = [
    "GENERAL_REWARDS",
    "REASONING_REWARDS",
    "RewardBatch",
    "RewardSpec",
    "Scorer",
    "general_rule_rewards",
]


@dataclass(frozen=True)
class RewardSpec:
    """One rule reward: its name, how it is computed over a batch, and what it needs."""

    name: str
    score: Scorer
    doc: str
    """One line: what the reward measures."""
    needs_correct: bool = False
    """Reads ``batch.correct``: accuracy is then computed even at weight 0."""
    check: Callable[[RewardBatch], None] | None = None
    """Raises ``ValueError`` on a batch or options this reward cannot score; called while it
    is enabled, before any reward is computed (a config error must not score 0)."""


def _by_name(*specs: RewardSpec) -> dict[str, RewardSpec]:
    registry = {spec.name: spec for spec in specs}
    assert len(registry) == len(specs), "two rewards share a name"
    return registry


_LANGUAGE = RewardSpec(
    "language", score_language, "share of the reasoning's words written in target_language"
)

REASONING_REWARDS: dict[str, RewardSpec] = _by_name(
    RewardSpec(
        "accuracy",
        score_accuracy,
        "1 if the final answer matches the reference (code: the fraction of tests passed)",
    ),
    RewardSpec(
        "format", score_format, "1 if a think block is followed by one answer in answer_format"
    ),
    _LANGUAGE,
    RewardSpec(
        "kimi_length",
        score_kimi_length,
        "Kimi k1.5: within a group, shorter is rewarded and longer penalised (no bonus if wrong)",
        needs_correct=True,
        check=check_kimi_length,
    ),
    RewardSpec(
        "cosine_length",
        score_cosine_length,
        "cosine over length to max_len: right answers earn more short, wrong ones lose less long",
        needs_correct=True,
        check=check_cosine_length,
    ),
)
"""Reward name -> spec, for reasoning prompts."""

GENERAL_REWARDS: dict[str, RewardSpec] = _by_name(
    RewardSpec(
        "format",
        score_general_format,
        "1 if the response opens with one think block and a non-empty summary follows",
    ),
    _LANGUAGE,
)
"""Reward name -> spec, for general prompts: no reference, so no accuracy or length rewards."""


def general_rule_rewards(
    texts: list[str], weights: dict[str, float], target_language: str
) -> dict[str, list[float]]:
    """The raw (unweighted) value of each enabled :data:`GENERAL_REWARDS` reward per text.

    A reward is enabled by a non-zero weight. A sample on which a reward raises scores 0.

    Raises:
        ValueError: On a name that is no general reward (even at weight 0: a typo is a typo)
            or an unknown ``target_language``.
    """
    unknown = [name for name in weights if name not in GENERAL_REWARDS]
    if unknown:
        raise ValueError(
            f"unknown general reward names {unknown}; valid names are {list(GENERAL_REWARDS)}"
        )
    check_target_language(target_language)
    batch = RewardBatch(texts, target_language=target_language)
    return {
        name: GENERAL_REWARDS[name].score(batch)[0]
        for name, weight in weights.items()
        if weight != 0
    }
