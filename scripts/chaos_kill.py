"""SIGKILL ``r1pipe run-all`` at random moments, rerun, and check that nothing was lost.

How to run
    ``python scripts/chaos_kill.py [--kills 20] [--seed 0] [--run-dir DIR] [-- OVERRIDES]``
    (default overrides: ``conf=smoke``). Each round starts ``run-all`` (which resumes), waits a
    random 0.5-12 s, and SIGKILLs its process group, as an OOM killer or a lost node would;
    the last round runs to the end.

What it checks after every round, and reports
    * a stage recorded ``completed`` stays completed with the same config hash, start time and
      checkpoint files (sha256): nothing completed is retrained or lost;
    * every ``metrics.jsonl`` has each step at most once, in order;
    * the final run exits 0 with all four stages ``completed`` and finite weights.
    It prints one line per kill (time, the stage that was running, its last logged step) and a
    summary: kills, recovered, retrained stages (must be 0), lost files (must be 0).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    return json.loads(path.read_text())["stages"] if path.exists() else {}


def completed_state(run_dir: Path) -> dict[str, tuple]:
    """Per completed stage: (config hash, start time, sha256 of its final checkpoint)."""
    out = {}
    for stage, entry in manifest(run_dir).items():
        if entry.get("status") != "completed":
            continue
        ckpt = run_dir / entry["checkpoint"]
        digest = hashlib.sha256()
        for f in sorted(p for p in ckpt.rglob("*") if p.is_file()):
            digest.update(f.name.encode() + f.read_bytes())
        out[stage] = (entry["config_hash"], entry["start_time"], digest.hexdigest())
    return out


def duplicated_steps(run_dir: Path) -> list[str]:
    bad = []
    for log in run_dir.glob("*/metrics.jsonl"):
        steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if line]
        if steps != sorted(set(steps)):
            bad.append(f"{log.parent.name}: {steps}")
    return bad


def running_stage(run_dir: Path) -> str:
    for stage, entry in manifest(run_dir).items():
        if entry.get("status") != "completed":
            log = run_dir / stage / "metrics.jsonl"
            step = log.read_text().count("\n") if log.exists() else 0
            return f"{stage} ({entry.get('status')}, {step} steps logged)"
    return "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", default=["conf=smoke"])
    args = parser.parse_args()
    rng = random.Random(args.seed)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="r1pipe-chaos-")) / "run"
    cmd = [sys.executable, "-m", "r1pipe", "run-all", *args.overrides, f"run.dir={run_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kept: dict[str, tuple] = {}
    retrained, lost, kills = [], [], 0
    t_start = time.monotonic()
    for round_ in range(args.kills + 1):
        last = round_ == args.kills
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if last:
            _, err = proc.communicate()
            if proc.returncode != 0:
                sys.exit(f"final run failed ({proc.returncode}):\n{err.decode()[-3000:]}")
        else:
            delay = rng.uniform(0.5, 12.0)
            try:
                proc.wait(timeout=delay)
                print(f"round {round_ + 1}: run-all finished before the kill at {delay:.1f} s")
            except subprocess.TimeoutExpired:
                where = running_stage(run_dir)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                print(f"kill {kills:2d} at {delay:4.1f} s: {where}")
        now = completed_state(run_dir)
        for stage, state in kept.items():
            if stage not in now:
                lost.append(f"round {round_ + 1}: {stage} no longer completed")
            elif now[stage] != state:
                retrained.append(f"round {round_ + 1}: {stage} changed {state} -> {now[stage]}")
        kept.update(now)
        dup = duplicated_steps(run_dir)
        if dup:
            sys.exit(f"duplicated metric steps after round {round_ + 1}: {dup}")
    stages = manifest(run_dir)
    statuses = {s: e["status"] for s, e in stages.items()}
    ok = all(v == "completed" for v in statuses.values()) and len(statuses) == 4
    print(
        f"\n{kills} kills in {time.monotonic() - t_start:.0f} s; final statuses {statuses}; "
        f"recovered: {'yes' if ok else 'NO'}; retrained completed stages: {len(retrained)}; "
        f"lost: {len(lost)}; run dir {run_dir}"
    )
    for line in retrained + lost:
        print("  " + line)
    sys.exit(0 if ok and not retrained and not lost else 1)


if __name__ == "__main__":
    main()
