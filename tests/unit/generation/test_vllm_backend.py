"""The vLLM back end without vLLM: the sampling-config mapping, the output adapter, the weight
iterator, the order of wake/push/reset/generate/sleep enforced by a fake engine, the push
timeout, and the error when vllm is not installed."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from r1pipe.config import compose
from r1pipe.config.schema import ConfigError
from r1pipe.generation.base import SamplingParams
from r1pipe.generation.vllm import (
    VLLMGenerator,
    WeightPushTimeout,
    hf_weights,
    sampling_kwargs,
    to_completions,
)
from r1pipe.models import build_char_tokenizer, build_tiny_model


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    cfg, _ = compose([])
    return build_tiny_model(cfg.model, tok, seed=0)


# ---- sampling config --------------------------------------------------------------------


def test_sampling_kwargs_map_every_field():
    p = SamplingParams(
        n=8,
        temperature=0.6,
        top_p=0.95,
        top_k=20,
        max_new_tokens=96,
        min_new_tokens=4,
        stop=["</answer>"],
        return_logprobs=True,
        seed=7,
    )
    assert sampling_kwargs(p, seed=99) == {
        "n": 8,
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "max_tokens": 96,
        "min_tokens": 4,
        "stop": ["</answer>"],
        "include_stop_str_in_output": True,  # the hf back end keeps stop strings too
        "logprobs": 0,  # the sampled token's own log-prob
        "seed": 7,  # the call's seed wins over the group's
    }


def test_sampling_kwargs_defaults_greedy_and_group_seed():
    kw = sampling_kwargs(SamplingParams(temperature=0.0, max_new_tokens=5), seed=3)
    assert kw == {
        "n": 1,
        "temperature": 0.0,  # vLLM: greedy
        "top_p": 1.0,
        "max_tokens": 5,
        "min_tokens": 0,
        "seed": 3,
    }  # no top_k (0 = off), no stop, no log-probs asked for


# ---- output adapter ---------------------------------------------------------------------


def _output(tok, texts, finish, logprob_of=None):
    outs = []
    for text, reason in zip(texts, finish, strict=True):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if reason == "eos":
            ids = [*ids, tok.eos_token_id]
        lps = None
        if logprob_of is not None:
            lps = [{t: SimpleNamespace(logprob=logprob_of(j))} for j, t in enumerate(ids)]
        outs.append(
            SimpleNamespace(
                token_ids=ids,
                logprobs=lps,
                finish_reason="stop" if reason != "length" else "length",
            )
        )
    return SimpleNamespace(outputs=outs)


def test_to_completions_text_eos_stop_strings_and_logprobs(tok):
    out = _output(
        tok,
        ["<answer>4</answer>", "4 4 4", "hi"],
        ["stop", "length", "eos"],  # a stop string, the token limit, EOS
        logprob_of=lambda j: -0.1 * (j + 1),
    )
    params = SamplingParams(n=3, stop=["</answer>"], return_logprobs=True)
    comps = to_completions(out, 5, tok, params)
    assert [c.text for c in comps] == ["<answer>4</answer>", "4 4 4", "hi"]  # no EOS text
    assert [c.finish_reason for c in comps] == ["stop", "length", "stop"]
    assert all(c.prompt_index == 5 for c in comps)
    assert comps[2].token_ids[-1] == tok.eos_token_id  # EOS kept in the token ids
    n = len(comps[0].token_ids)
    assert comps[0].logprobs == pytest.approx([-0.1 * (j + 1) for j in range(n)])
    assert len(comps[2].logprobs) == len(comps[2].token_ids)


def test_to_completions_without_logprobs_and_missing_logprobs_refused(tok):
    out = _output(tok, ["ab"], ["stop"])
    assert to_completions(out, 0, tok, SamplingParams())[0].logprobs is None
    with pytest.raises(RuntimeError, match="no log-prob"):
        to_completions(out, 0, tok, SamplingParams(return_logprobs=True))


# ---- weights ----------------------------------------------------------------------------


def test_hf_weights_names_shapes_order_and_tied_output_layer(model):
    named = dict(model.named_parameters())
    pushed = list(hf_weights(model))
    names = [n for n, _ in pushed]
    assert "lm_head.weight" not in named  # tied: one parameter in the model...
    assert names.count("lm_head.weight") == 1  # ...and sent as the output layer too
    assert [n for n in names if n != "lm_head.weight"] == list(named)  # every one, in order
    assert names.index("lm_head.weight") == names.index("model.embed_tokens.weight") + 1
    for n, t in pushed:
        src = named.get(n, named["model.embed_tokens.weight"])
        assert t.shape == src.shape and torch.equal(t, src)
        assert t.data_ptr() != src.data_ptr()  # clones: the engine gets its own copy


def test_hf_weights_untied_model_sends_its_own_output_layer(tok):
    cfg, _ = compose([])
    m = build_tiny_model(cfg.model, tok, seed=0)
    m.config.tie_word_embeddings = False
    m.lm_head.weight = torch.nn.Parameter(m.lm_head.weight.detach().clone() + 1)
    pushed = dict(hf_weights(m))
    assert torch.equal(pushed["lm_head.weight"], m.lm_head.weight)
    assert not torch.equal(pushed["lm_head.weight"], pushed["model.embed_tokens.weight"])


# ---- the engine's lifecycle, enforced by a fake -------------------------------------------


class FakeLLM:
    """Holds a copy of the weights, as vLLM does; refuses anything out of order: generating
    while asleep, pushing into sleeping weights, generating on weights older than the last
    push without a prefix-cache reset. Completions carry the weights' version."""

    def __init__(self, tok, model, push_delay: float = 0.0):
        self.tok, self.version, self.calls = tok, 0, []
        self.weights = {n: t.clone() for n, t in hf_weights(model)}
        self.sleeping: set[str] = set()
        self.cache_stale = False
        self.push_delay = push_delay

    def generate(self, prompts, sp, use_tqdm=False):
        assert not self.sleeping, f"generate while {self.sleeping} asleep"
        assert not self.cache_stale, "generate with the prefix cache of discarded weights"
        self.calls.append("generate")
        ids = self.tok(f"v{self.version}", add_special_tokens=False)["input_ids"]
        return [
            SimpleNamespace(
                outputs=[
                    SimpleNamespace(token_ids=ids, logprobs=None, finish_reason="stop")
                    for _ in range(sp.n)
                ]
            )
            for _ in prompts
        ]

    def collective_rpc(self, method, kwargs):
        assert method == "reload_weights" and "weights" not in self.sleeping
        if self.push_delay:
            threading.Event().wait(self.push_delay)
        for name, t in kwargs["weights_iterator"]:
            self.weights[name] = t
        self.version += 1
        self.cache_stale = True
        self.calls.append("push")

    def reset_prefix_cache(self):
        self.cache_stale = False
        self.calls.append("reset")

    def sleep(self, level):
        assert level == 1  # level 2 would discard the weights a generate may still need
        self.sleeping = {"weights", "kv_cache"}
        self.calls.append("sleep")

    def wake_up(self, tags):
        assert set(tags) <= self.sleeping
        self.sleeping -= set(tags)
        self.calls.append(f"wake:{','.join(tags)}")


