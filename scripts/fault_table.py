"""Reproduce the faults of issue 12 against a completed smoke run and tabulate what happens.

How to run
    ``OMP_NUM_THREADS=1 python scripts/fault_table.py [--out table.md] [--keep]``
    It first runs ``r1pipe run-all conf=smoke`` once into a temporary BASE (1-2 minutes), then
    for each case copies BASE to a fresh directory D, prepares it (a data file, a crashed and
    damaged checkpoint, a tmpfs, ...) and runs the case's command in it as a user would. The
    full-disk case runs only as root (it mounts a 400 KiB tmpfs). 10-20 minutes in all.

Columns of the Markdown table (printed, and written to ``--out``)
    * case: what is wrong; command: the r1pipe arguments, less ``conf=smoke run.dir=D`` (DATA
      is the folder of the prepared files; gsm8k data cases also pass ``task.eval_size=4
      stage.cold_start.max_steps=2``);
    * exit: the exit code (signal cases: of the interrupted run);
    * error line: the first stderr line starting ``error:``, cut to 140 characters;
    * traceback: whether stderr holds ``Traceback`` or ``[rank0]: │``;
    * changed/removed: files of the run directory whose sha256 changed / that are gone, over
      every file but ``manifest.json`` and the ``metrics.jsonl`` and ``events.*`` of the stage
      run (``+N``: new files);
    * status: the stage's manifest status afterwards (``-``: no stage, no manifest);
    * notes: what differs from the issue's expectation (exit code, a missing message, files
      changed or removed by a command that failed, more than one ``error:`` line), and the
      rerun after a signal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    {"question": f"What is {i}+1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"} for i in range(20)
]


@dataclass
class Case:
    name: str
    setup: Callable[[Path, Path], None] | None  # (run dir D, data dir) -> prepare files
    args: str  # r1pipe arguments, split on spaces; {d} is D, {data} the data folder
    want_rc: int = 2
    expect: tuple[str, ...] = ()  # substrings wanted in stderr
    env: dict[str, str] = field(default_factory=dict)
    stage: str | None = "cold-start"
    sig: int | None = None  # sent once the new metrics.jsonl has 3 lines; then a rerun


def jsonl(name: str, rows: list, prefix: str = "") -> Callable[[Path, Path], None]:
    text = prefix + "".join(json.dumps(r) + "\n" for r in rows)
    return lambda d, data: (data / name).write_text(text, encoding="utf-8")


def write(name: str, content: bytes) -> Callable[[Path, Path], None]:
    return lambda d, data: (data / name).write_bytes(content)


COLD = "stage cold-start conf=smoke run.dir={d}"
GSM_EXTRA = "task.eval_size=4 stage.cold_start.max_steps=2"


def gsm(file: str) -> str:
    path = f"{{data}}/{file}"
    return f"{COLD} task=gsm8k task.train_file={path} task.eval_file={path} {GSM_EXTRA}"


def crash_then_damage(file_glob: str, how: str) -> Callable[[Path, Path], None]:
    """Die after step 5 (checkpoints step-2 and step-4), then damage a file of step-4."""

    def setup(d: Path, data: Path) -> None:
        res = r1pipe(COLD, d, data, {"R1PIPE_FAULT_AT_STEP": "5"})
        assert res.returncode == 137, f"crash run exited {res.returncode}: {res.stderr[-2000:]}"
        path = sorted((d / "cold-start" / "checkpoints" / "step-4").rglob(file_glob))[0]
        raw = bytearray(path.read_bytes())
        if how == "overwrite":  # 4 KiB in the middle, size kept
            raw[len(raw) // 2 : len(raw) // 2 + 4096] = bytes(range(256)) * 16
        else:
            raw = raw[: len(raw) // 2] if how == "half" else bytearray()
        path.write_bytes(bytes(raw))

    return setup


def mount_small(d: Path, data: Path) -> None:
    shutil.rmtree(d)
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(d)], check=True)


BIG = [dict(r) for r in ROWS]
BIG[1]["question"] = "How many? " * 100_000  # 1 MB
DUP = [{**r, "id": "a" if i < 2 else str(i)} for i, r in enumerate(ROWS)]
DAMAGED = ("checkpoint step-4 is damaged", "resuming from step-2")
YAML = "stage cold-start conf={data}/%s run.dir={d}"
C = Case
# fmt: off
CASES = [
    C("lr=1e30 (diverges)", None, COLD + " stage.cold_start.lr=1e30", 2, ("non-finite",)),
    C("+ unknown key", None, COLD + " +stage.cold_start.max_stepz=5", 2, ("max_stepz",)),
    C("+ key, bad type", None, COLD + " +stage.max_steps=abc", 2, ("max_steps",)),
    C("train_file typo, completed run", None,
      COLD + " task=gsm8k task.train_file=/typo.jsonl task.eval_file=/typo.jsonl", 2,
      ("no such file",)),
    C("row without answer", jsonl("noans.jsonl", [*ROWS, {"question": "q2"}]),
      gsm("noans.jsonl"), 2, ("no field 'answer'",)),
    C("empty data file", write("empty.jsonl", b""), gsm("empty.jsonl")),
    C("directory as train file", lambda d, data: (data / "adir").mkdir(), gsm("adir"), 2,
      ("directory",)),
    C("target_language=xx", None, COLD + " stage.rl_reasoning.target_language=xx", 2,
      ("target_language",)),
    C("list answer", jsonl("list.jsonl", [*ROWS, {"question": "q", "answer": ["3"]}]),
      gsm("list.jsonl")),
    C("int prompt", jsonl("int.jsonl", [*ROWS, {"question": 7, "answer": "#### 7"}]),
      gsm("int.jsonl")),
    C("duplicate ids", jsonl("dup.jsonl", DUP), gsm("dup.jsonl"), 2, ("repeats an earlier id",)),
    C("UTF-8 BOM (accepted)", jsonl("bom.jsonl", ROWS, "\ufeff"), gsm("bom.jsonl"), 0),
    C("conf= YAML syntax error", write("syn.yaml", b"# @package _global_\nstage: {lr: [1\n"),
      YAML % "syn.yaml", 2, ("not valid YAML",)),
    C("conf= YAML without @package", write("nopkg.yaml", b"stage:\n  cold_start: {lr: 0.1}\n"),
      YAML % "nopkg.yaml", 2, ("@package",)),
    C("conf= list YAML", write("list.yaml", b"# @package _global_\n- a\n- b\n"),
      YAML % "list.yaml", 2, ("mapping",)),
    C("conf= non-UTF-8 YAML", write("l1.yaml", b"# @package _global_\n# caf\xe9\nrun: {seed: 1}\n"),
      YAML % "l1.yaml"),
    C("run.dir read-only (/sys/x)", None, "stage cold-start conf=smoke run.dir=/sys/x", stage=None),
    C("eval out= an existing file", lambda d, data: (d / "exists.txt").write_text("keep me\n"),
      "eval predictions=tests/assets/math500_sample.jsonl out={d}/exists.txt run.dir={d}",
      stage=None),
    C("1 MB prompt (skip)", jsonl("big.jsonl", BIG), gsm("big.jsonl"), 0,
      ("skipped (task.overlong_prompts=skip)",)),
    C("1 MB prompt (refuse)", jsonl("big.jsonl", BIG),
      gsm("big.jsonl") + " task.overlong_prompts=refuse", 2, ("overlong_prompts=skip",)),
    C("ckpt: 4 KiB overwritten", crash_then_damage("*model_states.pt", "overwrite"), COLD, 0,
      DAMAGED),
    C("ckpt: half truncated", crash_then_damage("*model_states.pt", "half"), COLD, 0, DAMAGED),
    C("ckpt: rng_rank0.pt 0 bytes", crash_then_damage("rng_rank0.pt", "zero"), COLD, 0, DAMAGED),
    C("SIGTERM mid-stage", None, COLD + " stage.cold_start.max_steps=60", 143,
      sig=signal.SIGTERM),
    C("SIGINT mid-stage", None, COLD + " stage.cold_start.max_steps=60", 130, sig=signal.SIGINT),
    C("full disk (400 KiB tmpfs)", mount_small, "stage cold-start conf=smoke run.dir={d}/run", 2,
      ("no space left on the device",)),
]
# fmt: on


def r1pipe(args: str, d: Path, data: Path, env: dict | None = None, **kw):
    """``python -m r1pipe ARGS`` in the repository, {d} and {data} filled in."""
    argv = args.format(d=d, data=data).split()
    return subprocess.run(
        [sys.executable, "-m", "r1pipe", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


def digests(run: Path, stage: str | None) -> dict[str, str]:
    """sha256 of every file under ``run`` but the manifest and the stage's own logs."""
    out = {}
    for p in sorted(run.rglob("*")) if run.is_dir() else []:
        rel = p.relative_to(run).as_posix()
        logs = stage and (rel == f"{stage}/metrics.jsonl" or rel.startswith(f"{stage}/events."))
        if p.is_file() and rel != "manifest.json" and not logs:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def stage_status(run: Path, stage: str | None) -> str:
    path = run / "manifest.json"
    if stage is None or not path.is_file():
        return "-"
    return json.loads(path.read_text())["stages"].get(stage, {}).get("status", "-")


