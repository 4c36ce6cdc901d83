"""GRPO: group-relative advantages, the clipped policy loss, k3 KL, loss aggregation.

Pure tensor code, no I/O. Shapes: ``N = B x G`` completions (B prompts, G = group size),
``T`` = completion tokens (padded), ``mask [N, T]`` true on real completion tokens.

References: DeepSeekMath (GRPO, k3 KL), DAPO (clip-higher, token-mean, dynamic sampling,
soft overlong penalty), Dr. GRPO (no std scaling, constant length normaliser).

Every loss here returns a *sum* plus the normaliser it must be divided by, so the trainer can
divide by the normaliser of the whole global batch: then splitting a batch over ranks and
micro-batches does not change the loss (see ``TrainEngine.train_step``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Advantage of each completion relative to its group: ``(r - mean) / (std + eps)``.

    Args:
        rewards: ``[B x G]`` rewards, groups contiguous.
        group_size: G.
        scale_std: Divide by the group's standard deviation (GRPO); False keeps only the
            mean subtraction (Dr. GRPO).
        eps: Added to the std. A group whose rewards are all equal gets zero advantages.

    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, scale_std=False)
    tensor([ 0.7500, -0.2500, -0.2500, -0.2500])
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)  # [B, G]
    centered = r - r.mean(dim=1, keepdim=True)
    if scale_std:
        # unbiased std as in the GRPO reference implementations; G = 1 has no spread
        std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(r[:, :1])
        centered = centered / (std + eps)
    return centered.view(-1)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): ``exp(d) - d - 1`` with ``d = ref - logp``.

    Non-negative, zero where the policy equals the reference.

    >>> k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0]))
    tensor([0.])
    """
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1.0


@dataclass
class PolicyLossOutput:
    loss_sum: torch.Tensor
    """Aggregated loss, summed over this micro-batch (divide by the global normaliser)."""
    clip_low_frac: torch.Tensor
    """Tokens whose ratio was clipped at 1 - eps_low (with a negative advantage), summed."""
    clip_high_frac: torch.Tensor
    """Tokens clipped at 1 + eps_high (with a positive advantage), summed."""
    kl_sum: torch.Tensor
    """Sum of per-token k3 KL over real tokens (0 without a reference)."""
    num_tokens: torch.Tensor


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    loss_aggregation: str = "seq-mean-token-mean",
    max_completion_len: int | None = None,
    is_weights: torch.Tensor | None = None,
) -> PolicyLossOutput:
    """The GRPO objective as a loss to minimise, aggregated as a sum.

    Per token: ``-min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) + kl_coef * KL``
    with ``ratio = exp(logp - old_logp)``. Aggregations (each a sum; the normaliser is given by
    :func:`loss_normalizer`):

    * ``seq-mean-token-mean`` (GRPO): each sequence's token mean, summed over sequences.
    * ``token-mean`` (DAPO): summed over all tokens.
    * ``seq-mean-token-sum-norm`` (Dr. GRPO): each sequence's token sum divided by the
      constant ``max_completion_len``, summed over sequences.

    Args:
        logprobs: ``[N, T]`` log-probs of the sampled tokens under the current policy.
        old_logprobs: ``[N, T]`` under the policy that sampled them (no gradient).
        advantages: ``[N]``.
        mask: ``[N, T]`` bool/0-1, real completion tokens that carry loss.
        is_weights: ``[N, T]`` importance weights of the policy term for a sampler that is
            not exactly the trainer (:func:`importance_weights`); None: all 1.
    """
    if loss_aggregation not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_aggregation must be one of {LOSS_AGGREGATIONS}")
    mask = mask.to(logprobs.dtype)
    adv = advantages.to(logprobs.dtype)[:, None]  # [N, 1]
    ratio = torch.exp(logprobs - old_logprobs)  # [N, T]
    clipped = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)  # [N, T]
    if is_weights is not None:
        per_token = per_token * is_weights
    kl = torch.zeros_like(per_token)
    if ref_logprobs is not None and kl_coef != 0.0:
        kl = k3_kl(logprobs, ref_logprobs)
        per_token = per_token + kl_coef * kl
    if loss_aggregation == "token-mean":
        loss_sum = (per_token * mask).sum()
    elif loss_aggregation == "seq-mean-token-mean":
        loss_sum = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).sum()
    else:
        if not max_completion_len:
            raise ValueError("seq-mean-token-sum-norm needs max_completion_len")
        loss_sum = ((per_token * mask).sum(1) / max_completion_len).sum()
    with torch.no_grad():
        low = ((ratio < 1.0 - clip_eps_low) & (adv < 0)).to(mask.dtype) * mask
        high = ((ratio > 1.0 + clip_eps_high) & (adv > 0)).to(mask.dtype) * mask
    return PolicyLossOutput(
        loss_sum=loss_sum,
        clip_low_frac=low.sum(),
        clip_high_frac=high.sum(),
        kl_sum=(kl.detach() * mask).sum(),
        num_tokens=mask.sum(),
    )


def loss_normalizer(loss_aggregation: str, num_sequences: int, num_tokens: int) -> float:
    """What the summed loss of the global batch is divided by."""
    return float(num_tokens if loss_aggregation == "token-mean" else num_sequences)


