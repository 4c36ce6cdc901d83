"""Chunked completion log-probs equal a naive full-logits computation, values and gradients."""

import pytest
import torch

from r1pipe.config import compose
from r1pipe.models import build_char_tokenizer, build_tiny_model
from r1pipe.training.logprobs import completion_logprobs


@pytest.fixture(scope="module")
def model():
    cfg, _ = compose(["conf=smoke"])
    return build_tiny_model(cfg.model, build_char_tokenizer(), seed=0)


def _batch():
    # prompts of length 3 and 5 (left-padded to P=5), completions of 4 and 2 (right-padded)
    P = 5
    ids = torch.tensor([[0, 0, 10, 11, 12, 20, 21, 22, 23], [13, 14, 15, 16, 17, 24, 25, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 0, 0]])
    return ids, mask, P


def _naive(model, ids, mask, P, temperature):
    out = []
    for row, m in zip(ids, mask, strict=True):
        seq = row[m.bool()][None]  # the unpadded sequence
        logits = model(seq).logits[0].float() / temperature
        logp = logits.log_softmax(-1)
        n_prompt = int(m[:P].sum())
        comp = seq[0, n_prompt:]
        vals = logp[n_prompt - 1 : n_prompt - 1 + len(comp)].gather(-1, comp[:, None])[:, 0]
        out.append(vals)
    return out


@pytest.mark.parametrize(("chunk", "temperature"), [(1, 1.0), (3, 0.7), (1000, 1.0)])
def test_matches_unpadded_naive(model, chunk, temperature):
    ids, mask, P = _batch()
    with torch.no_grad():
        lp, ent = completion_logprobs(
            model, ids, mask, P, temperature=temperature, chunk_size=chunk
        )
        ref = _naive(model, ids, mask, P, temperature)
    assert lp.shape == (2, 4)
    torch.testing.assert_close(lp[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lp[1, :2], ref[1], rtol=1e-5, atol=1e-5)
    assert (ent[:, :2] > 0).all()


def test_entropy_by_hand(model):
    ids, mask, P = _batch()
    with torch.no_grad():
        _, ent = completion_logprobs(model, ids, mask, P)
        logits = model(
            ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
        ).logits.float()
        p = logits[0, P - 1].softmax(-1)
        expected = -(p * p.log()).sum()
    assert ent[0, 0].item() == pytest.approx(expected.item(), rel=1e-4)


def test_gradients_match_naive(model):
    ids, mask, P = _batch()
    model.zero_grad()
    lp, _ = completion_logprobs(model, ids, mask, P, chunk_size=2)
    (lp[0].sum() + lp[1, :2].sum()).backward()
    g1 = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    ref = _naive(model, ids, mask, P, 1.0)
    (ref[0].sum() + ref[1].sum()).backward()
    g2 = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_shared_prompts_equal_full_rows_values_and_gradients(model):
    """Groups of rows with one prompt each (different prompt lengths, ragged completions):
    running each prompt once must give the same log-probs, entropies and gradients as
    running every row in full."""
    torch.manual_seed(0)
    G, groups, P, T = 4, 3, 9, 7
    ids = torch.zeros(G * groups, P + T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for g in range(groups):
        prompt = torch.randint(5, 60, (5 + g,))
        for j in range(G):
            r, n = g * G + j, int(torch.randint(2, T + 1, ()))
            ids[r, P - len(prompt) : P], mask[r, P - len(prompt) : P] = prompt, 1
            ids[r, P : P + n], mask[r, P : P + n] = torch.randint(5, 60, (n,)), 1
    out = {}
    for share in (False, True):
        model.zero_grad()
        lp, ent = completion_logprobs(model, ids, mask, P, chunk_size=5, share_prompts=share)
        (lp * mask[:, P:]).sum().backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        out[share] = (lp.detach() * mask[:, P:], ent * mask[:, P:], grad)
    for a, b in zip(out[False], out[True], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert out[True][2].abs().sum() > 0
