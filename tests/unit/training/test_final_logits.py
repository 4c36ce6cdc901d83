"""Log-probs of models whose forward transforms the output layer's logits (Gemma-2's final
soft-capping, Granite's ``logits_scaling``, Cohere's ``logit_scale``, ...) equal
``log_softmax(model(seq).logits / temperature)``: the model's own forward is the reference.

The tiny models get weights large enough (``initializer_range=0.5``) that the transform
changes the distribution; each test checks that it does, against the untransformed logits.
"""

import pytest
import torch
import transformers as tf

from r1pipe.errors import UserError
from r1pipe.generation.fused import supported
from r1pipe.training.logprobs import completion_logprobs

V = 64
TINY = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    initializer_range=0.5,
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
MOE = dict(num_local_experts=2, num_experts_per_tok=1)
GEMMA3N = dict(
    vocab_size_per_layer_input=V,
    hidden_size_per_layer_input=8,
    intermediate_size=[64, 64],
    laurel_rank=4,
    altup_num_inputs=2,
    num_kv_shared_layers=0,
    activation_sparsity_pattern=[0.0, 0.0],
)
MINICPM3 = dict(
    head_dim=None,
    num_key_value_heads=2,
    kv_lora_rank=16,
    q_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=8,
    v_head_dim=16,
)
FALCON_H1 = dict(
    mamba_d_ssm=32, mamba_n_heads=2, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8
)
VISION = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=8,
)

# name: (config class, config arguments, the class AutoModelForCausalLM must give)
MODELS = {
    "gemma2": (
        "Gemma2Config",
        dict(final_logit_softcapping=2.0, attn_logit_softcapping=None, sliding_window=64),
        "Gemma2ForCausalLM",
    ),
    "granite": ("GraniteConfig", dict(logits_scaling=4.0), "GraniteForCausalLM"),
    "cohere": ("CohereConfig", dict(logit_scale=0.25), "CohereForCausalLM"),
    "gemma3_text": (
        "Gemma3TextConfig",
        dict(final_logit_softcapping=2.0, sliding_window=64),
        "Gemma3ForCausalLM",
    ),
    "gemma3n_text": (
        "Gemma3nTextConfig",
        dict(final_logit_softcapping=2.0, sliding_window=64, **GEMMA3N),
        "Gemma3nForCausalLM",
    ),
    "gemma4_text": (
        "Gemma4TextConfig",
        dict(final_logit_softcapping=2.0, sliding_window=64),
        "Gemma4ForCausalLM",
    ),
    "gemma4": (
        "Gemma4Config",
        dict(
            text_config=dict(final_logit_softcapping=2.0, sliding_window=64), vision_config=VISION
        ),
        "Gemma4ForConditionalGeneration",
    ),
    "gemma4_unified_text": (
        "Gemma4UnifiedTextConfig",
        dict(final_logit_softcapping=2.0, sliding_window=64),
        "Gemma4UnifiedForCausalLM",
    ),
    "gemma4_unified": (
        "Gemma4UnifiedConfig",
        dict(
            text_config=dict(final_logit_softcapping=2.0, sliding_window=64), vision_config=VISION
        ),
        "Gemma4UnifiedForConditionalGeneration",
    ),
    "vaultgemma": ("VaultGemmaConfig", dict(final_logit_softcapping=2.0), "VaultGemmaForCausalLM"),
    "nanochat": ("NanoChatConfig", dict(final_logit_softcapping=2.0), "NanoChatForCausalLM"),
    "recurrent_gemma": (
        "RecurrentGemmaConfig",
        dict(
            logits_soft_cap=0.2,  # its init keeps logits small
            block_types=["recurrent", "attention"],
            lru_width=32,
            attention_window_size=64,
        ),
        "RecurrentGemmaForCausalLM",
    ),
    "granite_swa": ("GraniteSWAConfig", dict(logits_scaling=4.0), "GraniteSWAForCausalLM"),
    "granitemoe": ("GraniteMoeConfig", dict(logits_scaling=4.0, **MOE), "GraniteMoeForCausalLM"),
    "granitemoe_swa": (
        "GraniteMoeSWAConfig",
        dict(logits_scaling=4.0, **MOE),
        "GraniteMoeSWAForCausalLM",
    ),
    "granitemoeshared": (
        "GraniteMoeSharedConfig",
        dict(logits_scaling=4.0, shared_intermediate_size=32, **MOE),
        "GraniteMoeSharedForCausalLM",
    ),
    "granitemoehybrid": (
        "GraniteMoeHybridConfig",
        dict(
            logits_scaling=4.0,
            shared_intermediate_size=32,
            layer_types=["attention", "attention"],
            mamba_n_heads=2,
            mamba_d_head=32,
            mamba_d_state=8,
            mamba_n_groups=1,
            **MOE,
        ),
        "GraniteMoeHybridForCausalLM",
    ),
    "minicpm3": ("MiniCPM3Config", dict(dim_model_base=8, **MINICPM3), "MiniCPM3ForCausalLM"),
    "hyperclovax": ("HyperCLOVAXConfig", dict(logits_scaling=4.0), "HyperCLOVAXForCausalLM"),
    "cohere2": ("Cohere2Config", dict(logit_scale=0.25, sliding_window=64), "Cohere2ForCausalLM"),
    "cohere2_moe": (
        "Cohere2MoeConfig",
        dict(
            logit_scale=0.25,
            sliding_window=64,
            num_experts=2,
            num_experts_per_tok=1,
            moe_intermediate_size=32,
        ),
        "Cohere2MoeForCausalLM",
    ),
    "falcon_h1": (
        "FalconH1Config",
        dict(lm_head_multiplier=4.0, **FALCON_H1),
        "FalconH1ForCausalLM",
    ),
}
MAIN = ("gemma2", "granite", "cohere")


