"""Stage 2, reasoning RL: GRPO with rule-based rewards.

Each step, in order:

1. **Rollout.** Every rank takes its share of ``prompts_per_step`` prompts (a seeded order,
   a pure function of the step) and samples ``group_size`` completions per prompt with the
   current policy. With ``dynamic_sampling``, groups whose accuracy is all 0 or all 1 are
   dropped and more prompts are sampled until the rank's quota is full (DAPO;
   ``dynamic_sampling_filter=reward`` filters on equal total rewards instead). When
   ``max_sampling_rounds`` run out, flat groups fill the batch (``flat_groups_in_batch``).
2. **Reward.** Rule rewards (accuracy, ``<think>`` format, language consistency, optional
   length rewards and the soft overlong penalty), weighted per config; a reward that raises
   or times out gives 0 for that sample and is counted.
3. **Advantage.** Normalised within each group (``(r - mean) / std``, or mean-only).
4. **Loss.** The clipped GRPO objective with separate low/high epsilon, k3 KL to a frozen
   reference when ``kl_coef > 0`` (reset every ``ref_update_every`` steps, as the paper does),
   aggregated per ``loss_aggregation``; ``mu`` optimizer steps per batch with the old log-probs
   fixed. Log-probs come from :func:`r1pipe.training.logprobs.completion_logprobs` (chunked,
   never the full fp32 logits).

Starts from the ``cold-start`` checkpoint in the manifest, or from ``model.path`` (R1-Zero
mode: ``conf=r1_zero`` uses the paper's R1-Zero template). Periodic checkpoints resume exactly
(optimizer, scheduler, RNG, reference model; the data order is a function of the step).

Departures from the paper: the paper's reward for code runs tests in a sandbox (not built
yet); the tiny default uses a small group and short completions to fit 2 CPU cores.

Launch: ``r1pipe stage rl-reasoning [OVERRIDES]``;
``torchrun --nproc_per_node 2 -m r1pipe stage rl-reasoning deepspeed=zero2``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from r1pipe.config.schema import GRPOConfig, R1Config, TaskConfig
from r1pipe.data.tasks import load_task
from r1pipe.data.templates import build_prompt
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.generation.base import Completion, SamplingParams
from r1pipe.generation.build import build_generator
from r1pipe.models import load_model, load_tokenizer
from r1pipe.rewards.combine import compute_rewards
from r1pipe.rl.grpo import (
    filter_signal,
    group_advantages,
    loss_normalizer,
    policy_loss,
    soft_overlong_penalty,
    zero_variance_groups,
)
from r1pipe.stages import stop
from r1pipe.stages.cold_start import sample_order
from r1pipe.stages.common import (
    StageContext,
    begin_stage,
    evaluate_sharded,
    finish_stage,
    fit_prompts,
    heldout_eval,
    interrupted,
    maybe_fault,
    resume_engine,
    set_seed,
    stage_guard,
    train_source,
)
from r1pipe.training.dist import all_reduce_sum
from r1pipe.training.engine import TrainEngine
from r1pipe.training.logprobs import BUCKET_OVERHEAD_TOKENS, completion_logprobs

NAME, KEY = "rl-reasoning", "rl_reasoning"
REFERENCE_FILE = "reference.pt"
# rollout statistics summed over ranks (the others are averaged)
SUMMED_STATS = ("reward_failures", "generated_tokens", "flat_groups_in_batch")
RewardFn = Callable[[list[Example], list[Completion]], "Scores"]

# The R1 paper's "aha moment": the model learns to re-check its work.
REFLECTION_WORDS = re.compile(
    r"\b(wait|verify|verified|check|recheck|re-check|double-check|however|hmm|mistake|"
    r"reconsider|re-evaluate|let me see)\b",
    re.IGNORECASE,
)


def run(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    """Run the rl-reasoning stage; return its final metrics (held-out eval included)."""
    ctx = begin_stage(NAME, KEY, cfg, dcfg)
    if ctx.skipped is not None:
        return dict(ctx.skipped.get("metrics", {}))
    with stage_guard(ctx):
        train, held_out = load_task(cfg.task)
        metrics = run_grpo(ctx, cfg.stage.rl_reasoning, train, held_out)
        metrics.update(heldout_eval(ctx, ctx.final_dir, held_out))
        finish_stage(ctx, metrics)
    return metrics


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

    def micro_batches(self, size: int) -> list[dict[str, torch.Tensor]]:
        out = []
        P = self.prompt_len
        for s in range(0, self.input_ids.shape[0], size):
            sl = slice(s, s + size)
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
            out.append(mb)
        return out


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
class Scores:
    """The rewards of one rollout's completions (``N = prompts x G``)."""

    total: torch.Tensor  # [N] weighted reward
    means: dict[str, float]  # each reward's mean, logged as reward/NAME (or NAME with a "/")
    failures: dict[str, int]  # reward name -> samples on which it raised or timed out
    accuracy: torch.Tensor | None = None  # [N] accuracy; NaN where a prompt has none


