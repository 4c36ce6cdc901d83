"""r1pipe's training and RL throughput against a plain-PyTorch ceiling, in one run (issue 15).

What is measured
    Everything below runs in one process, on one device (the GPU when there is one, else
    the CPU), on the same model, built offline from the tiny family's spec
    (``build_char_tokenizer`` + ``save_tiny_base``, seed 0): by default the 365M one
    (``model.hidden_size=1024 model.intermediate_size=4096 model.num_layers=24
    model.num_heads=16 model.num_kv_heads=4``), with ``--tiny`` the tiny default of
    ``compose([])``.

    ==================  =====================================================================
    ceiling             plain PyTorch on the same model, in the same dtype as the run's
                        compute (bf16 on GPU, fp32 on CPU): forward, backward (HF's causal
                        LM loss on all positions) and ``torch.optim.AdamW`` (``fused=True``
                        on CUDA, ``foreach=True`` on CPU), no DeepSpeed, no clipping, no
                        masks. It is measured once for each workload below, on the same
                        tokens: packed rows (every position a real token) of the
                        workload's row width, as many rows as give the workload's real
                        tokens per optimizer step, cut into the same number of
                        micro-batches as r1pipe made. Tokens/s.
    SFT                 r1pipe's SFT step as the cold-start stage builds it
                        (``TrainEngine`` + ``SFTTrainer``, run by the ``fit`` loop, the
                        task's train split tokenized with ``tokenize_sft``); tokens/s of the
                        step's real tokens (prompt + response, never padding) and the ratio
                        to its ceiling.
    GRPO                r1pipe's GRPO step built by ``build_grpo_trainer`` (the
                        rl-reasoning block, accuracy reward, ``SeededPrompts``), run by
                        ``fit``; completions forced to ``max_new_tokens`` (``min_new_tokens``
                        = max) so that every step has the same tokens. Seconds per step of
                        each phase: ``generate`` (the trainer's ``time_generate``),
                        ``reward``, ``ref_logprobs`` (the reference model's forward, timed
                        around the trainer's no-grad log-prob calls on it), ``train``
                        (``time_train`` minus ``ref_logprobs``: log-prob forward with grad,
                        loss, backward, optimizer step), ``weight_sync`` (``time_push``; only
                        with a back end that holds its own weights, vLLM: null with hf)
                        and ``other``. The train phase's tokens/s (real tokens of the rollout
                        batch, prompt + completion, times ``mu``) and its ratio to its
                        ceiling.
    GRPO with vLLM      the same with ``generation=vllm``, only when ``import vllm`` works
                        on a GPU (else null; an error is recorded, not raised).
    decode step         one hf decode token step (the rl-reasoning generator on the trained
                        policy) at ``--decode-rows`` rows: (time of a generate call forced
                        to N new tokens - time of one forced to 1) / (N - 1), each the
                        faster of two calls after a warm-up call; 128 rows and N = 256 on
                        GPU.
    GPU busy            ``torch.profiler`` (activities CUDA only) over ``--profile-steps``
                        extra GRPO steps after the timed ones: the device's kernel time
                        (the union of the kernels' intervals, so kernels overlapping on
                        several streams count once; the plain sum and the union with copies
                        and memsets are in ``gpu_profile``) over the wall time of those
                        steps. Not applicable on CPU: null, not a made-up number.
    peak memory         per part: ``torch.cuda.max_memory_allocated`` since the part started
                        (GPU), or the process's peak RSS so far (``ru_maxrss``, CPU: it
                        only grows, so a later part includes the earlier ones).
    ==================  =====================================================================

    The new knobs of issue 15 are passed through, not decided here: ``--micro-batch-tokens``
    sets ``stage.cold_start.micro_batch_tokens`` and ``stage.rl_reasoning.micro_batch_tokens``
    (default ``auto``: 0 on CPU, 16384 on GPU), ``--logprob-length-groups`` sets
    ``stage.rl_reasoning.logprob_length_groups`` (default ``auto``); the values used, and the
    generation back end's ``static_batch`` and ``cuda_graphs``, are recorded in the JSON
    (``config``) with the micro-batches r1pipe actually made. ``--override KEY=VALUE`` passes
    any other config override (repeatable).

Targets (issue 15; for the GPU run of the 365M model, printed next to the figures)
    SFT >= 60% of its ceiling; GRPO train phase >= 40% of its ceiling; hf decode step >= 4x
    faster than 20.9 ms at 128 rows (<= 5.2 ms); GPU busy >= 60% in the RL loop. Where they do
    not apply (CPU, ``--tiny``) they are shown with ``met`` null.

How to run
    GPU (torch, transformers, deepspeed, omegaconf and hydra are all it needs; vLLM is
    optional), from the work tree::

        PYTHONPATH=. python scripts/bench_gpu.py --json bench_gpu.json

    (GRPO: 16 prompts x G=8 = 128 rows, 256 new tokens, 1 warmup + 3 timed + 1 profiled
    step; SFT: 256 sequences a step in micro-batches of 32 unless ``micro_batch_tokens``
    says otherwise, 2 warmup + 8 timed steps; not yet timed on a GPU: a few minutes is the
    estimate, mostly the 7 generate calls of 256 decode steps). CPU, a check that
    everything runs (``tests/unit/test_bench_gpu.py`` does this)::

        OMP_NUM_THREADS=1 python scripts/bench_gpu.py --tiny --json out.json

    about 25-35 seconds on 2 shared cores, most of it imports. The 365M model on CPU runs
    but takes very long. Every size has a flag (``--help``).

Caveats
    * The ceiling has no padding, masks, clipping, loss masking, DeepSpeed or mixed
      precision (it trains the bf16 weights directly); r1pipe keeps fp32 master weights.
      It is the throughput the model's forward/backward allows, not a like-for-like peer.
    * The model is untrained, so the accuracy reward is 0 and the GRPO update is zero; every
      part of the step still runs in full.
    * On a shared CPU the figures vary by +-25%; the CPU run is a smoke test, not a
      measurement.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench_common beside this file; r1pipe from this work tree when it is not installed
for _path in (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]):
    if str(_path) not in sys.path:
        sys.path.insert(1, str(_path))
from bench_common import FullLength, accuracy_rewards, peak_rss_mib, quiet  # noqa: E402

MODEL_365M = (
    "model.hidden_size=1024",
    "model.intermediate_size=4096",
    "model.num_layers=24",
    "model.num_heads=16",
    "model.num_kv_heads=4",
)
BASELINE_DECODE_MS = 20.9  # hf decode step at 128 rows before issue 15
TARGET_SFT, TARGET_GRPO_TRAIN, TARGET_DECODE_SPEEDUP, TARGET_GPU_BUSY = 0.60, 0.40, 4.0, 0.60

# Sizes: (GPU run of the 365M model, --tiny). A flag given on the command line wins.
SIZES: dict[str, tuple[int, int]] = {
    "sft_batch": (256, 8),
    "sft_micro_batch": (32, 8),
    "sft_steps": (8, 2),
    "sft_warmup": (2, 1),
    "prompts": (16, 2),
    "group_size": (8, 2),
    "max_new_tokens": (256, 8),
    "rl_steps": (3, 2),
    "rl_warmup": (1, 1),
    "profile_steps": (1, 1),
    "ceiling_steps": (8, 2),
    "ceiling_warmup": (2, 1),
    "decode_rows": (128, 4),
    "decode_tokens": (256, 32),
}


# ---- measuring --------------------------------------------------------------------------


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Memory:
    """Peak memory of one part: CUDA ``max_memory_allocated`` since :meth:`start` (GPU) or
    the process's peak RSS so far (CPU)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def start(self) -> None:
        if self.cuda:
            import torch

            _sync()
            torch.cuda.reset_peak_memory_stats()

    def peak_mib(self) -> float:
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        return peak_rss_mib()


