"""The reward registries: the config accepts exactly their names, compute_rewards computes what
they hold (a reward added in one place is computed, weighted and checked), and the rule rewards
of general prompts by hand."""

from __future__ import annotations

import pytest

import r1pipe.rewards
from r1pipe.config import compose
from r1pipe.errors import UserError
from r1pipe.rewards import combine as combine_mod
from r1pipe.rewards import scorers as scorers_mod
from r1pipe.rewards.combine import compute_rewards
from r1pipe.rewards.registry import (
    GENERAL_REWARDS,
    REASONING_REWARDS,
    RewardBatch,
    RewardSpec,
    general_rule_rewards,
)

GOOD = "<think>2+2</think> <answer>4</answer>"
WRONG = "<think>2+2</think> <answer>5</answer>"


def _compose(*overrides: str):
    cfg, _ = compose(["conf=smoke", *overrides])
    return cfg


def _refused(*overrides: str) -> str:
    with pytest.raises(UserError) as e:
        _compose(*overrides)
    return str(e.value)


# --- the registries and the config ----------------------------------------------------------


def test_each_entry_is_named_by_its_key_and_has_a_one_line_doc():
    for registry in (REASONING_REWARDS, GENERAL_REWARDS):
        for name, spec in registry.items():
            assert spec.name == name
            assert spec.doc and "\n" not in spec.doc
    assert [n for n, s in REASONING_REWARDS.items() if s.needs_correct] == [
        "kimi_length",
        "cosine_length",
    ]


def test_builtin_rewards_are_the_reasoning_registry():
    names = ("accuracy", "format", "language", "kimi_length", "cosine_length")
    assert tuple(REASONING_REWARDS) == names
    assert combine_mod.BUILTIN_REWARDS == names
    assert r1pipe.rewards.BUILTIN_REWARDS == names
    assert tuple(GENERAL_REWARDS) == ("format", "language")


def test_a_config_with_every_registered_name_composes():
    cfg = _compose(
        *(f"++stage.rl_reasoning.rewards.{name}=0.5" for name in REASONING_REWARDS),
        *(f"++stage.rl_all.rewards.{name}=0.5" for name in REASONING_REWARDS),
        *(f"++stage.rl_all.general_rewards.{name}=0.5" for name in GENERAL_REWARDS),
    )
    assert set(cfg.stage.rl_reasoning.rewards) == set(REASONING_REWARDS)
    assert set(cfg.stage.rl_all.rewards) == set(REASONING_REWARDS)
    assert set(cfg.stage.rl_all.general_rewards) == set(GENERAL_REWARDS)


def test_an_unregistered_name_is_refused_naming_the_key():
    assert _refused("++stage.rl_reasoning.rewards.shout=1") == (
        "config error: stage.rl_reasoning.rewards.shout: unknown reward; known: "
        f"{list(REASONING_REWARDS)}"
    )
    # A reasoning reward that needs a reference is no general reward.
    assert _refused("++stage.rl_all.general_rewards.accuracy=1") == (
        "config error: stage.rl_all.general_rewards.accuracy: general prompts have no "
        "reference: only format and language apply"
    )


# --- a reward added to the registry alone ---------------------------------------------------


def _shout(batch: RewardBatch) -> tuple[list[float], int]:
    return [float(c.endswith("!")) for c in batch.completions], 0


def _right_and_long(batch: RewardBatch) -> tuple[list[float], int]:
    # Reads the accuracy verdicts and the lengths.
    values = [float(ok) * n / 100 for ok, n in zip(batch.correct, batch.lengths, strict=True)]
    return values, 0


def _needs_even_lengths(batch: RewardBatch) -> None:
    if any(n % 2 for n in batch.lengths):
        raise ValueError("right_and_long needs even lengths")


@pytest.fixture
def shout(monkeypatch):
    """A reward registered only for the test (removed afterwards)."""
    spec = RewardSpec("shout", _shout, "1 if the completion ends with an exclamation mark")
    monkeypatch.setitem(REASONING_REWARDS, "shout", spec)
    return spec


@pytest.fixture
def right_and_long(monkeypatch):
    spec = RewardSpec(
        "right_and_long",
        _right_and_long,
        "length / 100 when right",
        needs_correct=True,
        check=_needs_even_lengths,
    )
    monkeypatch.setitem(REASONING_REWARDS, "right_and_long", spec)
    return spec


