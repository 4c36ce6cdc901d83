"""Truncated and masked importance sampling between the sampler (vLLM) and the trainer,
in every mode, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from r1pipe.rl.grpo import IS_MODES, importance_weights, policy_loss

E = math.exp
NAN = float("nan")
# trainer log-probs 0 everywhere; the sampler's differ: diff = trainer - sampler
LP = torch.zeros(2, 3)
SLP = torch.tensor([[-1.0, 0.5, NAN], [0.2, 0.3, NAN]])  # NaN: no sampler log-prob
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
# diff row 0: [1, -0.5, 0 (NaN counts as agreeing)]; row 1: [-0.2, -0.3, padding]
# sequence log-ratios: row 0: 0.5, row 1: -0.5

EXPECTED = {
    # per-token ratios e^1, e^-0.5, 1 | e^-0.2, e^-0.3, clipped into [0.7, 2]
    "token_truncate": [[2.0, 0.7, 1.0], [E(-0.2), E(-0.3), 0.0]],
    # outside [0.7, 2]: e^1 (too high), e^-0.5 = 0.607 (too low)
    "token_mask": [[0.0, 0.0, 1.0], [E(-0.2), E(-0.3), 0.0]],
    # sequence ratios e^0.5 = 1.649 (inside) and e^-0.5 = 0.607 (clipped up to 0.7)
    "sequence_truncate": [[E(0.5)] * 3, [0.7, 0.7, 0.0]],
    # e^-0.5 < 0.7: the whole second sequence masked
    "sequence_mask": [[E(0.5)] * 3, [0.0, 0.0, 0.0]],
}
OUTSIDE = {"token_truncate": 2, "token_mask": 2, "sequence_truncate": 2, "sequence_mask": 2}


@pytest.mark.parametrize("mode", IS_MODES)
def test_weights_by_hand(mode):
    w = importance_weights(LP, SLP, MASK, mode, clip_min=0.7, clip_max=2.0)
    torch.testing.assert_close(w.weights, torch.tensor(EXPECTED[mode]), rtol=1e-5, atol=1e-6)
    assert float(w.abs_diff_sum) == pytest.approx(1 + 0.5 + 0.2 + 0.3)
    assert float(w.seq_log_ratio_sum) == pytest.approx(0.5 - 0.5, abs=1e-6)
    assert float(w.outside) == OUTSIDE[mode]


def test_no_lower_bound_by_default_and_sequence_upper_bound():
    w = importance_weights(LP, SLP, MASK, "sequence_mask", clip_max=1.5)
    # e^0.5 = 1.649 > 1.5: row 0 masked; e^-0.5 kept (no lower bound)
    torch.testing.assert_close(w.weights, torch.tensor([[0.0] * 3, [E(-0.5)] * 2 + [0.0]]))


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="token_truncate"):
        importance_weights(LP, SLP, MASK, "geometric")


def test_policy_loss_weights_the_policy_term_only():
    """On-policy ratio 1: the token-mean loss is -sum(A * w) / tokens; the KL term is not
    weighted."""
    lp = torch.zeros(2, 2)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2)
    w = torch.tensor([[2.0, 0.5], [0.0, 1.0]])
    out = policy_loss(lp, lp, adv, mask, loss_aggregation="token-mean", is_weights=w)
    assert float(out.loss_sum) == pytest.approx(-(1 * 2.0 + 1 * 0.5) + (1 * 0.0 + 1 * 1.0))
    plain = policy_loss(lp, lp, adv, mask, loss_aggregation="token-mean")
    assert float(plain.loss_sum) == pytest.approx(0.0)
