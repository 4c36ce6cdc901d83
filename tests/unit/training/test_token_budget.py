"""Micro-batches sized in tokens (issue 15): every sequence once, within the budget, and the
same summed loss and gradients as micro-batches of a fixed number of sequences."""

import random

import pytest
import torch

from r1pipe.config import compose
from r1pipe.models import build_char_tokenizer, build_tiny_model
from r1pipe.rl.trainer import Rollout
from r1pipe.training.packing import (
    IGNORE,
    TokenizedSFT,
    budget_micro_batches,
    collate,
    empty_micro_batch,
    num_loss_tokens,
    sft_loss_sum,
)


@pytest.fixture(scope="module")
def tiny():
    cfg, _ = compose(["conf=smoke"])
    tok = build_char_tokenizer()
    return tok, build_tiny_model(cfg.model, tok, seed=0)


def _data(n: int, seed: int = 0) -> list[TokenizedSFT]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p, r = rng.randint(3, 12), rng.randint(4, 40)
        ids = [rng.randint(40, 120) for _ in range(p + r)]
        out.append(TokenizedSFT(ids, [False] * p + [True] * r))
    return out


def _loss_and_grads(model, batches):
    model.zero_grad()
    total = 0.0
    for b in batches:
        loss, _ = sft_loss_sum(model, b)
        loss.backward()
        total += float(loss.detach())
    return total, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("packing", [True, False])
def test_budget_batches_hold_every_token_once_within_budget(packing):
    data = _data(23)
    budget, row = 112, 56  # rows at least the longest sequence (3 + 12 + 40)
    batches = budget_micro_batches(data, packing=packing, budget=budget, row_length=row, pad_id=0)
    assert len(batches) > 2
    assert sum(num_loss_tokens(b) for b in batches) == sum(sum(d.loss_mask[1:]) for d in data)
    real = sum(len(d.input_ids) for d in data)
    seen = sum(int((b["labels"] != IGNORE).sum()) for b in batches)
    assert seen == sum(sum(d.loss_mask) for d in data)
    for b in batches:
        rows, width = b["input_ids"].shape
        assert rows * width <= budget
        if packing:
            assert width == row  # every row the same length: one shape every step
    if packing:  # rows filled across sequences: little padding
        area = sum(b["input_ids"].numel() for b in batches)
        assert real / area > 0.8


@pytest.mark.parametrize("packing", [True, False])
def test_budget_loss_and_gradients_equal_sequence_micro_batches(tiny, packing):
    tok, model = tiny
    data = _data(12, seed=1)
    pad = tok.pad_token_id
    # today's path: 3 micro-batches of 4 sequences
    ref = [collate(data[i : i + 4], packing=packing, pad_id=pad) for i in range(0, 12, 4)]
    ref_loss, ref_grads = _loss_and_grads(model, ref)
    mine = budget_micro_batches(data, packing=packing, budget=128, row_length=64, pad_id=pad)
    mine.append(empty_micro_batch(mine[0], pad))  # a rank's filler: no loss, no gradient
    assert len(mine) != len(ref)
    loss, grads = _loss_and_grads(model, mine)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for name, g in ref_grads.items():  # fp32 sums in another order: ~3e-6 apart at most
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5, msg=name)


