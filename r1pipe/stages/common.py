"""What every stage does around its algorithm: find its input, decide fresh vs resume, record
the run in the manifest, evaluate on held-out prompts at the end.

A stage file reads::

    ctx = begin_stage("cold-start", "cold_start", cfg, dcfg)   # input, hash, resume, manifest
    ... the algorithm ...
    finish_stage(ctx, checkpoint_dir, metrics)                 # eval.json, manifest entry
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from r1pipe.config.schema import R1Config
from r1pipe.data.types import Example
from r1pipe.run_dir import (
    PARENT_STAGE,
    RunDir,
    atomic_write_text,
    config_hash,
    save_stage_config,
)
from r1pipe.training.dist import (
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_object,
    init_distributed,
)
from r1pipe.training.engine import complete_checkpoints
from r1pipe.training.metrics import MetricsLogger

console = Console(stderr=True)


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

    def metrics_logger(self, start_step: int) -> MetricsLogger:
        """``STAGE/metrics.jsonl``; on resume, lines after the checkpoint's step are dropped."""
        return MetricsLogger(
            self.stage_dir / "metrics.jsonl",
            enabled=self.dist.is_main,
            resume_step=start_step if self.resume_from else None,
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
    if dist.is_main:
        ckpts = complete_checkpoints(stage_dir / "checkpoints")
        if (
            cfg.run.resume
            and entry
            and entry.get("status") in ("running", "failed")
            and entry.get("config_hash") == chash
            and ckpts
        ):
            resume_from = ckpts[-1]
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
    resume_from = broadcast_object(resume_from)
    ctx = StageContext(
        name, key, cfg, dcfg, dist, run_dir, stage_dir, start_model, chash, resume_from, time.time()
    )
    ctx.log(
        f"run dir {run_dir.path}; starting from {parent}; world size {dist.world_size}"
        + (f"; resuming from {resume_from.name}" if resume_from else "")
    )
    return ctx


@contextmanager
def stage_guard(ctx: StageContext) -> Iterator[None]:
    """Mark the stage ``failed`` in the manifest if the body raises (then re-raise)."""
    try:
        yield
    except BaseException as e:
        if ctx.dist.is_main:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            ctx.run_dir.fail_stage(ctx.name, f"{type(e).__name__}: {msg}")
        raise


def heldout_eval(ctx: StageContext, checkpoint: Path, held_out: list[Example]) -> dict[str, Any]:
    """Evaluate the exported checkpoint on the held-out prompts; write ``STAGE/eval.json``.

    Every rank loads the plain HF checkpoint and evaluates its share of the prompts, so this
    works the same after ZeRO-3 and needs no gathered training weights.
    """
    from r1pipe.models import load_model, load_tokenizer, resolve_dtype

    cfg = ctx.cfg
    tokenizer = load_tokenizer(checkpoint)
    model = load_model(checkpoint, cfg.model, dtype=resolve_dtype(cfg.model, ctx.dist.device))
    model.to(ctx.dist.device)
    summary, records = evaluate_sharded(ctx, model, tokenizer, held_out)
    del model
    if ctx.dist.is_main:
        atomic_write_text(ctx.stage_dir / "eval.json", json.dumps(summary, indent=2) + "\n")
        with (ctx.stage_dir / "eval_samples.jsonl").open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    return summary


def evaluate_sharded(
    ctx: StageContext,
    model: torch.nn.Module,
    tokenizer: Any,
    held_out: list[Example],
    *,
    synced_gpus: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Each rank evaluates a share of ``held_out`` with ``model``; all ranks get the summary
    (records only on rank 0)."""
    from r1pipe.evaluation import evaluate, summarize
    from r1pipe.generation.build import build_generator

    cfg = ctx.cfg
    shard = held_out[ctx.dist.rank :: ctx.dist.world_size]
    gen = build_generator(
        model,
        tokenizer,
        cfg.generation,
        synced_gpus=synced_gpus,
        batch_size=cfg.eval.batch_size,
    )
    t0 = time.perf_counter()
    _, records = evaluate(gen, tokenizer, shard, cfg.task, cfg.eval, seed=cfg.run.seed)
    all_records = [r for part in all_gather_objects(records) for r in part]
    summary: dict[str, Any] = {}
    if ctx.dist.is_main:
        summary = summarize(
            all_records,
            cfg.eval.num_samples,
            verifier=cfg.task.verifier,
            tolerance=cfg.task.tolerance,
        )
        summary["seconds"] = time.perf_counter() - t0
    return broadcast_object(summary), all_records if ctx.dist.is_main else []


def finish_stage(ctx: StageContext, metrics: dict[str, Any]) -> None:
    """Record the completed stage (rank 0) and print a one-line summary."""
    metrics = {**metrics, "wall_seconds": round(time.time() - ctx.t0, 1)}
    if ctx.dist.is_main:
        ctx.run_dir.finish_stage(ctx.name, checkpoint=ctx.final_dir, metrics=metrics)
        shown = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
        )
        ctx.log(f"[green]completed[/]: {shown}")
    barrier()


def maybe_fault(step: int) -> None:
    """Test hook: ``R1PIPE_FAULT_AT_STEP=N`` kills the process right after step N, as a crash
    would (no cleanup, no manifest update)."""
    import os

    at = os.environ.get("R1PIPE_FAULT_AT_STEP")
    if at and int(at) == step:
        os._exit(137)


def set_seed(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
