"""The built-in rule rewards' batch scorers, each with the protection its work needs, and their
configuration checks. :mod:`r1pipe.rewards.registry` names them; :func:`~r1pipe.rewards.
combine.compute_rewards` calls them. See :mod:`r1pipe.rewards.combine` for why each reward
is protected the way it is (direct ``try/except``, sandbox threads, killable math workers,
timed threads for user extras).
"""

from __future__ import annotations

import functools
import math
import operator
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from r1pipe.rewards.accuracy import accuracy_reward, final_answer
from r1pipe.rewards.format import format_reward
from r1pipe.rewards.language import LANGUAGE_SCRIPTS, language_consistency_reward
from r1pipe.rewards.length import cosine_length_reward, kimi_length_rewards
from r1pipe.rewards.math_workers import verify_math

# Enough for I/O-bound extra rewards (e.g. a remote judge) to overlap, few enough that a burst
# of abandoned tasks does not leave dozens of threads behind. Also caps the code reward threads.
_MAX_WORKERS = 8


@dataclass(frozen=True)
class RewardBatch:
    """A batch of completions and every option a reward may read.

    A general prompt's batch sets only ``completions`` and ``target_language``; the defaults
    of the other fields are those of a batch without references.
    """

    completions: Sequence[str]
    references: Sequence[Any] = ()
    lengths: Sequence[int] = ()
    correct: Sequence[bool] = ()
    """Accuracy verdicts (:func:`~r1pipe.rewards.accuracy.is_correct`), one per completion;
    filled only when an enabled reward has ``needs_correct``."""
    group_size: int = 1
    task_verifier: str = "exact"
    answer_format: str = "auto"
    tolerance: float = 1e-6
    target_language: str = "en"
    max_len: int = 0
    timeout_s: float = 5.0


#: ``scorer(batch) -> (values, failures)``: one finite value per completion (0 for a sample
#: that failed) and how many samples failed. It must not raise on a bad sample.
Scorer = Callable[[RewardBatch], tuple[list[float], int]]


class _SharedPool:
    """The process-wide executor plus the tasks abandoned on it after a timeout."""

    def __init__(self, max_workers: int) -> None:
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._abandoned: list[Future[Any]] = []

    def acquire(self) -> tuple[ThreadPoolExecutor, int]:
        """Return the executor and how many of its workers are free of abandoned tasks."""
        with self._lock:
            self._abandoned = [future for future in self._abandoned if not future.done()]
            if self._executor is None or len(self._abandoned) >= self._max_workers:
                if self._executor is not None:
                    # Its threads finish their abandoned tasks in the background and then exit.
                    self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = ThreadPoolExecutor(
                    self._max_workers, thread_name_prefix="r1pipe-reward"
                )
                self._abandoned = []
            return self._executor, self._max_workers - len(self._abandoned)

    def abandon(self, future: Future[Any]) -> None:
        with self._lock:
            self._abandoned.append(future)


_POOL = _SharedPool(_MAX_WORKERS)


def _as_reward(value: Any) -> float:
    # A NaN/inf from one sample would poison the weighted sum and the group's advantages, so it
    # is a failure like an exception.
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"reward is not finite: {result!r}")
    return result


def _run_direct(
    fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]
) -> tuple[list[float], int]:
    values = []
    failures = 0
    for args in calls:
        try:
            values.append(_as_reward(fn(*args)))
        except Exception:
            values.append(0.0)
            failures += 1
    return values, failures


def _run_threads(
    fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], max_workers: int
) -> tuple[list[float], int]:
    """Like :func:`_run_direct`, ``max_workers`` samples at a time; only for functions that end
    on their own (no timeout here, so nothing is abandoned)."""
    values = [0.0] * len(calls)
    failures = 0
    with ThreadPoolExecutor(max_workers, thread_name_prefix="r1pipe-code") as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        for i, future in enumerate(futures):
            try:
                values[i] = _as_reward(future.result())
            except Exception:
                failures += 1
    return values, failures


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _started_call(fn: Callable[..., Any], args: tuple[Any, ...], started: list, i: int) -> Any:
    started[i] = time.monotonic()
    return fn(*args)


