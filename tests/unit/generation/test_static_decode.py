"""The hf decode loop's static batch (finished rows masked, not dropped; the host looks for
the end every few steps) against the compacting loop: the same tokens and log-probs for a
seed; the static-shaped fused step (what CUDA graphs capture) against ``FusedStep``; the
``static_batch`` / ``cuda_graphs`` switches; the loop's graph branch with a stand-in graph
on CPU; and, with a GPU only, a captured CUDA graph against the eager step."""

import pytest
import torch

from r1pipe.config.schema import GenerationConfig, ModelConfig
from r1pipe.generation import SamplingParams, build_generator, fused
from r1pipe.generation import hf as hf_mod
from r1pipe.generation.hf import CHECK_EVERY, HFGenerator
from r1pipe.models import build_char_tokenizer, build_tiny_model

PROMPTS = ["12+7=?", "3+4=? Think.", "99+1", "a much longer prompt: 45+67=?", "x"]
T = 40


def _tok():
    tok = build_char_tokenizer()
    tok.eos_token = "7"  # with a bias on its logit (per test), rows end at different steps
    return tok


def _model(tok, arch: str = "qwen2", seed: int = 2):
    cfg = ModelConfig(
        path=None, arch=arch, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4
    )
    return build_tiny_model(cfg, tok, seed=seed).eval()


def _greedy_eos(model, tok, params):
    """A tokenizer whose EOS is the token the most greedy rows emit (after their first
    two), so that greedy rows end at different steps."""
    free = _run(model, build_char_tokenizer(), params)
    rows = [set(c.token_ids[2:]) for g in free for c in g]
    best = max(set().union(*rows), key=lambda t: sum(t in r for r in rows))
    eos_tok = build_char_tokenizer()
    eos_tok.eos_token = eos_tok.convert_ids_to_tokens(best)
    return eos_tok


@pytest.fixture(scope="module")
def tok():
    return _tok()


@pytest.fixture(scope="module")
def models(tok):
    """Per architecture a model with a bias on its output layer (zero but at the EOS, set
    per test: a rise in the EOS logit ends sampled rows at different steps)."""
    out = {}
    for arch in ("qwen2", "llama"):
        model = _model(tok, arch)
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(len(tok)))
        out[arch] = model
    return out


def _eos_bias(model, tok, value: float) -> None:
    with torch.no_grad():
        model.lm_head.bias.zero_()
        model.lm_head.bias[tok.eos_token_id] = value


def _run(model, tok, params, **kw):
    gen = HFGenerator(model, tok, batch_size=8, num_threads=1, **kw)
    return gen.generate(PROMPTS, params)


def _assert_same(a, b, atol=1e-6):
    for ga, gb in zip(a, b, strict=True):
        for x, y in zip(ga, gb, strict=True):
            assert x.token_ids == y.token_ids
            assert x.text == y.text and x.finish_reason == y.finish_reason
            torch.testing.assert_close(
                torch.tensor(x.logprobs), torch.tensor(y.logprobs), rtol=0, atol=atol
            )


