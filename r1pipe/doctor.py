"""``r1pipe doctor``: check a composed config before any training starts, and say every
problem at once, each with its fix.

Each check is a small function ``check_x(cfg, ...) -> list[Finding]``; :func:`diagnose` runs
them all and collects every finding instead of stopping at the first (the raising validators
of :mod:`r1pipe.preflight` and :mod:`r1pipe.config.inputs` are wrapped one call at a time).
A finding is a ``problem`` (the exit status is 1 when there is one), a ``warning`` (printed,
the run may still work) or ``info`` (versions, estimates).

:func:`cheap_checks` is the subset that loads no model and reaches no server (world size
against the batches, tensor parallelism, the run directory, versions, the file system), for
a stage to run at its start.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from r1pipe.config.inputs import check_file, model_dir, writable_dir
from r1pipe.config.schema import R1Config, SFTConfig
from r1pipe.errors import UserError

PROBLEM, WARNING, INFO = "problem", "warning", "info"
# The stages of `r1pipe run-all`, checked when no --stage is given; distill is apart.
STAGE_NAMES = ("cold-start", "rl-reasoning", "rejection-sft", "rl-all", "distill")
RUN_ALL = STAGE_NAMES[:4]
# File systems that are local to one machine: a run directory on one is not seen by other nodes.
LOCAL_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "ramfs"}
JUDGE_TIMEOUT_S = 3.0


@dataclass
class Finding:
    """One line of the report: which check, what is wrong (or what was found), how to fix it."""

    check: str
    message: str
    fix: str = ""
    level: str = PROBLEM

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.level}: [{self.check}] {self.message}{fix}"


def _guard(check: str, fn: Callable[[], Any], fix: str) -> list[Finding]:
    """Run one raising validator; its :class:`UserError` becomes one problem."""
    try:
        fn()
    except UserError as e:
        return [Finding(check, str(e), fix)]
    return []


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


# ---------------------------------------------------------------- inputs (preflight, wrapped)


def check_inputs(cfg: R1Config, stages: Iterable[str]) -> list[Finding]:
    """What :func:`r1pipe.preflight.validate_inputs` checks, one finding per bad input: the
    back end, the model path, the task's data files (the mapped fields of every row), the
    general prompts, the judge and base model of rejection-sft, rl-all's reward models and
    distill's samples. The run directory is :func:`check_run_dir`."""
    from r1pipe.data.general import load_general
    from r1pipe.data.tasks import load_task
    from r1pipe.preflight import check_backend

    stages = set(stages)
    out = _guard(
        "backend", lambda: check_backend(cfg), "pip install 'r1pipe[vllm]', or generation=hf"
    )
    if cfg.model.path is not None:
        out += _guard(
            "model", lambda: model_dir(cfg.model.path, "model.path"), "point model.path at a model"
        )
    out += _guard(
        "data",
        lambda: load_task(cfg.task),
        "fix the file, or map its fields with task.prompt_field=/task.answer_field=",
    )
    paths: list[tuple[str, str | None, Callable[[str, str], Any]]] = []
    if "rejection-sft" in stages:
        rs, key = cfg.stage.rejection_sft, "stage.rejection_sft"
        paths.append((f"{key}.general_file", rs.general_file, load_general))
        if _uses_judge(cfg) and rs.judge.backend == "hf":
            paths.append((f"{key}.judge.path", rs.judge.path, model_dir))
        if rs.start == "base":
            paths.append((f"{key}.base_path", rs.base_path, model_dir))
    if "rl-all" in stages:
        rl, key = cfg.stage.rl_all, "stage.rl_all"
        out += _guard(
            "general_file",
            lambda: _general_left(cfg),
            f"{key}.general_eval_size= below the file's prompts, or a longer file",
        )
        for kind in ("helpfulness", "harmlessness"):
            rm = getattr(rl, kind)
            if rm.weight != 0:
                paths.append((f"{key}.{kind}.path", rm.path, model_dir))
    if "distill" in stages:
        paths.append(("stage.distill.samples", cfg.stage.distill.samples, check_file))
    names = {model_dir: "model_path", load_general: "general_file", check_file: "samples"}
    for key, path, validate in paths:
        if path:
            fix = f"{key}=PATH of an existing " + (
                "model directory (or a hub id)" if validate is model_dir else "file"
            )
            out += _guard(names[validate], lambda v=validate, p=path, k=key: v(p, k), fix)
    return out


