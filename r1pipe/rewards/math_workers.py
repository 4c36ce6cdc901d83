"""math-verify in worker processes that are killed at a deadline, for the RL reward step.

sympy can run without end on a short answer (``10^{10^{10}}`` builds a ten-billion-digit
integer in C; 10,000 nested braces recurse for minutes), and neither a thread timeout nor
math_verify's own ``signal.alarm`` can stop C code. A process can be killed, so
:class:`MathVerifierPool` sends each (answer, reference) pair to a persistent worker process and
SIGKILLs the worker when the pair runs past its deadline; the pair's verdict is None (the caller
scores 0 and counts a failure) and a replacement starts. A killed worker is reaped at once, so
nothing keeps running afterwards.

Why the pool looks like this:

* Workers are fresh interpreters (``subprocess``: fork and exec at once), safe to start from a
  trainer with threads and a CUDA context, and they run nothing of the trainer's ``__main__``
  (multiprocessing's spawn and forkserver would re-import it in every worker). Importing sympy
  and math_verify takes ~0.6 s of CPU, paid once per worker: the pool lives for the whole
  process (an RL run scores every step with it) and a worker is only replaced when killed, at
  once, so the replacement is usually ready by the next batch. A pair's deadline counts from
  when it reaches a started (imported) worker.
* A worker verifies one pair at a time and holds at most one more, queued, so that it never
  waits for this process between pairs. A pair's deadline counts from when its worker starts
  it; the queued pair of a killed worker goes back to the queue, to another worker.
* Idle workers block on their pipe (no CPU) and exit when the trainer's end closes, including
  when the trainer dies. On Linux a worker also gets SIGKILL when the thread that started it
  ends (``PR_SET_PDEATHSIG``; that is how a worker stuck in sympy dies with a killed trainer),
  so call the pool from a long-lived thread, as the trainer does; a worker found dead before a
  pair is sent to it is replaced without counting a failure.
* Workers ignore SIGINT and SIGTERM: a Ctrl-C or a Slurm SIGTERM sent to the whole process
  group must not zero the rewards of the step the trainer finishes before it saves. The trainer
  alone ends them (pipe closed, SIGKILL, its own death).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe, wait
from pathlib import Path

from r1pipe.rewards.accuracy import answer_matches

__all__ = ["MathVerifierPool", "pool", "shutdown", "verify_math"]

# Enough to use the CPUs of a rank's share of a node; each idle worker holds ~60 MB. At least 2,
# so that one pair stuck until its deadline does not hold up all the others.
_MAX_WORKERS = 8
_MIN_WORKERS = 2
# A worker that has not imported sympy by then is broken (or the machine is): fail the step
# instead of waiting without bound.
_START_TIMEOUT_S = 60.0
_READY = "ready"
# Pairs sent to a worker before its answers come back: with 2, a worker starts its next pair at
# once instead of waiting for this process to be scheduled and reply, which on a busy machine
# costs more than a typical pair (~4 ms).
_PAIRS_IN_FLIGHT = 2
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# The directory holding the r1pipe package, so a worker imports this same copy.
_ROOT = str(Path(__file__).resolve().parents[2])


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _serve(fd: int, parent_pid: int) -> None:
    """The worker's loop: verify (answer, reference) pairs from ``fd`` until it closes."""
    try:  # Linux only: die with the parent even while stuck in C code
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before the line above
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # math_verify warns once that its own timeout is off: here the parent's deadline is it.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    conn = Connection(fd)
    conn.send(_READY)
    while True:
        try:
            prediction, reference = conn.recv()
        except (EOFError, OSError):
            return
        # Never raises on its inputs. No alarm: it would turn a slow pair into an uncounted 0
        # before the parent's deadline.
        conn.send(answer_matches(prediction, reference, "math", signal_timeout=False))


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen
    conn: Connection
    started: float  # time.monotonic() when the process started, for _START_TIMEOUT_S
    sent: deque[int] = field(default_factory=deque)  # pairs sent, oldest (the running one) first
    deadline: float = math.inf  # of the running pair


