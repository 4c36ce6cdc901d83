"""Which prompts an RL step samples: ``(step, sampling_round) -> the step's global batch``
of ``prompts_per_step`` examples; rank ``r`` takes the ``r``-th contiguous share. A pure
function of the step and round, so resume needs no state.

* :class:`SeededPrompts`: a seeded order over one list (rl-reasoning).
* :class:`PromptMix`: reasoning prompts with a share of general ones from a given step on,
  the same number on every rank (rl-all).
"""

from __future__ import annotations

import math
from typing import Protocol

from r1pipe.config.schema import GRPOConfig, RLAllConfig
from r1pipe.data.types import Example
from r1pipe.training.order import sample_order

#: Each sampling round of a step (dynamic sampling) draws another seeded order.
ROUND_SEED_STRIDE = 1_000_003


class Prompts(Protocol):
    def __call__(self, step: int, sampling_round: int) -> list[Example]: ...


class SeededPrompts:
    """``prompts_per_step`` examples of ``examples`` per step, in a seeded order per round."""

    def __init__(self, examples: list[Example], rl: GRPOConfig, seed: int):
        self.examples, self.rl, self.seed = examples, rl, seed

    def __call__(self, step: int, sampling_round: int) -> list[Example]:
        order = sample_order(
            step,
            self.rl.prompts_per_step,
            len(self.examples),
            self.seed + ROUND_SEED_STRIDE * sampling_round,
        )
        return [self.examples[i] for i in order]


class PromptMix:
    """``(step, round) -> the step's prompts``: every rank's share holds the same number of
    general prompts (so per-source statistics average correctly over ranks), none before
    ``start_step``; the reasoning prompts follow :class:`SeededPrompts`' order."""

    def __init__(
        self,
        reasoning: list[Example],
        general: list[Example],
        rl: RLAllConfig,
        world_size: int,
        seed: int,
    ):
        self.reasoning, self.general, self.rl = reasoning, general, rl
        self.world, self.seed = world_size, seed
        self.per_rank = rl.prompts_per_step // world_size
        self.start_step = math.floor(rl.preference_start_frac * rl.max_steps)

    def general_per_rank(self, step: int) -> int:
        if not self.general or self.rl.general_fraction == 0 or step < self.start_step:
            return 0
        return min(self.per_rank, max(1, round(self.rl.general_fraction * self.per_rank)))

    def __call__(self, step: int, sampling_round: int) -> list[Example]:
        n_gen = self.general_per_rank(step)
        n_rea = self.per_rank - n_gen
        seed = self.seed + ROUND_SEED_STRIDE * sampling_round
        rea = sample_order(step, self.rl.prompts_per_step, len(self.reasoning), seed)
        gen = sample_order(step, n_gen * self.world, len(self.general), seed + 17) if n_gen else []
        batch: list[Example] = []
        for r in range(self.world):
            batch += [self.reasoning[i] for i in rea[r * n_rea : (r + 1) * n_rea]]
            batch += [self.general[i] for i in gen[r * n_gen : (r + 1) * n_gen]]
        return batch
