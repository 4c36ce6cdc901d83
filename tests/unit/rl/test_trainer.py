"""GRPOTrainer built from its parts (a tiny model, a fake generator, two rule rewards, a
reference) and run for two steps by the fit loop on CPU, with no run directory and no process
group; the loss of each step checked against a value worked out by hand from the rewards,
the completion lengths and a plain forward pass."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from r1pipe.config import compose
from r1pipe.data.types import Example
from r1pipe.generation.base import Completion
from r1pipe.models import build_char_tokenizer, build_tiny_model
from r1pipe.rl.reference import Reference
from r1pipe.rl.scoring import RuleRewards
from r1pipe.rl.trainer import GRPOTrainer
from r1pipe.training.dist import DistInfo
from r1pipe.training.loop import Callback, FitOutputs, FitPlan, Records, fit

PROMPT = Example("0", "1+2=?", "3")
TEXTS = [
    "<think>1+2=3</think> <answer>3</answer>",  # right, formatted: 1 + 0.5
    "<think>x</think> <answer>4</answer>",  # wrong, formatted: 0.5
    "3",  # no tag: no answer, no format: 0
    "<answer>3</answer>",  # right, no think block: 1
]
REWARDS = [1.5, 0.5, 0.0, 1.0]
KL_COEF, LR = 0.5, 0.05


class FakeGenerator:
    """The same four completions every step; remembers the weight updates it is told of."""

    def __init__(self, tokenizer: Any):
        self.ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
        self.updates = 0

    def generate(self, prompts, params):
        assert params.n == len(TEXTS) and prompts == [PROMPT.question]
        return [
            [Completion(0, t, ids, None, "stop") for t, ids in zip(TEXTS, self.ids, strict=True)]
        ]

    def update_weights(self, model) -> None:
        self.updates += 1


class PlainEngine:
    """The engine contract (summed loss / global normaliser, one optimizer step) in plain
    torch SGD: no DeepSpeed, so no process group."""

    skipped_steps = 0

    def __init__(self, model: torch.nn.Module):
        self.module = model
        self.opt = torch.optim.SGD(model.parameters(), lr=LR)

    def train_step(self, micro_batches, loss_fn, normalizer):
        self.module.train()
        total, stats = 0.0, {}
        for mb in micro_batches:
            loss_sum, mb_stats = loss_fn(self.module, mb)
            (loss_sum / normalizer).backward()
            total += float(loss_sum.detach())
            for k, v in mb_stats.items():
                stats[k] = stats.get(k, 0.0) + v
        self.opt.step()
        self.opt.zero_grad()
        return {"loss": total / normalizer, "grad_norm": 0.0, "lr": LR, **stats}


class Snapshot(Callback):
    """A copy of ``model`` as it is after step ``at``."""

    def __init__(self, model: torch.nn.Module, at: int):
        self.source, self.at, self.model = model, at, None

    def on_step_end(self, done: int, record: dict[str, Any]) -> None:
        if done == self.at:
            self.model = copy.deepcopy(self.source).eval()


def _config(**rl_overrides):
    """The smoke config with one prompt a step, the four completions in one micro-batch,
    mu 1, temperature 1, token-mean loss and two rewards (accuracy, format 0.5)."""
    cfg, _ = compose(["conf=smoke"])
    rl = replace(
        cfg.stage.rl_reasoning,
        prompts_per_step=1,
        group_size=len(TEXTS),
        micro_batch_size=len(TEXTS),
        mu=1,
        temperature=1.0,
        loss_aggregation="token-mean",
        rewards={"accuracy": 1.0, "format": 0.5},
    )
    return cfg, replace(rl, **rl_overrides)


def completion_logprobs_by_hand(model, prompt_ids, completion_ids):
    """log p(token) of each completion token: one plain forward pass per completion."""
    out = []
    for ids in completion_ids:
        seq = torch.tensor([prompt_ids + ids])
        with torch.no_grad():
            logits = model(seq).logits[0].float()
        logp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
        out.append(logp.gather(1, torch.tensor(ids)[:, None])[:, 0])
    return out


def expected_loss(advantages, policy_lp, ref_lp):
    """Token-mean GRPO loss with mu = 1 (ratio 1, nothing clipped) and k3 KL, by hand."""
    num, tokens = 0.0, 0
    for a, lp, rlp in zip(advantages, policy_lp, ref_lp, strict=True):
        d = rlp - lp
        k3 = torch.exp(d) - d - 1
        num += float((-a + KL_COEF * k3).sum())
        tokens += len(lp)
    return num / tokens


def _with_reference(model, generator, rewards, rl, tokenizer) -> GRPOTrainer:
    """A trainer of ``model`` on the one prompt, with a frozen copy as the reference."""
    dist = DistInfo(0, 1, 0, torch.device("cpu"))
    reference = Reference(copy.deepcopy(model).requires_grad_(False).eval(), dist)
    return GRPOTrainer(
        PlainEngine(model),
        generator,
        rewards,
        lambda step, rnd: [PROMPT],
        reference,
        rl,
        dist,
        tokenizer=tokenizer,
        prompt_text=lambda e: e.question,
    )


def test_grpo_trainer_two_steps_from_parts_loss_by_hand(tmp_path):
    cfg, rl = _config(
        kl_coef=KL_COEF,
        ref_update_every=0,
        scale_rewards_std=True,
        dynamic_sampling=False,
        overlong_filter=False,
        overlong_penalty=False,
    )
    task = replace(cfg.task, verifier="exact", answer_format="answer_tag")
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg.model, tokenizer, seed=0)
    start = copy.deepcopy(model)
    dist = DistInfo(0, 1, 0, torch.device("cpu"))
    generator = FakeGenerator(tokenizer)
    trainer = _with_reference(model, generator, RuleRewards(task, rl), rl, tokenizer)
    records, after_first = Records(), Snapshot(model, at=1)
    fit(
        trainer,
        FitPlan(total_steps=2, log_every=1, save_every=0, keep_last=1),
        FitOutputs(checkpoints_dir=tmp_path / "unused", final_dir=None),
        dist,
        callbacks=[records, after_first],
    )
    assert not torch.distributed.is_initialized() and not (tmp_path / "unused").exists()
    assert generator.updates == 2  # the generator heard of both steps' new weights

    # advantages by hand: mean 0.75, unbiased std sqrt(1.25 / 3)
    std = math.sqrt(1.25 / 3)
    advantages = [(r - 0.75) / (std + 1e-6) for r in REWARDS]
    first, second = records.records
    assert first["reward"] == pytest.approx(sum(REWARDS) / 4)
    assert first["reward/accuracy"] == 0.5 and first["reward/format"] == 0.5

    prompt_ids = tokenizer(PROMPT.question, add_special_tokens=False)["input_ids"]
    # step 1: the policy is the reference (KL 0): -sum(A_i * n_i) / sum(n_i)
    lp_start = completion_logprobs_by_hand(start, prompt_ids, generator.ids)
    want_1 = expected_loss(advantages, lp_start, lp_start)
    n = [len(ids) for ids in generator.ids]
    assert want_1 == pytest.approx(-sum(a * k for a, k in zip(advantages, n, strict=True)) / sum(n))
    assert first["loss"] == pytest.approx(want_1, rel=1e-4, abs=1e-6)
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)
    # step 2: the policy after one SGD step, against the start model as the reference
    lp_policy = completion_logprobs_by_hand(after_first.model, prompt_ids, generator.ids)
    want_2 = expected_loss(advantages, lp_policy, lp_start)
    assert second["kl"] > 1e-6
    assert second["loss"] == pytest.approx(want_2, rel=1e-4, abs=1e-6)
    assert second["loss"] != pytest.approx(first["loss"], rel=1e-3)


class LogprobGenerator(FakeGenerator):
    """The four completions with log-probs: the model's own (from ``model``), shifted by
    ``offset`` (a sampler whose weights or kernels differ)."""

    def __init__(self, tokenizer: Any, model: torch.nn.Module, offset: float):
        super().__init__(tokenizer)
        prompt_ids = tokenizer(PROMPT.question, add_special_tokens=False)["input_ids"]
        self.lps = completion_logprobs_by_hand(model, prompt_ids, self.ids)
        self.offset = offset

    def generate(self, prompts, params):
        assert params.return_logprobs  # asked for: the trainer checks the sampler
        groups = super().generate(prompts, params)
        for c, lp in zip(groups[0], self.lps, strict=True):
            c.logprobs = (lp - self.offset).tolist()
        return groups


def _sampler_trainer(offset: float, **rl_overrides):
    cfg, rl = _config(kl_coef=0.0, **rl_overrides)
    task = replace(cfg.task, verifier="exact", answer_format="answer_tag")
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg.model, tokenizer, seed=0)
    trainer = GRPOTrainer(
        PlainEngine(model),
        LogprobGenerator(tokenizer, model, offset),
        RuleRewards(task, rl),
        lambda step, rnd: [PROMPT],
        None,
        rl,
        DistInfo(0, 1, 0, torch.device("cpu")),
        tokenizer=tokenizer,
        prompt_text=lambda e: e.question,
        sampler_holds_weights=True,
    )
    return trainer


def test_sampler_mismatch_is_logged_and_corrected():
    """A sampler 0.01 nats per token off: the mismatch is logged (mean |d| = 0.01, sequence
    log-ratio = 0.01 x its length) and the sequence-masked correction keeps every sequence
    (ratio e^(0.01 n) < 3)."""
    trainer = _sampler_trainer(0.01)
    assert trainer.is_mode == "sequence_mask"  # auto, with a sampler holding its own weights
    record = trainer.train_step(0)
    n = [len(ids) for ids in trainer.generator.ids]
    assert record["logprob_mismatch"] == pytest.approx(0.01, abs=1e-5)
    assert record["logprob_mismatch_seq"] == pytest.approx(0.01 * sum(n) / len(n), rel=1e-3)
    assert record["is_outside_frac"] == 0.0


def test_stale_sampler_stops_the_run():
    """A sampler 0.8 nats per token off (a push that did not take) stops the run with one
    message instead of training on a stale policy; 0 switches the check off."""
    from r1pipe.rl.trainer import StaleSampler

    with pytest.raises(StaleSampler, match="max_logprob_mismatch=0.5"):
        _sampler_trainer(0.8).train_step(0)
    trainer = _sampler_trainer(0.8, max_logprob_mismatch=0.0)
    record = trainer.train_step(0)
    assert record["logprob_mismatch"] == pytest.approx(0.8, abs=1e-4)
    # sequence ratio e^(0.8 n) > 3 for every completion but the 1-token "3": masked out
    n = [len(ids) for ids in trainer.generator.ids]
    masked = sum(k for k in n if math.exp(0.8 * k) > 3)
    assert masked < sum(n) and record["is_outside_frac"] == pytest.approx(masked / sum(n))


@pytest.mark.parametrize(
    "overrides",
    [
        # micro-batches of as many rows as fit in 60 positions (1-2 of the four here)
        {"micro_batch_tokens": "60"},
        # log-probs in one call per micro-batch (the GPU choice) instead of length groups
        {"logprob_length_groups": "false"},
    ],
)
def test_gpu_batching_choices_give_the_same_step(overrides):
    """Token-budget micro-batches and single-call log-probs (issue 15) against today's path
    (one micro-batch of four completions, length groups on CPU): the same loss, KL and
    entropy, and the same weights after two SGD steps (mu 2: the old log-probs matter)."""
    results = []
    for extra in ({}, overrides):
        cfg, rl = _config(kl_coef=KL_COEF, ref_update_every=0, mu=2, **extra)
        task = replace(cfg.task, verifier="exact", answer_format="answer_tag")
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(cfg.model, tokenizer, seed=0)
        trainer = _with_reference(
            model, FakeGenerator(tokenizer), RuleRewards(task, rl), rl, tokenizer
        )
        if "micro_batch_tokens" in extra:
            batch, _ = trainer.rollout(0)
            assert len(batch.bounds(rl.micro_batch_size, trainer.token_budget)) > 1
        else:
            assert (trainer._bucket_overhead is None) == bool(extra)
        record = trainer.train_step(0)
        results.append((record, torch.cat([p.detach().flatten() for p in model.parameters()])))
    (a, wa), (b, wb) = results
    for key in ("loss", "kl", "entropy", "clip_frac"):
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    torch.testing.assert_close(wb, wa, rtol=1e-5, atol=1e-6)
