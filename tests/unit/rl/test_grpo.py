"""GRPO pieces against values worked out by hand."""

import math

import pytest
import torch

from r1pipe.rl.grpo import (
    group_advantages,
    k3_kl,
    loss_normalizer,
    policy_loss,
    soft_overlong_penalty,
    zero_variance_groups,
)


def test_advantages_by_hand():
    # group 1: rewards 1,0,0,1 -> mean .5, unbiased std sqrt(1/3)
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 4.0, 6.0, 8.0])
    a = group_advantages(r, 4, eps=0.0)
    s1 = math.sqrt(1 / 3)
    s2 = math.sqrt(((2 - 5) ** 2 + 1 + 1 + 9) / 3)
    expected = [0.5 / s1, -0.5 / s1, -0.5 / s1, 0.5 / s1, -3 / s2, -1 / s2, 1 / s2, 3 / s2]
    torch.testing.assert_close(a, torch.tensor(expected))


def test_advantages_without_std_scaling():
    a = group_advantages(torch.tensor([3.0, 1.0]), 2, scale_std=False)
    torch.testing.assert_close(a, torch.tensor([1.0, -1.0]))


def test_all_equal_rewards_zero_advantage_no_nan():
    a = group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]), 3)
    assert torch.isfinite(a).all() and (a == 0).all()
    assert zero_variance_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2).tolist() == [True, False]


def test_group_size_must_divide():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), 2)


def test_k3_zero_when_equal_positive_otherwise():
    lp = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(k3_kl(lp, lp), torch.zeros(3))
    ref = torch.tensor([-1.5, -1.0, -0.5])
    d = ref - lp
    torch.testing.assert_close(k3_kl(lp, ref), torch.exp(d) - d - 1)
    assert (k3_kl(lp, ref)[:2] > 0).all()


def _one_token(ratio: float, adv: float, **kw):
    old = torch.zeros(1, 1)
    lp = torch.log(torch.tensor([[ratio]]))
    return policy_loss(lp, old, torch.tensor([adv]), torch.ones(1, 1), **kw)


@pytest.mark.parametrize(
    ("ratio", "adv", "expected", "low", "high"),
    [
        (1.0, 2.0, -2.0, 0, 0),  # on-policy: -A
        (1.5, 1.0, -1.3, 0, 1),  # positive A: clipped at 1 + eps_high = 1.3
        (1.1, 1.0, -1.1, 0, 0),  # inside the band
        (0.5, -1.0, 0.8, 1, 0),  # negative A: clipped at 1 - eps_low = 0.8
        (0.5, 1.0, -0.5, 0, 0),  # positive A below the band: min keeps the unclipped term
        (1.5, -1.0, 1.5, 0, 0),  # negative A above the band: unclipped (pessimistic) term
    ],
)
def test_clipping_both_bounds(ratio, adv, expected, low, high):
    out = _one_token(ratio, adv, clip_eps_low=0.2, clip_eps_high=0.3)
    assert out.loss_sum.item() == pytest.approx(expected, rel=1e-6)
    assert out.clip_low_frac.item() == low and out.clip_high_frac.item() == high


def test_clipped_tokens_have_no_gradient():
    lp = torch.log(torch.tensor([[1.5, 1.0]])).requires_grad_()
    out = policy_loss(
        lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), loss_aggregation="token-mean"
    )
    out.loss_sum.backward()
    assert lp.grad[0, 0] == 0 and lp.grad[0, 1] == pytest.approx(-1.0)


def test_aggregations_by_hand():
    # two sequences: lengths 1 and 3; on-policy, advantages 1 and -2 -> per-token loss -A
    lp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, -2.0])
    # token-mean: sum over tokens = -1 + 3*2 = 5, normaliser 4 tokens -> 1.25
    tm = policy_loss(lp, lp, adv, mask, loss_aggregation="token-mean")
    assert tm.loss_sum.item() == pytest.approx(5.0)
    assert loss_normalizer("token-mean", 2, 4) == 4
    # seq-mean-token-mean: (-1/1 + 6/3) = 1, normaliser 2 sequences -> 0.5
    sm = policy_loss(lp, lp, adv, mask, loss_aggregation="seq-mean-token-mean")
    assert sm.loss_sum.item() == pytest.approx(1.0)
    assert loss_normalizer("seq-mean-token-mean", 2, 4) == 2
    # Dr. GRPO: (-1 + 6) / 10 = 0.5, normaliser 2 sequences
    dr = policy_loss(
        lp, lp, adv, mask, loss_aggregation="seq-mean-token-sum-norm", max_completion_len=10
    )
    assert dr.loss_sum.item() == pytest.approx(0.5)
    assert tm.num_tokens.item() == 4
    with pytest.raises(ValueError):
        policy_loss(lp, lp, adv, mask, loss_aggregation="seq-mean-token-sum-norm")


def test_kl_term_added_with_coefficient():
    lp = torch.tensor([[-1.0, -1.0]])
    ref = torch.tensor([[-1.0, -2.0]])
    mask = torch.ones(1, 2)
    out = policy_loss(
        lp,
        lp,
        torch.tensor([0.0]),
        mask,
        ref_logprobs=ref,
        kl_coef=0.5,
        loss_aggregation="token-mean",
    )
    kl = math.exp(-1) + 1 - 1  # d = -1: e^-1 - (-1) - 1
    assert out.loss_sum.item() == pytest.approx(0.5 * kl)
    assert out.kl_sum.item() == pytest.approx(kl)
    none = policy_loss(lp, lp, torch.tensor([0.0]), mask, ref_logprobs=ref, kl_coef=0.0)
    assert none.kl_sum.item() == 0.0


def test_soft_overlong_penalty_by_hand():
    assert soft_overlong_penalty(80, 100, 20) == 0.0
    assert soft_overlong_penalty(81, 100, 20) == pytest.approx(-0.05)
    assert soft_overlong_penalty(95, 100, 20) == pytest.approx(-0.75)
    assert soft_overlong_penalty(100, 100, 20) == pytest.approx(-1.0)
    assert soft_overlong_penalty(140, 100, 20) == -1.0