class MathVerifierPool:
    r"""Persistent worker processes running :func:`~r1pipe.rewards.accuracy.answer_matches`
    (``"math"``); a pair over its deadline gets its worker killed and replaced.

    Args:
        workers: How many pairs are verified side by side (default: the CPUs, within
            [2, 8]).

    Example:
        >>> pool = MathVerifierPool(workers=1)
        >>> pool.verify([("0.5", r"\frac{1}{2}"), ("3", "4")], timeout_s=30.0)
        [True, False]
        >>> pool.close()
    """

    def __init__(self, workers: int | None = None) -> None:
        if workers is None:
            workers = max(_MIN_WORKERS, min(_MAX_WORKERS, _cpu_count()))
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.size = workers
        self._ready: dict[Connection, _Worker] = {}  # imported; busy only inside verify()
        self._starting: dict[Connection, _Worker] = {}  # still importing sympy
        self._lock = threading.Lock()  # one batch at a time
        self.pid = os.getpid()
        #: Workers killed at a deadline or found dead (and replaced), over the pool's life.
        self.replaced = 0

    def pids(self) -> list[int]:
        """The process ids of the workers (for tests and monitoring)."""
        return [w.process.pid for w in [*self._ready.values(), *self._starting.values()]]

    def _start(self) -> None:
        parent_conn, child_conn = Pipe()
        code = (
            f"import sys; sys.path.insert(0, {_ROOT!r}); "
            "from r1pipe.rewards.math_workers import _serve; "
            f"_serve({child_conn.fileno()}, {os.getpid()})"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=[child_conn.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        child_conn.close()  # only the worker holds its end, so its death reads as EOF here
        self._starting[parent_conn] = _Worker(process, parent_conn, time.monotonic())

    def _top_up(self) -> None:
        for _ in range(self.size - len(self._ready) - len(self._starting)):
            self._start()

    @staticmethod
    def _kill(worker: _Worker) -> None:
        worker.conn.close()
        worker.process.kill()
        worker.process.wait()  # reaped: no zombie, no CPU

    def _replace(self, worker: _Worker, pending: deque[int]) -> None:
        """Kill ``worker`` (its running pair keeps no verdict), put the pairs queued behind that
        one back in front of ``pending``, and start a replacement, which imports while the
        batch goes on."""
        self.replaced += 1
        del self._ready[worker.conn]
        pending.extendleft(reversed(list(worker.sent)[1:]))
        worker.sent.clear()
        self._kill(worker)
        self._start()

    def _check_starting(self) -> None:
        now = time.monotonic()
        for conn, worker in list(self._starting.items()):
            if now >= worker.started + _START_TIMEOUT_S:
                del self._starting[conn]
                self._kill(worker)
                raise RuntimeError(
                    f"a math-verify worker process was not ready within {_START_TIMEOUT_S:.0f} s"
                )

    def _started(self, conn: Connection) -> None:
        worker = self._starting.pop(conn)
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = None
        if message != _READY:
            self._kill(worker)
            raise RuntimeError(
                f"a math-verify worker process exited before it was ready (exit code "
                f"{worker.process.returncode}); its error, if any, is above on stderr"
            )
        self._ready[conn] = worker

    def start(self) -> None:
        """Start the missing workers and wait until every worker is ready.

        Optional: :meth:`verify` starts them too, and does not count their start-up against a
        pair's budget. Useful before timing a batch, or to pay the start-up at a chosen time.

        Raises:
            RuntimeError: If a worker cannot start.
        """
        with self._lock:
            self._top_up()
            while self._starting:
                for conn in wait(list(self._starting), timeout=_START_TIMEOUT_S):
                    self._started(conn)
                self._check_starting()

    def _dispatch(
        self, pairs: Sequence[tuple[str, Hashable]], pending: deque[int], timeout_s: float
    ) -> None:
        now = time.monotonic()
        # Level by level, so that idle workers get a pair before any worker gets a second one.
        for level in range(1, _PAIRS_IN_FLIGHT + 1):
            for worker in list(self._ready.values()):
                if not pending:
                    return
                if len(worker.sent) >= level:
                    continue
                i = pending.popleft()
                try:
                    worker.conn.send(pairs[i])
                except OSError:  # it died: a crash if it was running a pair, else nothing lost
                    pending.appendleft(i)
                    self._replace(worker, pending)
                    continue
                if not worker.sent:
                    worker.deadline = now + timeout_s
                worker.sent.append(i)

    def verify(self, pairs: Sequence[tuple[str, Hashable]], timeout_s: float) -> list[bool | None]:
        """Whether each (prediction, reference) pair is mathematically equal.

        Args:
            pairs: Extracted answers and their references.
            timeout_s: Wall-clock budget of each pair, from when its worker starts it (as seen
                from here: when the pair is sent to an idle worker, or when the worker's answer
                to the pair before it arrives).

        Returns:
            One verdict per pair: True/False, or None when the pair ran past ``timeout_s`` or
            its worker died (the worker is then killed and replaced).

        Raises:
            RuntimeError: If a worker process cannot start (exits before it is ready, or is
                not ready within a minute).
        """
        if os.getpid() != self.pid:
            raise RuntimeError("a MathVerifierPool cannot be used in a forked child")
        verdicts: list[bool | None] = [None] * len(pairs)
        pending = deque(range(len(pairs)))
        with self._lock:
            try:
                self._top_up()
                while True:
                    self._dispatch(pairs, pending, timeout_s)
                    busy = [w for w in self._ready.values() if w.sent]
                    if not busy and not pending:
                        break
                    deadlines = [w.deadline for w in busy]
                    deadlines += [w.started + _START_TIMEOUT_S for w in self._starting.values()]
                    timeout = max(0.0, min(deadlines) - time.monotonic())
                    for conn in wait([*(w.conn for w in busy), *self._starting], timeout):
                        if conn in self._starting:
                            self._started(conn)
                            continue
                        worker = self._ready[conn]
                        try:
                            verdict = conn.recv()
                        except (EOFError, OSError):  # crashed: segfault, OOM kill
                            self._replace(worker, pending)
                            continue
                        verdicts[worker.sent.popleft()] = bool(verdict)
                        worker.deadline = time.monotonic() + timeout_s if worker.sent else math.inf
                    now = time.monotonic()
                    for worker in busy:
                        if worker.sent and now >= worker.deadline:
                            self._replace(worker, pending)  # the running pair stays None
                    self._check_starting()
            finally:
                # Left mid-batch (an exception, Ctrl-C): a busy worker's late answers would be
                # read by the next batch as its own, so busy workers go.
                for conn, worker in list(self._ready.items()):
                    if worker.sent:
                        del self._ready[conn]
                        self._kill(worker)
        return verdicts

    def close(self) -> None:
        """Stop every worker: idle ones exit on EOF, the rest are killed; all are reaped."""
        with self._lock:
            ready, self._ready = list(self._ready.values()), {}
            starting, self._starting = list(self._starting.values()), {}
            for worker in ready:
                worker.conn.close()
            for worker in ready:
                try:
                    worker.process.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait()
            for worker in starting:
                self._kill(worker)


_POOL: MathVerifierPool | None = None
_POOL_LOCK = threading.Lock()


def pool() -> MathVerifierPool:
    """The process-wide pool, created on first use (its workers start with the first batch)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            # A forked child gets a pool of its own; the parent's workers are the parent's.
            _POOL = MathVerifierPool()
        return _POOL


def verify_math(pairs: Sequence[tuple[str, Hashable]], timeout_s: float) -> list[bool | None]:
    """:meth:`MathVerifierPool.verify` on the process-wide pool."""
    if not pairs:
        return []
    return pool().verify(pairs, timeout_s)


def shutdown() -> None:
    """Close the process-wide pool (also done at exit); the next call starts a new one."""
    global _POOL
    with _POOL_LOCK:
        current, _POOL = _POOL, None
    if current is not None and current.pid == os.getpid():
        current.close()


atexit.register(shutdown)