def with_signal(case: Case, d: Path, data: Path, work: Path) -> tuple[int, str, dict, str, str]:
    """Start the stage, signal it once its new metrics.jsonl has 3 lines, then rerun it;
    the digests and status returned are those after the signal, before the rerun."""
    metrics = d / "cold-start" / "metrics.jsonl"
    old_inode = metrics.stat().st_ino if metrics.exists() else None  # BASE's, moved aside
    log = work / "signal.err"
    with open(log, "w") as err:
        cmd = [sys.executable, "-m", "r1pipe", *case.args.format(d=d, data=data).split()]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            try:
                fresh = metrics.stat().st_ino != old_inode
                if fresh and len(metrics.read_text().splitlines()) >= 3:
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.2)
        proc.send_signal(case.sig)
        rc = proc.wait(timeout=600)
    after, status = digests(d, case.stage), stage_status(d, case.stage)
    rerun = r1pipe(case.args, d, data)
    m = re.search(r"resuming from step-\d+", rerun.stderr)
    note = f"rerun: exit {rerun.returncode}, " + (m.group(0) if m else "no 'resuming from'")
    return rc, log.read_text(), after, status, note


def run_case(case: Case, base: Path, work: Path) -> list[str]:
    d, data = work / "run", work / "data"
    data.mkdir()
    shutil.copytree(base, d, symlinks=True)
    m = re.search(r"run\.dir=(\S+)", case.args)
    run = Path(m.group(1).format(d=d, data=data)) if m else d
    try:
        if case.setup:
            case.setup(d, data)
        before, note = digests(run, case.stage), ""
        if case.sig:
            rc, stderr, after, status, note = with_signal(case, d, data, work)
        else:
            res = r1pipe(case.args, d, data, case.env)
            rc, stderr = res.returncode, res.stderr
            after, status = digests(run, case.stage), stage_status(run, case.stage)
    finally:
        if case.setup is mount_small:
            subprocess.run(["umount", "-l", str(d)])
    changed = sum(1 for k, v in before.items() if k in after and after[k] != v)
    removed = sum(1 for k in before if k not in after)
    new = sum(1 for k in after if k not in before)
    errors = [x for x in stderr.splitlines() if x.startswith("error:")]
    traceback = "Traceback" in stderr or "[rank0]: │" in stderr
    flags = [note] if note else []
    if rc != case.want_rc:
        flags.append(f"**exit {rc}, want {case.want_rc}**")
    flags += [f"**missing '{e}'**" for e in case.expect if e not in stderr]
    if case.want_rc != 0 and not case.sig and (changed or removed):
        flags.append("**failed, yet files changed or removed**")
    if case.want_rc != 0 and len(errors) != 1:
        flags.append(f"**{len(errors)} error: lines**")
    if traceback:
        flags.append("**traceback**")
    if rc != 0 and not errors:  # what it printed instead
        tail = [x for x in stderr.splitlines() if x.strip()][-1:] or [""]
        flags.append(f"last line: {tail[0][:100]}")
    short = re.sub(r" conf=smoke run\.dir=\{d\}(?= |$)", "", case.args).replace(" task=gsm8k", "")
    short = short.replace(" " + GSM_EXTRA, "").replace("{data}", "DATA").replace("{d}", "D")
    short = re.sub(r"task.train_file=(\S+) task.eval_file=\1", r"train/eval_file=\1", short)
    cells = [
        case.name,
        f"`{short}`",
        str(rc),
        errors[0].replace(str(data), "DATA").replace(str(d), "D")[:140] if errors else "",
        "yes" if traceback else "no",
        f"{changed}/{removed}" + (f" (+{new})" if new else ""),
        status,
        "; ".join(flags) or "as expected",
    ]
    return [c.replace("|", "\\|") for c in cells]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="also write the table here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    top = Path(tempfile.mkdtemp(prefix="fault-table-"))
    base, t0 = top / "base", time.time()
    res = r1pipe("run-all conf=smoke run.dir={d}", base, top)
    if res.returncode != 0:
        sys.exit(f"run-all conf=smoke failed ({res.returncode}):\n{res.stderr[-3000:]}")
    print(f"BASE {base} ready in {time.time() - t0:.0f} s", file=sys.stderr)
    head = ["case", "command", "exit", "error line", "traceback", "changed/removed", "status"]
    lines = ["| " + " | ".join([*head, "notes"]) + " |", "|" + "---|" * (len(head) + 1)]
    for i, case in enumerate(CASES):
        t = time.time()
        if case.setup is mount_small and os.geteuid() != 0:
            row = [case.name, *[""] * 6, "skipped: mounting a tmpfs needs root"]
        else:
            work = top / f"case{i:02d}"
            work.mkdir()
            try:
                row = run_case(case, base, work)
            except Exception as e:  # a set-up step failed: say so in the table, go on
                row = [case.name, *[""] * 6, f"**set-up failed: {e}**"[:300].replace("|", "/")]
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        lines.append("| " + " | ".join(row) + " |")
        print(f"{case.name}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    if args.keep:
        print(f"work directory kept: {top}", file=sys.stderr)
    else:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