def rule_rewards(
    task: TaskConfig, rl: GRPOConfig, examples: list[Example], completions: list[Completion]
) -> Scores:
    """The rule rewards weighted by ``rl.rewards``: completion ``i`` answers
    ``examples[i // group_size]``."""
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


class GRPOTrainer:
    """Rollout, reward, advantage and loss for one policy; used by rl-reasoning and rl-all.

    Args:
        ctx: The stage context.
        rl: The GRPO knobs.
        reward_fn: ``(examples, completions) -> Scores``; the default scores with the rule
            rewards of ``ctx.cfg.task``. Means are logged as ``reward/NAME``; a name with a
            ``/`` (rl-all's ``general/helpfulness``) as is. ``Scores.accuracy`` is what
            dynamic sampling filters on (``dynamic_sampling_filter=accuracy``).
        prompt_batch: ``(step, sampling_round) -> the step's prompts_per_step examples``
            (rank r takes the r-th contiguous share); default: a seeded order over ``train``.
        prompt_text: ``(example, tokenizer) -> prompt text``; default: the task's template.
    """

    def __init__(
        self,
        ctx: StageContext,
        rl: GRPOConfig,
        reward_fn: RewardFn | None = None,
        *,
        prompt_batch: Callable[[int, int], list[Example]] | None = None,
        prompt_text: Callable[[Example, Any], str] | None = None,
    ):
        self.ctx, self.rl, self.cfg, self.dist = ctx, rl, ctx.cfg, ctx.dist
        self.reward_fn = reward_fn or self.rule_rewards
        self.prompt_batch, self._prompt_text = prompt_batch, prompt_text
        set_seed(self.cfg.run.seed + 7919 * self.dist.rank)  # ranks sample differently
        self.tokenizer = load_tokenizer(ctx.start_model, self.cfg.model.trust_remote_code)
        world = self.dist.world_size
        if rl.prompts_per_step % world:
            raise UserError(
                f"config error: stage.{ctx.key}.prompts_per_step={rl.prompts_per_step} must be a "
                f"multiple of the world size {world}"
            )
        self.prompts_per_rank = rl.prompts_per_step // world
        n_rank = self.prompts_per_rank * rl.group_size
        self.grad_accum = -(-n_rank // rl.micro_batch_size)
        model = load_model(ctx.start_model, self.cfg.model, dtype=torch.float32)
        self.engine = TrainEngine(
            model,
            ds_cfg=self.cfg.deepspeed,
            dist=self.dist,
            lr=rl.lr,
            weight_decay=rl.weight_decay,
            betas=(rl.adam_beta1, rl.adam_beta2),
            eps=rl.adam_eps,
            # the schedule counts optimizer steps: mu per RL step, warm-up included
            total_steps=rl.max_steps * rl.mu,
            warmup_steps=int(rl.warmup_ratio * rl.max_steps * rl.mu),
            lr_scheduler=rl.lr_scheduler,
            min_lr_ratio=rl.min_lr_ratio,
            micro_batch_size=min(rl.micro_batch_size, n_rank),
            grad_accum=self.grad_accum,
            max_grad_norm=rl.max_grad_norm,
            gradient_checkpointing=self.cfg.model.gradient_checkpointing,
            max_nonfinite_steps=self.cfg.run.max_nonfinite_steps,
        )
        self.zero3 = self.cfg.deepspeed.zero_stage == 3
        # length groups make a data-dependent number of forward passes; ZeRO-3 ranks must
        # make the same ones (parameters are gathered collectively), so there: one group
        self._bucket_overhead = None if self.zero3 else BUCKET_OVERHEAD_TOKENS
        self.generator = build_generator(
            self.engine.module, self.tokenizer, self.cfg.generation, synced_gpus=self.zero3
        )
        self.min_new_tokens = 0  # benchmarks force full-length completions with it
        self.ref: torch.nn.Module | None = None
        if rl.kl_coef > 0:
            self.ref = self._load_reference()

    # ---- reference model ---------------------------------------------------------------

    def _load_reference(self) -> torch.nn.Module:
        ref = load_model(self.ctx.start_model, self.cfg.model, dtype=torch.float32)
        ref.requires_grad_(False)
        if self.zero3:
            import deepspeed

            ds = {
                "train_micro_batch_size_per_gpu": 1,
                "zero_optimization": {"stage": 3},
                "bf16": {"enabled": self.engine.bf16},
            }
            ref = deepspeed.initialize(model=ref, config=ds)[0].module
        else:
            ref.to(self.dist.device, dtype=torch.bfloat16 if self.engine.bf16 else torch.float32)
        return ref.eval()

    def refresh_reference(self) -> None:
        """Copy the current policy into the reference (the paper resets it periodically)."""
        assert self.ref is not None
        policy = self.engine.module
        if self.zero3:
            import deepspeed

            with (
                deepspeed.zero.GatheredParameters(list(policy.parameters())),
                deepspeed.zero.GatheredParameters(list(self.ref.parameters()), modifier_rank=0),
            ):
                if self.dist.is_main:
                    for pr, pp in zip(self.ref.parameters(), policy.parameters(), strict=True):
                        pr.data.copy_(pp.data)
        else:
            self.ref.load_state_dict(policy.state_dict())

    def save_reference(self, path: Path) -> None:
        """Write the reference's full weights to ``path/reference.pt`` (rank 0). Collective
        under ZeRO-3, where each rank holds a shard: every rank must call it."""
        import deepspeed

        assert self.ref is not None
        params = dict(self.ref.named_parameters())
        with deepspeed.zero.GatheredParameters(list(params.values()), enabled=self.zero3):
            if self.dist.is_main:
                path.mkdir(parents=True, exist_ok=True)
                full = {k: p.detach().cpu().clone() for k, p in params.items()}
                torch.save(full, path / REFERENCE_FILE)

    def load_reference(self, path: Path) -> bool:
        """Restore the reference from ``path/reference.pt`` if it is there (collective under
        ZeRO-3: rank 0 reads, the shards are scattered). Returns whether it was restored."""
        import deepspeed

        assert self.ref is not None
        file = path / REFERENCE_FILE
        if not file.exists():  # written only once a refresh made it differ from the start
            return False
        params = dict(self.ref.named_parameters())
        with deepspeed.zero.GatheredParameters(
            list(params.values()), modifier_rank=0, enabled=self.zero3
        ):
            if self.dist.is_main or not self.zero3:
                saved = torch.load(file, map_location="cpu", weights_only=True)
                missing = sorted(set(params) - set(saved))
                if missing:
                    raise UserError(f"{file}: no weights for {missing[:3]} (not this model's)")
                for k, p in params.items():
                    p.data.copy_(saved[k].to(p.device, p.dtype))
        return True

    # ---- rollout and reward ------------------------------------------------------------

    def rule_rewards(self, examples: list[Example], completions: list[Completion]) -> Scores:
        return rule_rewards(self.cfg.task, self.rl, examples, completions)

    def prompt_text(self, example: Example) -> str:
        if self._prompt_text is not None:
            return self._prompt_text(example, self.tokenizer)
        return build_prompt(example.question, self.cfg.task, self.tokenizer)

    def sample(self, examples: list[Example]) -> tuple[list[Completion], Scores]:
        """``group_size`` completions per example and their scores (overlong penalty added)."""
        rl = self.rl
        prompts = [self.prompt_text(e) for e in examples]
        params = SamplingParams(
            n=rl.group_size,
            temperature=rl.temperature,
            top_p=rl.top_p,
            top_k=rl.top_k,
            max_new_tokens=rl.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
        )
        groups = self.generator.generate(prompts, params)
        completions = [c for g in groups for c in g]
        t0 = time.perf_counter()
        scores = self.reward_fn(examples, completions)
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

    def rollout(self, step: int, train: list[Example]) -> tuple[Rollout, dict[str, Any]]:
        """Sample, score and build this rank's batch for ``step``."""
        rl, dist = self.rl, self.dist
        self._reward_time = 0.0
        t0 = time.perf_counter()
        # (example, completions, rewards) per group: informative ones, and flat ones (all
        # rewards equal, zero advantage) used only to fill the quota when rounds run out:
        # every rank must make the same number of micro-steps.
        kept: list[tuple[Example, list[Completion], torch.Tensor]] = []
        flat_groups: list[tuple[Example, list[Completion], torch.Tensor]] = []
        reward_means: dict[str, list[float]] = {}
        failures: dict[str, int] = {}
        zero_var = total_groups = 0
        quota = self.prompts_per_rank
        rounds = rl.max_sampling_rounds if rl.dynamic_sampling else 1
        for rnd in range(rounds):
            if self.prompt_batch is not None:
                examples = self.prompt_batch(step, rnd)[dist.rank * quota : (dist.rank + 1) * quota]
            else:
                order = sample_order(
                    step, rl.prompts_per_step, len(train), self.cfg.run.seed + 1_000_003 * rnd
                )
                mine = order[dist.rank * quota : (dist.rank + 1) * quota]
                examples = [train[i] for i in mine]
            completions, scores = self.sample(examples)
            rewards = scores.total
            for k, v in scores.means.items():
                reward_means.setdefault(k, []).append(v)
            for k, v in scores.failures.items():
                failures[k] = failures.get(k, 0) + v
            zero_var += int(zero_variance_groups(rewards, rl.group_size).sum())
            total_groups += len(examples)
            # DAPO drops groups that are all right or all wrong: by accuracy, not the total,
            # which format or length terms can spread while the answers carry no signal
            signal = filter_signal(rewards, scores.accuracy, rl.dynamic_sampling_filter)
            flat = zero_variance_groups(signal, rl.group_size)
            G = rl.group_size
            for g, ex in enumerate(examples):
                group = (ex, completions[g * G : (g + 1) * G], rewards[g * G : (g + 1) * G])
                (flat_groups if rl.dynamic_sampling and flat[g] else kept).append(group)
            if len(kept) >= quota:
                break
        chosen = (kept + flat_groups)[:quota]
        flat_in_batch = max(0, len(chosen) - len(kept))  # rounds ran out: flat groups filled it
        kept_ex = [ex for ex, _, _ in chosen]
        kept_comp = [c for _, comps, _ in chosen for c in comps]
        rewards = torch.cat([r for _, _, r in chosen])
        gen_time = time.perf_counter() - t0 - self._reward_time

        advantages = group_advantages(rewards, rl.group_size, scale_std=rl.scale_rewards_std)
        if flat_in_batch:  # fillers carry no signal in the filter's terms: no advantage
            advantages[-flat_in_batch * rl.group_size :] = 0.0
        prompt_ids = [
            self.tokenizer(self.prompt_text(e), add_special_tokens=False)["input_ids"]
            for e in kept_ex
        ]
        ids, mask, P, comp_mask = build_batch(
            prompt_ids, kept_comp, rl.group_size, self.tokenizer.pad_token_id
        )
        truncated = torch.tensor([c.finish_reason == "length" for c in kept_comp])
        loss_mask = comp_mask.clone()
        if rl.overlong_filter:
            loss_mask[truncated] = False
        batch = Rollout(ids, mask, loss_mask, P, advantages, rewards)
        lengths = torch.tensor([len(c.token_ids) for c in kept_comp], dtype=torch.float32)
        reflections = [len(REFLECTION_WORDS.findall(c.text)) for c in kept_comp]
        stats = {
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            **{
                (k if "/" in k else f"reward/{k}"): sum(v) / len(v) for k, v in reward_means.items()
            },
            "response_length_mean": float(lengths.mean()),
            "response_length_max": float(lengths.max()),
            "truncation_rate": float(truncated.float().mean()),
            "zero_variance_groups": zero_var / max(1, total_groups),
            "flat_groups_in_batch": flat_in_batch,
            "reflection_rate": sum(r > 0 for r in reflections) / len(reflections),
            "reflection_words_per_response": sum(reflections) / len(reflections),
            "reward_failures": sum(failures.values()),
            "sampling_rounds": rnd + 1,
            "time_generate": gen_time,
            "time_reward": self._reward_time,
            "generated_tokens": float(lengths.sum()),
        }
        return batch, stats

    # ---- loss --------------------------------------------------------------------------

    @torch.no_grad()
    def _logprobs_no_grad(
        self, model: torch.nn.Module, mbs: list[dict[str, torch.Tensor]], prompt_len: int
    ) -> list[torch.Tensor]:
        out = []
        for mb in mbs:
            lp, _ = completion_logprobs(
                model,
                mb["input_ids"].to(self.dist.device),
                mb["attention_mask"].to(self.dist.device),
                prompt_len,
                temperature=self.rl.temperature,
                chunk_size=self.rl.logprob_chunk_size,
                bucket_overhead=self._bucket_overhead,
            )
            out.append(lp.float().cpu())
        return out

    def train_on(self, batch: Rollout) -> dict[str, float]:
        """``mu`` optimizer steps on one rollout batch; returns averaged loss statistics."""
        rl, dist = self.rl, self.dist
        mbs = batch.micro_batches(rl.micro_batch_size)
        P = batch.prompt_len
        module = self.engine.module
        if rl.mu > 1:  # the ratio needs the log-probs of the policy that sampled
            module.eval()
            for mb, lp in zip(mbs, self._logprobs_no_grad(module, mbs, P), strict=True):
                mb["old_logprobs"] = lp
        if self.ref is not None:
            for mb, lp in zip(mbs, self._logprobs_no_grad(self.ref, mbs, P), strict=True):
                mb["ref_logprobs"] = lp
        n_seq = all_reduce_sum(batch.input_ids.shape[0], dist.device)
        n_tok = all_reduce_sum(int(batch.loss_mask.sum()), dist.device)
        normalizer = loss_normalizer(rl.loss_aggregation, int(n_seq), int(n_tok))

        def loss_fn(
            model: torch.nn.Module, mb: dict[str, torch.Tensor]
        ) -> tuple[torch.Tensor, dict[str, float]]:
            logprobs, entropy = completion_logprobs(
                model,
                mb["input_ids"],
                mb["attention_mask"],
                P,
                temperature=rl.temperature,
                chunk_size=rl.logprob_chunk_size,
                bucket_overhead=self._bucket_overhead,
            )
            old = mb.get("old_logprobs", logprobs.detach())
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
            )
            m = mb["loss_mask"].float()
            return out.loss_sum, {
                "tokens": float(out.num_tokens),
                "kl_sum": float(out.kl_sum),
                "clip_low": float(out.clip_low_frac),
                "clip_high": float(out.clip_high_frac),
                "entropy_sum": float((entropy * m).sum()),
            }

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
        return {
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


def run_grpo(
    ctx: StageContext,
    rl: GRPOConfig,
    train: list[Example],
    held_out: list[Example],
    reward_fn: RewardFn | None = None,
    *,
    prompt_batch: Callable[[int, int], list[Example]] | None = None,
    prompt_text: Callable[[Example, Any], str] | None = None,
) -> dict[str, Any]:
    """The GRPO loop: rollout, reward, advantage, loss; checkpoints; final HF export.
    ``reward_fn``, ``prompt_batch`` and ``prompt_text`` as in :class:`GRPOTrainer`."""
    dist = ctx.dist
    trainer = GRPOTrainer(ctx, rl, reward_fn, prompt_batch=prompt_batch, prompt_text=prompt_text)
    engine = trainer.engine
    if prompt_batch is None:  # a mix (rl-all) fits its sources itself
        train = fit_prompts(
            ctx,
            train,
            trainer.prompt_text,
            trainer.tokenizer,
            reserve=rl.max_new_tokens,
            where=train_source(ctx.cfg),
        )

    def restore_reference(path: Path) -> None:
        if trainer.ref is not None and trainer.load_reference(path):
            ctx.log(f"reference model restored from {ctx.run_dir.rel(path)}")

    start_step = resume_engine(ctx, engine, restore_reference)
    log = ctx.metrics_logger(start_step)
    ctx.log(
        f"GRPO: {rl.max_steps} steps x {rl.prompts_per_step} prompts x G={rl.group_size}, "
        f"{trainer.grad_accum} micro-batches/rank, mu={rl.mu}, kl_coef={rl.kl_coef}, "
        f"loss {rl.loss_aggregation}, ZeRO-{ctx.cfg.deepspeed.zero_stage}"
    )

    def save(done: int) -> None:
        if trainer.ref is not None and rl.ref_update_every and done > rl.ref_update_every:
            # a refreshed reference is not the start model; saved before the engine's save,
            # which marks the checkpoint COMPLETE last
            trainer.save_reference(ctx.checkpoints_dir / f"step-{done}")
        engine.save_checkpoint(ctx.checkpoints_dir, done, {"step": done}, rl.keep_last)

    last: dict[str, Any] = {}
    progress = ctx.progress()
    with progress:
        bar = progress.add_task("rl", total=rl.max_steps, completed=start_step, info="")
        for step in range(start_step, rl.max_steps):
            t0 = time.perf_counter()
            if (
                trainer.ref is not None
                and rl.ref_update_every
                and step
                and step % rl.ref_update_every == 0
            ):
                trainer.refresh_reference()
            batch, stats = trainer.rollout(step, train)
            t1 = time.perf_counter()
            train_stats = trainer.train_on(batch)
            t2 = time.perf_counter()
            done = step + 1
            # every rank's rollout statistics, averaged (sums for counts)
            for k in list(stats):
                stats[k] = all_reduce_sum(stats[k], dist.device) / (
                    1 if k in SUMMED_STATS else dist.world_size
                )
            record = {
                "step": done,
                **stats,
                **train_stats,
                "accuracy": stats.get("reward/accuracy"),
                "format_rate": stats.get("reward/format"),
                "skipped_steps": engine.skipped_steps,
                "time_train": t2 - t1,
                "time_step": t2 - t0,
                "tokens_per_s": (stats["generated_tokens"] + train_stats["trained_tokens"])
                / max(t2 - t0, 1e-9),
                "elapsed_s": time.time() - ctx.t0,
            }
            if rl.eval_every and done % rl.eval_every == 0 and done < rl.max_steps:
                summary, _ = evaluate_sharded(
                    ctx, engine.module, trainer.tokenizer, held_out, synced_gpus=trainer.zero3
                )
                record.update(
                    {f"eval/{k}": v for k, v in summary.items() if k in ("pass@1", "format_rate")}
                )
            progress.update(
                bar,
                completed=done,
                info=f"reward {record['reward']:.3f} acc {record['accuracy'] or 0:.2f}",
            )
            if done % rl.log_every == 0 or done == rl.max_steps:
                log.log(record)
                last = record
            saved = rl.save_every and done % rl.save_every == 0 and done < rl.max_steps
            if saved:
                save(done)
            maybe_fault(done)
            signum = stop.requested(dist.device) if done < rl.max_steps else None
            if signum:
                if not saved:
                    save(done)
                raise interrupted(ctx, signum, done, rl.max_steps)
    engine.export_hf(ctx.final_dir, trainer.tokenizer)
    ctx.log(f"exported {ctx.run_dir.rel(ctx.final_dir)}")
    keep = ("reward", "accuracy", "format_rate", "response_length_mean", "kl", "entropy")
    return {"steps": rl.max_steps, **{f"train_{k}": last.get(k) for k in keep}}