class ShapeProbe:
    """Wraps ``engine.train_step``: the micro-batches (rows, width) of every call."""

    def __init__(self, engine: Any):
        self.calls: list[list[tuple[int, int]]] = []
        inner = engine.train_step

        def train_step(micro_batches: Any, loss_fn: Any, normalizer: float) -> Any:
            self.calls.append([tuple(mb["input_ids"].shape[:2]) for mb in micro_batches])
            return inner(micro_batches, loss_fn, normalizer)

        engine.train_step = train_step

    def shape(self, first_call: int) -> tuple[int, int]:
        """(micro-batches per call, median width) over the calls from ``first_call`` on."""
        calls = self.calls[first_call:]
        n = round(statistics.fmean(len(c) for c in calls))
        width = round(statistics.median(w for c in calls for _, w in c))
        return max(1, n), max(1, width)


DEVICE_WORK = ("kernel", "gpu_memcpy", "gpu_memset")  # kineto's activity types on the device


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals, in their unit (overlapping kernels
    on several streams count once).

    >>> union_seconds([(0, 2), (1, 3), (5, 6)])
    4
    """
    busy, end = 0, -math.inf
    for s, e in sorted(spans):
        if e > end:
            busy += e - max(s, end)
            end = e
    return busy


def device_busy(prof: Any) -> dict[str, Any]:
    """The device's busy seconds in a stopped profile: the union of its kernels' intervals
    (``kernel_s``), of kernels, copies and memsets (``work_s``), and the kernels' plain sum."""
    from torch.autograd import DeviceType

    spans: dict[str, list[tuple[float, float]]] = {k: [] for k in DEVICE_WORK}
    for ev in prof.profiler.kineto_results.events():
        kind = ev.activity_type()
        if ev.device_type() == DeviceType.CUDA and kind in spans:
            spans[kind].append((ev.start_ns() / 1e9, ev.end_ns() / 1e9))
    kernels = spans["kernel"]
    return {
        "kernel_s": union_seconds(kernels),
        "kernel_sum_s": sum(e - s for s, e in kernels),
        "work_s": union_seconds([x for k in DEVICE_WORK for x in spans[k]]),
        "kernels": len(kernels),
        "copies": len(spans["gpu_memcpy"]) + len(spans["gpu_memset"]),
    }