#: The EOS logit's bias per case (top-p and top-k keep mostly likely tokens: less).
EOS_BIAS = {"top-p-top-k": 1.0, "greedy": 0.0}
CASES = {
    "sample": dict(n=3, temperature=1.0),
    "top-p-top-k": dict(n=4, temperature=0.8, top_p=0.9, top_k=20),
    "greedy": dict(n=1, temperature=0.0),
    "min-new-tokens": dict(n=3, temperature=1.0, min_new_tokens=6),
    "stop-string": dict(n=4, temperature=1.0, stop=["+", "9"]),
}


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("fused_step", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_static_batch_samples_what_the_compacting_loop_samples(models, tok, arch, fused_step, case):
    model = models[arch]
    params = SamplingParams(max_new_tokens=T, return_logprobs=True, seed=11, **CASES[case])
    _eos_bias(model, tok, EOS_BIAS.get(case, 4.5))
    if case == "greedy":
        tok = _greedy_eos(model, tok, params)
    out = {
        mode: _run(model, tok, params, fused_step=fused_step, static_batch=mode)
        for mode in ("false", "true")
    }
    lengths = [len(c.token_ids) for g in out["true"] for c in g]
    assert len(set(lengths)) > 1  # rows end at different steps
    if case != "greedy":  # a batch before the last ends before T: the static batch steps
        # on past its end (to the next check) without moving the later batches' draws
        per_batch = 8 // params.n * params.n
        ends = [max(lengths[i : i + per_batch]) for i in range(0, len(lengths), per_batch)]
        assert min(ends[:-1]) < T, ends
    if case == "min-new-tokens":
        assert min(lengths) >= 6
    _assert_same(out["false"], out["true"])


def test_static_batch_keeps_rows_and_checks_every_few_steps(models, tok, monkeypatch):
    """No row is dropped, and the host looks for the end at most every CHECK_EVERY steps."""

    def refuse(self, keep):
        raise AssertionError("a static batch drops no rows")

    monkeypatch.setattr(fused.FusedStep, "select", refuse)
    monkeypatch.setattr(hf_mod._ForwardStep, "select", refuse)
    _eos_bias(models["qwen2"], tok, 0.0)
    params = SamplingParams(n=3, max_new_tokens=2 * CHECK_EVERY + 5, seed=3)
    for fused_step in (True, False):
        gen = HFGenerator(models["qwen2"], tok, batch_size=6, fused_step=fused_step)
        gen.static_batch = "true"
        checks = []
        real = gen._any_rank
        gen._any_rank = lambda flag, device, c=checks, f=real: c.append(flag) or f(flag, device)
        out = gen.generate(PROMPTS[:2], params)
        assert len(out[0]) == 3
        assert 1 <= len(checks) <= 2  # steps 16 and 32 at most (one batch of 6 rows)


def test_static_shaped_step_logits_equal_fused_step(tok):
    """Teacher forcing: ``StaticFusedStep`` (all rows, masked [rows, KV, T, D] buffers,
    step index in a tensor) gives FusedStep's logits at every step, on CPU."""
    model = _model(tok, seed=4)
    n, steps = 2, 7
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS[:3]]
    ids, mask = HFGenerator(model, tok)._left_pad(enc)  # left padding, as the loop pads
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    last = pos[:, -1].repeat_interleave(n)
    with torch.no_grad():
        cache = model(input_ids=ids, attention_mask=mask, position_ids=pos).past_key_values
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        weights = fused.FusedWeights(model)
        ref = fused.FusedStep(weights, kv, mask, n, last, steps)
        static = fused.StaticFusedStep(weights, kv, mask, n, last, steps)
        # unwritten columns are masked, and must hold finite numbers (0 * NaN is NaN)
        assert all(not k.any() and not v.any() for k, v in static.cache)
        torch.manual_seed(0)
        comp = torch.randint(10, 60, (3 * n, steps))
        for t in range(steps):
            want = ref.step(comp[:, t], t)
            got = static.step(comp[:, t], t)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        with pytest.raises(RuntimeError, match="keeps every row"):
            static.select(torch.tensor([0]))
        with pytest.raises(RuntimeError, match="CUDA"):
            static.capture()


@pytest.mark.parametrize("case", ["sample", "greedy", "stop-string"])
def test_static_shaped_step_in_the_loop_samples_what_fused_step_samples(models, tok, case):
    _eos_bias(models["qwen2"], tok, EOS_BIAS.get(case, 4.5))
    params = SamplingParams(max_new_tokens=T, return_logprobs=True, seed=5, **CASES[case])
    want = _run(models["qwen2"], tok, params, static_batch="false")
    gen = HFGenerator(models["qwen2"], tok, batch_size=8, num_threads=1, static_batch="true")
    gen.static_shapes = True
    _assert_same(want, gen.generate(PROMPTS, params), atol=1e-5)