def test_a_registered_reward_is_computed_and_weighted(shout):
    result = compute_rewards(
        [GOOD, GOOD + "!", WRONG + "!"],
        ["4", "4", "4"],
        {"accuracy": 1.0, "shout": 2.0},
        group_size=1,
        lengths=[1, 1, 1],
        task_verifier="numeric",
        answer_format="answer_tag",
    )
    assert result.per_reward == {"accuracy": [1.0, 1.0, 0.0], "shout": [0.0, 1.0, 1.0]}
    assert result.total == [1.0, 3.0, 2.0]
    assert result.failures == {"accuracy": 0, "shout": 0}
    # It is a built-in while registered: listed, and an extra cannot take its name.
    assert "shout" in combine_mod.BUILTIN_REWARDS
    with pytest.raises(ValueError, match="clash"):
        compute_rewards(
            [GOOD],
            ["4"],
            {"shout": 1.0},
            group_size=1,
            lengths=[1],
            task_verifier="numeric",
            answer_format="answer_tag",
            extra={"shout": lambda c, r: 1.0},
        )


def test_a_registered_reward_reaches_the_config(shout):
    cfg = _compose("++stage.rl_reasoning.rewards.shout=0.5")
    assert cfg.stage.rl_reasoning.rewards["shout"] == 0.5


def test_a_reward_that_needs_correct_gets_the_verdicts_and_its_check(right_and_long):
    def run(lengths):
        return compute_rewards(
            [GOOD, WRONG],
            ["4", "4"],
            {"accuracy": 0.0, "right_and_long": 1.0},
            group_size=1,
            lengths=lengths,
            task_verifier="numeric",
            answer_format="answer_tag",
        )

    result = run([50, 60])
    # Accuracy is computed for the verdicts (its failures counted) though its weight is 0.
    assert result.per_reward == {"right_and_long": [0.5, 0.0]}
    assert result.failures == {"accuracy": 0, "right_and_long": 0}
    assert result.total == [0.5, 0.0]
    with pytest.raises(ValueError, match="needs even lengths"):
        run([50, 61])


# --- general prompts --------------------------------------------------------------------------

GENERAL_TEXTS = [
    "<think>Greet back.</think> Hello! How can I help?",  # format 1, all English
    "<think>The answer 是 42</think> Done.",  # format 1; 2 of 3 words English
    "Hello there, friend!",  # no think block: format 0; the whole text is English
]


def test_general_rule_rewards_by_hand():
    parts = general_rule_rewards(GENERAL_TEXTS, {"format": 0.2, "language": 1.0}, "en")
    assert parts == {"format": [1.0, 1.0, 0.0], "language": pytest.approx([1.0, 2 / 3, 1.0])}
    assert list(parts) == ["format", "language"]
    # Only the reasoning is judged for the language; the target is an argument.
    zh = general_rule_rewards(GENERAL_TEXTS, {"language": 1.0}, "zh")
    assert zh == {"language": pytest.approx([0.0, 1 / 3, 0.0])}


def test_general_rule_rewards_skip_zero_weights(monkeypatch):
    def boom(*args):
        raise AssertionError("a zero-weight reward was computed")

    monkeypatch.setattr(scorers_mod, "language_consistency_reward", boom)
    assert general_rule_rewards(GENERAL_TEXTS, {"format": 1.0, "language": 0.0}, "en") == {
        "format": [1.0, 1.0, 0.0]
    }


def test_a_raising_general_sample_scores_zero():
    # None is no text: both rewards raise on it, and only its own score is 0.
    parts = general_rule_rewards([*GENERAL_TEXTS, None], {"format": 1.0, "language": 1.0}, "en")
    assert parts == {"format": [1.0, 1.0, 0.0, 0.0], "language": [1.0, 2 / 3, 1.0, 0.0]}


@pytest.mark.parametrize(
    ("weights", "language", "match"),
    [
        ({"accuracy": 0.0}, "en", r"unknown general reward names \['accuracy'\]"),
        ({"format": 1.0}, "xx", "unknown target_language 'xx'"),
    ],
)
def test_general_rule_rewards_refuse_config_errors(weights, language, match):
    with pytest.raises(ValueError, match=match):
        general_rule_rewards(GENERAL_TEXTS, weights, language)
