"""The GRPO trainer, built from its parts: an engine (the policy and its optimizer), a
generator, a reward function, a prompt source, an optional frozen reference.

One step (:meth:`GRPOTrainer.train_step`), in the paper's order:

1. **Sample.** This rank's share of the step's prompts, ``group_size`` completions each.
2. **Score.** The reward function, plus DAPO's soft overlong penalty when configured.
3. **Filter groups.** With ``dynamic_sampling``, groups flat in accuracy (or in total reward)
   carry no signal: they are dropped and more prompts are sampled until the rank's quota is
   full; when ``max_sampling_rounds`` run out, flat groups fill it with zero advantage.
4. **Advantages.** Normalised within each group (``(r - mean) / std``, or mean-only).
5. **Batch.** Prompts left-padded, completions right-padded; truncated completions carry no
   loss with ``overlong_filter``.
6. **Loss.** ``mu`` optimizer steps on the clipped objective (k3 KL to the reference when
   ``kl_coef > 0``), the log-probs of the sampling policy fixed; then the generator receives
   the new weights (:meth:`~r1pipe.generation.base.Generator.update_weights`).

Nothing here reads a run directory or starts a process group: a unit test builds one from a
tiny model, a fake generator and two rewards (tests/unit/rl/test_trainer.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1pipe.config.schema import GRPOConfig
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.generation.base import Completion, Generator, SamplingParams
from r1pipe.rl.grpo import (
    filter_signal,
    group_advantages,
    importance_weights,
    loss_normalizer,
    policy_loss,
    soft_overlong_penalty,
    zero_variance_groups,
)
from r1pipe.rl.prompts import Prompts
from r1pipe.rl.reference import Reference
from r1pipe.rl.scoring import RewardFn, Scores
from r1pipe.training.dist import DistInfo, all_reduce_max, all_reduce_sum
from r1pipe.training.logprobs import BUCKET_OVERHEAD_TOKENS, completion_logprobs, shared_prompts
from r1pipe.training.loop import Engine
from r1pipe.training.order import micro_batch_tokens

# rollout statistics summed over ranks (the others are averaged)
SUMMED_STATS = ("reward_failures", "generated_tokens", "flat_groups_in_batch")

# The R1 paper's "aha moment": the model learns to re-check its work.
REFLECTION_WORDS = re.compile(
    r"\b(wait|verify|verified|check|recheck|re-check|double-check|however|hmm|mistake|"
    r"reconsider|re-evaluate|let me see)\b",
    re.IGNORECASE,
)


@dataclass
class Rollout:
    """One rank's batch of completions, ready for the loss. ``N = prompts x G``."""

    input_ids: torch.Tensor  # [N, P + T] left-padded prompt | right-padded completion
    attention_mask: torch.Tensor  # [N, P + T]
    loss_mask: torch.Tensor  # [N, T] completion tokens that carry loss
    prompt_len: int  # P
    advantages: torch.Tensor  # [N]
    rewards: torch.Tensor  # [N] total reward
    old_logprobs: torch.Tensor | None = None  # [N, T]
    ref_logprobs: torch.Tensor | None = None  # [N, T]
    sampler_logprobs: torch.Tensor | None = None  # [N, T] the sampler's; NaN where none

    def bounds(self, size: int, token_budget: int = 0) -> list[tuple[int, int]]:
        """Row ranges of the micro-batches, in row order (a group's rows stay together
        where they fit, so that they share one prompt pass): ``size`` rows each, or with a
        ``token_budget`` as many rows as fit in it, padded to the longest completion
        among them (``rows x (P + T)`` positions; a row longer than the budget alone)."""
        n = self.input_ids.shape[0]
        if not token_budget:
            return [(s, min(n, s + size)) for s in range(0, n, size)]
        P = self.prompt_len
        lengths = self.attention_mask[:, P:].sum(1).clamp(min=1).tolist()
        out, start, longest = [], 0, 0
        for i, t in enumerate(lengths):
            wider = max(longest, t)
            if i > start and (i - start + 1) * (P + wider) > token_budget:
                out.append((start, i))
                start, wider = i, t
            longest = wider
        return [*out, (start, n)]

    def micro_batches(
        self, bounds: list[tuple[int, int]], count: int = 0, same_passes: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        """The loss's micro-batches, rows ``bounds`` (:meth:`bounds`), trimmed of completion
        padding, then empty ones (one row, no loss) up to ``count``: ranks with fewer
        micro-batches than another run these, so that every rank makes the same passes.

        ``same_passes`` (ZeRO-3, where every forward pass gathers parameters collectively):
        every micro-batch takes the prompt-sharing path (a prompt pass, then the
        completions), each row its own prompt where none share one, so that a micro-batch
        whose rows share no prompt (a filler, a group cut by the budget) makes as many
        passes as one whose rows do."""
        out = []
        P = self.prompt_len
        for s, e in bounds:
            sl = slice(s, e)
            T = int(self.attention_mask[sl, P:].sum(1).max().clamp(min=1))  # trim padding
            mb = {
                "input_ids": self.input_ids[sl, : P + T],
                "attention_mask": self.attention_mask[sl, : P + T],
                "loss_mask": self.loss_mask[sl, :T],
                "advantages": self.advantages[sl],
            }
            if self.old_logprobs is not None:
                mb["old_logprobs"] = self.old_logprobs[sl, :T]
            if self.ref_logprobs is not None:
                mb["ref_logprobs"] = self.ref_logprobs[sl, :T]
            if self.sampler_logprobs is not None:
                mb["sampler_logprobs"] = self.sampler_logprobs[sl, :T]
            # which rows share a prompt, found here on the CPU (on a GPU it would be a sync)
            _add_prompt_runs(mb, P, same_passes)
            out.append(mb)
        empty = {k: v[:1].clone() for k, v in out[0].items() if not k.startswith("prompt_")}
        empty["loss_mask"].zero_()
        empty["advantages"].zero_()
        _add_prompt_runs(empty, P, same_passes)
        return out + [empty] * (count - len(out))


def _add_prompt_runs(mb: dict[str, torch.Tensor], prompt_len: int, always: bool) -> None:
    """Which rows of ``mb`` share a prompt (``prompt_first``, ``prompt_index``), found here
    on the CPU (on a GPU it would be a sync); ``always``: each row its own run where none
    share."""
    runs = shared_prompts(mb["input_ids"], mb["attention_mask"], prompt_len)
    if runs is None and always:
        rows = torch.arange(mb["input_ids"].shape[0])
        runs = (rows, rows.clone())
    if runs is not None:
        mb["prompt_first"], mb["prompt_index"] = runs


def build_batch(
    prompt_ids: list[list[int]], completions: list[Completion], group_size: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Token tensors for prompts (left-padded to P) followed by completions (right-padded)."""
    P = max(len(p) for p in prompt_ids)
    T = max(1, max(len(c.token_ids) for c in completions))
    N = len(completions)
    ids = torch.full((N, P + T), pad_id, dtype=torch.long)
    mask = torch.zeros((N, P + T), dtype=torch.long)
    comp_mask = torch.zeros((N, T), dtype=torch.bool)
    for i, c in enumerate(completions):
        p = prompt_ids[i // group_size]
        ids[i, P - len(p) : P] = torch.tensor(p)
        mask[i, P - len(p) : P] = 1
        n = len(c.token_ids)
        if n:
            ids[i, P : P + n] = torch.tensor(c.token_ids)
            mask[i, P : P + n] = 1
            comp_mask[i, :n] = True
    return ids, mask, P, comp_mask


@dataclass
class Group:
    """One prompt's completions and their total rewards ``[G]``."""

    example: Example
    completions: list[Completion]
    rewards: torch.Tensor


@dataclass
class Sampled:
    """What the sampling rounds of one step gathered on this rank."""

    groups: list[Group]
    """The batch's groups: informative ones first, then flat fillers."""
    flat_in_batch: int
    """Flat groups that filled the quota when the rounds ran out (zero advantage)."""
    rounds: int
    reward_means: dict[str, list[float]]
    failures: dict[str, int]
    zero_variance: int
    """Groups sampled whose total rewards were all equal."""
    sampled_groups: int


class GRPOTrainer:
    """GRPO on one policy; rl-reasoning and rl-all differ only in prompts and rewards.

    Args:
        engine: The policy's training engine (``engine.module`` is the HF model).
        generator: Samples completions; told of new weights after every step.
        rewards: ``(examples, completions) -> Scores``. Means are logged as ``reward/NAME``
            (a name with a ``/`` as it is); ``Scores.accuracy`` is what dynamic sampling
            filters on with ``dynamic_sampling_filter=accuracy``.
        prompts: ``(step, round) -> the step's prompts_per_step examples``.
        reference: The frozen reference of the KL term (None when ``kl_coef == 0``).
        cfg: The GRPO knobs.
        dist: This rank.
        tokenizer: The policy's tokenizer (prompt ids, pad id, export).
        prompt_text: ``example -> prompt text``.
        zero3: The policy is ZeRO-3 partitioned (ranks must run the same forward passes).
        log: One line for the user.
        sampler_holds_weights: The generator samples from its own copy of the weights
            (vLLM), not from ``engine.module``: its log-probs are recorded, the mismatch with
            the trainer's is logged every step (``logprob_mismatch``, ...), corrected per
            ``cfg.importance_sampling`` and checked against ``cfg.max_logprob_mismatch``.
    """

    def __init__(
        self,
        engine: Engine,
        generator: Generator,
        rewards: RewardFn,
        prompts: Prompts,
        reference: Reference | None,
        cfg: GRPOConfig,
        dist: DistInfo,
        *,
        tokenizer: Any,
        prompt_text: Any,
        zero3: bool = False,
        log: Any = None,
        sampler_holds_weights: bool = False,
    ):
        if cfg.kl_coef > 0 and reference is None:
            raise ValueError("kl_coef > 0 needs a reference model")
        if cfg.prompts_per_step % dist.world_size:
            raise UserError(
                f"config error: prompts_per_step={cfg.prompts_per_step} must be a multiple of "
                f"the world size {dist.world_size}"
            )
        self.engine, self.generator, self.rewards = engine, generator, rewards
        self.prompts, self.reference, self.rl, self.dist = prompts, reference, cfg, dist
        self.tokenizer, self.prompt_text, self.zero3 = tokenizer, prompt_text, zero3
        self.log = log or (lambda msg: None)
        self.prompts_per_rank = cfg.prompts_per_step // dist.world_size
        self.grad_accum = -(-self.prompts_per_rank * cfg.group_size // cfg.micro_batch_size)
        self.token_budget = micro_batch_tokens(cfg.micro_batch_tokens, dist.device)
        # length groups make a data-dependent number of forward passes; ZeRO-3 ranks must
        # make the same ones (parameters are gathered collectively), so there: one group.
        # Elsewhere they pay where a call is cheap (CPU), not where it is dear (GPU).
        groups = str(cfg.logprob_length_groups).lower()
        groups_on = dist.device.type == "cpu" if groups == "auto" else groups == "true"
        self._bucket_overhead = BUCKET_OVERHEAD_TOKENS if groups_on and not zero3 else None
        # ZeRO-3: as many output-layer calls on every rank (each gathers its weights): enough
        # chunks for the most completion tokens a micro-batch can hold
        if self.token_budget:  # a row over the budget is a micro-batch of its own
            most = max(self.token_budget, cfg.max_new_tokens)
        else:
            most = cfg.micro_batch_size * cfg.max_new_tokens
        self._min_chunks = -(-most // cfg.logprob_chunk_size) if zero3 else 0
        self.is_mode = cfg.importance_sampling
        if self.is_mode == "auto":
            self.is_mode = "sequence_mask" if sampler_holds_weights else "none"
        self.track_sampler = sampler_holds_weights or self.is_mode != "none"
        self.check_mismatch = sampler_holds_weights and cfg.max_logprob_mismatch > 0

    # ---- one step ------------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, Any]:
        """Rollout and ``mu`` optimizer steps for RL step ``step``; the step's record, with
        rollout statistics averaged over ranks (counts summed)."""
        rl, dist = self.rl, self.dist
        t0 = time.perf_counter()
        if self.reference is not None and rl.ref_update_every and step:
            if step % rl.ref_update_every == 0:
                self.reference.refresh_from(self.engine.module)
        batch, stats = self.rollout(step)
        t1 = time.perf_counter()
        train_stats = self.train_on(batch)
        t_push = time.perf_counter()
        self.generator.update_weights(self.engine.module)
        t2 = time.perf_counter()
        for k in list(stats):
            stats[k] = all_reduce_sum(stats[k], dist.device) / (
                1 if k in SUMMED_STATS else dist.world_size
            )
        return {
            **stats,
            **train_stats,
            "accuracy": stats.get("reward/accuracy"),
            "format_rate": stats.get("reward/format"),
            "time_train": t_push - t1,
            "time_push": t2 - t_push,
            "time_step": t2 - t0,
            "tokens": stats["generated_tokens"] + train_stats["trained_tokens"],
        }

    def save_extras(self, path: Path, done: int) -> None:
        """The reference, once a refresh made it differ from the start model."""
        rl = self.rl
        if self.reference is not None and rl.ref_update_every and done > rl.ref_update_every:
            self.reference.save(path)

    def load_extras(self, path: Path) -> None:
        if self.reference is not None and self.reference.restore(path):
            self.log(f"reference model restored from {path.name}")

    # ---- rollout: sample, score, filter groups, advantages, batch -----------------------

    def sampling_params(self) -> SamplingParams:
        rl = self.rl
        return SamplingParams(
            n=rl.group_size,
            temperature=rl.temperature,
            top_p=rl.top_p,
            top_k=rl.top_k,
            max_new_tokens=rl.max_new_tokens,
            return_logprobs=self.track_sampler,
        )

    def sample(self, examples: list[Example]) -> tuple[list[Completion], Scores]:
        """``group_size`` completions per example and their scores (overlong penalty added)."""
        rl = self.rl
        groups = self.generator.generate(
            [self.prompt_text(e) for e in examples], self.sampling_params()
        )
        completions = [c for g in groups for c in g]
        t0 = time.perf_counter()
        scores = self.rewards(examples, completions)
        if rl.overlong_penalty:
            scores.total = scores.total + torch.tensor(
                [
                    soft_overlong_penalty(
                        len(c.token_ids), rl.max_new_tokens, rl.overlong_cache_len
                    )
                    for c in completions
                ]
            )
        self._reward_time += time.perf_counter() - t0
        return completions, scores

    def sample_groups(self, step: int) -> Sampled:
        """Sampling rounds until the rank's quota of informative groups is full (one round
        without dynamic sampling). Flat groups are kept aside to fill the quota when the
        rounds run out: every rank must make the same number of micro-steps."""
        rl, G, quota = self.rl, self.rl.group_size, self.prompts_per_rank
        kept: list[Group] = []
        flat_groups: list[Group] = []
        means: dict[str, list[float]] = {}
        failures: dict[str, int] = {}
        zero_var = total_groups = 0
        rounds = rl.max_sampling_rounds if rl.dynamic_sampling else 1
        for rnd in range(rounds):
            rank = self.dist.rank
            examples = self.prompts(step, rnd)[rank * quota : (rank + 1) * quota]
            completions, scores = self.sample(examples)
            rewards = scores.total
            for k, v in scores.means.items():
                means.setdefault(k, []).append(v)
            for k, v in scores.failures.items():
                failures[k] = failures.get(k, 0) + v
            zero_var += int(zero_variance_groups(rewards, G).sum())
            total_groups += len(examples)
            # DAPO drops groups that are all right or all wrong: by accuracy, not the total,
            # which format or length terms can spread while the answers carry no signal
            signal = filter_signal(rewards, scores.accuracy, rl.dynamic_sampling_filter)
            flat = zero_variance_groups(signal, G)
            for g, ex in enumerate(examples):
                group = Group(ex, completions[g * G : (g + 1) * G], rewards[g * G : (g + 1) * G])
                (flat_groups if rl.dynamic_sampling and flat[g] else kept).append(group)
            if len(kept) >= quota:
                break
        chosen = (kept + flat_groups)[:quota]
        return Sampled(
            groups=chosen,
            flat_in_batch=max(0, len(chosen) - len(kept)),
            rounds=rnd + 1,
            reward_means=means,
            failures=failures,
            zero_variance=zero_var,
            sampled_groups=total_groups,
        )

    def advantages(self, sampled: Sampled) -> tuple[torch.Tensor, torch.Tensor]:
        """(rewards ``[N]``, group-relative advantages ``[N]``); flat fillers get none."""
        rl = self.rl
        rewards = torch.cat([g.rewards for g in sampled.groups])
        advantages = group_advantages(rewards, rl.group_size, scale_std=rl.scale_rewards_std)
        if sampled.flat_in_batch:  # fillers carry no signal in the filter's terms
            advantages[-sampled.flat_in_batch * rl.group_size :] = 0.0
        return rewards, advantages

    def batch(self, sampled: Sampled, rewards: torch.Tensor, advantages: torch.Tensor) -> Rollout:
        """The token tensors of the chosen groups, with the loss mask."""
        completions = [c for g in sampled.groups for c in g.completions]
        prompt_ids = [
            self.tokenizer(self.prompt_text(g.example), add_special_tokens=False)["input_ids"]
            for g in sampled.groups
        ]
        ids, mask, P, comp_mask = build_batch(
            prompt_ids, completions, self.rl.group_size, self.tokenizer.pad_token_id
        )
        loss_mask = comp_mask.clone()
        if self.rl.overlong_filter:
            truncated = torch.tensor([c.finish_reason == "length" for c in completions])
            loss_mask[truncated] = False
        batch = Rollout(ids, mask, loss_mask, P, advantages, rewards)
        if self.track_sampler:
            batch.sampler_logprobs = sampler_logprobs(completions, comp_mask.shape[1])
        return batch

    def rollout(self, step: int) -> tuple[Rollout, dict[str, Any]]:
        """Sample, score, filter groups, compute advantages and build this rank's batch."""
        self._reward_time = 0.0
        t0 = time.perf_counter()
        sampled = self.sample_groups(step)
        gen_time = time.perf_counter() - t0 - self._reward_time
        rewards, advantages = self.advantages(sampled)
        batch = self.batch(sampled, rewards, advantages)
        stats = self.rollout_stats(sampled, rewards)
        stats.update(time_generate=gen_time, time_reward=self._reward_time)
        return batch, stats

    @staticmethod
    def rollout_stats(sampled: Sampled, rewards: torch.Tensor) -> dict[str, Any]:
        completions = [c for g in sampled.groups for c in g.completions]
        lengths = torch.tensor([len(c.token_ids) for c in completions], dtype=torch.float32)
        truncated = torch.tensor([c.finish_reason == "length" for c in completions])
        reflections = [len(REFLECTION_WORDS.findall(c.text)) for c in completions]
        return {
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            **{
                (k if "/" in k else f"reward/{k}"): sum(v) / len(v)
                for k, v in sampled.reward_means.items()
            },
            "response_length_mean": float(lengths.mean()),
            "response_length_max": float(lengths.max()),
            "truncation_rate": float(truncated.float().mean()),
            "zero_variance_groups": sampled.zero_variance / max(1, sampled.sampled_groups),
            "flat_groups_in_batch": sampled.flat_in_batch,
            "reflection_rate": sum(r > 0 for r in reflections) / len(reflections),
            "reflection_words_per_response": sum(reflections) / len(reflections),
            "reward_failures": sum(sampled.failures.values()),
            "sampling_rounds": sampled.rounds,
            "generated_tokens": float(lengths.sum()),
        }

    # ---- loss ----------------------------------------------------------------------------

    @torch.no_grad()
    def _logprobs_no_grad(
        self, model: torch.nn.Module, mbs: list[dict[str, torch.Tensor]], prompt_len: int
    ) -> list[torch.Tensor]:
        out = []
        dev = self.dist.device
        for mb in mbs:
            runs = _prompt_runs(mb, dev)
            lp, _ = completion_logprobs(
                model,
                mb["input_ids"].to(dev),
                mb["attention_mask"].to(dev),
                prompt_len,
                temperature=self.rl.temperature,
                chunk_size=self.rl.logprob_chunk_size,
                bucket_overhead=self._bucket_overhead,
                share_prompts=runs is not None,
                prompt_runs=runs,
                min_chunks=self._min_chunks,
            )
            out.append(lp.float())  # stays on the device: no copy back, no sync
        return out

    def train_on(self, batch: Rollout) -> dict[str, float]:
        """``mu`` optimizer steps on one rollout batch; returns averaged loss statistics."""
        rl, dist = self.rl, self.dist
        bounds = batch.bounds(rl.micro_batch_size, self.token_budget)
        count = 0
        if self.token_budget:  # the most micro-batches any rank has
            count = all_reduce_max(len(bounds), dist.device)
        mbs = batch.micro_batches(bounds, count, self.zero3)
        P = batch.prompt_len
        module = self.engine.module
        if rl.mu > 1:  # the ratio needs the log-probs of the policy that sampled
            module.eval()
            for mb, lp in zip(mbs, self._logprobs_no_grad(module, mbs, P), strict=True):
                mb["old_logprobs"] = lp
        if self.reference is not None:
            ref = self.reference.model
            for mb, lp in zip(mbs, self._logprobs_no_grad(ref, mbs, P), strict=True):
                mb["ref_logprobs"] = lp
        n_seq = all_reduce_sum(batch.input_ids.shape[0], dist.device)
        n_tok = all_reduce_sum(int(batch.loss_mask.sum()), dist.device)
        normalizer = loss_normalizer(rl.loss_aggregation, int(n_seq), int(n_tok))

        def loss_fn(
            model: torch.nn.Module, mb: dict[str, torch.Tensor]
        ) -> tuple[torch.Tensor, dict[str, float]]:
            runs = _prompt_runs(mb, mb["input_ids"].device)
            logprobs, entropy = completion_logprobs(
                model,
                mb["input_ids"],
                mb["attention_mask"],
                P,
                temperature=rl.temperature,
                chunk_size=rl.logprob_chunk_size,
                bucket_overhead=self._bucket_overhead,
                share_prompts=runs is not None,
                prompt_runs=runs,
                min_chunks=self._min_chunks,
            )
            old = mb.get("old_logprobs", logprobs.detach())
            sampler = None
            # the sampling policy as the trainer sees it, against the sampler
            if "sampler_logprobs" in mb:
                sampler = importance_weights(
                    old.float(),
                    mb["sampler_logprobs"],
                    mb["loss_mask"],
                    "token_truncate" if self.is_mode == "none" else self.is_mode,
                    clip_min=rl.is_clip_min,
                    clip_max=rl.is_clip_max,
                )
            out = policy_loss(
                logprobs.float(),
                old.float(),
                mb["advantages"],
                mb["loss_mask"],
                clip_eps_low=rl.clip_eps_low,
                clip_eps_high=rl.clip_eps_high,
                ref_logprobs=mb.get("ref_logprobs"),
                kl_coef=rl.kl_coef,
                loss_aggregation=rl.loss_aggregation,
                max_completion_len=rl.max_new_tokens,
                is_weights=None if sampler is None or self.is_mode == "none" else sampler.weights,
            )
            m = mb["loss_mask"].float()
            # tensors, summed on the device by the engine and read once per step
            stats = {
                "tokens": out.num_tokens,
                "kl_sum": out.kl_sum,
                "clip_low": out.clip_low_frac,
                "clip_high": out.clip_high_frac,
                "entropy_sum": (entropy * m).sum(),
            }
            if sampler is not None:
                stats.update(
                    mismatch_abs=sampler.abs_diff_sum,
                    mismatch_seq=sampler.seq_log_ratio_sum,
                    is_outside=sampler.outside,
                )
            return out.loss_sum, {k: v.detach() for k, v in stats.items()}

        totals: dict[str, float] = {}
        for _ in range(rl.mu):
            out = self.engine.train_step(mbs, loss_fn, normalizer)
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + v
        tok = all_reduce_sum(totals.pop("tokens", 0.0), dist.device)
        sums = {
            k: all_reduce_sum(totals.pop(k, 0.0), dist.device)
            for k in ("kl_sum", "clip_low", "clip_high", "entropy_sum")
        }
        mu = rl.mu
        sampler_stats = {}
        if batch.sampler_logprobs is not None:
            sampler_stats = self._sampler_stats(totals, tok, n_seq * mu)
        return {
            **sampler_stats,
            "loss": totals["loss"] / mu,
            "grad_norm": totals["grad_norm"] / mu,
            "lr": totals["lr"] / mu,
            "kl": sums["kl_sum"] / max(tok, 1),
            "entropy": sums["entropy_sum"] / max(tok, 1),
            "clip_frac_low": sums["clip_low"] / max(tok, 1),
            "clip_frac_high": sums["clip_high"] / max(tok, 1),
            "clip_frac": (sums["clip_low"] + sums["clip_high"]) / max(tok, 1),
            "trained_tokens": tok / mu,
        }

    def _sampler_stats(self, totals: dict[str, float], tokens: float, seqs: float) -> dict:
        """The sampler/trainer mismatch of this step; raises when it says the sampler is
        stale."""
        sums = {
            k: all_reduce_sum(totals.pop(k, 0.0), self.dist.device)
            for k in ("mismatch_abs", "mismatch_seq", "is_outside")
        }
        stats = {
            "logprob_mismatch": sums["mismatch_abs"] / max(tokens, 1),
            "logprob_mismatch_seq": sums["mismatch_seq"] / max(seqs, 1),
            "is_outside_frac": sums["is_outside"] / max(tokens, 1),
        }
        limit = self.rl.max_logprob_mismatch
        if self.check_mismatch and stats["logprob_mismatch"] > limit:
            mismatch = stats["logprob_mismatch"]
            raise StaleSampler(
                f"the sampler's log-probs differ from the trainer's by {mismatch:.3g}"
                f" per token on average (limit max_logprob_mismatch={limit}): the weights it "
                "samples with are not the trainer's (a weight push that did not take?); "
                "stopping rather than training on a stale policy"
            )
        return stats


def _prompt_runs(
    mb: dict[str, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The micro-batch's rows that share a prompt (found on the CPU), on ``device``."""
    if "prompt_first" not in mb:
        return None
    return mb["prompt_first"].to(device), mb["prompt_index"].to(device)


class StaleSampler(UserError):
    """The generator samples from weights that are not the trainer's."""


def sampler_logprobs(completions: list[Completion], width: int) -> torch.Tensor:
    """``[N, width]`` the sampler's log-prob of each completion token; NaN where it gave none
    (padding, or a back end without log-probs)."""
    out = torch.full((len(completions), width), float("nan"))
    for i, c in enumerate(completions):
        if c.logprobs:
            out[i, : len(c.logprobs)] = torch.tensor(c.logprobs, dtype=torch.float32)
    return out
