"""`r1pipe run-all` end to end on the smoke config: four stages in a chain, rl-all's metrics
split by prompt source, a rerun that retrains nothing, refusal of a changed config, and a
SIGKILL during rl-reasoning that resumes from the last periodic checkpoint."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from clihelpers import ROOT, cli, manifest, metrics, ok

STAGES = ["cold-start", "rl-reasoning", "rejection-sft", "rl-all"]
PARENTS = [
    "base-model",
    "cold-start/checkpoint",
    "rl-reasoning/checkpoint",
    "rejection-sft/checkpoint",
]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run-all")
    res = ok(cli("run-all", "conf=smoke", f"run.dir={run_dir}"))
    return run_dir, res


def test_four_completed_stages_chained_by_parent(full_run):
    run_dir, res = full_run
    stages = manifest(run_dir)["stages"]
    assert list(stages) == STAGES
    for stage, parent in zip(STAGES, PARENTS, strict=True):
        entry = stages[stage]
        assert entry["status"] == "completed", stage
        assert entry["parent"] == parent
        assert entry["checkpoint"] == f"{stage}/checkpoint"
        assert (run_dir / stage / "checkpoint" / "config.json").is_file()
        assert "pass@1" in entry["metrics"] and "format_rate" in entry["metrics"]
    assert "held-out evaluation after each stage" in res.stderr
    table = res.stderr[res.stderr.index("held-out evaluation after each stage") :]
    assert all(stage in table for stage in STAGES)


def test_run_directory_is_private_to_its_user(full_run):
    """r1pipe runs with umask 077: model-written code must not read checkpoints or data."""
    run_dir, _ = full_run
    paths = [p for p in run_dir.rglob("*")]
    assert len(paths) > 20
    shared = [str(p) for p in paths if p.stat().st_mode & 0o077]
    assert shared == []


def test_rl_all_metrics_split_by_prompt_source(full_run):
    run_dir, _ = full_run
    rows = metrics(run_dir, "rl-all")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # smoke: preference_start_frac 0.5 of 4 steps, 1 of 4 prompts general after that
    assert [r["general/prompts"] for r in rows] == [0, 0, 1, 1]
    assert [r["reasoning/prompts"] for r in rows] == [4, 4, 3, 3]
    assert "general/helpfulness" not in rows[0]
    for key in (
        "reward/accuracy",
        "reasoning/reward",
        "general/reward",
        "general/helpfulness",
        "general/harmlessness",
        "general/format",
    ):
        assert rows[-1][key] is not None, key
    entry = manifest(run_dir)["stages"]["rl-all"]["metrics"]
    for key in ("general_helpfulness", "general_harmlessness", "general_format", "pass@1"):
        assert key in entry, key
    assert len((run_dir / "rl-all" / "eval_general.jsonl").read_text().splitlines()) == 4
    # the tiny reward models were built into the run and load as sequence classifiers
    from transformers import AutoModelForSequenceClassification

    for kind in ("helpfulness", "harmlessness"):
        model = AutoModelForSequenceClassification.from_pretrained(run_dir / "reward-models" / kind)
        assert model.config.num_labels == 1


def test_rerun_retrains_nothing(full_run):
    run_dir, _ = full_run
    before = manifest(run_dir)["stages"]
    t0 = time.monotonic()
    res = ok(cli("run-all", "conf=smoke", f"run.dir={run_dir}"))
    took = time.monotonic() - t0
    assert res.stderr.count("already completed with this config: skipped") == 4
    after = manifest(run_dir)["stages"]
    for stage in STAGES:
        assert after[stage]["end_time"] == before[stage]["end_time"], stage
    assert took < 90, f"a rerun with nothing to do took {took:.0f} s"


def test_changed_config_is_refused_unless_allowed(full_run, tmp_path):
    src, _ = full_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    args = ("run-all", "conf=smoke", f"run.dir={run_dir}")
    res = cli(*args, "stage.rl_reasoning.lr=0.001")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "rl-reasoning is completed" in res.stderr
    assert "stage.rl_reasoning.lr: 0.0001 -> 0.001" in res.stderr
    assert "rejection-sft, rl-all" in res.stderr and "--allow-changed" in res.stderr

    before = manifest(run_dir)["stages"]
    res = ok(cli(*args, "stage.rl_all.lr=0.001", "--only", "rl-all", "--allow-changed"))
    assert "skipped" not in res.stderr  # --only: no other stage is even looked at
    after = manifest(run_dir)["stages"]
    assert after["rl-all"]["status"] == "completed"
    assert after["rl-all"]["config_hash"] != before["rl-all"]["config_hash"]
    for stage in STAGES[:3]:
        assert after[stage] == before[stage]


def test_from_needs_the_earlier_stages(tmp_path):
    res = cli("run-all", "conf=smoke", f"run.dir={tmp_path}", "--from", "rl-all")
    assert res.returncode == 2
    assert "cold-start, which is not completed" in res.stderr
    res = cli("run-all", "conf=smoke", f"run.dir={tmp_path}", "--only", "nope")
    assert res.returncode == 2 and "unknown stage" in res.stderr


@pytest.mark.slow
def test_sigkill_during_rl_reasoning_resumes_from_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "r1pipe", "run-all", "conf=smoke", f"run.dir={run_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill reaches every child
    )
    marker = run_dir / "rl-reasoning" / "checkpoints" / "step-2" / "COMPLETE"
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert proc.poll() is None, "run-all exited before rl-reasoning saved step 2"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert manifest(run_dir)["stages"]["rl-reasoning"]["status"] == "running"
    logged = (run_dir / "rl-reasoning" / "metrics.jsonl").read_text().splitlines()
    assert 2 <= len(logged) < 4, "killed too late: rl-reasoning had finished its steps"

    res = ok(cli("run-all", "conf=smoke", f"run.dir={run_dir}"))
    assert "[cold-start] already completed with this config: skipped" in res.stderr
    assert "resuming from step-2" in res.stderr
    stages = manifest(run_dir)["stages"]
    assert [stages[s]["status"] for s in STAGES] == ["completed"] * 4
    assert stages["rl-reasoning"]["resumed_from"] == "rl-reasoning/checkpoints/step-2"
    rows = (run_dir / "rl-reasoning" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4]  # no duplicates, no restart
    assert rows[:2] == logged[:2]  # steps 1-2 are the killed run's, not redone


@pytest.mark.slow
def test_rl_all_on_two_ranks_counts_prompts_over_both(full_run, tmp_path):
    src, _ = full_run
    run_dir = tmp_path / "two"
    shutil.copytree(src, run_dir, ignore=shutil.ignore_patterns("rl-all"))
    data = json.loads((run_dir / "manifest.json").read_text())
    data["stages"].pop("rl-all")
    (run_dir / "manifest.json").write_text(json.dumps(data))
    ok(cli("stage", "rl-all", "conf=smoke", f"run.dir={run_dir}", "deepspeed=zero2", nproc=2))
    rows = metrics(run_dir, "rl-all")
    # 4 prompts a step over 2 ranks; from step 3 each rank's 2 hold 1 general prompt
    assert [(r["reasoning/prompts"], r["general/prompts"]) for r in rows] == [
        (4, 0),
        (4, 0),
        (2, 2),
        (2, 2),
    ]
    assert manifest(run_dir)["stages"]["rl-all"]["status"] == "completed"


def _hashes(run_dir) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }


def test_failed_rerun_of_a_completed_stage_loses_nothing(full_run, tmp_path):
    """The rerun fails after it started (training diverges, after saving a checkpoint of
    its own): the completed stage comes back byte for byte, and so do the entries of the
    stages after it; the failed run's files are kept aside."""
    src, _ = full_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    before, entries = _hashes(run_dir), manifest(run_dir)["stages"]
    res = cli(
        "stage",
        "cold-start",
        "conf=smoke",
        f"run.dir={run_dir}",
        "stage.cold_start.lr=1e30",
        "stage.cold_start.save_every=1",
    )
    assert res.returncode == 2 and "non-finite" in res.stderr
    assert "the completed cold-start run is restored" in res.stderr
    failed = run_dir / ".cold-start.failed"
    assert list((failed / "checkpoints").glob("step-*/COMPLETE"))  # it had checkpoints
    shutil.rmtree(failed)
    assert _hashes(run_dir) == before
    assert manifest(run_dir)["stages"] == entries
    assert not list(run_dir.glob(".*replaced"))