def _build(name: str) -> torch.nn.Module:
    config_cls, kwargs, model_cls = MODELS[name]
    if "text_config" in kwargs:
        kwargs = dict(kwargs, text_config={**TINY, **kwargs["text_config"]})
    else:
        kwargs = {**TINY, **kwargs}
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(getattr(tf, config_cls)(**kwargs))
    assert type(model).__name__ == model_cls
    return model.eval()


@pytest.fixture(scope="module")
def models():
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            cache[name] = _build(name)
        return cache[name]

    return get


def _rows(G, prompt_lens, P, lengths, seed=0):
    """GRPO-style rows: G consecutive rows per random prompt (left-padded to P), random
    completions of the given lengths (right-padded to the longest)."""
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(G * len(prompt_lens), P + T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for g, plen in enumerate(prompt_lens):
        prompt = torch.randint(5, V, (plen,), generator=gen)
        for j in range(G):
            r, n = g * G + j, lengths[g * G + j]
            ids[r, P - plen : P], mask[r, P - plen : P] = prompt, 1
            ids[r, P : P + n] = torch.randint(5, V, (n,), generator=gen)
            mask[r, P : P + n] = 1
    return ids, mask


def _reference(model, ids, mask, P, temperature):
    """Per row, the unpadded sequence through the model's own forward: log-probs and
    entropies of ``log_softmax(logits / temperature)`` at the completion tokens, and the same
    from the output layer's raw logits (no final transform), to show the transform matters."""
    ref_lp, ref_ent, raw_lp = [], [], []
    for row, m in zip(ids, mask, strict=True):
        seq = row[m.bool()][None]
        n_prompt = int(m[:P].sum())
        comp = seq[0, n_prompt:]
        pos = slice(n_prompt - 1, n_prompt - 1 + len(comp))
        logp = (model(input_ids=seq).logits[0, pos].float() / temperature).log_softmax(-1)
        ref_lp.append(logp.gather(-1, comp[:, None])[:, 0])
        ref_ent.append(-(logp.exp() * logp).sum(-1))
        raw = model.get_output_embeddings()(model.get_decoder()(input_ids=seq).last_hidden_state)
        raw = (raw[0, pos].float() / temperature).log_softmax(-1)
        raw_lp.append(raw.gather(-1, comp[:, None])[:, 0])
    return ref_lp, ref_ent, raw_lp


def _check(lp, ent, mask, P, ref_lp, ref_ent, raw_lp):
    for r, (want_lp, want_ent) in enumerate(zip(ref_lp, ref_ent, strict=True)):
        n = len(want_lp)
        assert int(mask[r, P:].sum()) == n
        torch.testing.assert_close(lp[r, :n], want_lp, rtol=0, atol=1e-5)
        torch.testing.assert_close(ent[r, :n], want_ent, rtol=0, atol=1e-5)
    # the test is sensitive: the transform moves the log-probs well beyond the tolerance
    gap = max((a - b).abs().max().item() for a, b in zip(ref_lp, raw_lp, strict=True))
    assert gap > 0.1


# (temperature, chunk_size, share_prompts, bucket_overhead)
OPTIONS = [
    (1.0, 2048, False, None),  # one padded batch, one chunk
    (0.6, 3, True, 0),  # shared prompts where the cache allows, one group per length
    (1.7, 5, True, None),
    (0.8, 7, False, 6),
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("name", MAIN)
def test_logprobs_and_entropy_match_model_forward(models, name, options):
    temperature, chunk, share, overhead = options
    model = models(name)
    P = 8
    lengths = [1, 3, 9, 7, 2, 9, 5, 6, 4]
    ids, mask = _rows(G=3, prompt_lens=[4, 6, 8], P=P, lengths=lengths)
    with torch.no_grad():
        lp, ent = completion_logprobs(
            model,
            ids,
            mask,
            P,
            temperature=temperature,
            chunk_size=chunk,
            share_prompts=share,
            bucket_overhead=overhead,
        )
        ref = _reference(model, ids, mask, P, temperature)
    assert lp.shape == ent.shape == (len(lengths), max(lengths))
    _check(lp, ent, mask, P, *ref)


@pytest.mark.parametrize("name", sorted(set(MODELS) - set(MAIN)))
def test_other_transformed_models_match_model_forward(models, name):
    model = models(name)
    P = 6
    lengths = [4, 2, 5, 3]
    ids, mask = _rows(G=2, prompt_lens=[4, 6], P=P, lengths=lengths, seed=1)
    with torch.no_grad():
        lp, ent = completion_logprobs(model, ids, mask, P, temperature=0.7, chunk_size=3)
        ref = _reference(model, ids, mask, P, 0.7)
    _check(lp, ent, mask, P, *ref)


def test_temperature_divides_the_soft_capped_logits(models):
    """The sampler divides the model's final logits by the temperature: soft-capping is not
    linear, so capping the tempered logits would give another distribution."""
    model = models("gemma2")
    cap, temperature, P = 2.0, 0.5, 8
    ids, mask = _rows(G=2, prompt_lens=[5, 8], P=P, lengths=[4, 6, 3, 5], seed=2)
    with torch.no_grad():
        lp, _ = completion_logprobs(model, ids, mask, P, temperature=temperature, chunk_size=4)
        ref_lp, _, _ = _reference(model, ids, mask, P, temperature)
        wrong = []
        for row, m in zip(ids, mask, strict=True):
            seq = row[m.bool()][None]
            n_prompt = int(m[:P].sum())
            raw = model.get_output_embeddings()(
                model.get_decoder()(input_ids=seq).last_hidden_state
            )
            logits = torch.tanh(raw[0].float() / temperature / cap) * cap  # cap after temperature
            logp = logits[n_prompt - 1 : -1].log_softmax(-1)
            wrong.append(logp.gather(-1, seq[0, n_prompt:, None])[:, 0])
    for r, (want, other) in enumerate(zip(ref_lp, wrong, strict=True)):
        torch.testing.assert_close(lp[r, : len(want)], want, rtol=0, atol=1e-5)
        assert (lp[r, : len(want)] - other).abs().max() > 0.1


@pytest.mark.parametrize("name", MAIN)
def test_gradients_match_model_forward(models, name):
    """The transform sits inside the checkpointed chunk: gradients through it equal those of
    the model's own forward."""
    model = models(name)
    P = 6
    ids, mask = _rows(G=2, prompt_lens=[4, 6], P=P, lengths=[3, 5, 2, 4], seed=3)
    weights = torch.arange(1, ids.shape[0] + 1, dtype=torch.float32)[:, None]
    model.zero_grad()
    lp, _ = completion_logprobs(model, ids, mask, P, temperature=0.7, chunk_size=3)
    (lp * mask[:, P:] * weights).sum().backward()
    got = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad()
    ref_lp, _, _ = _reference(model, ids, mask, P, 0.7)
    sum(w * r.sum() for w, r in zip(weights[:, 0], ref_lp, strict=True)).backward()
    want = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad()
    # fp32 sums in another order: tolerance relative to the largest gradient (about 10 to 40)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("name", MAIN)
def test_fused_decode_step_refuses_transformed_models(models, name):
    """The fused decode step calls the output layer itself and knows no final transform."""
    assert not supported(models(name))


def _batch():
    ids = torch.tensor([[0, 5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 0]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    return ids, mask, 3


def test_unknown_model_with_final_logit_attribute_is_refused():
    """A class r1pipe does not know, whose config sets a final-logit attribute: how its
    forward uses it is unknown, so no log-probs rather than silently different ones."""
    config = tf.LlamaConfig(**{**TINY, "head_dim": 16})
    config.logits_scaling = 4.0
    model = tf.AutoModelForCausalLM.from_config(config)
    with pytest.raises(UserError, match=r"'llama' \(LlamaForCausalLM\): config\.logits_scaling"):
        completion_logprobs(model, *_batch())


def test_xlstm_output_soft_cap_is_refused():
    config = tf.xLSTMConfig(
        vocab_size=V, hidden_size=32, embedding_dim=32, num_heads=2, num_blocks=1
    )
    model = tf.AutoModelForCausalLM.from_config(config)
    with pytest.raises(UserError, match=r"'xlstm' .*config\.output_logit_soft_cap"):
        completion_logprobs(model, *_batch())


def test_gemma3_multimodal_with_soft_cap_is_refused():
    """Gemma3ForConditionalGeneration does not soft-cap (its Gemma3ForCausalLM text model
    does): the text config's value is not known to apply, so the model is refused."""
    config = tf.Gemma3Config(
        text_config={**TINY, "final_logit_softcapping": 2.0, "sliding_window": 64},
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        mm_tokens_per_image=4,
    )
    model = tf.AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    with pytest.raises(UserError, match=r"'gemma3_text' .*config\.final_logit_softcapping"):
        completion_logprobs(model, *_batch())


def test_modernbert_decoder_head_is_refused():
    """Its forward runs a prediction head before ``get_output_embeddings()``."""
    config = tf.ModernBertDecoderConfig(
        **{k: TINY[k] for k in ("vocab_size", "hidden_size", "intermediate_size")},
        num_hidden_layers=1,
        num_attention_heads=2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
    )
    model = tf.AutoModelForCausalLM.from_config(config)
    with pytest.raises(UserError, match=r"ModernBertDecoderForCausalLM.*prediction head"):
        completion_logprobs(model, *_batch())
