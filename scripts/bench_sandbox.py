"""Throughput of the code-reward sandbox: bare interpreter starts, run_python, compute_rewards.

How to run
    ``python scripts/bench_sandbox.py [--n 240] [--runs 100] [--python PATH]
    [--sandbox KEY=VALUE ...] [--json out.json]``. ``--sandbox`` (repeatable) adds a field to
    every problem's reference JSON, hence to its ``SandboxConfig`` (e.g. ``timeout_s=2``,
    ``run_as=current``, ``command_prefix='["nsjail", "--"]'``, or a future ``isolation=none``);
    the value is JSON if it parses (and the field is not a plain ``str``), else the text.
    ``--python``: the programs' interpreter; default the first of ``sys.executable``,
    ``/usr/local/bin/python3``, ``/usr/bin/python3`` that runs ``print('ok')`` in the sandbox.

What each number means (columns: runs, wall s, ms/run = wall / runs, runs/s, compl/s)
    bare python -I, 1 thread   ``subprocess.run([python, "-I", "-c", "pass"])`` ``--runs`` times
                               in a row: the floor of any per-program sandbox
    bare python -I, 2 threads  the same ``--runs`` programs on 2 threads (ms/run is then the
                               effective cost with 2 side by side)
    run_python("pass")         the sandbox (temp dir, limits, user switch...) ``--runs`` times
                               in a row, with the problems' SandboxConfig
    compute_rewards (code)     ``--n`` completions (the 12 problems of code_sample.jsonl, 10
                               assert + 2 stdin/stdout, each answered with its reference
                               solution, cycled) scored by ``compute_rewards(...,
                               task_verifier="code")`` with its default workers; runs = 1 per
                               assert completion + 1 per test of a stdin/stdout one
    Then: sandbox / bare ms per run (both sequential; "+X ms" is the sandbox's overhead),
    completions/s over the goal of 40/s on 2 cores, and how many rewards are not 1.0 (should
    be 0; ``raised``: scored 0 on an exception; the first one's reason is printed). ``--json``
    writes the same numbers. The machine may be shared: the load average is printed, and
    differences under ~20% are noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from r1pipe.config.schema import CodeConfig
from r1pipe.data.code import code_reference
from r1pipe.rewards.accuracy import accuracy_reward
from r1pipe.rewards.code import parse_reference
from r1pipe.rewards.combine import compute_rewards
from r1pipe.rewards.sandbox import SandboxConfig, run_python

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "assets" / "code_sample.jsonl"
GOAL = 40.0  # completions/s on 2 cores


def _extras(items: list[str]) -> dict:
    kinds = {f.name: str(f.type) for f in dataclasses.fields(SandboxConfig)}
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--sandbox {item!r}: expected KEY=VALUE")
        try:
            out[key] = text if kinds.get(key) == "str" else json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    try:
        SandboxConfig(**out)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"--sandbox: {e}") from None
    return out


def _find_python(extras: dict) -> str:
    base = SandboxConfig(**{k: v for k, v in extras.items() if k != "python"})
    for candidate in (sys.executable, "/usr/local/bin/python3", "/usr/bin/python3"):
        probe = dataclasses.replace(base, python=candidate, timeout_s=max(base.timeout_s, 30))
        result = run_python("print('ok')", config=probe)
        if result.status == "passed" and result.stdout == "ok\n":
            return candidate
    raise SystemExit("no interpreter the sandbox can run; pass --python PATH")


def _timed(fn, count: int, threads: int = 1) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:  # 1 thread: one after another
        list(pool.map(lambda _: fn(), range(count)))
    return time.perf_counter() - start


def _row(name: str, wall: float, runs: int, completions: int | None = None) -> dict:
    cps = completions / wall if completions else None
    return dict(name=name, runs=runs, wall_s=wall, ms_per_run=1000 * wall / runs,
                runs_per_s=runs / wall, completions=completions, completions_per_s=cps)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=240, help="completions for compute_rewards")
    p.add_argument("--runs", type=int, default=100, help="programs for the bare/run_python rows")
    p.add_argument("--python", default=None, help="interpreter of the sandboxed programs")
    p.add_argument("--sandbox", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", default=None, metavar="PATH", help="write the numbers here")
    args = p.parse_args()

    extras = _extras(args.sandbox)
    python = args.python or extras.get("python") or _find_python(extras)
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    refs, completions, runs_per = [], [], []
    for row in rows:
        spec = {**json.loads(code_reference(row["tests"], CodeConfig())), "python": python}
        ref = json.dumps({**spec, **extras})
        suite, _, config = parse_reference(ref)  # raises on an unknown --sandbox key
        refs.append(ref)
        runs_per.append(len(suite.io) or 1)  # what a right program costs
        program = row["solution"]
        completions.append(f"<think>x</think>\n<answer>\n```python\n{program}\n```</answer>")
    picks = [i % len(rows) for i in range(args.n)]
    check = run_python("pass", config=config)
    if check.status != "passed":
        raise SystemExit(f"run_python('pass') gave {check.status}: {check.error or check.stderr}")

    def bare() -> None:
        subprocess.run([python, "-I", "-c", "pass"], check=True, stdin=subprocess.DEVNULL)

    def sandboxed() -> None:
        run_python("pass", config=config)

    for _ in range(3):  # warm the page cache
        bare()
        sandboxed()
    table = [
        _row("bare python -I, 1 thread", _timed(bare, args.runs), args.runs),
        _row("bare python -I, 2 threads", _timed(bare, args.runs, threads=2), args.runs),
        _row('run_python("pass")', _timed(sandboxed, args.runs), args.runs),
    ]
    start = time.perf_counter()
    result = compute_rewards(
        [completions[i] for i in picks], [refs[i] for i in picks], {"accuracy": 1.0},
        group_size=1, lengths=[0] * args.n, task_verifier="code", answer_format="answer_tag",
    )  # fmt: skip
    wall = time.perf_counter() - start
    table.append(_row("compute_rewards (code)", wall, sum(runs_per[i] for i in picks), args.n))
    wrong = [i for i, v in zip(picks, result.per_reward["accuracy"], strict=True) if v != 1.0]

    cpus = len(os.sched_getaffinity(0))
    print(f"python {python}; sandbox extras {extras or '{}'}; {cpus} CPUs; "
          f"load avg {os.getloadavg()[0]:.2f} (1 min)")  # fmt: skip
    print(f"\n{'':28}{'runs':>6}{'wall s':>8}{'ms/run':>9}{'runs/s':>9}{'compl/s':>9}")
    for r in table:
        cps = f"{r['completions_per_s']:9.1f}" if r["completions_per_s"] else f"{'-':>9}"
        print(f"{r['name']:28}{r['runs']:6d}{r['wall_s']:8.2f}{r['ms_per_run']:9.1f}"
              f"{r['runs_per_s']:9.1f}{cps}")  # fmt: skip
    bare_ms, sandbox_ms = table[0]["ms_per_run"], table[2]["ms_per_run"]
    cps = table[3]["completions_per_s"]
    ratios = dict(sandbox_over_bare=sandbox_ms / bare_ms, overhead_ms=sandbox_ms - bare_ms,
                  completions_per_s_over_goal=cps / GOAL)  # fmt: skip
    print(f"\nsandbox / bare per run: {ratios['sandbox_over_bare']:.2f}x "
          f"(+{ratios['overhead_ms']:.1f} ms per program)")  # fmt: skip
    print(f"completions/s vs goal {GOAL:.0f}/s on 2 cores: {cps:.1f}/s = "
          f"{ratios['completions_per_s_over_goal']:.2f}x ({cpus} CPUs here)")  # fmt: skip
    print(f"rewards != 1.0: {len(wrong)} of {args.n} (raised: {result.failures['accuracy']})")
    if wrong:  # why, for the first one: compute_rewards scores an exception 0 silently
        k = wrong[0]
        try:
            why = f"reward {accuracy_reward(completions[k], refs[k], verifier='code')}"
        except Exception as e:
            why = f"{type(e).__name__}: {e}"
        print(f"  first: problem {rows[k]['id']!r}: {why}")
    if args.json:
        out = dict(python=python, sandbox=extras, cpus=cpus, n=args.n, rows=table,
                   ratios=ratios, rewards_not_one=len(wrong),
                   failures=result.failures["accuracy"])  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
