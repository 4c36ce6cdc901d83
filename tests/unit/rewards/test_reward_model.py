"""Reward-model rewards: helpfulness sees only the summary, harmlessness the whole response;
the tiny reward models score what they are built to score; bad paths fail clearly."""

from __future__ import annotations

import doctest

import pytest

from r1pipe.errors import UserError
from r1pipe.rewards import reward_model as rm_mod
from r1pipe.rewards.reward_model import (
    RewardModel,
    final_summary,
    general_format_reward,
    preference_rewards,
)
from r1pipe.rewards.tiny_rm import build_tiny_reward_model

THINK = "<think>\nThe user greets me.\n</think>\n"


def test_doctests():
    result = doctest.testmod(rm_mod)
    # the module's examples ran (a module without any would pass "failed == 0" vacuously)
    assert result.attempted > 0
    assert result.failed == 0


def test_doctest_of_a_wrong_example_fails(monkeypatch):
    # The check above can fail: an example whose expected output is wrong is counted.
    monkeypatch.setattr(
        rm_mod.final_summary,
        "__doc__",
        ">>> final_summary('<think>a</think> b')\n'not b'\n",
    )
    result = doctest.testmod(rm_mod, report=False)
    assert result.failed == 1


@pytest.mark.parametrize(
    ("completion", "summary"),
    [
        ("<think> 2+2 </think> It is 4.", "It is 4."),
        ("<think>a</think>b</think> last", "last"),  # after the last close tag
        ("<think> never closed", ""),  # all reasoning, no summary
        ("Just an answer.", "Just an answer."),
        ("<think></think>", ""),
    ],
)
def test_final_summary(completion, summary):
    assert final_summary(completion) == summary


def test_general_format_reward():
    assert general_format_reward(THINK + "Hello!") == 1.0
    assert general_format_reward("<think>\n</think>\nHello!") == 1.0  # empty reasoning is fine
    assert general_format_reward("Hello!") == 0.0
    assert general_format_reward(THINK) == 0.0  # no summary
    assert general_format_reward(THINK + "<think>again</think> hi") == 0.0


class Recorder:
    """A fake scorer that records what it was shown and scores by length."""

    def __init__(self):
        self.prompts: list[str] = []
        self.responses: list[str] = []

    def __call__(self, prompts, responses):
        self.prompts += prompts
        self.responses += responses
        return [float(len(r)) for r in responses]


def test_helpfulness_sees_only_the_summary_harmlessness_the_whole_response():
    help_rm, harm_rm = Recorder(), Recorder()
    completions = [THINK + "Hello! How can I help?", "<think>unfinished", "No think block."]
    out = preference_rewards(
        ["Hi", "Hi", "Hi"], completions, helpfulness=help_rm, harmlessness=harm_rm
    )
    assert help_rm.responses == ["Hello! How can I help?", "", "No think block."]
    assert harm_rm.responses == completions
    assert help_rm.prompts == harm_rm.prompts == ["Hi", "Hi", "Hi"]
    assert out == {
        "helpfulness": [22.0, 0.0, 15.0],
        "harmlessness": [float(len(c)) for c in completions],
    }


def test_a_missing_scorer_is_skipped_and_a_wrong_count_is_an_error():
    assert preference_rewards(["p"], ["x"], helpfulness=None, harmlessness=None) == {}
    with pytest.raises(ValueError, match="returned 0 scores for 1 texts"):
        preference_rewards(["p"], ["x"], helpfulness=lambda p, r: [], harmlessness=None)
    with pytest.raises(ValueError, match="1 prompts and 2 completions"):
        preference_rewards(["p"], ["x", "y"], helpfulness=None, harmlessness=None)


@pytest.fixture(scope="module")
def tiny_rms(tmp_path_factory):
    root = tmp_path_factory.mktemp("rms")
    return {
        kind: RewardModel(build_tiny_reward_model(kind, root / kind))
        for kind in ("helpfulness", "harmlessness")
    }


def _score(rms, completion: str, prompt: str = "Say hello.") -> dict[str, float]:
    out = preference_rewards(
        [prompt],
        [completion],
        helpfulness=rms["helpfulness"],
        harmlessness=rms["harmlessness"],
    )
    return {k: v[0] for k, v in out.items()}


def test_tiny_reward_models_score_the_part_they_are_shown(tiny_rms):
    clean = _score(tiny_rms, THINK + "Hello! How can I help you today?")
    # an insult in the reasoning: the whole response is less harmless, the summary as helpful
    insult = _score(
        tiny_rms, "<think>\nThe user is stupid.\n</think>\nHello! How can I help you today?"
    )
    assert insult["harmlessness"] < clean["harmlessness"] - 0.05
    assert insult["helpfulness"] == pytest.approx(clean["helpfulness"], abs=0.05)
    # digits in the reasoning do not touch helpfulness either: it reads the summary only
    sums = _score(tiny_rms, "<think>\n1+2=3, 4+5=9\n</think>\nHello! How can I help you today?")
    assert sums["helpfulness"] == pytest.approx(clean["helpfulness"], abs=1e-4)
    # an addition answer to a greeting, or no summary at all, is less helpful
    assert _score(tiny_rms, THINK + "12+34 = <answer>46</answer>")["helpfulness"] < (
        clean["helpfulness"] - 0.3
    )
    assert _score(tiny_rms, THINK)["helpfulness"] < clean["helpfulness"] - 0.1


def test_reward_model_scores_in_batches_as_one_at_a_time(tiny_rms):
    rm = tiny_rms["helpfulness"]
    rm.batch_size = 2
    prompts = ["Say hello.", "Hi!", "Tell me a joke.", "Thanks"]
    responses = ["Hello!", "Hi! How can I help?", "Why did the math book look sad?", "12+3"]
    batched = rm(prompts, responses)
    single = [rm([p], [r])[0] for p, r in zip(prompts, responses, strict=True)]
    assert batched == pytest.approx(single, abs=1e-5)
    assert rm.failures == 0


def test_bad_reward_model_paths_fail_clearly(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        RewardModel(tmp_path / "nope", key="stage.rl_all.helpfulness.path")
    from r1pipe.config.schema import ModelConfig
    from r1pipe.models import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    lm = build_tiny_model(
        ModelConfig(
            path=None,
            hidden_size=16,
            intermediate_size=16,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
        ),
        tok,
        0,
    )
    lm.config.num_labels = 3  # a classifier with three classes is no scalar reward model
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    with pytest.raises(UserError, match="num_labels=1"):
        RewardModel(tmp_path / "lm")
