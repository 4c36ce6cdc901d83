"""SIGTERM (Slurm, Kubernetes, torchrun) and SIGINT (Ctrl-C) during training: the step in
progress finishes, a checkpoint of it is saved, the manifest says `interrupted`, the exit is
one line with 128 + the signal; the rerun resumes from that step and redoes none."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from clihelpers import ROOT, cli, manifest, metrics, ok


@pytest.mark.parametrize(
    "stage,sig,steps",
    [
        pytest.param(
            "cold-start",
            signal.SIGTERM,
            "stage.cold_start.max_steps=60",
            marks=pytest.mark.extended,
        ),
        ("rl-reasoning", signal.SIGINT, "stage.rl_reasoning.max_steps=30"),
    ],
)
def test_signal_saves_the_current_step_and_the_rerun_resumes_there(
    smoke_run, tmp_path, stage, sig, steps
):
    run_dir = tmp_path / "run"
    if stage != "cold-start":  # its input: a completed cold-start, and none of this stage
        shutil.copytree(smoke_run, run_dir, ignore=shutil.ignore_patterns(stage))
        data = json.loads((run_dir / "manifest.json").read_text())
        data["stages"].pop(stage, None)
        (run_dir / "manifest.json").write_text(json.dumps(data))
    args = ["stage", stage, "conf=smoke", f"run.dir={run_dir}", steps]
    proc = subprocess.Popen(
        [sys.executable, "-m", "r1pipe", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = run_dir / stage / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (log.exists() and log.read_text().count("\n") >= 3):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"interrupted by {sig.name} after step" in errors[0], stderr
    assert "Traceback" not in stderr
    entry = manifest(run_dir)["stages"][stage]
    assert entry["status"] == "interrupted"
    done = int(errors[0].split("after step ")[1].split("/")[0])
    assert (run_dir / stage / "checkpoints" / f"step-{done}" / "COMPLETE").is_file()
    logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert logged[-1] == done  # nothing trained after the saved step

    res = ok(cli(*args))
    assert f"resuming from step-{done}" in res.stderr
    assert manifest(run_dir)["stages"][stage]["status"] == "completed"
    total = int(steps.split("=")[1])
    assert [m["step"] for m in metrics(run_dir, stage)] == list(range(1, total + 1))
