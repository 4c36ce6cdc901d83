"""Optional W&B / MLflow copies of the metrics (``logging.*``): offline W&B and an MLflow file
store receive the logged steps; nothing is imported when off; a missing package is one line.
The tracker tests are skipped where wandb / mlflow-skinny are not installed (they are not
r1pipe dependencies)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from r1pipe.config import compose
from r1pipe.errors import UserError
from r1pipe.run_dir import config_hash
from r1pipe.training.metrics import MetricsLogger, TrackerSettings

#: Distinctive values, so finding them in the W&B offline file is not chance.
LOSSES = [1.2345678901, 2.3456789012, 3.4567890123]
LONG = "x" * 900
TAGS = {"parent": "base-model", "config_hash": "0123456789abcdef"}


def stage_dir(tmp_path: Path) -> Path:
    d = tmp_path / "myrun" / "cold-start"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"model:\n  name: tiny\nstage:\n  lr: 0.1\n  note: {LONG}\n")
    return d


def log_steps(d: Path, settings: TrackerSettings, steps, resume_step=None) -> None:
    m = MetricsLogger(d / "metrics.jsonl", enabled=True, resume_step=resume_step, trackers=settings)
    for step in steps:
        m.log({"step": step, "loss": LOSSES[(step - 1) % 3], "ok": True, "nan": float("nan")})
    m.close()


@pytest.fixture
def quiet_wandb(tmp_path, monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a W&B offline ``.wandb`` file: a 7-byte file header, then
    LevelDB-log chunks (crc32, length, type; FULL=1 FIRST=2 MIDDLE=3 LAST=4) in 32 KiB
    blocks (wandb itself has no Python reader of it any more)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, out, i, buf = path.read_bytes(), [], 7, b""
    while i + 7 <= len(data):
        left = 32768 - i % 32768
        if left < 7:  # block trailer padding
            i += left
            continue
        n, kind = int.from_bytes(data[i + 4 : i + 6], "little"), data[i + 6]
        if i + 7 + n > len(data):  # still being written
            break
        chunk, i = data[i + 7 : i + 7 + n], i + 7 + n
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
    return out


def test_wandb_offline_run_has_the_steps(tmp_path, quiet_wandb):
    pytest.importorskip("wandb")
    d = stage_dir(tmp_path)
    log_steps(d, TrackerSettings(wandb=True, tags=TAGS), [1, 2, 3])
    run_id = json.loads((d / "trackers.json").read_text())["wandb_id"]
    runs = list((tmp_path / "myrun" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1, list((tmp_path / "myrun").rglob("*"))
    # wandb-core may still be writing the file when finish() returns: wait for its exit record
    deadline = time.monotonic() + 60
    while True:
        records = wandb_records(runs[0] / f"run-{run_id}.wandb")
        kinds = [r.WhichOneof("record_type") for r in records]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    history = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item
            }
            history.append((items["_step"], items["loss"], "nan" in items, "ok" in items))
    assert history == [(s, v, False, False) for s, v in enumerate(LOSSES, 1)]
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "myrun/cold-start"
    assert sorted(run.tags) == ["config_hash:0123456789abcdef", "parent:base-model"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["stage"]["lr"] == 0.1 and config["lineage"] == TAGS


def test_mlflow_file_store_has_the_steps_and_resume_continues(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    # MLflow 3 refuses a file store without it: the logger must set it for its default store
    # (and the delenv restores the environment afterwards)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    from mlflow.tracking import MlflowClient

    d = stage_dir(tmp_path)
    settings = TrackerSettings(mlflow=True, tags=TAGS)
    log_steps(d, settings, [1, 2, 3])
    uri = (tmp_path / "myrun" / "mlruns").resolve().as_uri()
    client = MlflowClient(uri)
    run_id = json.loads((d / "trackers.json").read_text())["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.info.run_name == "myrun/cold-start"
    assert client.get_experiment(run.info.experiment_id).name == "myrun"
    assert {k: run.data.tags[k] for k in TAGS} == TAGS
    assert run.data.params["stage.lr"] == "0.1"
    note = run.data.params["stage.note"]
    assert len(note) == 500 and note.endswith("...")
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == list(enumerate(LOSSES, 1))
    assert client.get_metric_history(run_id, "nan") == []  # not finite: not logged
    # resumed from step-3: the same run continues
    log_steps(d, settings, [4], resume_step=3)
    assert json.loads((d / "trackers.json").read_text())["mlflow_run_id"] == run_id
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4]
    # a fresh start is a new run
    log_steps(d, settings, [1])
    assert json.loads((d / "trackers.json").read_text())["mlflow_run_id"] != run_id


def test_disabled_imports_neither(tmp_path):
    code = f"""
import sys
from pathlib import Path
from r1pipe.training.metrics import MetricsLogger, TrackerSettings
d = Path({str(tmp_path)!r})
for trackers in (None, TrackerSettings()):
    m = MetricsLogger(d / "metrics.jsonl", enabled=True, trackers=trackers)
    m.log({{"step": 1, "loss": 0.5}})
    m.close()
print(sorted(m for m in ("wandb", "mlflow") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "tracker,pip", [("wandb", "pip install wandb"), ("mlflow", "pip install mlflow-skinny")]
)
@pytest.mark.parametrize("enabled", [True, False])
def test_enabled_but_missing_is_one_line(tmp_path, monkeypatch, tracker, pip, enabled):
    monkeypatch.setitem(sys.modules, tracker, None)  # import raises ImportError
    path = tmp_path / "metrics.jsonl"
    with pytest.raises(UserError) as e:
        MetricsLogger(path, enabled=enabled, trackers=TrackerSettings(**{tracker: True}))
    assert str(e.value) == f"logging.{tracker}=true but {tracker} is not installed: {pip}"
    assert not path.exists()  # raised before anything was written


def test_logging_config_keys_and_hash():
    cfg, dcfg = compose(["logging.wandb=true", "logging.mlflow=true", "logging.experiment=e"])
    assert cfg.logging.wandb and cfg.logging.mlflow and cfg.logging.wandb_mode == "offline"
    assert cfg.logging.wandb_project == "r1pipe" and cfg.logging.mlflow_tracking_uri is None
    _, plain = compose([])
    assert config_hash(dcfg, "cold_start", None) == config_hash(plain, "cold_start", None)
    with pytest.raises(UserError, match="logging.wandb_mode: must be one of"):
        compose(["logging.wandb_mode=cloud"])