def _general_left(cfg: R1Config) -> None:
    """rl-all's general prompts: readable, and some left to train on after the held-out ones
    (as :func:`r1pipe.preflight.validate_inputs` refuses)."""
    from r1pipe.data.general import load_general

    rl, key = cfg.stage.rl_all, "stage.rl_all"
    general = load_general(rl.general_file, f"{key}.general_file")
    if rl.general_fraction > 0 and len(general) <= rl.general_eval_size:
        raise UserError(
            f"{key}.general_file={rl.general_file}: {len(general)} prompts, all held out by "
            f"{key}.general_eval_size={rl.general_eval_size}; none left to train on"
        )


def check_run_dir(cfg: R1Config) -> list[Finding]:
    """The run directory exists and is writable, or can be created."""
    return _guard(
        "run_dir",
        lambda: writable_dir(cfg.run.dir, "run.dir"),
        "run.dir=PATH on a writable file system",
    )


# ---------------------------------------------------------------- world size and parallelism


def _sft_blocks(cfg: R1Config, stages: Iterable[str]) -> list[tuple[str, SFTConfig]]:
    s = cfg.stage
    blocks = {
        "cold-start": ("stage.cold_start", s.cold_start),
        "rejection-sft": ("stage.rejection_sft.sft", s.rejection_sft.sft),
        "distill": ("stage.distill.sft", s.distill.sft),
    }
    return [blocks[n] for n in stages if n in blocks]


def _rl_blocks(cfg: R1Config, stages: Iterable[str]) -> list[tuple[str, Any]]:
    s = cfg.stage
    blocks = {
        "rl-reasoning": ("stage.rl_reasoning", s.rl_reasoning),
        "rl-all": ("stage.rl_all", s.rl_all),
    }
    return [blocks[n] for n in stages if n in blocks]


def check_world_batches(cfg: R1Config, stages: Iterable[str]) -> list[Finding]:
    """Every batch splits over the ranks, as the stages require when they start
    (``r1pipe/training/sft.py``, ``r1pipe/rl/build.py``)."""
    world, stages = world_size(), list(stages)
    out = []
    for key, sft in _sft_blocks(cfg, stages):
        if sft.global_batch_size % world:
            out.append(
                Finding(
                    "world_size",
                    f"{key}.global_batch_size={sft.global_batch_size} is not a multiple of "
                    f"the world size ({world})",
                    f"{key}.global_batch_size={-(-sft.global_batch_size // world) * world}",
                )
            )
    for key, rl in _rl_blocks(cfg, stages):
        if rl.prompts_per_step % world:
            out.append(
                Finding(
                    "world_size",
                    f"{key}.prompts_per_step={rl.prompts_per_step} is not a multiple of the "
                    f"world size ({world})",
                    f"{key}.prompts_per_step={-(-rl.prompts_per_step // world) * world}",
                )
            )
    return out


def check_tensor_parallel(cfg: R1Config) -> list[Finding]:
    """vllm: ``generation.tensor_parallel_size`` fits the GPUs this node sees (1 on CPU) and
    divides the world size."""
    g = cfg.generation
    if g.backend != "vllm":
        return []
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    world, tp = world_size(), g.tensor_parallel_size
    out = []
    if tp > max(gpus, 1):
        where = f"{gpus} GPUs visible" if gpus else "no GPU (CPU: 1)"
        out.append(
            Finding(
                "tensor_parallel",
                f"generation.tensor_parallel_size={tp} is more than this node has ({where})",
                f"generation.tensor_parallel_size={max(gpus, 1)}",
            )
        )
    if world % tp:
        out.append(
            Finding(
                "tensor_parallel",
                f"generation.tensor_parallel_size={tp} does not divide the world size ({world})",
                "a tensor_parallel_size that divides WORLD_SIZE (e.g. 1)",
            )
        )
    return out


