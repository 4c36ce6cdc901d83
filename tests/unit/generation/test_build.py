"""``build_generator``: every knob of ``cfg.generation`` reaches the generator, and a back end
that cannot be built is refused, never replaced by another."""

import importlib.util

import pytest

from r1pipe.config import compose
from r1pipe.config.schema import ConfigError, GenerationConfig
from r1pipe.generation import build_generator
from r1pipe.generation.hf import HFGenerator
from r1pipe.models import build_char_tokenizer, build_tiny_model


@pytest.fixture(scope="module")
def model_tok():
    cfg, _ = compose(["conf=smoke"])
    tok = build_char_tokenizer()
    return build_tiny_model(cfg.model, tok, seed=0).eval(), tok


def test_every_hf_knob_is_passed_through(model_tok):
    model, tok = model_tok
    # every value differs from HFGenerator's own defaults (256, loop, 0, True)
    cfg = GenerationConfig(batch_size=7, decoder="generate", num_threads=3, fused_step=False)
    gen = build_generator(model, tok, cfg)
    assert isinstance(gen, HFGenerator) and gen.model is model and gen.tokenizer is tok
    assert (gen.batch_size, gen.decoder, gen.num_threads) == (7, "generate", 3)
    assert not gen.synced_gpus and not gen.fused


def test_fused_step_and_synced_gpus(model_tok):
    model, tok = model_tok
    # the tiny qwen2 model is one the fused step supports, so fused_step decides alone
    assert build_generator(model, tok, GenerationConfig(fused_step=True)).fused
    assert not build_generator(model, tok, GenerationConfig(fused_step=False)).fused
    # ZeRO-3 ranks step in lockstep through the model's own forward
    gen = build_generator(model, tok, GenerationConfig(fused_step=True), synced_gpus=True)
    assert gen.synced_gpus and not gen.fused


def test_a_caller_batch_size_overrides_the_config(model_tok):
    model, tok = model_tok
    cfg = GenerationConfig(batch_size=7, decoder="generate")
    gen = build_generator(model, tok, cfg, batch_size=5)  # e.g. eval.batch_size
    assert gen.batch_size == 5 and gen.decoder == "generate"


@pytest.mark.parametrize(
    ("backend", "needle"),
    [("vllm", "vllm is not installed here"), ("sglang", "unknown back end 'sglang'")],
)
def test_a_backend_it_cannot_build_is_refused(model_tok, backend, needle):
    if backend == "vllm" and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    model, tok = model_tok
    cfg = GenerationConfig()
    cfg.backend = backend  # past the schema, as a config built by hand could be
    with pytest.raises(ConfigError) as e:
        build_generator(model, tok, cfg)
    assert str(e.value).startswith("generation.backend: ") and needle in str(e.value)
