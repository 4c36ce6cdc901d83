"""What every stage does around its algorithm: find its input, decide fresh vs resume, record
the run in the manifest, evaluate on held-out prompts at the end.

A stage file reads::

    ctx = begin_stage("cold-start", "cold_start", cfg, dcfg)   # input, hash, resume, manifest
    with stage_guard(ctx):                                     # failed/interrupted in the manifest
        ... build the parts, call the library (r1pipe.stages.training.train runs fit) ...
        metrics.update(heldout_eval(ctx, ctx.final_dir, held_out))  # eval.json
        finish_stage(ctx, metrics)                             # manifest entry
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from r1pipe.config.schema import R1Config
from r1pipe.data.types import Example
from r1pipe.models import load_model, load_tokenizer
from r1pipe.run_dir import (
    PARENT_STAGE,
    STAGE_ORDER,
    RunDir,
    atomic_write_text,
    config_hash,
    refresh_config_hashes,
    save_stage_config,
)
from r1pipe.stages.stop import StageInterrupted, signal_name
from r1pipe.training.dist import (
    DistInfo,
    barrier,
    broadcast_object,
    init_distributed,
)
from r1pipe.training.engine import resume_candidates

# soft_wrap: a long line stays one line in a log file or a pipe (no breaks at 80 columns)
console = Console(stderr=True, soft_wrap=True)


@dataclass
class Trained:
    """The stage's trained policy, still in memory after its export to ``checkpoint``: the
    held-out evaluation of that checkpoint uses it instead of loading it again
    (:func:`checkpoint_generator`). Shared by the copies of a :class:`StageContext` that
    ``dataclasses.replace`` makes (rejection-sft's SFT context)."""

    checkpoint: Path | None = None
    model: Any = None
    """The Hugging Face model whose weights were exported (ZeRO-3: partitioned); None when
    kept nothing."""
    generator: Any = None
    """A generator that holds the exported weights itself (the trainer's vLLM engine, which
    got them pushed after the last step), or None."""
    zero3: bool = False

    def keep(self, checkpoint: Path, model: Any, *, generator: Any = None, zero3: bool) -> None:
        self.release()
        if getattr(model, "is_gradient_checkpointing", False):
            model.gradient_checkpointing_disable()  # as loaded: training is over
        self.checkpoint, self.model = checkpoint, model
        self.generator, self.zero3 = generator, zero3

    def close_generator(self) -> None:
        generator, self.generator = self.generator, None
        close = getattr(generator, "close", None)
        if close is not None:  # a vLLM engine holds its memory until closed
            close()

    def release(self) -> None:
        self.close_generator()
        self.checkpoint, self.model, self.zero3 = None, None, False


@dataclass
class StageContext:
    """Everything a stage needs to know about where it runs and what it starts from."""

    name: str
    """CLI name, e.g. ``cold-start``."""
    key: str
    """Config key under ``stage.``, e.g. ``cold_start``."""
    cfg: R1Config
    dcfg: DictConfig
    dist: DistInfo
    run_dir: RunDir
    stage_dir: Path
    start_model: Path | str
    """The checkpoint (directory or hub id) the stage starts from."""
    config_hash: str
    resume_from: Path | None
    """A complete periodic checkpoint to resume from, or None for a fresh start."""
    t0: float
    skipped: dict[str, Any] | None = None
    """The manifest entry when the stage was already completed with this config (skip it)."""
    resume_candidates: list[Path] = dataclasses.field(default_factory=list)
    """Verified complete checkpoints, newest first (``resume_from`` is the first): the
    fallbacks when one cannot be loaded."""
    replaced: dict[str, Any] | None = None
    """A completed run of this stage moved aside for this one (``aside``: its directory, which
    also holds its manifest entries): restored if this run fails, deleted when it completes."""
    trained: Trained = dataclasses.field(default_factory=Trained)
    """The trained model in memory after the export (set by the training stages' wiring)."""

    @property
    def checkpoints_dir(self) -> Path:
        return self.stage_dir / "checkpoints"

    @property
    def final_dir(self) -> Path:
        return self.stage_dir / "checkpoint"

    def progress(self) -> Progress:
        """The stage's progress bar (rank 0 only)."""
        return Progress(
            TextColumn(f"[cyan]{self.name}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not self.dist.is_main,
            transient=True,
        )

    def log(self, msg: str) -> None:
        if self.dist.is_main:
            console.print(f"[bold cyan]\\[{self.name}][/] {msg}")


def resolve_start_model(stage: str, cfg: R1Config, run_dir: RunDir, dist: DistInfo) -> Path | str:
    """``model.path`` if given (with ``run.chain``, only for a stage with no previous stage);
    else the previous stage's checkpoint from the manifest; for
    the first stage with the tiny spec, the tiny base model (built once, offline).
    Distillation's student is a base model of its own (``distill-base-HASH`` for a tiny one)."""
    if cfg.model.path is not None and (not cfg.run.chain or stage not in PARENT_STAGE):
        return cfg.model.path
    if stage not in ("cold-start", "distill"):
        parent = run_dir.parent_checkpoint(stage)
        assert parent is not None
        return parent
    name = "base-model"
    if stage == "distill":  # one directory per student spec, beside the teacher's base
        spec = json.dumps(dataclasses.asdict(cfg.model), sort_keys=True)
        name = f"distill-base-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"
    base = run_dir.path / name
    if dist.is_main and not (base / "config.json").is_file():
        from r1pipe.models import save_tiny_base

        tmp = run_dir.path / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_tiny_base(cfg.model, tmp, cfg.run.seed)
        tmp.rename(base)  # atomic: a half-built model never looks complete
    barrier()
    return base


def begin_stage(name: str, key: str, cfg: R1Config, dcfg: DictConfig) -> StageContext:
    """Set up a stage: process group, input model, config hash, fresh start or resume."""
    dist = init_distributed()
    run_dir = RunDir(cfg.run.dir)
    if dist.is_main:
        run_dir.path.mkdir(parents=True, exist_ok=True)
    barrier()
    changed = refresh_config_hashes(run_dir)
    if changed and dist.is_main:
        console.print(
            f"[bold cyan]\\[{name}][/] config hashes of {', '.join(changed)} recomputed "
            "from their config.yaml (recorded by an older r1pipe)"
        )
    start_model = resolve_start_model(name, cfg, run_dir, dist)
    parent = str(start_model) if not isinstance(start_model, Path) else run_dir.rel(start_model)
    chash = config_hash(dcfg, key, run_dir.parent_identity(name, parent))
    stage_dir = run_dir.stage_dir(name)
    resume_from: Path | None = None
    entry = run_dir.stage_entry(name)
    if (
        cfg.run.skip_completed
        and entry
        and entry.get("status") == "completed"
        and entry.get("config_hash") == chash
    ):
        ctx = StageContext(
            name,
            key,
            cfg,
            dcfg,
            dist,
            run_dir,
            stage_dir,
            start_model,
            chash,
            None,
            time.time(),
            skipped=entry,
        )
        ctx.log("already completed with this config: skipped")
        return ctx
    barrier()  # every rank has read the manifest before rank 0 rewrites it
    candidates: list[Path] = []
    replaced: dict[str, Any] | None = None
    if dist.is_main:
        if (
            cfg.run.resume
            and entry
            and entry.get("status") in RESUMABLE
            and entry.get("config_hash") == chash
        ):
            candidates = resume_candidates(stage_dir / "checkpoints", _log_main(name))
        if candidates:
            resume_from = candidates[0]
            if (run_dir.path / f".{name}.replaced").is_dir():  # a rerun killed earlier
                replaced = {"aside": run_dir.path / f".{name}.replaced"}
        elif entry and entry.get("status") == "completed" and stage_dir.exists():
            # Rerun of a completed stage: its outputs are moved aside, not deleted, until this
            # run has a checkpoint of its own (restored if it fails before).
            replaced = _replace_completed(run_dir, name, entry)
        elif stage_dir.exists():
            # A fresh start: nothing of an earlier attempt may leak into this one.
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        save_stage_config(stage_dir, dcfg)
        run_dir.start_stage(
            name,
            parent=parent,
            config_hash=chash,
            resumed_from=run_dir.rel(resume_from) if resume_from else None,
        )
    resume_from, candidates = broadcast_object((resume_from, candidates))
    ctx = StageContext(
        name, key, cfg, dcfg, dist, run_dir, stage_dir, start_model, chash, resume_from, time.time()
    )
    ctx.resume_candidates, ctx.replaced = candidates, replaced
    ctx.log(
        f"run dir {run_dir.path}; starting from {parent}; world size {dist.world_size}"
        + (f"; resuming from {resume_from.name}" if resume_from else "")
    )
    return ctx


#: Manifest statuses from which a stage resumes its last complete checkpoint.
RESUMABLE = ("running", "failed", "interrupted")


def _log_main(name: str) -> Callable[[str], None]:
    return lambda msg: console.print(f"[bold cyan]\\[{name}][/] {msg}")


def _replace_completed(run_dir: RunDir, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Move a completed stage's directory aside (with its manifest entry, and those of the
    completed stages after it, which are marked stale: their input is about to change).
    Rank 0."""
    aside = run_dir.path / f".{name}.replaced"
    shutil.rmtree(aside, ignore_errors=True)
    run_dir.stage_dir(name).rename(aside)
    stale = {}
    for later in STAGE_ORDER[STAGE_ORDER.index(name) + 1 :] if name in STAGE_ORDER else ():
        later_entry = run_dir.stage_entry(later)
        if later_entry and later_entry.get("status") == "completed":
            stale[later] = dict(later_entry)
            run_dir.update_stage(later, status="stale", stale_because=f"{name} is being rerun")
    atomic_write_text(aside / REPLACED_ENTRIES, json.dumps({"entry": entry, "stale": stale}))
    return {"aside": aside}


#: In a moved-aside stage directory: its manifest entry and those of the stages made stale.
REPLACED_ENTRIES = ".replaced-entries.json"


def settle_replaced(ctx: StageContext, *, failed: bool) -> None:
    """A completed run of this stage that this run replaces: deleted when this run completes
    (``failed=False``); after a failure, restored with its manifest entries, and this run's
    files kept beside it in ``.STAGE.failed`` (a signal is not a failure: the interrupted run
    stays resumable and the old one stays aside). Rank 0."""
    if not ctx.dist.is_main or ctx.replaced is None:
        return
    aside = ctx.replaced["aside"]
    ctx.replaced = None
    if not failed:
        shutil.rmtree(aside, ignore_errors=True)
        return
    entries = json.loads((aside / REPLACED_ENTRIES).read_text())
    (aside / REPLACED_ENTRIES).unlink()
    kept = ctx.run_dir.path / f".{ctx.name}.failed"
    shutil.rmtree(kept, ignore_errors=True)
    if ctx.stage_dir.exists():
        ctx.stage_dir.rename(kept)
    aside.rename(ctx.stage_dir)
    run = ctx.run_dir
    data = run.read_manifest()
    data["stages"][ctx.name] = entries["entry"]
    data["stages"].update(entries["stale"])
    atomic_write_text(run.manifest_path, json.dumps(data, indent=2) + "\n")
    ctx.log(
        f"this run failed: the completed {ctx.name} run is restored (this run's files are in "
        f"{run.rel(kept)})"
    )


@contextmanager
def stage_guard(ctx: StageContext) -> Iterator[None]:
    """Mark the stage ``failed`` in the manifest if the body raises (then re-raise); a
    completed run it replaced comes back if this one has no checkpoint yet. The trained model
    kept in memory (``ctx.trained``) is released on the way out."""
    try:
        yield
    except StageInterrupted as e:
        if ctx.dist.is_main:
            ctx.run_dir.update_stage(ctx.name, status="interrupted", error=str(e))
        raise
    except BaseException as e:
        if ctx.dist.is_main:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            ctx.run_dir.fail_stage(ctx.name, f"{type(e).__name__}: {msg}")
            settle_replaced(ctx, failed=True)
        raise
    finally:
        ctx.trained.release()


def interrupted(ctx: StageContext, signum: int, done: int, total: int) -> StageInterrupted:
    """The error a training loop raises after it saved step ``done`` on a signal."""
    checkpoint = ctx.run_dir.rel(ctx.checkpoints_dir / f"step-{done}")
    return StageInterrupted(
        f"{ctx.name} interrupted by {signal_name(signum)} after step {done}/{total}; saved "
        f"{checkpoint}; run the same command to resume from it",
        signum,
    )


def fit_prompts(
    ctx: StageContext,
    rows: list[Any],
    prompt_text: Callable[[Any], str],
    tokenizer: Any,
    *,
    reserve: int,
    where: str,
    context_cap: int | None = None,
) -> list[Any]:
    """The rows whose prompt fits the start model's context less ``reserve`` tokens (and
    ``task.max_prompt_tokens``); the others are skipped with one line, or refused, per
    ``task.overlong_prompts`` (:func:`r1pipe.data.lengths.check_prompt_lengths`).
    ``context_cap``: a shorter context the stage uses (e.g. SFT's ``max_seq_len``)."""
    from transformers import AutoConfig

    from r1pipe.data.lengths import check_prompt_lengths, model_context, prompt_token_budget

    config = AutoConfig.from_pretrained(
        ctx.start_model, trust_remote_code=ctx.cfg.model.trust_remote_code
    )
    context = model_context(config, tokenizer)
    if context_cap is not None:
        context = min(context or context_cap, context_cap)
    limit = prompt_token_budget(context, reserve, ctx.cfg.task.max_prompt_tokens)
    kept, _ = check_prompt_lengths(
        rows,
        prompt_text,
        tokenizer,
        limit,
        policy=ctx.cfg.task.overlong_prompts,
        where=where,
        log=ctx.log,
    )
    return kept


def train_source(cfg: R1Config) -> str:
    """How messages name the task's train prompts."""
    return f"task.train_file={cfg.task.train_file}" if cfg.task.train_file else "task train"


def heldout_eval(ctx: StageContext, checkpoint: Path, held_out: list[Example]) -> dict[str, Any]:
    """Evaluate the exported checkpoint on the held-out prompts; write ``STAGE/eval.json``.

    Every rank evaluates its share of the prompts with the generator of
    :func:`checkpoint_generator`: the trained model still in memory where the stage has it,
    else the plain HF checkpoint loaded by every rank (after ZeRO-3 with the hf back end,
    which needs no gathered training weights).
    """
    from r1pipe.data.templates import build_prompt

    cfg = ctx.cfg
    tokenizer = load_tokenizer(checkpoint)
    held_out = fit_prompts(
        ctx,
        held_out,
        lambda e: build_prompt(e.question, cfg.task, tokenizer),
        tokenizer,
        reserve=cfg.eval.max_new_tokens,
        where=f"task.eval_file={cfg.task.eval_file}" if cfg.task.eval_file else "held-out",
    )
    with checkpoint_generator(ctx, checkpoint, tokenizer) as generator:
        summary, records = evaluate_sharded(ctx, generator, tokenizer, held_out)
    if ctx.dist.is_main:
        atomic_write_text(ctx.stage_dir / "eval.json", json.dumps(summary, indent=2) + "\n")
        with (ctx.stage_dir / "eval_samples.jsonl").open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    return summary


@contextmanager
def checkpoint_generator(
    ctx: StageContext, checkpoint: Path, tokenizer: Any, *, this_rank_only: bool = False
) -> Iterator[Any]:
    """The generator of ``cfg.generation`` over an exported checkpoint (greedy evaluation's
    batch size), freed on exit; ``this_rank_only``: a generator used by one rank alone.

    When ``checkpoint`` is the export of the model the stage trained and that model is still
    in memory (``ctx.trained``), it is not loaded again (:func:`trained_model`): the
    trainer's vLLM engine is used as it is (it holds the exported weights), or a new
    generator is built over the model in memory."""
    import gc

    import torch

    from r1pipe.generation.build import build_generator
    from r1pipe.models import resolve_dtype

    cfg = ctx.cfg
    dtype = resolve_dtype(cfg.model, ctx.dist.device)
    trained = ctx.trained if ctx.trained.checkpoint == checkpoint else None
    generator = None
    if trained is not None and trained.generator is not None:
        if not this_rank_only and _dtype(trained.model) == dtype:
            generator, trained.generator = trained.generator, None  # used once, closed below
        else:  # its memory, before another engine starts
            trained.close_generator()
    model = None
    if generator is None:
        gc.collect()  # what training left (optimizer states), before more memory is taken
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        model = trained_model(trained, cfg.generation.backend, dtype)
        if model is None:
            model = load_model(checkpoint, cfg.model, dtype=dtype, device=ctx.dist.device)
        generator = build_generator(
            model,
            tokenizer,
            cfg.generation,
            batch_size=cfg.eval.batch_size,
            model_path=checkpoint,
            dist=None if this_rank_only else ctx.dist,
            seed=cfg.run.seed,
        )
    try:
        yield generator
    finally:
        close = getattr(generator, "close", None)
        if close is not None:  # a vLLM engine holds its memory until closed
            close()
        del model, generator


def trained_model(trained: Trained | None, backend: str, dtype: Any) -> Any:
    """The model in memory to build an evaluation generator over, in ``dtype`` (what loading
    the export in ``dtype`` gives, as the export is its state dict); None: load the export.

    The hf back end needs whole weights on every rank, so a ZeRO-3 partitioned model is not
    used (the export is loaded, as before); vllm reads only the model's config and dtype
    (the engine loads the checkpoint itself), which a partitioned model has too."""
    if trained is None or trained.model is None:
        return None
    model = trained.model
    if trained.zero3 and (backend == "hf" or _dtype(model) != dtype):
        return None
    if _dtype(model) != dtype:
        model.to(dtype)  # in place: training is over
    return model


def _dtype(model: Any) -> Any:
    return None if model is None else next(model.parameters()).dtype


def evaluate_sharded(
    ctx: StageContext, generator: Any, tokenizer: Any, held_out: list[Example]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Each rank evaluates a share of ``held_out`` with ``generator``; all ranks get the
    summary (records only on rank 0)."""
    from r1pipe.evaluation import evaluate_held_out

    cfg = ctx.cfg
    return evaluate_held_out(
        generator, tokenizer, held_out, cfg.task, cfg.eval, ctx.dist, seed=cfg.run.seed
    )


def finish_stage(ctx: StageContext, metrics: dict[str, Any]) -> None:
    """Record the completed stage (rank 0) and print a one-line summary."""
    metrics = {**metrics, "wall_seconds": round(time.time() - ctx.t0, 1)}
    if ctx.dist.is_main:
        ctx.run_dir.finish_stage(ctx.name, checkpoint=ctx.final_dir, metrics=metrics)
        settle_replaced(ctx, failed=False)
        shown = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
        )
        ctx.log(f"[green]completed[/]: {shown}")
    barrier()