def _run_protected(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    timeout_s: float,
    max_in_flight: int,
) -> tuple[list[float], int]:
    """Run ``fn(*args)`` per sample on the shared pool, each bounded by ``timeout_s``."""
    n = len(calls)
    values = [0.0] * n
    failures = 0
    if n == 0:
        return values, failures
    started: list[float | None] = [None] * n
    in_flight: dict[Future[Any], tuple[int, float]] = {}  # future -> (index, submitted at)

    def deadline(item: tuple[int, float]) -> float:
        i, submitted = item
        start = started[i]
        # Before it starts, a task is bounded by the same budget for getting a worker (only
        # relevant when concurrent callers share the pool and overcommit it).
        return (submitted if start is None else start) + timeout_s

    executor, free = _POOL.acquire()
    # Never more tasks in flight than free workers, so a submitted task starts at once and
    # cannot sit in the queue behind an abandoned one.
    window = min(max_in_flight, free)
    next_i = 0
    while next_i < n or in_flight:
        if window <= 0:
            # Every worker we were given is stuck on an abandoned task (and in_flight is empty,
            # since each abandon shrinks both): get free workers, or a fresh pool.
            executor, free = _POOL.acquire()
            window = min(max_in_flight, free)
        while next_i < n and len(in_flight) < window:
            future = executor.submit(_started_call, fn, calls[next_i], started, next_i)
            in_flight[future] = (next_i, time.monotonic())
            next_i += 1

        soonest = min(deadline(item) for item in in_flight.values())
        done, _ = wait(
            in_flight, timeout=max(0.0, soonest - time.monotonic()), return_when=FIRST_COMPLETED
        )
        for future in done:
            i, _ = in_flight.pop(future)
            if future.cancelled() or future.exception() is not None:
                failures += 1
                continue
            try:
                values[i] = _as_reward(future.result())
            except Exception:
                failures += 1
        now = time.monotonic()
        for future, item in list(in_flight.items()):
            if future.done() or now < deadline(item):
                continue  # collected (or checked again) on the next pass
            if started[item[0]] is None:
                if future.cancel():  # never got a worker: drop it from the queue
                    del in_flight[future]
                    failures += 1
                continue  # started just now: it gets its full budget from its start time
            del in_flight[future]
            failures += 1
            _POOL.abandon(future)
            window -= 1
    return values, failures


def _math_accuracy(
    completions: Sequence[str], references: Sequence[Any], answer_format: str, timeout_s: float
) -> tuple[list[float], int]:
    """``"math"`` accuracy per sample: each distinct (answer, reference) pair verified once in a
    killable worker process; a pair over ``timeout_s`` (or whose worker died) scores 0 on each
    of its samples, which all count as failures."""
    values = [0.0] * len(completions)
    samples: dict[tuple[str, Any], list[int]] = {}  # pair -> the samples that gave it
    for i, (completion, reference) in enumerate(zip(completions, references, strict=True)):
        try:
            prediction = final_answer(completion, answer_format)
        except Exception:
            prediction = None  # as accuracy_reward: bad data scores 0 without counting
        # Other references score 0, as in accuracy_reward (a bool would also equal 1 here).
        ok_reference = isinstance(reference, str | int | float) and not isinstance(reference, bool)
        if prediction is not None and ok_reference:
            samples.setdefault((prediction, reference), []).append(i)
    verdicts = verify_math(list(samples), timeout_s)
    failures = 0
    for indexes, verdict in zip(samples.values(), verdicts, strict=True):
        if verdict is None:
            failures += len(indexes)
        elif verdict:
            for i in indexes:
                values[i] = 1.0
    return values, failures


# ---- the built-in rewards' batch scorers and checks (entries of r1pipe.rewards.registry) ----