def check_shared_fs(cfg: R1Config) -> list[Finding]:
    """The file system of the run directory (info); on several nodes (WORLD_SIZE >
    LOCAL_WORLD_SIZE) every rank must see the same run directory."""
    fs = filesystem_type(cfg.run.dir)
    world = world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world) or world)
    out = [
        Finding("filesystem", f"run.dir={cfg.run.dir} is on a file system of type {fs}", level=INFO)
    ]
    if world > local:
        out.append(
            Finding(
                "filesystem",
                f"{world} ranks on more than one node ({local} per node): run.dir must be on a "
                f"file system all nodes share; {fs} "
                + ("is local to one machine" if fs in LOCAL_FS else "may be shared"),
                "run.dir=PATH on NFS/Lustre/GPFS (a path every node mounts)",
                level=PROBLEM if fs in LOCAL_FS else WARNING,
            )
        )
    return out


def filesystem_type(path: str | Path) -> str:
    """The type (``ext4``, ``nfs4``, ...) of the mount holding ``path`` (or its nearest existing
    ancestor), from /proc/mounts; ``unknown`` where it cannot be read."""
    p = Path(path).expanduser().absolute()
    while not p.exists():
        p = p.parent
    p = p.resolve()
    best, fs = "", "unknown"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return fs
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        inside = str(p) == mount or str(p).startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fs = mount, parts[2]
    return fs


# ---------------------------------------------------------------- versions


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pins(dist: str, extras: tuple[str, ...] = ()) -> dict[str, Any]:
    """The requirements ``dist`` declares (its extras' too), by package name."""
    from packaging.requirements import Requirement

    out = {}
    for text in importlib.metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is not None and not any(
            req.marker.evaluate({"extra": e}) for e in (extras or ("",))
        ):
            continue
        out[req.name.lower()] = req
    return out


def check_versions() -> list[Finding]:
    """Python, torch, CUDA, NCCL, deepspeed, transformers and vllm (info), against the pins of
    r1pipe (``pyproject.toml``, its ``vllm`` extra) and, when vllm is installed, vllm's own
    pins of torch and transformers; a mismatch is a problem."""
    import platform

    import torch

    cuda = torch.version.cuda
    nccl = None
    if cuda and torch.cuda.is_available():
        try:
            v = torch.cuda.nccl.version()
            nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception:  # NCCL may be absent from a CUDA build
            nccl = None
    found = {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "cuda": cuda or "none (CPU build)",
        "nccl": nccl or "none",
        "deepspeed": _version("deepspeed"),
        "transformers": _version("transformers"),
        "vllm": _version("vllm"),
    }
    out = [
        Finding(
            "versions",
            " ".join(f"{k}={v or 'not installed'}" for k, v in found.items()),
            level=INFO,
        )
    ]
    try:
        pins = {"r1pipe": _pins("r1pipe", ("", "vllm"))}
    except importlib.metadata.PackageNotFoundError:
        pins = {}
    if found["vllm"]:
        pins["vllm"] = _pins("vllm")
    for owner, reqs in pins.items():
        for name in ("torch", "transformers", "deepspeed", "vllm"):
            req, have = reqs.get(name), found[name]
            if req is None or have is None or not req.specifier:
                continue
            if not req.specifier.contains(have, prereleases=True):
                out.append(
                    Finding(
                        "versions",
                        f"{name} {have} does not match {owner}'s pin {name}{req.specifier}",
                        f"pip install '{name}{req.specifier}'",
                    )
                )
    return out


# ---------------------------------------------------------------- the model and its tokenizer