def test_switches(models, tok):
    model = models["qwen2"]
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    gen = HFGenerator(model, tok)
    assert gen._loop_modes(cpu) == (False, False)  # auto on CPU: compacting, no graphs
    assert gen._loop_modes(cuda) == (True, True)  # auto on GPU: static, graphs
    assert HFGenerator(model, tok, fused_step=False)._loop_modes(cuda) == (True, False)
    assert HFGenerator(model, tok, static_batch="false")._loop_modes(cuda) == (False, False)
    assert HFGenerator(model, tok, static_batch="TRUE")._loop_modes(cpu) == (True, False)
    with pytest.raises(ValueError, match="static_batch"):
        HFGenerator(model, tok, static_batch="yes")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda_graphs: true needs the model on a CUDA"):
            HFGenerator(model, tok, cuda_graphs="true")
    on_gpu = HFGenerator(model, tok, static_batch="false")
    on_gpu.cuda_graphs = "true"
    with pytest.raises(ValueError, match="static_batch"):
        on_gpu._loop_modes(cuda)
    # build_generator passes both keys through
    cfg = GenerationConfig(static_batch="true", cuda_graphs="false")
    built = build_generator(model, tok, cfg)
    assert (built.static_batch, built.cuda_graphs) == ("true", "false")


def _graphed_vs_eager(model, tok, monkeypatch, seed: int) -> int:
    """For a few cases: the loop with CUDA graphs gives exactly what the same static-shaped
    step gives run eagerly, and what the compacting loop gives up to float rounding.
    Returns how many graphs the loop captured (asserted inside for each case)."""
    captured, graphs = [], 0
    real = fused.StaticFusedStep.capture

    def spy(self, *a, **kw):
        captured.append(self)
        return real(self, *a, **kw)

    monkeypatch.setattr(fused.StaticFusedStep, "capture", spy)
    _eos_bias(model, tok, 4.5)
    for case in ("sample", "greedy", "stop-string"):
        params = SamplingParams(max_new_tokens=T, return_logprobs=True, seed=seed, **CASES[case])
        compacting = _run(model, tok, params, static_batch="false", cuda_graphs="false")
        eager = HFGenerator(model, tok, batch_size=8, static_batch="true", cuda_graphs="false")
        eager.static_shapes = True
        eager = eager.generate(PROMPTS, params)
        assert not captured
        graphed = _run(model, tok, params, static_batch="true", cuda_graphs="true")
        batches = -(-len(PROMPTS) // (8 // params.n))
        assert len(captured) == batches and all(s.graph is not None for s in captured)
        graphs += len(captured)
        captured.clear()
        _assert_same(eager, graphed)
        if next(model.parameters()).dtype == torch.float32:
            _assert_same(compacting, graphed, atol=1e-4)
    return graphs


class _StandInGraph:
    """What a CUDA graph does to the loop, on CPU: ``replay`` recomputes the captured step
    into the one output tensor that ``capture`` returned (the loop must not keep it)."""

    def __init__(self, step):
        self.step = step

    def replay(self):
        self.step.logits.copy_(self.step._static_forward())


def _stand_in_capture(self, warmup: int = 2) -> None:
    self.graph, self.logits = _StandInGraph(self), self._static_forward()


def test_graph_branch_of_the_loop_on_cpu(tok, monkeypatch):
    """The loop's CUDA graph branch with a stand-in graph (CPU): same results as the
    eager static-shaped step and the compacting loop."""
    monkeypatch.setattr(fused.StaticFusedStep, "capture", _stand_in_capture)
    monkeypatch.setattr(HFGenerator, "_loop_modes", _forced_modes)
    model = _model(tok, seed=6)
    model.lm_head.bias = torch.nn.Parameter(torch.zeros(len(tok)))
    assert _graphed_vs_eager(model, tok, monkeypatch, seed=7) >= 3  # one a case at least


def _forced_modes(self, device):
    """``_loop_modes`` with cuda_graphs: true honoured on CPU (for the stand-in graph)."""
    static = self.static_batch == "true"
    return static, static and self.cuda_graphs == "true"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_samples_what_the_eager_step_samples(tok, monkeypatch, dtype):
    model = _model(tok, seed=6)
    model.lm_head.bias = torch.nn.Parameter(torch.zeros(len(tok)))
    assert _graphed_vs_eager(model.to("cuda", dtype), tok, monkeypatch, seed=7) >= 3