def _rollout(n=12, group=4, P=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = 20
    ids = torch.randint(10, 100, (n, P + T), generator=g)
    ids[:, :P] = ids[::group, :P].repeat_interleave(group, 0)  # a group shares its prompt
    mask = torch.ones(n, P + T, dtype=torch.long)
    comp = torch.randint(2, T + 1, (n,), generator=g)
    plen = torch.randint(2, P + 1, (n // group,), generator=g).repeat_interleave(group)
    for i in range(n):
        mask[i, : P - plen[i]] = 0
        mask[i, P + comp[i] :] = 0
    ids = ids * mask
    adv = torch.randn(n, generator=g)
    return Rollout(ids, mask, mask[:, P:].bool(), P, adv, adv.clone()), comp


def test_rollout_budget_bounds_cover_rows_in_order_within_budget():
    batch, comp = _rollout()
    P, budget = batch.prompt_len, 60
    bounds = batch.bounds(8, budget)
    assert bounds[0][0] == 0 and bounds[-1][1] == 12
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    for s, e in bounds:
        width = P + int(comp[s:e].max())
        assert (e - s) * width <= budget or e - s == 1
    mbs = batch.micro_batches(bounds, count=len(bounds) + 2)
    assert len(mbs) == len(bounds) + 2
    assert sum(int(m["loss_mask"].sum()) for m in mbs) == int(batch.loss_mask.sum())
    filler = mbs[-1]
    assert filler["input_ids"].shape[0] == 1 and not filler["loss_mask"].any()
    # the rows of a group share one prompt pass, found on the CPU
    assert "prompt_first" in mbs[0] and "prompt_first" not in filler


def test_packed_rows_without_a_mask_attend_within_each_sequence(tiny):
    """Flash and flex attention get packed rows without a dense mask (what transformers
    then does: finds each sequence from the position ids, when there is no cache). The
    same mechanism under sdpa (flex has no backward on CPU, and compiling it costs ~35 s):
    the same loss as with the block-diagonal mask, and not the loss of plain causal rows."""
    tok, model = tiny
    data = _data(8, seed=2)
    kw = dict(packing=True, budget=256, row_length=128, pad_id=tok.pad_token_id)
    dense = budget_micro_batches(data, attn_implementation="sdpa", **kw)
    free = budget_micro_batches(data, attn_implementation="flex_attention", **kw)
    assert "attention_mask" in dense[0] and "attention_mask" not in free[0]
    with torch.no_grad():
        want = sum(float(sft_loss_sum(model, b)[0]) for b in dense)
        got = sum(float(sft_loss_sum(model, b)[0]) for b in free)
        causal = [{**b, "position_ids": torch.arange(b["input_ids"].shape[1])[None]} for b in free]
        crossing = sum(float(sft_loss_sum(model, b)[0]) for b in causal)
    assert got == pytest.approx(want, rel=1e-5)
    # sequences attending across each other: another loss (4e-4 apart on this tiny model)
    assert abs(crossing - want) > 20 * max(abs(got - want), 1e-6 * want)


def test_same_passes_under_zero3_give_every_micro_batch_the_prompt_path(tiny):
    """ZeRO-3 gathers parameters in every forward pass, so every rank must make the same
    passes: with ``same_passes`` a micro-batch whose rows share no prompt (a filler, a group
    cut by the budget) takes the prompt path too, each row its own prompt; its log-probs are
    those of plain full rows."""
    from r1pipe.training.logprobs import completion_logprobs

    tok, model = tiny
    batch, _ = _rollout(n=8, group=4, P=5, seed=3)
    budget = 1  # one row a micro-batch: no two rows of a micro-batch share a prompt
    plain = batch.micro_batches(batch.bounds(8, budget), count=10)
    assert not any("prompt_first" in m for m in plain)
    mbs = batch.micro_batches(batch.bounds(8, budget), count=10, same_passes=True)
    assert len(mbs) == 10 and all("prompt_first" in m for m in mbs)
    model.eval()
    with torch.no_grad():
        for m in mbs[:3] + mbs[-1:]:
            args = (model, m["input_ids"], m["attention_mask"], batch.prompt_len)
            runs = (m["prompt_first"], m["prompt_index"])
            own, _ = completion_logprobs(*args, prompt_runs=runs, bucket_overhead=None)
            full, _ = completion_logprobs(*args, share_prompts=False, bucket_overhead=None)
            torch.testing.assert_close(own, full, rtol=1e-5, atol=1e-5)


def test_min_chunks_calls_the_output_layer_as_often_with_the_same_log_probs(tiny):
    """ZeRO-3 gathers the output layer's weights in each call: ``min_chunks`` makes every
    rank call it as often (empty chunks past the data), the log-probs unchanged."""
    from r1pipe.training.logprobs import completion_logprobs

    tok, model = tiny
    batch, _ = _rollout(n=4, group=4, P=5, seed=4)
    calls = []
    head = model.get_output_embeddings()
    hook = head.register_forward_hook(lambda *a: calls.append(1))
    args = (model, batch.input_ids, batch.attention_mask, batch.prompt_len)
    try:
        with torch.no_grad():
            few, _ = completion_logprobs(*args, chunk_size=16, bucket_overhead=None)
            n_few, calls[:] = len(calls), []
            many, _ = completion_logprobs(*args, chunk_size=16, bucket_overhead=None, min_chunks=40)
    finally:
        hook.remove()
    assert n_few < 40 and len(calls) == 40
    torch.testing.assert_close(many, few)