class Subject:
    """The policy's base model as the stages will load it: ``model.path``, or the tiny base
    (built into a temporary directory with :func:`r1pipe.models.save_tiny_base`). The
    tokenizer is loaded raw: :func:`r1pipe.models.load_tokenizer` would fill in a missing pad
    token and chat template, which is what the checks look for."""

    def __init__(self, cfg: R1Config):
        self.cfg = cfg
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._tokenizer: Any = None
        self._config: Any = None

    @property
    def path(self) -> str:
        if self.cfg.model.path is not None:
            return self.cfg.model.path
        if self._tmp is None:
            from r1pipe.models import save_tiny_base

            self._tmp = tempfile.TemporaryDirectory(prefix="r1pipe-doctor-")
            save_tiny_base(self.cfg.model, Path(self._tmp.name), self.cfg.run.seed)
        return self._tmp.name

    def _load(self, auto: Any, what: str) -> Any:
        try:
            return auto.from_pretrained(
                self.path, trust_remote_code=self.cfg.model.trust_remote_code
            )
        except (OSError, ValueError) as e:
            raise UserError(f"model.path={self.path}: cannot load {what} ({_first(e)})") from None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = self._load(AutoTokenizer, "a tokenizer")
        return self._tokenizer

    @property
    def config(self) -> Any:
        if self._config is None:
            from transformers import AutoConfig

            self._config = self._load(AutoConfig, "its config")
        return self._config

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _first(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_chat_template(cfg: R1Config, subject: Subject) -> list[Finding]:
    """``task.template=chat`` needs the tokenizer's chat template; without one r1pipe falls
    back to its own ChatML, which the model was not trained on."""
    if cfg.task.template != "chat" or subject.tokenizer.chat_template is not None:
        return []
    return [
        Finding(
            "chat_template",
            f"model.path={subject.path}: the tokenizer has no chat template, and "
            "task.template=chat (r1pipe would prompt it in ChatML it never saw)",
            "task.template=r1_zero, or add a chat_template to its tokenizer_config.json",
        )
    ]


def check_special_tokens(cfg: R1Config, subject: Subject) -> list[Finding]:
    """EOS and pad tokens.

    r1pipe's losses never mask by pad id: SFT labels come from the loss mask of
    :func:`r1pipe.training.packing.tokenize_sft` (which appends the EOS token to every
    response), RL's from the completion lengths (``build_batch``). So pad == EOS is harmless
    for the policy, and a missing pad falls back to EOS (:func:`r1pipe.models.load_tokenizer`);
    both are info. A problem is: no EOS token (the response cannot end, and no pad either), or
    an EOS/pad id outside the model's vocabulary (the embedding lookup fails)."""
    tok = subject.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    out = []
    if eos is None:
        out.append(
            Finding(
                "special_tokens",
                f"model.path={subject.path}: the tokenizer has no EOS token: SFT appends it to "
                "every response and generation stops on it"
                + ("" if pad is not None else "; with no pad token either, batches cannot pad"),
                "set eos_token (the token that ends an assistant turn) in tokenizer_config.json",
            )
        )
    vocab = getattr(subject.config.get_text_config(decoder=True), "vocab_size", None)
    for name, tid in (("eos", eos), ("pad", pad)):
        if tid is not None and isinstance(vocab, int) and tid >= vocab:
            out.append(
                Finding(
                    "special_tokens",
                    f"model.path={subject.path}: {name} token id {tid} is outside the model's "
                    f"vocabulary ({vocab})",
                    "resize the embeddings, or use the tokenizer the model was trained with",
                )
            )
    if eos is not None and (pad is None or pad == eos):
        how = "none (falls back to EOS)" if pad is None else "the EOS token"
        out.append(
            Finding(
                "special_tokens",
                f"pad token: {how}; harmless in r1pipe (losses use explicit masks, not pad id)",
                level=INFO,
            )
        )
    return out


def check_think_prefill(cfg: R1Config, subject: Subject) -> list[Finding]:
    """A chat template whose generation prompt ends with ``<think>`` (R1-distilled models):
    completions then start inside the think block, and the format reward, which wants a
    completion to start with ``<think>``, scores every one 0."""
    if cfg.task.template != "chat" or subject.tokenizer.chat_template is None:
        return []
    from r1pipe.data.templates import build_prompt

    prompt = build_prompt("What is 1+1?", cfg.task, subject.tokenizer)
    if not prompt.rstrip().endswith("<think>"):
        return []
    return [
        Finding(
            "think_prefill",
            f"model.path={subject.path}: the chat template prefills <think> after the "
            "generation prompt, so completions start inside the think block and the format "
            "reward (completion must start with <think>) scores them all 0",
            "task.template=r1_zero, or a chat_template without the <think> prefill",
        )
    ]


def _longest_prompt_tokens(cfg: R1Config, subject: Subject, keep: int = 256) -> int:
    """Tokens of the longest train prompt (template and instruction included); the ``keep``
    longest by characters are tokenized."""
    from r1pipe.data.tasks import load_task
    from r1pipe.data.templates import build_prompt

    train, _ = load_task(cfg.task)
    texts = sorted((build_prompt(e.question, cfg.task, subject.tokenizer) for e in train), key=len)
    texts = texts[-keep:]
    if not texts:
        return 0
    ids = subject.tokenizer(texts, add_special_tokens=False)["input_ids"]
    return max(len(i) for i in ids)


def check_context(cfg: R1Config, subject: Subject, stages: Iterable[str]) -> list[Finding]:
    """The longest train prompt plus each sampling stage's ``max_new_tokens`` (and eval's) fit
    the model's context and ``generation.max_model_len`` (vllm); SFT's ``max_seq_len`` fits."""
    from r1pipe.data.lengths import model_context

    context = model_context(subject.config, subject.tokenizer)
    if cfg.task.template == "chat" and subject.tokenizer.chat_template is None:
        return []  # check_chat_template says it; the prompt cannot be rendered
    prompt = _longest_prompt_tokens(cfg, subject)
    out = [
        Finding(
            "context",
            f"model context {context} tokens; longest train prompt {prompt} tokens",
            level=INFO,
        )
    ]
    if context is None and cfg.task.max_prompt_tokens == 0:
        out.append(
            Finding(
                "context",
                f"model.path={subject.path}: the model does not say its context length",
                "task.max_prompt_tokens=N (the longest prompt to allow)",
            )
        )
    limits = [("the model's context", context)]
    if cfg.generation.backend == "vllm" and cfg.generation.max_model_len > 0:
        limits.append(("generation.max_model_len", cfg.generation.max_model_len))
    stages = list(stages)
    samplers = {
        "rl-reasoning": "rl_reasoning",
        "rejection-sft": "rejection_sft",
        "rl-all": "rl_all",
    }
    sampling = [
        (f"stage.{k}.max_new_tokens", getattr(cfg.stage, k).max_new_tokens)
        for name, k in samplers.items()
        if name in stages
    ]
    sampling.append(("eval.max_new_tokens", cfg.eval.max_new_tokens))
    for what, limit in limits:
        if limit is None:
            continue
        for key, new in sampling:
            if prompt + new > limit:
                refuse = cfg.task.overlong_prompts == "refuse" or new >= limit
                out.append(
                    Finding(
                        "context",
                        f"{key}={new} + the longest train prompt ({prompt} tokens) = "
                        f"{prompt + new} > {what} ({limit})"
                        + ("" if refuse else "; the longer prompts will be skipped"),
                        f"a smaller {key}, or task.max_prompt_tokens= / shorter prompts",
                        level=PROBLEM if refuse else WARNING,
                    )
                )
        if limit is context:
            for key, sft in _sft_blocks(cfg, stages):
                if sft.max_seq_len > limit:
                    out.append(
                        Finding(
                            "context",
                            f"{key}.max_seq_len={sft.max_seq_len} > {what} ({limit})",
                            f"{key}.max_seq_len={limit}",
                        )
                    )
    return out


def check_memory(cfg: R1Config, subject: Subject) -> list[Finding]:
    """An estimate of the GPU memory of training: 16 bytes a parameter (weights and gradients in
    bf16 plus fp32 master weights and Adam's two moments; the same 16 in fp32) split by ZeRO
    (stage 1: optimizer state / world, 2: and gradients, 3: everything), plus the vLLM share
    ``gpu_memory_utilization``; activations not counted. A problem only when it exceeds the
    GPU; on CPU, info."""
    import torch
    from transformers import AutoModelForCausalLM

    config = subject.config  # outside the meta device: the tiny base is written to disk
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                config, trust_remote_code=cfg.model.trust_remote_code
            )
        n = sum(p.numel() for p in model.parameters())
    except Exception as e:  # an architecture transformers cannot build on meta: no estimate
        return [Finding("memory", f"no estimate ({_first(e)})", level=INFO)]
    world, ds = world_size(), cfg.deepspeed
    # bf16 weights and gradients, fp32 master weights and Adam moments (fp32: 4 + 4 + 8)
    weights, grads, optim = 2.0 * n, 2.0 * n, 12.0 * n
    if ds.zero_stage >= 1:
        optim /= world
    if ds.zero_stage >= 2:
        grads /= world
    if ds.zero_stage >= 3:
        weights /= world
    if ds.offload_optimizer:
        optim = 0.0
    if ds.offload_params:
        weights = 0.0
    train = weights + grads + optim
    gib = 2.0**30
    msg = (
        f"estimate: {n / 1e6:.1f}M parameters, training state {train / gib:.2f} GiB per rank "
        f"(ZeRO-{ds.zero_stage}, world {world}; activations not counted)"
    )
    total = gpu_memory()
    if total is None:
        return [Finding("memory", msg + "; no GPU here", level=INFO)]
    share = cfg.generation.gpu_memory_utilization if cfg.generation.backend == "vllm" else 0.0
    need = train + share * total
    msg += f" + vLLM {share:.0%} of the GPU = {need / gib:.1f} of {total / gib:.1f} GiB"
    if need <= total:
        return [Finding("memory", msg, level=INFO)]
    return [
        Finding(
            "memory",
            msg,
            "deepspeed=zero3 (more ranks), deepspeed.offload_optimizer=true, or a lower "
            "generation.gpu_memory_utilization",
        )
    ]


