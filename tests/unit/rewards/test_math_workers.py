"""Tests of the killable math-verify workers: pathological answers end on time and leave nothing
running; crashed, dead and unstartable workers are handled; the parse cache that pays for the
round trips to the workers is safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

POW = r"10^{10^{10}}"  # sympy builds a ten-billion-digit integer, in C
BRACES = "{" * 10000 + "}" * 10000

# Run in a fresh interpreter: on the thread-based combiner this call never returned (the power
# holds the GIL in C), and a thread stuck in sympy blocks the interpreter's exit. Prints one JSON
# line after the call, then one after the checks of what is left running.
_SCRIPT = r"""
import json, os, sys, threading, time
from r1pipe.rewards.combine import compute_rewards

def descendants():
    # pid -> (state, CPU ticks) of every process below this one, from /proc/*/stat
    procs = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        procs[int(entry)] = (int(fields[1]), fields[0], int(fields[11]) + int(fields[12]))
    found, parents = {}, [os.getpid()]
    while parents:
        parent = parents.pop()
        for pid, (ppid, state, ticks) in procs.items():
            if ppid == parent:
                found[pid] = (state, ticks)
                parents.append(pid)
    return found

def ready():  # wait until the reward workers, if any, have started (imported sympy)
    try:
        from r1pipe.rewards import math_workers
    except ImportError:
        return
    math_workers.pool().start()

timeout_s = float(sys.argv[1])
kw = dict(group_size=1, task_verifier="math", answer_format="boxed", timeout_s=timeout_s)
assert compute_rewards([r"\boxed{2}"], ["2"], {"accuracy": 1.0}, lengths=[0], **kw).total == [1.0]
ready()  # a warm pool, as from the second RL step on
threads_before = sorted(t.name for t in threading.enumerate())
workers_before = descendants()
completions = [r"<think>x</think> \boxed{%s}" % a for a in sys.argv[2:]]
start = time.monotonic()
result = compute_rewards(completions, ["1"] * len(completions), {"accuracy": 1.0},
                         lengths=[0] * len(completions), **kw)
elapsed = time.monotonic() - start
print(json.dumps(dict(elapsed=elapsed, accuracy=result.per_reward["accuracy"],
                      failures=result.failures["accuracy"])), flush=True)
threads_after = sorted(t.name for t in threading.enumerate())
left = [pid for pid in workers_before if os.path.exists(f"/proc/{pid}")]  # killed, reaped
ready()  # the replacements
first = descendants()
time.sleep(0.5)
second = descendants()
busy = {pid: (state, second[pid][1] - ticks) for pid, (state, ticks) in first.items()
        if pid in second and (second[pid][0] not in "SI" or second[pid][1] - ticks > 1)}
from r1pipe.rewards import math_workers
math_workers.shutdown()
print(json.dumps(dict(threads_before=threads_before, threads_after=threads_after,
                      workers_before=len(workers_before), killed_left=left, idle=len(first),
                      busy=busy, after_shutdown=list(descendants()))), flush=True)
