"""The run directory and its manifest: the one place that writes ``manifest.json``.

Layout (DESIGN.md)::

    RUN_DIR/manifest.json                 {"stages": {"cold-start": {...}, ...}}
    RUN_DIR/base-model/                   the tiny model built offline (when model.path is null)
    RUN_DIR/STAGE/config.yaml             resolved config the stage ran with
    RUN_DIR/STAGE/checkpoint/             final HF model
    RUN_DIR/STAGE/checkpoints/step-N/     periodic resumable state
    RUN_DIR/STAGE/metrics.jsonl           one JSON object per logged step
    RUN_DIR/STAGE/eval.json               held-out evaluation

Only rank 0 writes; every write of the manifest is atomic (temp file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from r1pipe.config.schema import STAGE_ORDER
from r1pipe.errors import UserError

PARENT_STAGE = {
    "rl-reasoning": "cold-start",
    "rejection-sft": "rl-reasoning",
    "rl-all": "rejection-sft",
}


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def config_hash(cfg: DictConfig, stage_key: str, parent: str | None) -> str:
    """Hash of what decides a stage's result: model, task, eval, seed, its own knobs, parent.

    Engine choices (deepspeed, generation back end) and the run directory are left out, so a
    run moved to another directory or launched with another ZeRO stage is still "the same".
    """
    relevant = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "eval": OmegaConf.to_container(cfg.eval, resolve=True),
        "seed": cfg.run.seed,
        "stage": OmegaConf.to_container(cfg.stage[stage_key], resolve=True),
        "parent": parent,
    }
    blob = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class RunDir:
    """A run directory; methods that write must be called on rank 0 only."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"run.dir={path}: exists and is not a directory")

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def stage_dir(self, stage: str) -> Path:
        return self.path / stage

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            data = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{self.manifest_path}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            raise UserError(f"{self.manifest_path}: expected an object with a 'stages' object")
        return data

    def stage_entry(self, stage: str) -> dict[str, Any] | None:
        return self.read_manifest()["stages"].get(stage)

    def update_stage(self, stage: str, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the stage's entry and rewrite the manifest atomically."""
        data = self.read_manifest()
        entry = data["stages"].setdefault(stage, {})
        entry.update(fields)
        data["updated"] = _now()
        atomic_write_text(self.manifest_path, json.dumps(data, indent=2, sort_keys=False) + "\n")
        return entry

    def start_stage(
        self, stage: str, *, parent: str | None, config_hash: str, resumed_from: str | None = None
    ) -> None:
        entry = self.stage_entry(stage) or {}
        fields: dict[str, Any] = dict(
            status="running",
            checkpoint=None,
            parent=parent,
            config_hash=config_hash,
            start_time=_now(),
            end_time=None,
            error=None,
            metrics=None,  # not those of an earlier run of the stage
        )
        if resumed_from:
            # Keep the original start time: the stage is one logical run.
            fields["start_time"] = entry.get("start_time", fields["start_time"])
            fields["resumed_from"] = resumed_from
        self.update_stage(stage, **fields)

    def finish_stage(self, stage: str, *, checkpoint: Path, metrics: dict[str, Any]) -> None:
        self.update_stage(
            stage,
            status="completed",
            checkpoint=self.rel(checkpoint),
            end_time=_now(),
            metrics=metrics,
        )

    def fail_stage(self, stage: str, error: str) -> None:
        self.update_stage(stage, status="failed", end_time=_now(), error=error)

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.path))
        except ValueError:
            return str(path)

    def resolve(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.path / p

    def parent_identity(self, stage: str, parent: str) -> str:
        """What a stage's config hash records of its input ``parent`` (a path relative to the
        run, or a hub id): the path, and when it is the previous stage's checkpoint in this
        run, that stage's config hash too. So retraining a stage with another config changes
        the hash of every stage after it, and ``run-all`` retrains them instead of skipping."""
        prev = PARENT_STAGE.get(stage)
        entry = self.stage_entry(prev) if prev else None
        if entry and entry.get("checkpoint") == parent:
            return chained_parent(parent, entry.get("config_hash"))
        return parent

    def parent_checkpoint(self, stage: str) -> Path | None:
        """The checkpoint a stage starts from per the manifest (None for the first stage)."""
        parent = PARENT_STAGE.get(stage)
        if parent is None:
            return None
        entry = self.stage_entry(parent)
        if not entry or entry.get("status") != "completed" or not entry.get("checkpoint"):
            raise UserError(
                f"stage {stage} starts from the {parent} checkpoint, but {self.manifest_path} "
                f"has no completed {parent} stage; run `r1pipe stage {parent}` first or pass "
                "model.path=..."
            )
        return self.resolve(entry["checkpoint"])


def refresh_config_hashes(run_dir: RunDir) -> list[str]:
    """Re-hash the completed stages from their own ``STAGE/config.yaml`` under the current
    schema, and record the new hashes; return the stages whose hash changed. Rank 0.

    A newer r1pipe hashes keys an older one did not have (with their defaults), so without
    this every run directory of an older version looks "completed with another config". The
    saved file is exactly what the stage ran with, so the hash recomputed from it is what this
    version would have recorded: a config that really changed still differs. A saved file
    this schema cannot read (a key removed since) is left as it was. Every rank may call it:
    they compute the same content, and a write is atomic."""
    from r1pipe.config.compose import from_yaml

    data = run_dir.read_manifest()
    stages = data["stages"]
    changed = []
    for stage in STAGE_ORDER:  # in order: a stage's hash covers its parent's
        entry = stages.get(stage)
        saved = run_dir.stage_dir(stage) / "config.yaml"
        if not entry or entry.get("status") != "completed" or not saved.is_file():
            continue
        try:
            _, cfg = from_yaml(saved)
        except UserError:
            continue
        parent = str(entry.get("parent"))
        prev = stages.get(PARENT_STAGE.get(stage, ""))
        if prev and prev.get("checkpoint") == parent:
            parent = chained_parent(parent, prev.get("config_hash"))
        new = config_hash(cfg, stage.replace("-", "_"), parent)
        if new != entry.get("config_hash"):
            entry["config_hash"] = new
            changed.append(stage)
    if changed:
        atomic_write_text(run_dir.manifest_path, json.dumps(data, indent=2) + "\n")
    return changed


def chained_parent(parent: str, parent_hash: str | None) -> str:
    """The parent as a stage's config hash records it: its path and, if known, its hash."""
    return f"{parent}@{parent_hash}" if parent_hash else parent


def save_stage_config(stage_dir: Path, cfg: DictConfig) -> None:
    atomic_write_text(stage_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