def gpu_memory() -> int | None:
    """Bytes of memory of this rank's first visible GPU; None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory


# ---------------------------------------------------------------- the judge


def _uses_judge(cfg: R1Config) -> bool:
    rs = cfg.stage.rejection_sft
    return rs.verify != "rule" or (rs.cot_for_complex and rs.cot_generator == "judge")


def check_judge(cfg: R1Config, stages: Iterable[str]) -> list[Finding]:
    """rejection-sft with an OpenAI-compatible judge: its server answers (any HTTP status
    counts; a refused connection or a timeout does not)."""
    judge = cfg.stage.rejection_sft.judge
    if "rejection-sft" not in stages or not _uses_judge(cfg) or judge.backend != "openai":
        return []
    url = judge.base_url.rstrip("/") + "/models"
    try:
        urllib.request.urlopen(url, timeout=JUDGE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return []  # it answered
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return [
            Finding(
                "judge",
                f"stage.rejection_sft.judge.base_url={judge.base_url}: no answer from {url} "
                f"({reason})",
                "start the judge server, or fix stage.rejection_sft.judge.base_url",
            )
        ]
    return []


# ---------------------------------------------------------------- all together


def cheap_checks(cfg: R1Config, stages: Iterable[str] = RUN_ALL) -> list[Finding]:
    """The checks that load no model, read no data and reach no server: the batches against
    the world size, tensor parallelism, the run directory and its file system, versions.
    Milliseconds; for a stage to run at its start."""
    stages = list(stages)
    return [
        *check_world_batches(cfg, stages),
        *check_tensor_parallel(cfg),
        *check_run_dir(cfg),
        *check_shared_fs(cfg),
        *check_versions(),
    ]


def diagnose(cfg: R1Config, stages: Iterable[str] = RUN_ALL) -> list[Finding]:
    """Every check for ``stages`` (the CLI names; default: those of ``run-all``)."""
    stages = list(stages)
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise UserError(f"unknown stage '{unknown[0]}'; stages: {', '.join(STAGE_NAMES)}")
    out = cheap_checks(cfg, stages) + check_inputs(cfg, stages) + check_judge(cfg, stages)
    subject = Subject(cfg)
    model_checks: list[Callable[[], list[Finding]]] = [
        lambda: check_chat_template(cfg, subject),
        lambda: check_special_tokens(cfg, subject),
        lambda: check_think_prefill(cfg, subject),
        lambda: check_memory(cfg, subject),
    ]
    if not any(f.check == "data" for f in out):
        model_checks.append(lambda: check_context(cfg, subject, stages))
    if any(f.check == "model" for f in out):  # said once: the model path is wrong
        model_checks = []
    try:
        for check in model_checks:
            try:
                out += check()
            except UserError as e:
                out.append(Finding("model", str(e), "point model.path at a model"))
                break  # the model cannot be loaded: the other model checks would say the same
    finally:
        subject.close()
    return out


def as_dicts(findings: Iterable[Finding]) -> list[dict[str, str]]:
    return [asdict(f) for f in findings]


def has_problems(findings: Iterable[Finding]) -> bool:
    return any(f.level == PROBLEM for f in findings)
