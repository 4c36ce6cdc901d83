"""SIGKILL ``r1pipe run-all`` at random moments, rerun, and check that nothing was lost.

How to run
    ``python scripts/chaos_kill.py [--kills 20] [--seed 0] [--max-delay 12] [--work-dir DIR]
    [-- OVERRIDES]`` (default overrides: ``conf=smoke``). Each round starts ``run-all`` (which
    resumes), waits a random 0.5 s to --max-delay, and SIGKILLs its process group, as an OOM
    killer or a lost node would. A run-all that ends before its kill must have completed all
    four stages; the next round then starts a new run directory, so that kills keep landing in
    training. After the last kill the run in progress is run to the end.

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
    parser.add_argument("--max-delay", type=float, default=12.0)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", default=["conf=smoke"])
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="r1pipe-chaos-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kept: dict[str, tuple] = {}
    problems: list[str] = []
    kills = cycles = 0
    cycle_kills = 0
    run_dir = work / "run-1"
    t_start = time.monotonic()

    def check(after: str) -> None:
        now = completed_state(run_dir)
        for stage, state in kept.items():
            if stage not in now:
                problems.append(f"{after}: {stage} no longer completed (lost)")
            elif now[stage] != state:
                problems.append(f"{after}: {stage} retrained or changed")
        kept.update(now)
        dup = duplicated_steps(run_dir)
        if dup:
            problems.append(f"{after}: duplicated metric steps {dup}")

    while True:
        cmd = [sys.executable, "-m", "r1pipe", "run-all", *args.overrides, f"run.dir={run_dir}"]
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        delay = rng.uniform(0.5, args.max_delay) if kills < args.kills else None
        try:
            _, err = proc.communicate(timeout=delay)
        except subprocess.TimeoutExpired:
            where = running_stage(run_dir)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            cycle_kills += 1
            print(f"kill {kills:2d} at {delay:4.1f} s in {run_dir.name}: {where}", flush=True)
            check(f"kill {kills}")
            continue
        # run-all ended by itself: the run must be complete and intact
        if proc.returncode != 0:
            problems.append(f"{run_dir.name}: run-all exited {proc.returncode}: {err[-300:]!r}")
        statuses = {s: e["status"] for s, e in manifest(run_dir).items()}
        done = len(statuses) == 4 and all(v == "completed" for v in statuses.values())
        if not done:
            problems.append(f"{run_dir.name}: finished with statuses {statuses}")
        check(f"{run_dir.name} end")
        cycles += 1
        print(f"{run_dir.name}: complete after {cycle_kills} kills; statuses ok: {done}")
        if kills >= args.kills:
            break
        cycle_kills = 0
        kept = {}
        run_dir = work / f"run-{cycles + 1}"
    print(
        f"\n{kills} kills over {cycles} run directories in {time.monotonic() - t_start:.0f} s; "
        f"recovered: {kills - sum('lost' in p for p in problems)}/{kills}; "
        f"problems: {len(problems)}; work dir {work}"
    )
    for line in problems:
        print("  " + line)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