def ceiling(
    model_dir: str, cfg: Any, *, tokens: float, width: int, micro_batches: int, steps: int,
    warmup: int, memory: Memory,
) -> dict[str, Any]:  # fmt: skip
    """Plain PyTorch forward + backward + AdamW on packed rows of ``width`` real tokens,
    ``tokens`` of them per optimizer step in ``micro_batches`` passes; tokens/s."""
    import torch

    from r1pipe.models import load_model

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    memory.start()
    model = load_model(model_dir, cfg.model, dtype=dtype, device=device)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt_cfg = cfg.stage.cold_start
    opt = torch.optim.AdamW(
        model.parameters(), lr=opt_cfg.lr, betas=(opt_cfg.adam_beta1, opt_cfg.adam_beta2),
        eps=opt_cfg.adam_eps, weight_decay=opt_cfg.weight_decay,
        **({"fused": True} if cuda else {"foreach": True}),
    )  # fmt: skip
    rows = max(micro_batches, round(tokens / width))
    split = [rows // micro_batches + (i < rows % micro_batches) for i in range(micro_batches)]
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    batches = [torch.randint(vocab, (r, width), generator=g).to(device) for r in split]
    t0 = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            _sync()
            t0 = time.perf_counter()
        for x in batches:
            loss = model(input_ids=x, labels=x, use_cache=False).loss
            (loss / len(batches)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync()
    seconds = time.perf_counter() - t0
    out = {
        "tokens_per_s": rows * width * steps / seconds,
        "tokens_per_step": rows * width,
        "rows": rows,
        "width": width,
        "micro_batches": micro_batches,
        "step_s": seconds / steps,
        "steps": steps,
        "dtype": str(dtype).removeprefix("torch."),
        "optimizer": "AdamW(fused=True)" if cuda else "AdamW(foreach=True)",
        "peak_memory_mib": memory.peak_mib(),
    }
    del model, opt, batches
    _free()
    return out


def _fit(trainer: Any, total: int, dist: Any, clock: Any) -> None:
    """``total`` steps of ``trainer`` in r1pipe's fit loop: no checkpoints, metrics or export."""
    from r1pipe.training.loop import FitOutputs, FitPlan, fit

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        plan = FitPlan(total, log_every=1, save_every=0, keep_last=1)
        fit(trainer, plan, FitOutputs(Path(tmp), final_dir=None), dist, callbacks=[clock])


# ---- r1pipe SFT -------------------------------------------------------------------------


def run_sft(cfg: Any, dist: Any, args: argparse.Namespace, memory: Memory) -> dict[str, Any]:
    """r1pipe's SFT step, built the way the cold-start stage's ``run_sft`` builds it."""
    import torch

    from r1pipe import models
    from r1pipe.data.general import example_prompt
    from r1pipe.data.tasks import load_task
    from r1pipe.training.engine import TrainEngine
    from r1pipe.training.loop import Callback
    from r1pipe.training.order import set_seed
    from r1pipe.training.packing import tokenize_sft
    from r1pipe.training.sft import SFTTrainer, sft_schedule

    memory.start()
    sft = cfg.stage.cold_start
    set_seed(cfg.run.seed)
    tok = models.load_tokenizer(cfg.model.path)
    examples, _ = load_task(cfg.task)
    examples = examples[: sft.max_examples] if sft.max_examples else examples
    data = []
    for e in examples:
        assert e.response is not None
        data.append(
            tokenize_sft(example_prompt(e, cfg.task, tok), e.response, tok, sft.max_seq_len)
        )
    total, accum = sft_schedule(sft, len(data), dist.world_size, "stage.cold_start")
    if hasattr(models, "load_policy"):  # what run_sft loads once issue 15's loading is in
        model = models.load_policy(
            cfg.model.path, cfg.model, cfg.deepspeed, dist, optim=sft, grad_accum=accum
        )
    else:
        model = models.load_model(cfg.model.path, cfg.model, dtype=torch.float32)
    engine = TrainEngine(
        model, ds_cfg=cfg.deepspeed,
        dist=dist, optim=sft, total_steps=total, grad_accum=accum,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        max_nonfinite_steps=cfg.run.max_nonfinite_steps,
    )  # fmt: skip
    trainer = SFTTrainer(
        engine, data, sft, dist, tok, seed=cfg.run.seed,
        attn_implementation=cfg.model.attn_implementation,
    )  # fmt: skip
    probe = ShapeProbe(engine)
    warmup = args.sft_warmup
    step_tokens: list[float] = []  # fit takes "tokens" out of the record: read it here
    inner_step = trainer.train_step

    def train_step(step: int) -> dict[str, Any]:
        record = inner_step(step)
        step_tokens.append(float(record["tokens"]))
        return record

    trainer.train_step = train_step  # type: ignore[method-assign]

    class Clock(Callback):
        def __init__(self) -> None:
            self.last = time.perf_counter()
            self.steps: list[tuple[float, float]] = []  # seconds, tokens

        def on_step_end(self, done: int, record: dict[str, Any]) -> None:
            _sync()
            now = time.perf_counter()
            if done > warmup:
                self.steps.append((now - self.last, step_tokens[done - 1]))
            self.last = now

    clock = Clock()
    _fit(trainer, total, dist, clock)
    seconds = sum(s for s, _ in clock.steps)
    tokens = sum(t for _, t in clock.steps)
    n_mb, width = probe.shape(warmup)
    out = {
        "tokens_per_s": tokens / seconds,
        "tokens_per_step": tokens / len(clock.steps),
        "step_s": seconds / len(clock.steps),
        "steps": len(clock.steps),
        "warmup": warmup,
        "sequences_per_step": sft.global_batch_size,
        "micro_batches_per_step": n_mb,
        "row_width": width,
        "bf16": engine.bf16,
        "parameters": models.count_parameters(engine.module),
        "peak_memory_mib": memory.peak_mib(),
    }
    return out


# ---- r1pipe GRPO ------------------------------------------------------------------------


def _decode_step(trainer: Any, train: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """One hf decode token step at ``decode_rows`` rows, from two forced-length calls."""
    from r1pipe.generation.base import SamplingParams

    generator = trainer.generator.inner  # the back end under FullLength
    rows, n_tok = args.decode_rows, args.decode_tokens
    n = args.group_size if rows % args.group_size == 0 else 1
    prompts = [trainer.prompt_text(train[i % len(train)]) for i in range(rows // n)]

    def timed(tokens: int) -> float:
        params = SamplingParams(n=n, max_new_tokens=tokens, min_new_tokens=tokens, seed=0)
        _sync()
        t = time.perf_counter()
        out = generator.generate(prompts, params)
        _sync()
        seconds = time.perf_counter() - t
        lengths.update(len(c.token_ids) for group in out for c in group)
        return seconds

    lengths: set[int] = set()
    timed(2)  # warm-up (and CUDA graph capture, where the back end does that)
    one = min(timed(1) for _ in range(2))  # the faster of two: interference only slows
    lengths.clear()
    full = min(timed(n_tok) for _ in range(2))
    step_ms = 1000 * (full - one) / (n_tok - 1)
    return {
        "rows": rows,
        "new_tokens": n_tok,
        "step_ms": step_ms,
        "baseline_ms": BASELINE_DECODE_MS,
        "speedup": BASELINE_DECODE_MS / step_ms,
        "prefill_and_first_s": one,
        "forced_length_held": lengths == {n_tok},  # every row got exactly N tokens
    }


def run_grpo(
    cfg: Any, dist: Any, args: argparse.Namespace, memory: Memory, *, vllm: bool = False
) -> dict[str, Any]:
    """r1pipe's GRPO step through ``build_grpo_trainer`` and ``fit``; per-phase seconds."""
    import torch

    from r1pipe.data.tasks import load_task
    from r1pipe.models import load_tokenizer
    from r1pipe.rl.build import build_grpo_trainer
    from r1pipe.rl.prompts import SeededPrompts
    from r1pipe.training.loop import Callback

    memory.start()
    rl = cfg.stage.rl_reasoning
    train, _ = load_task(cfg.task)
    trainer = build_grpo_trainer(
        cfg, rl, "rl_reasoning", cfg.model.path, load_tokenizer(cfg.model.path), dist,
        rewards=accuracy_rewards(cfg.task), prompts=SeededPrompts(train, rl, cfg.run.seed),
    )  # fmt: skip
    trainer.generator = FullLength(trainer.generator)
    probe = ShapeProbe(trainer.engine)
    acc = {"ref_s": 0.0, "tokens": 0.0, "width": 0.0}

    logprobs_no_grad = trainer._logprobs_no_grad

    def timed_logprobs(model: Any, mbs: Any, prompt_len: int) -> Any:
        t = time.perf_counter()
        out = logprobs_no_grad(model, mbs, prompt_len)  # ends in .cpu(): synchronised
        if trainer.reference is not None and model is trainer.reference.model:
            acc["ref_s"] += time.perf_counter() - t
        return out

    train_on = trainer.train_on

    def counted_train_on(batch: Any) -> Any:
        acc["tokens"] += float(batch.attention_mask.sum()) * rl.mu
        acc["width"] = float(batch.input_ids.shape[1])
        return train_on(batch)

    trainer._logprobs_no_grad = timed_logprobs
    trainer.train_on = counted_train_on
    warmup, timed_steps = args.rl_warmup, args.rl_steps
    cuda = torch.cuda.is_available()
    profile_steps = args.profile_steps if cuda and not vllm else 0
    total = warmup + timed_steps + profile_steps

    class Clock(Callback):
        def __init__(self) -> None:
            self.steps: list[dict[str, float]] = []
            self.prof: Any = None
            self.busy: dict[str, Any] = {}

        def on_step_end(self, done: int, record: dict[str, Any]) -> None:
            ref_s, tokens = acc["ref_s"], acc["tokens"]
            acc["ref_s"] = acc["tokens"] = 0.0
            if warmup < done <= warmup + timed_steps:
                push = record["time_push"] if vllm else None
                phases = {
                    "generate": record["time_generate"],
                    "reward": record["time_reward"],
                    "ref_logprobs": ref_s if trainer.reference is not None else None,
                    "train": record["time_train"] - ref_s,
                    "weight_sync": push,
                }
                known = sum(v for v in phases.values() if v is not None)
                phases["other"] = max(0.0, record["time_step"] - known)  # hf: + the no-op push
                phases["step"] = record["time_step"]
                phases["train_tokens"] = tokens
                phases["generated_tokens"] = record["generated_tokens"]
                self.steps.append(phases)
            if profile_steps and done == warmup + timed_steps:
                self.start_profile()
            if self.prof is not None and done == total:
                self.stop_profile()

        def start_profile(self) -> None:
            from torch.profiler import ProfilerActivity, profile

            _sync()
            self.prof = profile(activities=[ProfilerActivity.CUDA])
            self.prof.start()
            self.t0 = time.perf_counter()

        def stop_profile(self) -> None:
            _sync()
            wall = time.perf_counter() - self.t0
            self.prof.stop()
            try:
                found = device_busy(self.prof)
                busy = found["kernel_s"] / wall if found["kernels"] else None
                self.busy = {"busy": busy, "wall_s": wall, "steps": profile_steps, **found}
                if not found["kernels"]:
                    self.busy["error"] = "the profile holds no CUDA kernels"
            except Exception as e:  # noqa: BLE001 - a profiler problem is a figure missing
                self.busy = {"busy": None, "error": f"{type(e).__name__}: {e}"}
            self.prof = None

    clock = Clock()
    _fit(trainer, total, dist, clock)
    steps = clock.steps

    def mean(key: str) -> float | None:
        values = [s[key] for s in steps]
        return None if values[0] is None else statistics.fmean(values)

    phases = {
        k: mean(k)
        for k in ("generate", "reward", "ref_logprobs", "train", "weight_sync", "other", "step")
    }
    n_mb, _ = probe.shape(warmup * rl.mu)
    train_tokens = statistics.fmean(s["train_tokens"] for s in steps)
    out: dict[str, Any] = {
        "backend": cfg.generation.backend,
        "phases_s": phases,
        "train_tokens_per_step": train_tokens,
        "train_tokens_per_s": sum(s["train_tokens"] for s in steps)
        / sum(s["train"] for s in steps),
        "generated_tokens_per_step": mean("generated_tokens"),
        "generated_tokens_per_s": sum(s["generated_tokens"] for s in steps)
        / sum(s["generate"] for s in steps),
        "rows_per_step": rl.prompts_per_step * rl.group_size,
        "row_width": int(acc["width"]),
        "micro_batches_per_step": n_mb,
        "steps": len(steps),
        "warmup": warmup,
        "kl_coef": rl.kl_coef,
        "mu": rl.mu,
        "gpu_busy": clock.busy.get("busy") if profile_steps else None,
        "gpu_profile": clock.busy or None,
    }
    if not vllm:
        out["decode"] = _decode_step(trainer, train, args)
    out["peak_memory_mib"] = memory.peak_mib()
    close = getattr(trainer.generator, "close", None)
    if close is not None:
        close()
    return out


# ---- the run ----------------------------------------------------------------------------


def _overrides(args: argparse.Namespace, model_dir: str) -> list[str]:
    cs, rl = "stage.cold_start.", "stage.rl_reasoning."
    rows = args.prompts * args.group_size
    out = [] if args.tiny else list(MODEL_365M)
    out += [
        f"model.path={model_dir}",
        f"generation.batch_size={max(256, rows, args.decode_rows)}",
        f"{cs}global_batch_size={args.sft_batch}",
        f"{cs}micro_batch_size={args.sft_micro_batch}",
        f"{cs}max_steps={args.sft_warmup + args.sft_steps}",
        f"{cs}micro_batch_tokens={args.micro_batch_tokens}",
        f"{cs}save_every=0",
        f"{rl}prompts_per_step={args.prompts}",
        f"{rl}group_size={args.group_size}",
        f"{rl}max_new_tokens={args.max_new_tokens}",
        f"{rl}max_steps={args.rl_warmup + args.rl_steps + args.profile_steps}",
        f"{rl}micro_batch_tokens={args.micro_batch_tokens}",
        f"{rl}logprob_length_groups={args.logprob_length_groups}",
        f"{rl}save_every=0",
        f"{rl}eval_every=0",
    ]
    return out + list(args.override)


def _div(value: float, ceiling_value: float) -> float:
    return value / ceiling_value


def _targets(result: dict[str, Any], applies: bool) -> list[dict[str, Any]]:
    grpo = result["grpo"]
    rows = [
        ("SFT / ceiling", result["sft"]["ratio"], TARGET_SFT),
        ("GRPO train / ceiling", grpo["train_ratio"], TARGET_GRPO_TRAIN),
        ("hf decode speed-up vs 20.9 ms", grpo["decode"]["speedup"], TARGET_DECODE_SPEEDUP),
        ("GPU busy in the RL loop", grpo["gpu_busy"], TARGET_GPU_BUSY),
    ]
    return [
        {
            "name": name,
            "value": value,
            "target": target,
            "met": (value >= target) if applies and value is not None else None,
        }
        for name, value, target in rows
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet()
    import deepspeed
    import transformers

    from r1pipe.config.compose import compose
    from r1pipe.models import save_tiny_base
    from r1pipe.training.dist import init_distributed

    t_start = time.perf_counter()
    memory = Memory(cuda)
    vllm_found = importlib.util.find_spec("vllm") is not None
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        model_dir = str(Path(tmp) / "model")
        overrides = _overrides(args, model_dir)
        cfg, _ = compose(overrides)
        save_tiny_base(cfg.model, Path(model_dir), 0)
        dist = init_distributed()
        device_name = torch.cuda.get_device_name() if cuda else "cpu"

        def say(msg: str, part: dict[str, Any] | None = None) -> None:
            """A progress line; with ``part``, that part's figures too, so that a run cut
            short (a device's time limit) still leaves the parts it finished in its log."""
            if part is not None:
                msg += " " + json.dumps(part, default=str)
            print(f"[bench_gpu {time.perf_counter() - t_start:5.1f}s] {msg}", file=sys.stderr)

        say(f"SFT on {device_name} ...")
        sft = run_sft(cfg, dist, args, memory)
        _free()  # the engine and trainer are gone with the call's frame
        say("ceiling for SFT ...")
        ceil_kw = {"steps": args.ceiling_steps, "warmup": args.ceiling_warmup, "memory": memory}
        ceil_sft = ceiling(
            model_dir, cfg, tokens=sft["tokens_per_step"], width=sft["row_width"],
            micro_batches=sft["micro_batches_per_step"], **ceil_kw,
        )  # fmt: skip
        sft["ratio"] = _div(sft["tokens_per_s"], ceil_sft["tokens_per_s"])
        say("SFT:", sft)
        say("SFT ceiling:", ceil_sft)
        say("GRPO (hf) ...")
        grpo = run_grpo(cfg, dist, args, memory)
        _free()
        say("ceiling for the GRPO train phase ...")
        ceil_grpo = ceiling(
            model_dir, cfg, tokens=grpo["train_tokens_per_step"], width=grpo["row_width"],
            micro_batches=grpo["micro_batches_per_step"], **ceil_kw,
        )  # fmt: skip
        grpo["train_ratio"] = _div(grpo["train_tokens_per_s"], ceil_grpo["tokens_per_s"])
        say("GRPO (hf):", grpo)
        say("GRPO train ceiling:", ceil_grpo)
        grpo_vllm: dict[str, Any] | None = None
        if cuda and vllm_found and not args.no_vllm:
            say("GRPO (vLLM) ...")
            try:
                vcfg, _ = compose([*overrides, "generation=vllm"])
                grpo_vllm = run_grpo(vcfg, dist, args, memory, vllm=True)
                _free()
                grpo_vllm["train_ratio"] = _div(
                    grpo_vllm["train_tokens_per_s"], ceil_grpo["tokens_per_s"]
                )
            except Exception as e:  # noqa: BLE001 - optional back end: recorded, not fatal
                grpo_vllm = {"error": f"{type(e).__name__}: {e}"}
            say("GRPO (vLLM):", grpo_vllm)
    rl, cs, gen = cfg.stage.rl_reasoning, cfg.stage.cold_start, cfg.generation
    peaks = [p["peak_memory_mib"] for p in (sft, ceil_sft, grpo, ceil_grpo)]
    result: dict[str, Any] = {
        "device": "cuda" if cuda else "cpu",
        "device_name": device_name,
        "tiny": args.tiny,
        "model": {
            "parameters": sft.pop("parameters"),
            "hidden_size": cfg.model.hidden_size,
            "intermediate_size": cfg.model.intermediate_size,
            "num_layers": cfg.model.num_layers,
            "num_heads": cfg.model.num_heads,
            "num_kv_heads": cfg.model.num_kv_heads,
            "compute_dtype": "bf16" if sft["bf16"] else "fp32",
        },
        "config": {
            "overrides": [o for o in overrides if not o.startswith("model.path=")],
            "micro_batch_tokens": {
                "sft": str(cs.micro_batch_tokens),
                "rl": str(rl.micro_batch_tokens),
            },
            "logprob_length_groups": str(rl.logprob_length_groups),
            "static_batch": str(getattr(gen, "static_batch", None)),
            "cuda_graphs": str(getattr(gen, "cuda_graphs", None)),
            "zero_stage": cfg.deepspeed.zero_stage,
            "sft_micro_batch_size": cs.micro_batch_size,
            "rl_micro_batch_size": rl.micro_batch_size,
        },
        "ceiling": {"sft": ceil_sft, "grpo_train": ceil_grpo},
        "sft": sft,
        "grpo": grpo,
        "grpo_vllm": grpo_vllm,
        "peak_memory_mib": max(peaks),
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "peak RSS",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "deepspeed": deepspeed.__version__,
            "vllm": _version("vllm") if vllm_found else None,
        },
        "wall_s": time.perf_counter() - t_start,
    }
    result["targets"] = _targets(result, applies=cuda and not args.tiny)
    return result


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---- output -----------------------------------------------------------------------------


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    return {
        "tok": f"{value:,.0f} tok/s",
        "s": f"{value:.3f} s",
        "ms": f"{value:.2f} ms",
        "pct": f"{100 * value:.1f}%",
        "x": f"{value:.2f}x",
        "mib": f"{value:,.0f} MiB",
    }[kind]


COLUMNS = ("figure", "value", "ceiling", "ratio", "target", "met")


def table(result: dict[str, Any]) -> tuple[str, str, list[tuple[str, ...]]]:
    """Title, caption and rows (:data:`COLUMNS`) of the human table."""
    sft, grpo, ceil = result["sft"], result["grpo"], result["ceiling"]
    targets = {t["name"]: t for t in result["targets"]}

    def target(name: str, kind: str) -> tuple[str, str]:
        t = targets[name]
        return ">= " + _fmt(t["target"], kind), {True: "yes", False: "NO", None: "n/a"}[t["met"]]

    m, c = result["model"], result["config"]
    title = (
        f"r1pipe vs plain PyTorch on {result['device_name']}: {m['parameters'] / 1e6:.1f}M "
        f"params ({m['num_layers']}x{m['hidden_size']}), {m['compute_dtype']}"
    )
    caption = (
        f"micro_batch_tokens sft={c['micro_batch_tokens']['sft']} "
        f"rl={c['micro_batch_tokens']['rl']}, logprob_length_groups="
        f"{c['logprob_length_groups']}, static_batch={c['static_batch']}, cuda_graphs="
        f"{c['cuda_graphs']}, ZeRO-{c['zero_stage']}; SFT {sft['sequences_per_step']} seqs x "
        f"{sft['micro_batches_per_step']} micro-batches/step; GRPO {grpo['rows_per_step']} rows "
        f"x {grpo['row_width']} tokens, {grpo['micro_batches_per_step']} micro-batches/step"
    )
    dec = grpo["decode"]
    rows: list[tuple[str, ...]] = [
        (
            "SFT step", _fmt(sft["tokens_per_s"], "tok"), _fmt(ceil["sft"]["tokens_per_s"], "tok"),
            _fmt(sft["ratio"], "pct"), *target("SFT / ceiling", "pct"),
        ),
        (
            "GRPO train phase", _fmt(grpo["train_tokens_per_s"], "tok"),
            _fmt(ceil["grpo_train"]["tokens_per_s"], "tok"), _fmt(grpo["train_ratio"], "pct"),
            *target("GRPO train / ceiling", "pct"),
        ),
    ]  # fmt: skip
    rows += [(f"  GRPO {k} (per step)", _fmt(v, "s")) for k, v in grpo["phases_s"].items()]
    rows.append(("  GRPO generated tokens/s", _fmt(grpo["generated_tokens_per_s"], "tok")))
    rows.append(
        (
            f"hf decode step ({dec['rows']} rows)", _fmt(dec["step_ms"], "ms"),
            _fmt(BASELINE_DECODE_MS, "ms") + " (before)", _fmt(dec["speedup"], "x"),
            *target("hf decode speed-up vs 20.9 ms", "x"),
        )
    )  # fmt: skip
    busy = _fmt(grpo["gpu_busy"], "pct")
    rows.append(("GPU busy (RL loop)", busy, "", "", *target("GPU busy in the RL loop", "pct")))
    vllm = result["grpo_vllm"]
    if vllm and "error" not in vllm:
        rows.append(
            (
                "GRPO (vLLM) train phase", _fmt(vllm["train_tokens_per_s"], "tok"),
                _fmt(ceil["grpo_train"]["tokens_per_s"], "tok"), _fmt(vllm["train_ratio"], "pct"),
            )
        )  # fmt: skip
        rows += [(f"  GRPO (vLLM) {k}", _fmt(v, "s")) for k, v in vllm["phases_s"].items()]
    else:
        rows.append(("GRPO (vLLM)", "failed: see JSON" if vllm else "not run (no vllm or GPU)"))
    kind = result["peak_memory_kind"]
    parts = (("SFT", sft), ("ceiling SFT", ceil["sft"]), ("GRPO", grpo))
    for name, part in (*parts, ("ceiling GRPO", ceil["grpo_train"])):
        rows.append((f"peak memory, {name} ({kind})", _fmt(part["peak_memory_mib"], "mib")))
    return title, caption, [row + ("",) * (len(COLUMNS) - len(row)) for row in rows]


def show(title: str, caption: str, rows: list[tuple[str, ...]]) -> None:
    """Print the table with rich, or as plain text where rich is not installed."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
        print(title)
        for row in [COLUMNS, *rows]:
            print("│ " + " │ ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " │")
        print(caption)
        return
    tab = Table(title=title, caption=caption)
    for col in COLUMNS:
        tab.add_column(col, justify="left" if col == "figure" else "right")
    for row in rows:
        tab.add_row(*row)
    Console(width=120).print(tab)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny default model and sizes (CPU check)")
    p.add_argument("--json", default=None, help="write every figure here")
    p.add_argument(
        "--micro-batch-tokens", default="auto", help="stage.*.micro_batch_tokens (default auto)"
    )
    p.add_argument(
        "--logprob-length-groups",
        default="auto",
        help="stage.rl_reasoning.logprob_length_groups (default auto)",
    )
    p.add_argument("--no-vllm", action="store_true", help="skip the vLLM run even if installed")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--override", action="append", default=[], help="a config override KEY=VALUE (repeatable)"
    )
    for name, (full, tiny) in SIZES.items():
        p.add_argument(
            "--" + name.replace("_", "-"), type=int, default=None,
            help=f"default {full}, --tiny {tiny}",
        )  # fmt: skip
    args = p.parse_args()
    for name, (full, tiny) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    if args.decode_tokens < 2:
        p.error("--decode-tokens must be >= 2")
    if min(args.sft_steps, args.rl_steps, args.ceiling_steps, args.decode_rows) < 1:
        p.error("--sft-steps, --rl-steps, --ceiling-steps and --decode-rows must be >= 1")
    result = run(args)
    if args.json:  # first: the figures are kept whatever happens to the table
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    show(*table(result))
    if args.json:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
