"""Reproduce the tiny default's RL gain: cold-start, then rl-reasoning, same held-out eval.

    python scripts/rl_gain.py [--run-dir runs/rl_gain] [OVERRIDES...]

Runs ``r1pipe stage cold-start`` and ``r1pipe stage rl-reasoning`` on the tiny default (or
the overrides given) into one run directory, then prints the held-out pass@1 and format rate
after each stage (both from ``STAGE/eval.json``: the same evaluation on the same prompts), the
gain in points, and the wall time of RL. Stages already completed with the same config are
re-run from scratch; use a fresh --run-dir to be sure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def stage(name: str, run_dir: Path, overrides: list[str]) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "r1pipe", "stage", name, f"run.dir={run_dir}", *overrides]
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/rl_gain")
    args, overrides = ap.parse_known_args()
    run_dir = Path(args.run_dir)
    t_sft = stage("cold-start", run_dir, overrides)
    t_rl = stage("rl-reasoning", run_dir, overrides)
    before = json.loads((run_dir / "cold-start" / "eval.json").read_text())
    after = json.loads((run_dir / "rl-reasoning" / "eval.json").read_text())
    gain = 100 * (after["pass@1"] - before["pass@1"])
    print(f"held-out prompts: {before['num_problems']}")
    for name, ev, t in (("cold-start", before, t_sft), ("rl-reasoning", after, t_rl)):
        print(
            f"{name:13s} pass@1 {100 * ev['pass@1']:5.1f}%  "
            f"format {100 * ev['format_rate']:5.1f}%  ({t / 60:.1f} min incl. start-up and eval)"
        )
    print(f"gain: {gain:+.1f} points")


if __name__ == "__main__":
    main()