@pytest.mark.extended
def test_rerun_of_a_completed_stage_marks_the_later_ones_stale(full_run, tmp_path):
    src, _ = full_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    ok(cli("stage", "cold-start", "conf=smoke", f"run.dir={run_dir}", "stage.cold_start.lr=2e-3"))
    stages = manifest(run_dir)["stages"]
    assert stages["cold-start"]["status"] == "completed"
    for later in STAGES[1:]:
        assert stages[later]["status"] == "stale", later
        assert stages[later]["stale_because"] == "cold-start is being rerun"
    assert not list(run_dir.glob(".*replaced"))
    # run-all retrains the stale stages instead of taking them as they are
    res = ok(cli("run-all", "conf=smoke", f"run.dir={run_dir}", "stage.cold_start.lr=2e-3"))
    assert "already completed with this config: skipped" in res.stderr  # cold-start only
    assert all(e["status"] == "completed" for e in manifest(run_dir)["stages"].values())


@pytest.mark.extended
def test_run_of_an_older_version_is_taken_as_it_is(full_run, tmp_path):
    """An older r1pipe recorded hashes without the keys added since (here task.duplicates):
    run-all re-hashes the completed stages from their config.yaml instead of calling them
    changed; a real change is still refused."""
    from omegaconf import OmegaConf

    from r1pipe.run_dir import chained_parent, config_hash

    src, _ = full_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    data = manifest(run_dir)
    old: dict[str, str] = {}
    for stage, parent in zip(STAGES, [None, *STAGES[:-1]], strict=True):
        saved = run_dir / stage / "config.yaml"
        cfg = OmegaConf.load(saved)
        del cfg.task["duplicates"]  # not a key of the older version
        saved.write_text(OmegaConf.to_yaml(cfg))
        entry = data["stages"][stage]
        identity = entry["parent"]
        if parent is not None:
            identity = chained_parent(identity, old[parent])
        old[stage] = config_hash(cfg, stage.replace("-", "_"), identity)
        assert old[stage] != entry["config_hash"]
        entry["config_hash"] = old[stage]
    (run_dir / "manifest.json").write_text(json.dumps(data))
    res = ok(cli("run-all", "conf=smoke", f"run.dir={run_dir}"))
    for stage in STAGES:
        assert f"[{stage}] already completed with this config: skipped" in res.stderr
    rehashed = manifest(run_dir)["stages"]
    assert all(rehashed[s]["config_hash"] != old[s] for s in STAGES)  # recorded anew
    changed = cli("run-all", "conf=smoke", f"run.dir={run_dir}", "stage.rl_all.lr=1e-4")
    assert changed.returncode == 2
    assert "rl-all is completed" in changed.stderr and "(stage.rl_all.lr: " in changed.stderr
    assert "duplicates" not in changed.stderr  # the added key is not reported as a change


def test_hashes_of_this_version_are_left_as_they_are(full_run):
    from r1pipe.run_dir import RunDir, refresh_config_hashes

    src, _ = full_run
    before = manifest(src)
    assert refresh_config_hashes(RunDir(src)) == []
    assert manifest(src) == before
