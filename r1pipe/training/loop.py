"""The one training loop: resume, step, log, periodic checkpoint, export. SFT and GRPO both
run through :func:`fit`; what a step does is the trainer's business, what happens around it
(progress bars, fault injection, benchmark timing, evaluation every N steps) attaches as a
:class:`Callback`.

What :func:`fit` does, in order:

1. **Resume.** The newest of ``outputs.resume_candidates`` that every rank can load (engine,
   optimizer, scheduler, RNG, and the trainer's own extras such as a reference model); one
   that fails to load is named and the previous one is tried.
2. **Steps.** ``trainer.train_step(step)`` for each remaining step; it returns the step's
   record (loss, rewards, ...). ``step``, ``skipped_steps``, ``elapsed_s`` and, when the
   record counts ``tokens``, ``tokens_per_s`` over the steps since the last log line are
   added here.
3. **Log** every ``log_every`` steps and at the last (``metrics.jsonl`` + TensorBoard, rank 0).
4. **Checkpoint** every ``save_every`` steps (not at the last: the export follows); on a stop
   signal the step just finished is saved (if it was not) and ``interrupted`` is raised.
5. **Export** the final model in Hugging Face format to ``outputs.final_dir``.

Nothing here knows about run directories or manifests: the caller (a stage, a benchmark, a
test) says where checkpoints go and what to resume from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from r1pipe.errors import UserError
from r1pipe.training.dist import DistInfo, all_gather_objects
from r1pipe.training.metrics import MetricsLogger, TrackerSettings


class Engine(Protocol):
    """What a trainer and :func:`fit` need of a training engine
    (:class:`~r1pipe.training.engine.TrainEngine` is the one; tests may pass a plain one)."""

    skipped_steps: int

    @property
    def module(self) -> Any: ...

    def train_step(
        self, micro_batches: Sequence[dict], loss_fn: Callable, normalizer: float
    ) -> dict: ...

    def save_checkpoint(
        self, root: Path, step: int, client_state: dict, keep_last: int
    ) -> Path: ...

    def load_checkpoint(self, path: Path) -> dict[str, Any]: ...

    def export_hf(self, out_dir: Path, tokenizer: Any) -> None: ...


class Trainer(Protocol):
    """A step function over an engine: what :func:`fit` drives."""

    engine: Engine
    tokenizer: Any

    def train_step(self, step: int) -> dict[str, Any]:
        """Run step ``step`` (0-based) on this rank; return its record (same on all ranks)."""
        ...

    def save_extras(self, path: Path, done: int) -> None:
        """Write what the engine's checkpoint does not hold into ``path`` (before the engine
        marks it complete); collective."""
        ...

    def load_extras(self, path: Path) -> None:
        """Restore what :meth:`save_extras` wrote; collective."""
        ...


class Callback:
    """Hooks of :func:`fit`; override what you need. Every rank calls them."""

    def on_fit_start(self, start_step: int, total_steps: int) -> None:
        """Before the first step (after resume)."""

    def on_step_end(self, done: int, record: dict[str, Any]) -> None:
        """After step ``done`` (1-based), before the record is logged: may add keys to it."""

    def after_checkpoint(self, done: int) -> None:
        """After step ``done``'s record is logged and its checkpoint (if any) saved."""

    def on_fit_end(self) -> None:
        """After the last step, before the export."""


@dataclass
class FitOutputs:
    """Where :func:`fit` reads and writes."""

    checkpoints_dir: Path
    """Periodic checkpoints ``step-N/``."""
    final_dir: Path | None
    """The final model in HF format; None: no export (benchmarks, tests)."""
    metrics_file: Path | None = None
    """``metrics.jsonl``; None: no metrics file."""
    resume_candidates: list[Path] = field(default_factory=list)
    """Verified complete checkpoints, newest first."""
    log: Callable[[str], None] = lambda msg: None
    """One line for the user (rank 0 prints)."""
    name: str = "training"
    """What is trained (a stage's name), for messages."""
    trackers: TrackerSettings | None = None
    """W&B / MLflow copies of the metrics (``logging.*``); None: TensorBoard only."""


@dataclass
class FitPlan:
    """How long and how often: the loop's part of a stage's config."""

    total_steps: int
    log_every: int
    save_every: int
    keep_last: int


@dataclass
class FitResult:
    start_step: int
    """The step fit started from (0, or the resumed checkpoint's)."""
    resumed_from: Path | None
    last: dict[str, Any]
    """The last logged record."""


