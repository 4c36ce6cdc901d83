"""Helpers for tests that run the real CLI in a subprocess, as a user would."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(
    *args: str, env: dict | None = None, nproc: int = 1, timeout: int = 600
) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "r1pipe", *args]
    else:
        cmd = torchrun(nproc, "-m", "r1pipe", *args)
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1" if nproc > 1 else os.environ.get("OMP_NUM_THREADS", "2"),
        **(env or {}),
    }
    return subprocess.run(
        cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def torchrun(nproc: int, *args: str) -> list[str]:
    """``python -m torch.distributed.run --nproc_per_node N`` on a free port, then ``args``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(_free_port()),
        *args,
    ]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics(run_dir: Path, stage: str = "cold-start") -> list[dict]:
    path = run_dir / stage / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res
