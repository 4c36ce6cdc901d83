"""The fused decode step against the model's own forward: the same sampled tokens and
log-probs through the whole decode loop (left-padded prompts of different lengths, groups,
rows finishing early and dropped, stop strings), for Qwen2 and Llama (with biases and a
scaled rotary embedding); and which models it refuses."""

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

from r1pipe.generation import SamplingParams, fused
from r1pipe.generation.hf import HFGenerator
from r1pipe.models import build_char_tokenizer

PROMPTS = ["12+7=?", "3+4=? Think.", "99+1", "a much longer prompt: 45+67=?", "x"]


def _model(kind: str, tok, seed: int = 0, **extra):
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig, "mistral": MistralConfig}[kind]
    config = cls(**common, **extra)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # random biases, so that the bias paths are exercised
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    return model


def _tok(eos: str = "7"):
    tok = build_char_tokenizer()
    tok.eos_token = eos  # a frequent character: rows end early and are dropped
    return tok


VARIANTS = {
    "qwen2": ("qwen2", {}),
    "llama-bias-linear-rope": (
        "llama",
        {
            "attention_bias": True,
            "mlp_bias": True,
            "rope_scaling": {"rope_type": "linear", "factor": 2.0},
        },
    ),
    "llama-llama3-rope": (
        "llama",
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            }
        },
    ),
    "mistral": ("mistral", {"sliding_window": None}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize(
    ("n", "temperature", "stop"), [(3, 1.0, []), (1, 0.0, []), (4, 0.8, ["+"])]
)
def test_fused_step_samples_what_the_forward_samples(variant, n, temperature, stop):
    tok = _tok()
    kind, extra = VARIANTS[variant]
    model = _model(kind, tok, **extra)
    assert fused.supported(model)
    params = SamplingParams(
        n=n, temperature=temperature, max_new_tokens=24, stop=stop, return_logprobs=True, seed=5
    )
    out = {}
    for on in (False, True):
        gen = HFGenerator(model, tok, batch_size=8, fused_step=on, num_threads=1)
        out[on] = gen.generate(PROMPTS, params)
    lengths = [len(c.token_ids) for group in out[True] for c in group]
    if temperature > 0:  # some rows ended early (and were dropped), some did not
        assert min(lengths) < 24 and max(lengths) == 24
    for ga, gb in zip(out[False], out[True], strict=True):
        for a, b in zip(ga, gb, strict=True):
            assert a.token_ids == b.token_ids
            assert a.text == b.text and a.finish_reason == b.finish_reason
            torch.testing.assert_close(
                torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=1e-4, atol=1e-4
            )


def test_fused_step_logits_equal_the_forward_step_by_step():
    """One batch decoded by teacher forcing: the fused step's logits at every step equal the
    model's forward on the whole sequence so far, for every row (also after dropping)."""
    tok = _tok()
    model = _model("qwen2", tok, seed=1)
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS[:3]]
    n, T = 2, 6
    W = max(len(e) for e in enc)
    ids = torch.full((3, W), tok.pad_token_id)
    mask = torch.zeros(3, W, dtype=torch.long)
    for j, e in enumerate(enc):
        ids[j, W - len(e) :], mask[j, W - len(e) :] = torch.tensor(e), 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        weights = fused.FusedWeights(model)
        step = fused.FusedStep(weights, kv, mask, n, pos[:, -1].repeat_interleave(n), T)
        torch.manual_seed(0)
        comp = torch.randint(10, 60, (3 * n, T))
        rows = torch.arange(3 * n)
        for t in range(T):
            if t == 3:  # drop rows 1 and 4
                keep = torch.tensor([0, 2, 3, 5])
                step.select(keep)
                rows = rows[keep]
            logits = step.step(comp[rows, t], t)
            for j, r in enumerate(rows.tolist()):
                e = enc[r // n] + comp[r, : t + 1].tolist()
                ref = model(torch.tensor([e])).logits[0, -1]
                torch.testing.assert_close(logits[j], ref, rtol=1e-4, atol=1e-4)


def test_supported_refuses_what_it_does_not_compute():
    tok = _tok()
    assert fused.supported(_model("qwen2", tok))
    assert not fused.supported(_model("mistral", tok, sliding_window=8))
    dyn = _model("llama", tok, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    assert not fused.supported(dyn)
    gelu = _model("llama", tok, hidden_act="gelu")
    assert not fused.supported(gelu)
    gpt2 = AutoModelForCausalLM.from_config(
        GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2)
    )
    assert not fused.supported(gpt2)
    # an unsupported model still decodes with the loop, through its own forward
    gen = HFGenerator(gelu, tok, fused_step=True, num_threads=1)
    out = gen.generate(["12+7=?"], SamplingParams(n=2, max_new_tokens=5, seed=0))
    assert len(out[0]) == 2