def resume(
    trainer: Trainer, candidates: Sequence[Path], log: Callable[[str], None], name: str
) -> tuple[int, Path | None]:
    """Load the newest of ``candidates`` that every rank can load into ``trainer`` (engine and
    extras); return its step and path ((0, None) with no candidate). One that fails to load
    is named, and the previous one is tried.

    Raises:
        UserError: None of them could be loaded.
    """
    errors = []
    for path in candidates:
        error = ""
        state: dict[str, Any] = {}
        try:
            state = trainer.engine.load_checkpoint(path)
            trainer.load_extras(path)
        except Exception as e:  # a damaged file that still matched its hash, a version skew
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        failed = all_gather_objects(error)
        if not any(failed):
            if path != candidates[0]:
                log(f"resuming from {path.name} instead")
            if getattr(trainer.engine, "optimizer_restarted", False):
                log(
                    f"{path.name} was saved by another number of ranks: model weights, step and "
                    "schedule restored; the optimizer's moments start afresh (ZeRO partitions "
                    "them per rank)"
                )
            return int(state["step"]), path
        errors.append(f"{path.name}: {next(e for e in failed if e)}")
        log(f"checkpoint {path.name} could not be loaded ({errors[-1]})")
    if errors:
        root = candidates[0].parent
        raise UserError(
            f"{name}: no checkpoint in {root} could be loaded ("
            + "; ".join(errors)
            + "); pass run.resume=false to start the stage over"
        )
    return 0, None


def fit(
    trainer: Trainer,
    plan: FitPlan,
    outputs: FitOutputs,
    dist: DistInfo,
    *,
    callbacks: Sequence[Callback] = (),
    stop: Callable[[], int | None] = lambda: None,
    interrupted: Callable[[int, int], BaseException] | None = None,
    t0: float | None = None,
) -> FitResult:
    """Train ``trainer`` for ``plan.total_steps`` steps; see the module docstring.

    Args:
        stop: Asked after every step but the last (collective: all ranks at the same step);
            a signal number stops the loop after saving the step.
        interrupted: ``(signum, done) -> exception`` raised after that save.
        t0: What ``elapsed_s`` counts from (default: now).
    """
    t0 = time.time() if t0 is None else t0
    start, resumed_from = resume(trainer, outputs.resume_candidates, outputs.log, outputs.name)
    metrics = (
        MetricsLogger(
            outputs.metrics_file,
            enabled=dist.is_main,
            resume_step=start if resumed_from else None,
            trackers=outputs.trackers,
        )
        if outputs.metrics_file is not None
        else None
    )

    def save(done: int) -> None:
        path = outputs.checkpoints_dir / f"step-{done}"
        trainer.save_extras(path, done)  # before the engine's save, which marks it COMPLETE
        trainer.engine.save_checkpoint(
            outputs.checkpoints_dir, done, {"step": done}, plan.keep_last
        )

    for cb in callbacks:
        cb.on_fit_start(start, plan.total_steps)
    last: dict[str, Any] = {}
    window_tokens, window_seconds = 0.0, 0.0
    for step in range(start, plan.total_steps):
        t_step = time.perf_counter()
        record = trainer.train_step(step)
        window_seconds += time.perf_counter() - t_step
        done = step + 1
        tokens = record.pop("tokens", None)
        record = {
            "step": done,
            **record,
            "skipped_steps": trainer.engine.skipped_steps,
            "elapsed_s": time.time() - t0,
        }
        if tokens is not None:
            window_tokens += tokens
        for cb in callbacks:
            cb.on_step_end(done, record)
        if done % plan.log_every == 0 or done == plan.total_steps:
            if tokens is not None:
                record["tokens_per_s"] = window_tokens / max(window_seconds, 1e-9)
            window_tokens, window_seconds = 0.0, 0.0
            if metrics is not None:
                metrics.log(record)
            last = record
        saved = bool(plan.save_every) and done % plan.save_every == 0 and done < plan.total_steps
        if saved:
            save(done)
        for cb in callbacks:
            cb.after_checkpoint(done)
        signum = stop() if done < plan.total_steps else None
        if signum:
            if not saved:
                save(done)
            raise (interrupted or _default_interrupted)(signum, done)
    for cb in callbacks:
        cb.on_fit_end()
    if metrics is not None:
        metrics.close()
    if outputs.final_dir is not None:
        trainer.engine.export_hf(outputs.final_dir, trainer.tokenizer)
    return FitResult(start, resumed_from, last)


def _default_interrupted(signum: int, done: int) -> BaseException:
    return KeyboardInterrupt(f"stopped by signal {signum} after step {done}")


class Every(Callback):
    """Call ``fn(done, record)`` every ``n`` steps but the last (e.g. held-out evaluation
    during RL, whose keys then enter the logged record); n = 0: never."""

    def __init__(self, n: int, fn: Callable[[int, dict[str, Any]], None], total_steps: int):
        self.n, self.fn, self.total = n, fn, total_steps

    def on_step_end(self, done: int, record: dict[str, Any]) -> None:
        if self.n and done % self.n == 0 and done < self.total:
            self.fn(done, record)


class Records(Callback):
    """Keeps every step's record (benchmarks time the steps with it)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_step_end(self, done: int, record: dict[str, Any]) -> None:
        self.records.append(dict(record))
