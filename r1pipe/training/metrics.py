"""``STAGE/metrics.jsonl``: one JSON object per logged step, written by rank 0 only, and the
same scalars as TensorBoard event files beside it (``tensorboard --logdir RUN_DIR``) and,
when ``logging.wandb`` / ``logging.mlflow`` are on, in Weights & Biases / MLflow (imported
only then)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1pipe.config.schema import LoggingConfig
from r1pipe.errors import UserError
from r1pipe.run_dir import atomic_write_text


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf; null says "not available"
    return v


@dataclass
class TrackerSettings(LoggingConfig):
    """Optional W&B / MLflow copies of the metrics: the config's ``logging.*`` plus the stage's
    lineage. Each stage is one tracker run named ``EXPERIMENT/STAGE`` (group: the experiment,
    by default the run directory's name) with the stage's ``config.yaml`` attached."""

    tags: dict[str, str] = field(default_factory=dict)
    """Lineage, e.g. ``parent`` and ``config_hash`` from the manifest."""


#: Tracker -> (module, config key, pip package).
_TRACKERS = {
    "wandb": ("wandb", "logging.wandb", "wandb"),
    "mlflow": ("mlflow", "logging.mlflow", "mlflow-skinny"),
}


def _require(tracker: str, *, load: bool) -> Any:
    """Import ``tracker``'s module (``load``) or only check that it is installed; a missing
    one is a one-line :class:`UserError` naming the key and the pip package."""
    module, key, pip = _TRACKERS[tracker]
    try:
        if load:
            return importlib.import_module(module)
        found = importlib.util.find_spec(module) is not None
    except ImportError:
        found = False
    if not found:
        raise UserError(f"{key}=true but {module} is not installed: pip install {pip}")
    return None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            s = json.dumps(v) if isinstance(v, list | dict) else str(v)
            out[key] = s if len(s) <= _PARAM_MAX else s[: _PARAM_MAX - 3] + "..."
    return out


_PARAM_MAX = 500  # MLflow's smallest value limit across versions


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: v
        for k, v in record.items()
        if k != "step"
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


class _Trackers:
    """The enabled trackers of one stage (rank 0). Their run ids are kept in
    ``STAGE/trackers.json``: a resumed stage logs its continuing steps into the same W&B run
    (``resume="allow"``) and the same MLflow run; a fresh start makes new runs."""

    def __init__(self, stage_dir: Path, settings: TrackerSettings, resume_step: int | None):
        self.stage_dir = stage_dir
        run_dir = stage_dir.parent
        experiment = settings.experiment or run_dir.name
        name = f"{experiment}/{stage_dir.name}"
        ids_file = stage_dir / "trackers.json"
        ids: dict[str, str] = {}
        if resume_step is not None and ids_file.exists():
            try:
                ids = json.loads(ids_file.read_text())
            except json.JSONDecodeError:
                ids = {}
        config = _stage_config(stage_dir)
        self.wandb_run: Any = None
        self.mlflow: Any = None
        if settings.wandb:
            wandb = _require("wandb", load=True)
            resumed = "wandb_id" in ids
            ids.setdefault("wandb_id", uuid.uuid4().hex[:16])
            self.wandb_run = wandb.init(
                project=settings.wandb_project,
                mode=settings.wandb_mode,
                dir=str(run_dir),
                id=ids["wandb_id"],
                resume="allow" if resumed else None,
                name=name,
                group=experiment,
                job_type=stage_dir.name,
                config={**config, "lineage": settings.tags},
                tags=[f"{k}:{v}"[:64] for k, v in settings.tags.items()],
                settings=wandb.Settings(console="off"),
            )
        try:
            if settings.mlflow:
                _require("mlflow", load=True)
                from mlflow.entities import Param
                from mlflow.tracking import MlflowClient

                uri = settings.mlflow_tracking_uri or (run_dir / "mlruns").resolve().as_uri()
                if uri.startswith("file:"):  # MLflow 3 refuses its file store unless told
                    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                client = MlflowClient(uri)
                exp = client.get_experiment_by_name(experiment)
                exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
                run_id = ids.get("mlflow_run_id")
                if run_id is not None:
                    try:
                        client.get_run(run_id)
                        client.update_run(run_id, status="RUNNING")
                    except Exception:  # deleted, or another tracking URI
                        run_id = None
                if run_id is None:
                    run = client.create_run(
                        exp_id, run_name=name, tags={"stage": stage_dir.name, **settings.tags}
                    )
                    run_id = run.info.run_id
                    params = [Param(k[:250], v) for k, v in _flatten(config).items()]
                    for i in range(0, len(params), 100):  # log_batch takes 100 params at most
                        client.log_batch(run_id, params=params[i : i + 100])
                ids["mlflow_run_id"] = run_id
                self.mlflow = (client, run_id)
        except BaseException:
            self.close()  # the W&B run started above
            raise
        atomic_write_text(ids_file, json.dumps(ids, indent=2) + "\n")

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)
        if self.mlflow is not None:
            from mlflow.entities import Metric

            client, run_id = self.mlflow
            ts = int(time.time() * 1000)
            metrics = [Metric(k, float(v), ts, step) for k, v in values.items()]
            for i in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[i : i + 1000])

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
        if self.mlflow is not None:
            client, run_id = self.mlflow
            client.set_terminated(run_id)
            self.mlflow = None


def _stage_config(stage_dir: Path) -> dict[str, Any]:
    """The stage's resolved ``config.yaml`` ({} when there is none, e.g. a bare fit)."""
    path = stage_dir / "config.yaml"
    if not path.exists():
        return {}
    import yaml

    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


class MetricsLogger:
    """Append-only metrics log.

    Args:
        path: ``STAGE/metrics.jsonl``.
        enabled: False on ranks other than 0.
        resume_step: When resuming from ``step-N``, lines with ``step > N`` (logged after the
            checkpoint by the interrupted run) are dropped so the curve continues cleanly;
            None starts a fresh file. TensorBoard is told to drop its events past N too.
        trackers: W&B / MLflow settings; their packages are checked on every rank (so a
            missing one stops all ranks here, before training) and imported on rank 0 only.
    """

    def __init__(
        self,
        path: Path,
        *,
        enabled: bool,
        resume_step: int | None = None,
        trackers: TrackerSettings | None = None,
    ):
        self.path = path
        self.enabled = enabled
        self._trackers: _Trackers | None = None
        for name in ("wandb", "mlflow"):
            if trackers is not None and getattr(trackers, name):
                _require(name, load=False)
        if not enabled:
            return
        kept: list[str] = []
        if resume_step is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    break  # a torn last line from a crash
        atomic_write_text(path, "".join(s + "\n" for s in kept))
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(
            str(path.parent), purge_step=None if resume_step is None else resume_step + 1
        )
        if trackers is not None and (trackers.wandb or trackers.mlflow):
            self._trackers = _Trackers(path.parent, trackers, resume_step)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        assert "step" in record
        with self.path.open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        scalars = _scalars(record)
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, record["step"])
        self._tb.flush()  # a crash must not lose what metrics.jsonl already has
        if self._trackers is not None:
            self._trackers.log(record["step"], scalars)

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            if self._trackers is not None:
                self._trackers.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
