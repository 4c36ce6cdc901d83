"""GRPOTrainer.rollout with a scripted generator and reward (no model): dynamic sampling by
accuracy, the flat groups that fill a batch when rounds run out, the overlong-filter mask and
the advantages, all worked out by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from r1pipe.config import compose
from r1pipe.data.types import Example
from r1pipe.generation.base import Completion
from r1pipe.models import build_char_tokenizer
from r1pipe.rl.scoring import Scores
from r1pipe.rl.trainer import GRPOTrainer
from r1pipe.training.dist import DistInfo

G = 4
# Each prompt's group: (accuracy, format, finish_reason) per completion.
GROUPS = {
    # all right, but one without format: totals 1.2, 1.2, 1.2, 1.0 (the example)
    "allright": [(1, 1, "stop")] * 3 + [(1, 0, "stop")],
    "mixed1": [(1, 1, "stop"), (0, 1, "stop"), (0, 1, "length"), (0, 1, "stop")],
    "mixed2": [(1, 1, "stop"), (1, 1, "stop"), (0, 0, "length"), (0, 1, "stop")],
    "allwrong": [(0, 1, "stop")] * 4,
}


class ScriptedGenerator:
    """Completion j of a prompt named NAME is ``"NAME j"``; its finish reason is scripted."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def generate(self, prompts, params):
        assert params.n == G
        self.calls.append(list(prompts))
        out = []
        for i, p in enumerate(prompts):
            out.append(
                [Completion(i, f"{p} {j}", [5] * (3 + j), None, GROUPS[p][j][2]) for j in range(G)]
            )
        return out


def scripted_rewards(examples, completions):
    acc, fmt = [], []
    for i in range(len(completions)):
        a, f, _ = GROUPS[examples[i // G].question][i % G]
        acc.append(float(a))
        fmt.append(float(f))
    acc_t = torch.tensor(acc)
    total = acc_t + 0.2 * torch.tensor(fmt)
    return Scores(total, {"accuracy": sum(acc) / len(acc)}, {}, acc_t)


def make_trainer(rounds: list[list[str]], **rl_overrides) -> tuple[GRPOTrainer, ScriptedGenerator]:
    """A trainer with no engine (rollout() does not train): round r's prompts are
    ``rounds[r]``."""
    cfg, _ = compose(["conf=smoke"])
    rl = replace(cfg.stage.rl_reasoning, group_size=G, prompts_per_step=2, **rl_overrides)
    rl = replace(rl, kl_coef=0.0)  # no reference model: rollout() does not train
    trainer = GRPOTrainer(
        None,  # type: ignore[arg-type]
        ScriptedGenerator(),
        scripted_rewards,
        lambda step, rnd: [Example(n, n, "") for n in rounds[rnd]],
        None,
        rl,
        DistInfo(0, 1, 0, torch.device("cpu")),
        tokenizer=build_char_tokenizer(),
        prompt_text=lambda ex: ex.question,
    )
    return trainer, trainer.generator


def _groups(trainer: GRPOTrainer, batch) -> list[str]:
    """The prompt name of each group in the batch, read back from the token ids."""
    tok = trainer.tokenizer
    P = batch.prompt_len
    names = []
    for g in range(batch.input_ids.shape[0] // G):
        row = batch.input_ids[g * G, :P][batch.attention_mask[g * G, :P].bool()]
        names.append(tok.decode(row.tolist()))
    return names


def test_dynamic_sampling_drops_groups_flat_in_accuracy_not_in_total():
    rounds = [["allright", "mixed1"], ["mixed2", "allwrong"]]
    trainer, gen = make_trainer(rounds, dynamic_sampling=True, max_sampling_rounds=3)
    batch, stats = trainer.rollout(0)
    # round 1 kept mixed1 only (allright is flat in accuracy), round 2 added mixed2: done
    assert _groups(trainer, batch) == ["mixed1", "mixed2"]
    assert stats["sampling_rounds"] == 2 and len(gen.calls) == 2
    assert stats["flat_groups_in_batch"] == 0
    # mixed1 totals 1.2, .2, .2, .2 -> mean .45, unbiased std .5: advantages 1.5, -.5, -.5, -.5
    torch.testing.assert_close(
        batch.advantages[:4], torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-4, rtol=0
    )


def test_dynamic_sampling_by_total_reward_keeps_a_group_spread_only_by_format():
    rounds = [["allright", "mixed1"], ["mixed2", "allwrong"]]
    trainer, _ = make_trainer(
        rounds, dynamic_sampling=True, dynamic_sampling_filter="reward", max_sampling_rounds=3
    )
    batch, stats = trainer.rollout(0)
    assert _groups(trainer, batch) == ["allright", "mixed1"] and stats["sampling_rounds"] == 1
    # the numbers: totals 1.2, 1.2, 1.2, 1.0 -> advantages .5, .5, .5, -1.5
    torch.testing.assert_close(
        batch.advantages[:4], torch.tensor([0.5, 0.5, 0.5, -1.5]), atol=1e-4, rtol=0
    )


def test_flat_groups_fill_the_batch_when_rounds_run_out_and_are_counted():
    rounds = [["allright", "allwrong"], ["mixed1", "allwrong"]]
    trainer, _ = make_trainer(rounds, dynamic_sampling=True, max_sampling_rounds=2)
    batch, stats = trainer.rollout(0)
    # kept: mixed1; flat in the order sampled: allright, allwrong, allwrong -> allright fills
    assert _groups(trainer, batch) == ["mixed1", "allright"]
    assert stats["flat_groups_in_batch"] == 1 and stats["sampling_rounds"] == 2
    # a filler is flat in accuracy: no advantage, although its totals differ by format
    assert batch.advantages[4:].tolist() == [0.0] * 4
    assert batch.advantages[:4].abs().sum() > 0


def test_without_dynamic_sampling_one_round_and_every_group_kept():
    trainer, gen = make_trainer([["allright", "allwrong"]], dynamic_sampling=False)
    batch, stats = trainer.rollout(0)
    assert _groups(trainer, batch) == ["allright", "allwrong"] and len(gen.calls) == 1
    assert stats["flat_groups_in_batch"] == 0
    assert stats["zero_variance_groups"] == 0.5  # allwrong: every total 0.2


@pytest.mark.parametrize("overlong_filter", [False, True])
def test_overlong_filter_masks_truncated_completions(overlong_filter):
    trainer, _ = make_trainer([["mixed1", "mixed2"]], overlong_filter=overlong_filter)
    batch, stats = trainer.rollout(0)
    lengths = [3, 4, 5, 6]  # completion j has 3 + j tokens
    truncated = [c[2] == "length" for c in GROUPS["mixed1"] + GROUPS["mixed2"]]
    assert sum(truncated) == 2 and stats["truncation_rate"] == 0.25
    for i in range(8):
        n = lengths[i % 4]
        carries = not (overlong_filter and truncated[i])
        assert batch.loss_mask[i, :n].tolist() == [carries] * n, i
        assert not batch.loss_mask[i, n:].any()
