import json

import pytest

from r1pipe.config import compose
from r1pipe.errors import UserError
from r1pipe.run_dir import RunDir, atomic_write_text, config_hash


def test_manifest_lifecycle(tmp_path):
    rd = RunDir(tmp_path)
    rd.start_stage("cold-start", parent="base-model", config_hash="abc")
    e = rd.stage_entry("cold-start")
    assert e["status"] == "running" and e["parent"] == "base-model" and e["start_time"]
    rd.finish_stage(
        "cold-start", checkpoint=tmp_path / "cold-start" / "checkpoint", metrics={"pass@1": 0.5}
    )
    data = json.loads((tmp_path / "manifest.json").read_text())
    e = data["stages"]["cold-start"]
    assert e["status"] == "completed"
    assert e["checkpoint"] == "cold-start/checkpoint"  # relative to the run dir
    assert e["metrics"] == {"pass@1": 0.5} and e["end_time"]
    assert rd.parent_checkpoint("rl-reasoning") == tmp_path / "cold-start" / "checkpoint"


def test_parent_missing_is_clear(tmp_path):
    with pytest.raises(UserError, match="no completed cold-start"):
        RunDir(tmp_path).parent_checkpoint("rl-reasoning")


def test_corrupt_manifest_names_file(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="manifest.json"):
        RunDir(tmp_path).read_manifest()


def test_atomic_write_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "f.json"
    atomic_write_text(p, "1")
    atomic_write_text(p, "2")
    assert p.read_text() == "2"
    assert [x.name for x in p.parent.iterdir()] == ["f.json"]


def test_config_hash_tracks_what_matters():
    _, a = compose(["conf=smoke"])
    _, b = compose(["conf=smoke", "run.dir=/elsewhere", "deepspeed=zero2"])
    _, c = compose(["conf=smoke", "stage.cold_start.lr=0.1"])
    h = config_hash(a, "cold_start", "base-model")
    assert h == config_hash(b, "cold_start", "base-model")  # where/how, not what
    assert h != config_hash(c, "cold_start", "base-model")
    assert h != config_hash(a, "cold_start", "other-parent")