def score_accuracy(batch: RewardBatch) -> tuple[list[float], int]:
    """``accuracy`` per sample, protected as its verifier needs: ``"math"`` in killable worker
    processes, ``"code"`` in threads over sandboxed programs, the others directly."""
    if batch.task_verifier == "math":
        return _math_accuracy(
            batch.completions, batch.references, batch.answer_format, batch.timeout_s
        )
    accuracy = functools.partial(
        accuracy_reward,
        verifier=batch.task_verifier,
        answer_format=batch.answer_format,
        tolerance=batch.tolerance,
    )
    pairs = list(zip(batch.completions, batch.references, strict=True))
    if batch.task_verifier == "code":
        # One sandboxed program per CPU: more would only stretch each one's wall clock.
        return _run_threads(accuracy, pairs, max_workers=min(_MAX_WORKERS, _cpu_count()))
    return _run_direct(accuracy, pairs)


def score_format(batch: RewardBatch) -> tuple[list[float], int]:
    """:func:`~r1pipe.rewards.format.format_reward` per sample, with ``answer_format``."""
    return _run_direct(format_reward, [(c, batch.answer_format) for c in batch.completions])


def score_general_format(batch: RewardBatch) -> tuple[list[float], int]:
    """:func:`~r1pipe.rewards.reward_model.general_format_reward` per sample."""
    # Imported here: its module loads torch for the reward models; this rule is string work.
    from r1pipe.rewards.reward_model import general_format_reward

    return _run_direct(general_format_reward, [(c,) for c in batch.completions])


def score_language(batch: RewardBatch) -> tuple[list[float], int]:
    """:func:`~r1pipe.rewards.language.language_consistency_reward` per sample."""
    calls = [(c, batch.target_language) for c in batch.completions]
    return _run_direct(language_consistency_reward, calls)


def score_kimi_length(batch: RewardBatch) -> tuple[list[float], int]:
    """:func:`~r1pipe.rewards.length.kimi_length_rewards` per group, a group being each
    contiguous run of ``group_size`` completions."""
    # Checked by check_kimi_length, so this pure arithmetic cannot fail on any sample.
    size = batch.group_size
    values = [
        reward
        for start in range(0, len(batch.completions), size)
        for reward in kimi_length_rewards(
            list(batch.lengths[start : start + size]), list(batch.correct[start : start + size])
        )
    ]
    return values, 0


def score_cosine_length(batch: RewardBatch) -> tuple[list[float], int]:
    """:func:`~r1pipe.rewards.length.cosine_length_reward` per sample, with ``max_len``."""
    # Checked by check_cosine_length, so this pure arithmetic cannot fail on any sample.
    values = [
        cosine_length_reward(length, ok, batch.max_len)
        for length, ok in zip(batch.lengths, batch.correct, strict=True)
    ]
    return values, 0


def _check_lengths(batch: RewardBatch) -> None:
    # The length rewards are called without protection, so bad lengths fail here.
    for length in batch.lengths:
        if operator.index(length) < 0:
            raise ValueError(f"lengths must be >= 0, got {length}")


def check_kimi_length(batch: RewardBatch) -> None:
    """The batch splits into groups and every length is an int >= 0."""
    n = len(batch.completions)
    if n % batch.group_size:
        raise ValueError(f"{n} completions do not split into groups of {batch.group_size}")
    _check_lengths(batch)


def check_cosine_length(batch: RewardBatch) -> None:
    """``max_len > 0`` and every length is an int >= 0."""
    if operator.index(batch.max_len) <= 0:
        raise ValueError(f"cosine_length needs max_len > 0, got {batch.max_len}")
    _check_lengths(batch)


def check_target_language(target_language: str) -> None:
    """``target_language`` is a key of :data:`~r1pipe.rewards.language.LANGUAGE_SCRIPTS`."""
    if target_language not in LANGUAGE_SCRIPTS:
        raise ValueError(
            f"unknown target_language {target_language!r}; "
            f"expected one of {sorted(LANGUAGE_SCRIPTS)}"
        )