def _generator(tok, llm, **kw):
    gen = VLLMGenerator(llm, tok, **kw)
    gen._vllm = SimpleNamespace(SamplingParams=lambda **k: SimpleNamespace(**k))
    return gen


def test_colocated_order_wake_push_reset_generate_sleep(tok, model):
    llm = FakeLLM(tok, model)
    gen = _generator(tok, llm, sleep=True)
    first = gen.generate(["1+1=?"], SamplingParams(n=2))
    assert [c.text for c in first[0]] == ["v0", "v0"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # an optimizer step
    gen.update_weights(model)
    second = gen.generate(["1+1=?"], SamplingParams(n=1))
    assert second[0][0].text == "v1"  # generated on the pushed weights
    assert llm.calls == [
        "generate", "sleep", "wake:weights", "push", "reset", "wake:kv_cache", "generate", "sleep"
    ]  # fmt: skip
    emb = dict(model.named_parameters())["model.embed_tokens.weight"]
    assert torch.equal(llm.weights["lm_head.weight"], emb)  # the new tied output layer


def test_generating_without_a_reset_after_a_push_is_caught_by_the_fake(tok, model):
    """The fake refuses what a broken push sequence would do (so the test above can fail)."""
    llm = FakeLLM(tok, model)
    llm.collective_rpc("reload_weights", {"weights_iterator": hf_weights(model)})
    with pytest.raises(AssertionError, match="prefix cache"):
        llm.generate(["x"], SimpleNamespace(n=1))


def test_push_that_hangs_times_out(tok, model):
    gen = _generator(tok, FakeLLM(tok, model, push_delay=2.0), push_timeout_s=0.2)
    with pytest.raises(WeightPushTimeout, match="push_timeout_s=0.2"):
        gen.update_weights(model)


def test_missing_vllm_is_one_clear_error(monkeypatch):
    import importlib.util
    import sys

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    from r1pipe.generation.vllm import import_vllm

    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    with pytest.raises(ConfigError, match="vllm is not installed here.*generation=hf"):
        import_vllm()


def test_hf_weights_under_zero3_on_two_ranks_are_full_and_in_the_same_order(tmp_path):
    """Each rank holds a shard; the push gathers layer by layer: every rank sends the full
    tensors, in the same order, equal to the unpartitioned model's."""
    import json
    import os
    import subprocess
    from pathlib import Path

    from clihelpers import torchrun

    root = Path(__file__).resolve().parents[3]
    out = tmp_path / "w"
    cmd = torchrun(2, str(root / "tests" / "dist" / "zero3_weights.py"), str(out))
    res = subprocess.run(
        cmd, cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    full = json.loads(Path(f"{out}.full.json").read_text())
    for rank in (0, 1):
        got = json.loads(Path(f"{out}.rank{rank}.json").read_text())
        assert [g[:2] for g in got] == [f[:2] for f in full]  # names, full shapes, order
        for g, f in zip(got, full, strict=True):
            assert g[2:] == pytest.approx(f[2:], rel=1e-6, abs=1e-6), g[0]
    assert any(n == "lm_head.weight" for n, *_ in full)