"""


def _run_script(timeout_s: float, answers: list[str]) -> tuple[dict, dict]:
    process = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(timeout_s), *answers],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, to kill whatever it leaves
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        out, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"no exit within 60 s; it printed: {out!r}")
    finally:
        try:  # nothing may outlive it
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, out
    call, checks = (json.loads(line) for line in out.splitlines())
    return call, checks


def test_pathological_answers_score_zero_on_time_and_leave_nothing_running():
    # Both answers hung the thread-based combiner (one forever, one >= 390 s at 100% CPU).
    timeout_s = 1.0
    call, checks = _run_script(timeout_s, [POW, BRACES])
    assert call["accuracy"] == [0.0, 0.0]
    assert call["failures"] == 2  # a time-out is counted, not a silent 0
    assert call["elapsed"] < timeout_s + 1.0
    # No thread started, none left; the two killed workers are gone (not even zombies); every
    # process left is an idle worker (sleeping, no CPU); none after shutdown.
    assert checks["threads_after"] == checks["threads_before"] == ["MainThread"]
    assert checks["workers_before"] >= 2
    assert checks["killed_left"] == []
    assert checks["idle"] >= 2
    assert checks["busy"] == {}
    assert checks["after_shutdown"] == []


@pytest.fixture
def pool_class():
    # Imported here, not at the top, so that the first test also runs (and fails) against a
    # checkout from before the workers existed.
    from r1pipe.rewards.math_workers import MathVerifierPool

    return MathVerifierPool


def _dead(pid: int) -> None:
    """Wait until ``pid`` (a child) has exited, without reaping it."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def test_a_crashed_worker_scores_none_and_the_pair_behind_it_is_rescored(pool_class):
    pool = pool_class(workers=1)
    try:
        pool.start()
        (pid,) = pool.pids()
        # Crash the worker (as a segfault or the OOM killer would) while it is stuck on POW,
        # with ("1", "1") queued behind it.
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        start = time.monotonic()
        verdicts = pool.verify([(POW, "1"), ("1", "1")], timeout_s=30.0)
        elapsed = time.monotonic() - start
        assert verdicts == [None, True]
        assert elapsed < 15.0  # the crash was noticed, not the 30 s deadline
        assert pool.replaced == 1
        assert pid not in pool.pids() and not os.path.exists(f"/proc/{pid}")
    finally:
        pool.close()


def test_a_worker_that_died_idle_is_replaced_without_a_failure(pool_class):
    pool = pool_class(workers=1)
    try:
        pool.start()
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGKILL)
        _dead(pid)
        assert pool.verify([("0.5", r"\frac{1}{2}")], timeout_s=30.0) == [True]
        assert pool.replaced == 1
    finally:
        pool.close()
    assert pool.pids() == []


def test_a_worker_that_cannot_start_raises(monkeypatch, pool_class):
    # A broken setup must not look like a policy whose every answer is wrong.
    monkeypatch.setattr(sys, "executable", "/bin/false")
    pool = pool_class(workers=1)
    try:
        with pytest.raises(RuntimeError, match="before it was ready"):
            pool.verify([("1", "1")], timeout_s=5.0)
    finally:
        pool.close()


def test_verdicts_match_answer_matches_in_this_process():
    from r1pipe.rewards import math_workers
    from r1pipe.rewards.accuracy import answer_matches

    pairs = [
        (r"\frac{1}{2}", "0.5"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \frac{\pi}{2})"),
        ("3", "4"),
        (r"\sqrt{2}", r"2^{1/2}"),
        ("18", 18),
        ("x", "y"),
    ]
    expected = [answer_matches(p, r, "math") for p, r in pairs]
    assert expected == [True, True, False, True, True, False]
    assert math_workers.verify_math(pairs, timeout_s=30.0) == expected


# --- the parse cache that pays for the worker round trips ------------------------------------


def test_parsed_answers_are_cached_and_a_matrix_comes_back_as_a_copy():
    from r1pipe.rewards import accuracy

    text = r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"
    accuracy._parse_math_cached.cache_clear()
    first = accuracy._parse_math(text, None)
    first[0][0] = 99  # a caller that changes its (mutable) matrix ...
    second = accuracy._parse_math(text, None)
    assert second[0][0] == 1  # ... does not change what the next caller gets
    assert accuracy._parse_math_cached.cache_info().hits == 1
    accuracy._parse_math("1+" * 300 + "1", None)  # too long to be a key
    assert accuracy._parse_math_cached.cache_info().currsize == 1
    assert accuracy.math_equal(text, r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}")


def test_workers_verify_without_the_signal_alarm(monkeypatch):
    # The workers pass signal_timeout=False: the parent's deadline is the only one, so a slow
    # pair is killed and counted rather than turned into a silent 0 by math_verify's alarm.
    from r1pipe.rewards import accuracy

    seen = []
    real_parse = accuracy.parse

    def parse_spy(*args, **kwargs):
        seen.append(kwargs["parsing_timeout"])
        return real_parse(*args, **kwargs)

    monkeypatch.setattr(accuracy, "parse", parse_spy)
    accuracy._parse_math_cached.cache_clear()
    assert accuracy.answer_matches("0.5", r"\frac{1}{2}", "math", signal_timeout=False)
    assert seen and all(timeout is None for timeout in seen)  # in the main thread too
