"""Chunked completion log-probs equal a naive full-logits computation, values and gradients."""

import pytest
import torch

from r1pipe.config import compose
from r1pipe.models import build_char_tokenizer, build_tiny_model
from r1pipe.training.logprobs import completion_logprobs, length_buckets


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


def _groups(G, prompt_lens, P, lengths):
    """GRPO-style rows: G consecutive rows per random prompt (left-padded to P), random
    completions of the given lengths (right-padded to the longest)."""
    T = max(lengths)
    ids = torch.zeros(G * len(prompt_lens), P + T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for g, plen in enumerate(prompt_lens):
        prompt = torch.randint(5, 60, (plen,))
        for j in range(G):
            r, n = g * G + j, lengths[g * G + j]
            ids[r, P - plen : P], mask[r, P - plen : P] = prompt, 1
            ids[r, P : P + n], mask[r, P : P + n] = torch.randint(5, 60, (n,)), 1
    return ids, mask


def test_shared_prompts_equal_full_rows_values_and_gradients(model):
    """Groups of rows with one prompt each (different prompt lengths, ragged completions):
    running each prompt once must give the same log-probs, entropies and gradients as
    running every row in full."""
    torch.manual_seed(0)
    P = 9
    lengths = [int(torch.randint(2, 8, ())) for _ in range(12)]
    ids, mask = _groups(G=4, prompt_lens=[5, 6, 7], P=P, lengths=lengths)
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


def _area(groups, lengths, overhead):
    return sum(len(g) * max(max(lengths[i] for i in g), 1) + overhead for g in groups)


def test_length_buckets_hand_worked():
    # sorted lengths 2,2,3,9,10: one group costs 5*10 + 5 = 55; {2,2,3} {9,10}: 9 + 5 + 20 + 5
    # = 39; {2,2} {3} {9,10}: 4 + 3 + 20 + 15 = 42
    lengths = [9, 2, 10, 3, 2]
    groups = length_buckets(lengths, overhead=5)
    assert [sorted(g) for g in groups] == [[1, 3, 4], [0, 2]]
    assert length_buckets(lengths, overhead=1000) == [[1, 4, 3, 0, 2]]  # one group, sorted
    assert len(length_buckets(lengths, overhead=0)) == 4  # one per distinct length
    assert len(length_buckets(lengths, overhead=0, max_buckets=2)) == 2
    assert length_buckets([], overhead=5) == []


def test_length_buckets_is_optimal_against_enumeration():
    """Against every split of the sorted rows into contiguous runs (2^(n-1) of them)."""
    import itertools
    import random

    rnd = random.Random(0)
    for _ in range(40):
        n = rnd.randint(1, 9)
        lengths = [rnd.randint(0, 30) for _ in range(n)]
        overhead = rnd.choice([0, 3, 10, 50])
        groups = length_buckets(lengths, overhead)
        assert sorted(i for g in groups for i in g) == list(range(n))
        order = sorted(range(n), key=lambda i: lengths[i])
        best = min(
            _area([order[a:b] for a, b in itertools.pairwise((0, *cuts, n))], lengths, overhead)
            for k in range(n)
            for cuts in itertools.combinations(range(1, n), k)
        )
        assert _area(groups, lengths, overhead) == best


@pytest.mark.parametrize("share", [False, True])
def test_length_buckets_equal_one_padded_batch(model, share):
    """Rows run in length groups give the same log-probs, entropies and gradients, in the
    original row order, as one batch padded to the longest completion."""
    torch.manual_seed(1)
    G, groups, P, T = 3, 4, 8, 12
    lengths = [1, 3, 12, 7, 2, 12, 5, 9, 4, 11, 6, 8]
    ids, mask = _groups(G=G, prompt_lens=[4, 5, 6, 7], P=P, lengths=lengths)
    out = {}
    for overhead in (None, 0, 6):
        model.zero_grad()
        lp, ent = completion_logprobs(
            model, ids, mask, P, chunk_size=7, share_prompts=share, bucket_overhead=overhead
        )
        assert lp.shape == (G * groups, T)
        (lp * mask[:, P:] * torch.arange(1, G * groups + 1)[:, None]).sum().backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        out[overhead] = (lp.detach() * mask[:, P:], ent * mask[:, P:], grad)
    for overhead in (0, 6):
        for a, b in zip(out[None], out[overhead], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
