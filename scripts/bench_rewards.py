"""Throughput of compute_rewards on a normal math batch (task.verifier=math, math-verify).

How to run
    ``python scripts/bench_rewards.py [--n 512] [--group-size 8] [--repeats 5]
    [--baseline DIR] [--root DIR] [--data PATH] [--json out.json]``.
    ``--baseline DIR`` also times the r1pipe package in DIR, e.g. the last commit's:
    ``mkdir /tmp/base && git archive HEAD r1pipe | tar -x -C /tmp/base``, and prints the
    ratios. ``--root`` is the package to time (default: this checkout). Each version runs in a
    process of its own (its imports, caches and reward workers apart), and the two take turns
    call by call, so that a change in a shared machine's load hits both alike.

The batches
    ``--n`` completions each, ``--group-size`` per problem, from the MATH-500 rows of ``--data``
    (default ``../shared/data/math500/test.jsonl`` beside the checkout, else the 50 rows of
    ``tests/assets/math500_sample.jsonl``). Each completion thinks with the row's reference
    solution and ends in a boxed answer: every other one the reference answer (right), the
    rest another problem's answer (wrong), so math-verify parses and compares real MATH
    answers on both outcomes. Rewards: the stage defaults, accuracy 1.0 and format 0.2, with
    answer_format=boxed. Like RL steps, each call gets the next problems (batch k starts at
    row k * n / group_size, wrapping around): scoring one batch again would mostly measure
    caches.

What each number means
    first call    wall time of the first ``compute_rewards`` call of a fresh process (batch 0),
                  which pays the one-off start-up (caches, reward worker processes), not the
                  imports;
    steady        ``--repeats`` further calls on batches 1, 2, ...: their total completions/s
                  (the figure to compare: an RL step calls it once per step on a warm process),
                  and the fastest and slowest call;
    cpu           CPU seconds per 1000 steady completions, of the version's process and of its
                  child processes (reward workers) together, which a busy machine disturbs less
                  than wall time (needs psutil);
    accuracy 1    completions that scored 1 (about half: the right ones, give or take the few
                  answers math-verify cannot match); both versions should agree. Then the
                  failures (timeouts, crashes), which should be 0.
    The load average is printed: the machine may be shared, and differences under ~15% are
    noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "math500" / "test.jsonl"
SAMPLE = ROOT / "tests" / "assets" / "math500_sample.jsonl"
WEIGHTS = {"accuracy": 1.0, "format": 0.2}


def _batch(rows: list[dict], n: int, group_size: int, start: int) -> tuple[list[str], list[str]]:
    completions, references = [], []
    for i in range(n):
        p = (start + i // group_size) % len(rows)
        row = rows[p]
        answer = row["answer"]
        if i % 2:  # a wrong answer: another problem's (a different one)
            j = p + 1 + i
            while rows[j % len(rows)]["answer"] == row["answer"]:
                j += 1
            answer = rows[j % len(rows)]["answer"]
        thought = row.get("solution", row["problem"])
        completions.append(f"<think>{thought}</think> The answer is $\\boxed{{{answer}}}$.")
        references.append(row["answer"])
    return completions, references


def _cpu_s() -> float | None:
    """CPU seconds so far of this process plus its live and reaped child processes."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    total = sum(me.cpu_times()[:2]) + sum(os.times()[2:4])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _serve(args: argparse.Namespace, rows: list[dict]) -> None:
    """One version's process: score batch k for each line "k" on stdin, print the numbers."""
    sys.path.insert(0, args.serve)
    from r1pipe.rewards.combine import compute_rewards

    def call(k: int) -> dict[str, Any]:
        completions, references = _batch(rows, args.n, args.group_size, k * problems)
        cpu = _cpu_s()
        start = time.perf_counter()
        result = compute_rewards(
            completions, references, WEIGHTS, group_size=args.group_size,
            lengths=[0] * args.n, task_verifier="math", answer_format="boxed",
        )  # fmt: skip
        wall = time.perf_counter() - start
        return dict(wall_s=wall, cpu_s=None if cpu is None else _cpu_s() - cpu,
                    right=sum(v == 1.0 for v in result.per_reward["accuracy"]),
                    failures=result.failures)  # fmt: skip

    problems = args.n // args.group_size
    import r1pipe

    for line in sys.stdin:
        print(json.dumps(dict(module=r1pipe.__file__, **call(int(line)))), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=512, help="completions per batch")
    p.add_argument("--group-size", type=int, default=8, help="completions per problem")
    p.add_argument("--repeats", type=int, default=5, help="timed calls after the first")
    p.add_argument("--root", default=str(ROOT), metavar="DIR", help="the r1pipe to time")
    p.add_argument("--baseline", default=None, metavar="DIR", help="an r1pipe to compare")
    p.add_argument("--data", default=None, metavar="PATH", help="MATH-style JSONL")
    p.add_argument("--json", default=None, metavar="PATH", help="write the numbers here")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    data = Path(args.data) if args.data else (SHARED if SHARED.exists() else SAMPLE)
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    if args.serve:
        _serve(args, rows)
        return

    roots = [args.root] + ([args.baseline] if args.baseline else [])
    common = ["--n", str(args.n), "--group-size", str(args.group_size), "--data", str(data)]
    servers = [
        subprocess.Popen(
            [sys.executable, __file__, *common, "--serve", str(Path(root).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for root in roots
    ]
    calls: list[list[dict]] = [[] for _ in servers]
    for k in range(args.repeats + 1):
        # Alternate who goes first, so that a change in the machine's load hits both alike.
        for s in range(len(servers)) if k % 2 else reversed(range(len(servers))):
            servers[s].stdin.write(f"{k}\n")
            servers[s].stdin.flush()
            calls[s].append(json.loads(servers[s].stdout.readline()))
    for server in servers:
        server.stdin.close()
        server.wait()

    cpus = len(os.sched_getaffinity(0))
    print(f"data {data} ({len(rows)} rows); {args.repeats} calls of {args.n} completions after "
          f"a first one; {cpus} CPUs; load avg {os.getloadavg()[0]:.2f} (1 min)")  # fmt: skip
    summaries = []
    for root, (first, *done) in zip(roots, calls, strict=True):
        walls = [c["wall_s"] for c in done]
        cpu = None if first["cpu_s"] is None else sum(c["cpu_s"] for c in done)
        failures: dict[str, int] = {}
        for c in done:
            for name, count in c["failures"].items():
                failures[name] = failures.get(name, 0) + count
        out = dict(root=root, module=first["module"], first_s=first["wall_s"], walls_s=walls,
                   completions_per_s=args.n * len(done) / sum(walls),
                   cpu_s_per_1000=None if cpu is None else 1000 * cpu / (args.n * len(done)),
                   right=sum(c["right"] for c in done), failures=failures)  # fmt: skip
        summaries.append(out)
        cpu_text = "" if cpu is None else f"cpu {out['cpu_s_per_1000']:.2f} s per 1000; "
        print(f"{out['module']}:\n  first call {out['first_s']:.2f} s; steady "
              f"{out['completions_per_s']:.0f} completions/s (calls {min(walls):.2f}-"
              f"{max(walls):.2f} s); {cpu_text}accuracy 1: {out['right']} of "
              f"{args.n * len(done)}; failures {failures}")  # fmt: skip
    result: dict[str, Any] = dict(data=str(data), n=args.n, repeats=args.repeats, cpus=cpus,
                                  versions=summaries)  # fmt: skip
    if args.baseline:
        new, old = summaries
        result["speed_ratio"] = new["completions_per_s"] / old["completions_per_s"]
        print(f"completions/s, {args.root} / baseline: {new['completions_per_s']:.0f} / "
              f"{old['completions_per_s']:.0f} = {result['speed_ratio']:.2f}x")  # fmt: skip
        if new["cpu_s_per_1000"] is not None:
            result["cpu_ratio"] = new["cpu_s_per_1000"] / old["cpu_s_per_1000"]
            print(f"cpu per completion, {args.root} / baseline: {result['cpu_ratio']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