def soft_overlong_penalty(length: int, max_len: int, cache_len: int) -> float:
    """DAPO's soft overlong punishment: 0 up to ``max_len - cache_len`` tokens, then a linear
    ramp down to -1 at ``max_len``, and -1 beyond.

    >>> [soft_overlong_penalty(n, 100, 20) for n in (80, 90, 100, 120)]
    [0.0, -0.5, -1.0, -1.0]
    """
    expected = max_len - cache_len
    if length <= expected:
        return 0.0
    if length <= max_len:
        return (expected - length) / cache_len
    return -1.0


def zero_variance_groups(rewards: torch.Tensor, group_size: int, tol: float = 1e-8) -> torch.Tensor:
    """``[B]`` bool: groups whose rewards are all equal (no learning signal; DAPO drops them)."""
    r = rewards.view(-1, group_size)
    return (r.max(dim=1).values - r.min(dim=1).values) <= tol


DYNAMIC_SAMPLING_FILTERS = ("accuracy", "reward")


def filter_signal(
    total: torch.Tensor, accuracy: torch.Tensor | None, by: str = "accuracy"
) -> torch.Tensor:
    """``[N]`` values whose flat groups dynamic sampling drops.

    ``by="accuracy"`` (DAPO): each completion's accuracy, so a group that is all right or all
    wrong is flat even when format or length terms spread its total reward (std scaling would
    blow that spread up into full-size advantages). Completions with no accuracy (NaN, e.g.
    rl-all's general prompts, or no accuracy reward) use their total. ``by="reward"``: the
    total reward.

    >>> total = torch.tensor([1.2, 1.2, 1.2, 1.0])
    >>> acc = torch.tensor([1.0, 1.0, 1.0, 1.0])
    >>> zero_variance_groups(filter_signal(total, acc), 4).tolist()
    [True]
    >>> zero_variance_groups(filter_signal(total, acc, "reward"), 4).tolist()
    [False]
    """
    if by not in DYNAMIC_SAMPLING_FILTERS:
        raise ValueError(f"dynamic sampling filters by one of {DYNAMIC_SAMPLING_FILTERS}")
    if by == "reward" or accuracy is None:
        return total
    return torch.where(torch.isnan(accuracy), total, accuracy.to(total.dtype))


#: How the trainer corrects for a sampler whose log-probs differ from its own (vLLM's kernels,
#: precision, a stale copy of the weights): ``LEVEL_MODE``. ``token``: a ratio per token;
#: ``sequence``: the product over the sequence's tokens, applied to all of them. ``truncate``:
#: ratios clipped into ``[clip_min, clip_max]``; ``mask``: tokens (or sequences) whose ratio
#: falls outside get weight 0.
IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


@dataclass
class ImportanceWeights:
    weights: torch.Tensor
    """``[N, T]`` weights of the policy term, no gradient (1 where nothing is corrected)."""
    abs_diff_sum: torch.Tensor
    """Sum over real tokens of ``|logp_trainer - logp_sampler|``."""
    seq_log_ratio_sum: torch.Tensor
    """Sum over sequences of ``sum_t (logp_trainer - logp_sampler)``."""
    outside: torch.Tensor
    """Tokens (token level) or tokens of sequences (sequence level) whose ratio fell outside
    the bounds, summed."""


def importance_weights(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "sequence_mask",
    *,
    clip_min: float = 0.0,
    clip_max: float = 3.0,
) -> ImportanceWeights:
    """Truncated or masked importance sampling between the sampler and the trainer.

    The ratio is ``exp(logp_trainer - logp_sampler)`` per token (or its product over a
    sequence); ``clip_min = 0`` means no lower bound. A token the sampler gave no log-prob for
    (NaN) counts as agreeing (ratio 1).

    Args:
        logprobs: ``[N, T]`` the trainer's log-probs of the sampled tokens (no gradient used).
        sampler_logprobs: ``[N, T]`` the sampler's.
        mask: ``[N, T]`` real completion tokens.

    >>> lp = torch.tensor([[0.0, 0.0]]); slp = torch.tensor([[-1.0, 0.5]])
    >>> w = importance_weights(lp, slp, torch.ones(1, 2), "token_truncate", clip_max=2.0)
    >>> [round(x, 4) for x in w.weights[0].tolist()]
    [2.0, 0.6065]
    """
    if mode not in IS_MODES:
        raise ValueError(f"importance sampling mode must be one of {IS_MODES}, got {mode!r}")
    m = mask.to(logprobs.dtype)
    diff = torch.nan_to_num((logprobs.detach() - sampler_logprobs) * m, nan=0.0)  # [N, T]
    level, how = mode.split("_")
    log_ratio = diff.sum(dim=1, keepdim=True) if level == "sequence" else diff  # [N, 1|T]
    ratio = torch.exp(log_ratio)
    low = clip_min if clip_min > 0 else 0.0
    out = (ratio < low) | (ratio > clip_max)
    if how == "truncate":
        weights = ratio.clamp(min=low, max=clip_max)
    else:
        weights = ratio.masked_fill(out, 0.0)
    weights = weights.expand_as(diff) * m
    return ImportanceWeights(
        weights=weights,
        abs_diff_sum=diff.abs().sum(),
        seq_log_ratio_sum=diff.sum(),
        outside=(out.expand_as(diff).to(m.dtype) * m).sum(),
    )
