"""The hf back end's decode loop against independent references: transformers' own
``generate`` (greedy token ids), its logits warpers (top-k / top-p), and a teacher-forced
recomputation of the sampled tokens' log-probs (which also catches a corrupted KV cache
when finished rows are dropped from the batch)."""

import pytest
import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from r1pipe.config import compose
from r1pipe.generation import SamplingParams
from r1pipe.generation.hf import HFGenerator, process_logits
from r1pipe.models import build_char_tokenizer, build_tiny_model

PROMPTS = ["12+7=?", "3+4=? Think.", "99+1", "a much longer prompt: 45+67=?"]


@pytest.fixture(scope="module")
def model_tok():
    cfg, _ = compose(["conf=smoke"])
    tok = build_char_tokenizer()
    return build_tiny_model(cfg.model, tok, seed=3).eval(), tok


def _with_eos(tok, token: str):
    tok = build_char_tokenizer()
    tok.eos_token = token
    return tok


def _hf_greedy(model, tok, prompts, max_new):
    """Reference: transformers.generate, one prompt at a time (no padding at all)."""
    rows = []
    for p in prompts:
        ids = tok(p, return_tensors="pt", add_special_tokens=False)["input_ids"]
        out = model.generate(
            ids,
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )[0, ids.shape[1] :].tolist()
        if tok.eos_token_id in out:
            out = out[: out.index(tok.eos_token_id) + 1]
        rows.append(out)
    return rows


def test_greedy_loop_equals_transformers_generate(model_tok):
    model, tok = model_tok
    # find a token the model emits greedily at various steps, and make it the EOS, so that
    # rows stop at different steps and are dropped from the batch mid-way
    free = _hf_greedy(model, tok, PROMPTS, 30)
    counts = {}
    for row in free:
        for t in set(row[2:]):
            counts[t] = counts.get(t, 0) + 1
    eos_id = max(counts, key=counts.get)
    tok = _with_eos(tok, tok.convert_ids_to_tokens(eos_id))
    want = _hf_greedy(model, tok, PROMPTS, 30)
    assert len({len(r) for r in want}) > 1, "the test needs rows of different lengths"
    gen = HFGenerator(model, tok, batch_size=3)  # 2 batches, left padding within each
    got = gen.generate(PROMPTS, SamplingParams(n=1, temperature=0, max_new_tokens=30))
    assert [g[0].token_ids for g in got] == want
    for g, w in zip(got, want, strict=True):
        assert g[0].finish_reason == ("stop" if w[-1] == eos_id else "length")
    # the transformers decoder of the same class agrees too
    ref = HFGenerator(model, tok, batch_size=3, decoder="generate")
    again = ref.generate(PROMPTS, SamplingParams(n=1, temperature=0, max_new_tokens=30))
    assert [g[0].token_ids for g in again] == want


@pytest.mark.parametrize(("temperature", "n"), [(1.0, 4), (0.7, 3)])
def test_sampled_logprobs_equal_teacher_forced(model_tok, temperature, n):
    model, tok = model_tok
    tok = _with_eos(tok, "7")  # a common enough EOS: rows end at different steps
    torch.manual_seed(0)
    gen = HFGenerator(model, tok, batch_size=8)
    groups = gen.generate(
        PROMPTS,
        SamplingParams(n=n, temperature=temperature, max_new_tokens=25, return_logprobs=True),
    )
    lengths = set()
    for p, group in zip(PROMPTS, groups, strict=True):
        assert len(group) == n
        prompt = tok(p, add_special_tokens=False)["input_ids"]
        for c in group:
            lengths.add(len(c.token_ids))
            seq = torch.tensor([prompt + c.token_ids])
            with torch.no_grad():
                logits = model(seq).logits[0].float() / temperature
            lp = logits.log_softmax(-1)[len(prompt) - 1 : -1]
            want = lp.gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(c.logprobs), want, atol=1e-4, rtol=1e-4)
    assert len(lengths) > 1


@pytest.mark.parametrize(("top_k", "top_p"), [(5, 1.0), (0, 0.8), (7, 0.5), (0, 0.999)])
def test_warpers_match_transformers(top_k, top_p):
    torch.manual_seed(1)
    logits = torch.randn(6, 50) * 3
    params = SamplingParams(temperature=0.7, top_k=top_k, top_p=top_p)
    want = logits / 0.7
    if top_k:
        want = TopKLogitsWarper(top_k)(None, want)
    if top_p < 1:
        want = TopPLogitsWarper(top_p)(None, want)
    got = process_logits(logits, params)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got[~torch.isinf(got)], want[~torch.isinf(want)])


def test_top_k_one_is_greedy_and_min_new_tokens_blocks_eos(model_tok):
    model, tok = model_tok
    gen = HFGenerator(model, tok)
    greedy = gen.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=12))
    top1 = gen.generate(PROMPTS, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=12))
    assert [g[0].token_ids for g in greedy] == [g[0].token_ids for g in top1]
    eos_tok = _with_eos(tok, "7")
    gen = HFGenerator(model, eos_tok)
    out = gen.generate(
        PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=10, min_new_tokens=10)
    )
    for group in out:
        for c in group:
            assert len(c.token_ids) == 10
            assert eos_tok.eos_token_id not in c.token_ids[:-1]


def test_stop_strings_end_a_row(model_tok):
    model, tok = model_tok
    gen = HFGenerator(model, tok)
    free = gen.generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=20))[0][0]
    stop = free.text[5:7]  # a string the greedy row produces mid-way
    out = gen.generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=20, stop=[stop]))
    c = out[0][0]
    assert c.finish_reason == "stop" and stop in c.text
    assert len(c.token_ids) < len(free.token_ids) and free.text.startswith(c.text)


def test_inverse_cdf_sampling_matches_probabilities():
    from r1pipe.generation.hf import sample_tokens

    torch.manual_seed(0)
    probs = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3, 0.0])
    draws = sample_tokens(probs.expand(200_000, -1).contiguous())
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    assert freq[[0, 2, 5]].sum() == 0  # zero-probability tokens are never drawn
    torch.testing.assert_close(freq, probs, atol=0.005, rtol=0)
    # rows are independent and follow their own distributions
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).repeat(50, 1)
    assert sample_tokens(rows).tolist() == [0, 2] * 50
