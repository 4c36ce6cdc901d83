"""Scoring a rollout: ``(examples, completions) -> Scores``, the reward function of the GRPO
trainer. Completion ``i`` answers ``examples[i // G]`` (G = group size).

* :class:`RuleRewards`: the rule rewards of reasoning prompts (accuracy, format, language,
  length), weighted per config, through :func:`r1pipe.rewards.combine.compute_rewards`
  (which gives 0 to a sample whose reward raises or times out, and counts it).
* :class:`GeneralRewards`: general prompts (rl-all): the helpfulness reward model on the final
  summary, the harmlessness one on the whole response, plus rule rewards without a reference.
* :class:`BySource`: each group scored by the scorer of its example's source; rl-all is
  rl-reasoning with ``BySource({"reasoning": RuleRewards, "general": GeneralRewards})``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from r1pipe.config.schema import GRPOConfig, RLAllConfig, TaskConfig
from r1pipe.data.types import Example
from r1pipe.generation.base import Completion
from r1pipe.rewards.combine import compute_rewards
from r1pipe.rewards.registry import general_rule_rewards
from r1pipe.rewards.reward_model import RewardModel, ScoreFn, preference_rewards

#: The reward models of general prompts, by config key under ``stage.rl_all``.
PREFERENCE = ("helpfulness", "harmlessness")


@dataclass
class Scores:
    """The rewards of one rollout's completions (``N = prompts x G``)."""

    total: torch.Tensor  # [N] weighted reward
    means: dict[str, float]  # each reward's mean, logged as reward/NAME (or NAME with a "/")
    failures: dict[str, int]  # reward name -> samples on which it raised or timed out
    accuracy: torch.Tensor | None = None  # [N] accuracy; NaN where a prompt has none


RewardFn = Callable[[list[Example], list[Completion]], Scores]


class RuleRewards:
    """The rule rewards weighted by ``rl.rewards``, checked per ``task`` (verifier, answer
    format, tolerance)."""

    def __init__(self, task: TaskConfig, rl: GRPOConfig):
        self.task, self.rl = task, rl

    def __call__(self, examples: list[Example], completions: list[Completion]) -> Scores:
        task, rl = self.task, self.rl
        res = compute_rewards(
            [c.text for c in completions],
            [examples[i // rl.group_size].reference for i in range(len(completions))],
            dict(rl.rewards),
            group_size=rl.group_size,
            lengths=[len(c.token_ids) for c in completions],
            task_verifier=task.verifier,
            answer_format=task.answer_format,
            tolerance=task.tolerance,
            target_language=rl.target_language,
            max_len=rl.max_new_tokens,
            timeout_s=rl.reward_timeout_s,
        )
        means = {k: sum(v) / max(1, len(v)) for k, v in res.per_reward.items()}
        acc = res.per_reward.get("accuracy")
        return Scores(
            torch.tensor(res.total, dtype=torch.float32),
            means,
            dict(res.failures),
            None if acc is None else torch.tensor(acc, dtype=torch.float32),
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


class GeneralRewards:
    """General prompts: reward models (``scorers``: ``(prompts, responses) -> scores`` by
    name in :data:`PREFERENCE`, None where off) and the rule rewards of
    ``rl.general_rewards``, each times its weight. No accuracy (NaN): there is no reference.
    Means are logged as ``general/NAME``; a :class:`RewardModel`'s failure count is reported
    and reset each call."""

    def __init__(self, rl: RLAllConfig, scorers: dict[str, ScoreFn | None]):
        self.rl, self.scorers = rl, scorers

    def parts(self, prompts: list[str], texts: list[str]) -> dict[str, list[float]]:
        """Each reward of general prompts, unweighted: reward models, then rule rewards."""
        parts = preference_rewards(
            prompts,
            texts,
            helpfulness=self.scorers["helpfulness"],
            harmlessness=self.scorers["harmlessness"],
        )
        parts.update(general_rule_rewards(texts, self.rl.general_rewards, self.rl.target_language))
        return parts

    def __call__(self, examples: list[Example], completions: list[Completion]) -> Scores:
        rl, G = self.rl, self.rl.group_size
        parts = self.parts(
            [examples[i // G].question for i in range(len(completions))],
            [c.text for c in completions],
        )
        weights = {**{k: getattr(rl, k).weight for k in PREFERENCE}, **rl.general_rewards}
        total = [
            math.fsum(weights[k] * values[j] for k, values in parts.items())
            for j in range(len(completions))
        ]
        failures: dict[str, int] = {}
        for kind in PREFERENCE:
            scorer = self.scorers[kind]
            if isinstance(scorer, RewardModel):
                failures[kind] = scorer.failures
                scorer.failures = 0
        return Scores(
            torch.tensor(total, dtype=torch.float32),
            {f"general/{k}": _mean(v) for k, v in parts.items()},
            failures,
            torch.full((len(completions),), float("nan")),
        )


class BySource:
    """Each prompt's group scored by the scorer of its example's ``source``.

    Logged besides each scorer's means: ``SOURCE/prompts`` (global counts: every rank holds
    the same mix, and ranks are averaged) and ``SOURCE/reward`` (the mean total of the
    source's completions, when it has any). Accuracy is NaN where a scorer gives none.
    """

    def __init__(self, scorers: dict[str, RewardFn], group_size: int, world_size: int):
        self.scorers, self.G, self.world = scorers, group_size, world_size

    def __call__(self, examples: list[Example], completions: list[Completion]) -> Scores:
        G = self.G
        total = torch.zeros(len(completions))
        accuracy = torch.full((len(completions),), float("nan"))
        means: dict[str, Any] = {}
        failures: dict[str, int] = {}
        for source, scorer in self.scorers.items():
            groups = [g for g, e in enumerate(examples) if e.source == source]
            means[f"{source}/prompts"] = len(groups) * self.world
            if not groups:
                continue
            idx = [g * G + j for g in groups for j in range(G)]
            scores = scorer([examples[g] for g in groups], [completions[i] for i in idx])
            total[idx] = scores.total
            if scores.accuracy is not None:
                accuracy[idx] = scores.accuracy
            means.update(scores.means)
            means[f"{source}/reward"] = float(scores.total.mean())
            for k, v in scores.failures.items():
                failures[k] = failures.get(k, 0) + v
        unknown = {e.source for e in examples} - set(self.scorers)
        if unknown:
            raise ValueError(f"no reward for prompts of source {sorted(unknown)}")
        return Scores(total, means, failures, accuracy)
