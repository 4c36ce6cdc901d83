"""rl-all's prompt mix and reward function, worked out by hand (no model)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from r1pipe.config import compose
from r1pipe.data.types import Example
from r1pipe.generation.base import Completion
from r1pipe.rl.prompts import PromptMix
from r1pipe.rl.scoring import BySource, GeneralRewards, RuleRewards

REASONING = [Example(f"add-{i}", f"{i}+1=?", str(i + 1)) for i in range(20)]
GENERAL = [Example(f"general-{i}", f"Say hello {i}.", "", source="general") for i in range(6)]


def _rl(**overrides):
    cfg, _ = compose(["conf=smoke"])
    return cfg, replace(cfg.stage.rl_all, **overrides)


def test_prompt_mix_same_share_of_general_prompts_on_every_rank_after_the_start():
    _, rl = _rl(prompts_per_step=8, general_fraction=0.25, max_steps=10, preference_start_frac=0.5)
    mix = PromptMix(REASONING, GENERAL, rl, world_size=2, seed=0)
    assert mix.start_step == 5
    for step in range(10):
        batch = mix(step, 0)
        assert len(batch) == 8
        for rank in range(2):
            share = batch[rank * 4 : (rank + 1) * 4]
            n_general = sum(e in GENERAL for e in share)
            assert n_general == (1 if step >= 5 else 0), (step, rank)
    assert mix(7, 0) == mix(7, 0)  # a pure function of the step: resume needs no state
    assert mix(7, 0) != mix(8, 0)


def test_prompt_mix_rounds_to_at_least_one_general_prompt():
    _, rl = _rl(prompts_per_step=4, general_fraction=0.1, preference_start_frac=0.0)
    assert PromptMix(REASONING, GENERAL, rl, world_size=1, seed=0).general_per_rank(0) == 1
    _, rl = _rl(prompts_per_step=4, general_fraction=0.0)
    assert PromptMix(REASONING, GENERAL, rl, world_size=1, seed=0).general_per_rank(3) == 0


def mixed_rewards(cfg, rl, world_size, scorers):
    """rl-all's reward function, as the stage builds it."""
    return BySource(
        {"reasoning": RuleRewards(cfg.task, rl), "general": GeneralRewards(rl, scorers)},
        rl.group_size,
        world_size,
    )


def _completion(text: str) -> Completion:
    return Completion(0, text, list(range(len(text))), None, "stop")


def test_mixed_rewards_rule_rewards_for_reasoning_reward_models_for_general():
    cfg, rl = _rl(group_size=2, rewards={"accuracy": 1.0, "format": 0.2, "language": 0.0})
    rl.helpfulness = replace(rl.helpfulness, weight=0.5)
    rl.harmlessness = replace(rl.harmlessness, weight=2.0)
    shown: dict[str, list[str]] = {"helpfulness": [], "harmlessness": []}

    def helpfulness(prompts, responses):
        shown["helpfulness"] += responses
        return [float(len(r)) for r in responses]

    def harmlessness(prompts, responses):
        shown["harmlessness"] += responses
        return [-1.0 if "stupid" in r else 0.0 for r in responses]

    rewards = mixed_rewards(
        cfg, rl, world_size=1, scorers={"helpfulness": helpfulness, "harmlessness": harmlessness}
    )
    examples = [REASONING[0], GENERAL[0]]  # reference "1"; a greeting
    texts = [
        "<think>0+1=1</think> <answer>1</answer>",  # right, formatted: 1 + 0.2
        "<think>0+1=2</think> <answer>2</answer>",  # wrong, formatted: 0.2
        "<think>stupid</think> Hello!",  # summary 6 chars, harmful, formatted
        "Hello there",  # 11 chars, no think block: format 0
    ]
    scores = rewards(examples, [_completion(t) for t in texts])
    total, means, failures = scores.total, scores.means, scores.failures
    # dynamic sampling reads the accuracy: reasoning prompts only, NaN for general ones
    assert scores.accuracy[:2].tolist() == [1.0, 0.0] and scores.accuracy[2:].isnan().all()
    assert total.tolist() == pytest.approx(
        [1.2, 0.2, 0.5 * 6 + 2.0 * -1.0 + 0.2 * 1.0, 0.5 * 11 + 0.0 + 0.2 * 0.0]
    )
    assert shown["helpfulness"] == ["Hello!", "Hello there"]  # the summary only
    assert shown["harmlessness"] == texts[2:]  # the whole response
    assert means["accuracy"] == 0.5 and means["format"] == 1.0  # reasoning prompts only
    assert means["reasoning/reward"] == pytest.approx(0.7)
    assert means["general/helpfulness"] == 8.5 and means["general/harmlessness"] == -0.5
    assert means["general/format"] == 0.5
    assert means["general/reward"] == pytest.approx((1.2 + 5.5) / 2)
    assert means["reasoning/prompts"] == 1 and means["general/prompts"] == 1
    assert failures.get("accuracy") == 0


def test_mixed_rewards_reasoning_only_batch_has_no_general_metrics():
    cfg, rl = _rl(group_size=2)
    rewards = mixed_rewards(cfg, rl, 2, {"helpfulness": None, "harmlessness": None})
    texts = ["<think>x</think> <answer>2</answer>", "no"]
    means = rewards([REASONING[1]], [_completion(t) for t in texts]).means
    assert means["general/prompts"] == 0 and means["reasoning/prompts"] == 2  # 2 ranks
    assert not any(k.startswith("general/") and k != "general/prompts" for k in means)


def test_general_eval_generates_with_the_configured_back_end(tmp_path):
    """The held-out general answers come from ``cfg.generation``'s back end: one asked for
    and not buildable is refused, not replaced by a default hf generator."""
    import importlib.util
    from types import SimpleNamespace

    import torch

    from r1pipe.config.schema import ConfigError
    from r1pipe.models import save_tiny_base
    from r1pipe.stages.rl_all import general_eval
    from r1pipe.training.dist import DistInfo

    cfg, _ = _rl()
    ckpt = save_tiny_base(cfg.model, tmp_path / "ckpt", seed=0)
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    cfg.generation.backend = "vllm"  # not installed here: refused, not replaced by hf
    from r1pipe.stages.common import Trained

    dist = DistInfo(0, 1, 0, torch.device("cpu"))  # no trained model in memory: from disk
    ctx = SimpleNamespace(cfg=cfg, dist=dist, stage_dir=tmp_path, trained=Trained())
    scorers = {"helpfulness": None, "harmlessness": None}
    with pytest.raises(ConfigError, match="generation.backend: vllm"):
        general_eval(ctx, ckpt, GENERAL[:1], scorers)
    assert not (tmp_path / "eval_general.jsonl").exists()
