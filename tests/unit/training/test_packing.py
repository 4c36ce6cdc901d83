"""Loss on response tokens only; packed and padded batches give the same loss."""

import pytest
import torch

from r1pipe.config import compose
from r1pipe.models import build_char_tokenizer, build_tiny_model
from r1pipe.training.packing import (
    IGNORE,
    collate,
    pack_rows,
    sft_loss_sum,
    tokenize_sft,
)


@pytest.fixture(scope="module")
def tiny():
    cfg, _ = compose(["conf=smoke"])
    tok = build_char_tokenizer()
    model = build_tiny_model(cfg.model, tok, seed=0).eval()
    return tok, model


def _examples(tok):
    pairs = [
        ("P: 12+3=?\n", "<think>2+3=5</think><answer>15</answer>"),
        ("P: 7+8=?\n", "<think>7+8=15, carry 1</think> so <answer>15</answer>"),
        ("Q\n", "<think>x</think><answer>1</answer>"),
    ]
    return [tokenize_sft(p, r, tok, max_len=256) for p, r in pairs], pairs


def test_mask_covers_response_and_eos_only():
    tok = build_char_tokenizer()
    ex = tokenize_sft("abc", "<think>d</think>", tok, max_len=64)
    assert ex.loss_mask == [False] * 3 + [True] * 4  # <think>, d, </think>, EOS
    assert ex.input_ids[-1] == tok.eos_token_id
    trunc = tokenize_sft("abc", "<think>d</think>", tok, max_len=5)
    assert trunc.truncated and len(trunc.input_ids) == 5


def test_loss_is_response_only_by_hand(tiny):
    tok, model = tiny
    data, pairs = _examples(tok)
    batch = collate(data, packing=False, pad_id=tok.pad_token_id)
    with torch.no_grad():
        loss, n = sft_loss_sum(model, batch)
        # Independent reference: one sequence at a time, sum -log p over response tokens.
        ref, ref_n = 0.0, 0
        for ex in data:
            ids = torch.tensor([ex.input_ids])
            logp = model(ids).logits[0].log_softmax(-1)
            for t in range(1, len(ex.input_ids)):
                if ex.loss_mask[t]:
                    ref -= float(logp[t - 1, ex.input_ids[t]])
                    ref_n += 1
    assert n == ref_n == sum(sum(ex.loss_mask) for ex in data)
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_prompt_tokens_do_not_change_the_loss_targets(tiny):
    tok, model = tiny
    data, _ = _examples(tok)
    batch = collate(data, packing=False, pad_id=tok.pad_token_id)
    # Every position labelled for loss is a response token.
    for row, ex in zip(batch["labels"], data, strict=False):
        labelled = (row != IGNORE).nonzero().flatten().tolist()
        assert labelled == [i for i, m in enumerate(ex.loss_mask) if m]


@pytest.mark.parametrize("pack_length", [0, 40, 1000])
def test_packed_equals_padded(tiny, pack_length):
    tok, model = tiny
    data, _ = _examples(tok)
    padded = collate(data, packing=False, pad_id=tok.pad_token_id)
    packed = collate(data, packing=True, pad_id=tok.pad_token_id, pack_length=pack_length)
    # fewer or equal tokens computed when packed, and no sequence is split
    assert packed["input_ids"].numel() <= padded["input_ids"].numel()
    with torch.no_grad():
        a, na = sft_loss_sum(model, padded)
        b, nb = sft_loss_sum(model, packed)
    assert na == nb
    assert a.item() == pytest.approx(b.item(), rel=1e-5, abs=1e-5)


def test_packed_gradients_equal_padded(tiny):
    tok, model = tiny
    data, _ = _examples(tok)
    grads = []
    for packing in (False, True):
        model.zero_grad()
        loss, _ = sft_loss_sum(
            model, collate(data, packing=packing, pad_id=tok.pad_token_id, pack_length=64)
        )
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_pack_rows_first_fit_decreasing():
    assert pack_rows([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]
    rows = pack_rows([3] * 5, 7)
    assert sorted(i for r in rows for i in r) == list(range(5))
    assert all(len(r) <= 2 for r in rows)
    assert pack_rows([10], 4) == [[0]]  # a sequence longer than the row gets its own row
