"""Combine the rule rewards into one scalar per completion, safely, for the RL trainer.

:func:`compute_rewards` computes every reward with a non-zero weight, keeps each reward's raw
values for logging, and returns their weighted sum. A reward that raises or runs past
``timeout_s`` on one sample scores 0 for that sample and is counted in
:attr:`RewardResult.failures`: one malformed completion (or a sympy expression that never
finishes simplifying) must not take down or stall a training step.

How the protection is applied, and why not uniformly:

* ``"math"`` accuracy can take unbounded time in sympy, in C code that no thread timeout or
  signal can interrupt (``\boxed{10^{10^{10}}}``, thousands of nested braces). The answers
  are extracted here (string work, like the format reward), and each distinct
  (answer, reference) pair is verified in a worker process of
  :mod:`r1pipe.rewards.math_workers`, which is killed and replaced when the pair runs past
  ``timeout_s``; the pair's samples score 0 and each counts as a failure. No pair holds a
  worker longer than ``timeout_s``, so the math phase of a step takes at most about
  ``ceil(distinct pairs / workers) * timeout_s`` plus the start-up of replacement workers
  (reached only if every pair hangs), and nothing keeps running afterwards. A GRPO group often
  repeats one answer, so verifying each pair once also saves work.
* User ``extra`` functions (closures, clients of remote judges) need not be picklable, so they
  run as tasks on a shared thread pool, each abandoned after ``timeout_s`` of wall-clock time
  (measured from when the task starts running, so queueing does not count). A thread cannot be
  killed: an abandoned task keeps running in the background and its result is discarded. Its
  pool thread is busy meanwhile, so the pool is replaced by a fresh one once abandoned tasks
  occupy all of its workers. The interpreter waits for running pool threads at exit, so an
  extra that never finishes delays exit: an extra must end on its own (e.g. a request timeout).
* ``"code"`` accuracy runs each sample's program in sandboxed processes that the sandbox
  itself kills at its time limit (:mod:`r1pipe.rewards.sandbox`), so every call ends on its
  own; threads, one sample each, only overlap the waiting on those processes. A program that
  times out fails its tests (reward 0); a sandbox that cannot start counts as a failure.
* The other built-ins (``"exact"``/``"numeric"`` accuracy, format, language, the length
  rewards) are linear-time string or arithmetic work, so they are called directly under
  ``try/except``. A future per sample would cost more than the work itself (thousands of
  completions per step must score well under a second), while a single future for the whole
  batch would let one slow sample zero the batch.

Which rewards exist is :mod:`r1pipe.rewards.registry`'s: each of its entries points at one of
the batch scorers here (``score_*``), which apply the protections above, and
:func:`compute_rewards` loops over :data:`~r1pipe.rewards.registry.REASONING_REWARDS`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from r1pipe.rewards.accuracy import VERIFIERS, accuracy_reward, final_answer, is_correct
from r1pipe.rewards.format import format_reward
from r1pipe.rewards.language import LANGUAGE_SCRIPTS, language_consistency_reward
from r1pipe.rewards.length import cosine_length_reward, kimi_length_rewards
from r1pipe.rewards.math_workers import verify_math
from r1pipe.rewards.parsing import ANSWER_FORMATS

if TYPE_CHECKING:
    from r1pipe.rewards.registry import RewardBatch, RewardSpec

__all__ = ["BUILTIN_REWARDS", "RewardResult", "compute_rewards"]  # noqa: F822 (__getattr__)

# Enough for I/O-bound extra rewards (e.g. a remote judge) to overlap, few enough that a burst
# of abandoned tasks does not leave dozens of threads behind. Also caps the code reward threads.
_MAX_WORKERS = 8


@dataclass
class RewardResult:
    """The rewards of a batch of completions.

    Attributes:
        total: Weighted sum of the enabled rewards, one per completion.
        per_reward: Each enabled reward's raw (unweighted) value per completion, in the order
            of ``weights``; logged separately so a collapsing reward is visible.
        failures: Reward name -> number of samples on which it raised or timed out (those
            samples score 0). Has an entry, possibly 0, for every computed reward, including
            ``"accuracy"`` when only the length rewards needed it.
    """

    total: list[float]
    per_reward: dict[str, list[float]]
    failures: dict[str, int]


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


# ---- combining them -------------------------------------------------------------------------


def _reasoning_rewards() -> dict[str, RewardSpec]:
    # The registry points at the scorers above, so it is imported when used, not at import.
    from r1pipe.rewards.registry import REASONING_REWARDS

    return REASONING_REWARDS


def __getattr__(name: str) -> Any:
    # BUILTIN_REWARDS: the reward names compute_rewards knows without ``extra``, read from the
    # registry (which imports this module) when asked for.
    if name == "BUILTIN_REWARDS":
        return tuple(_reasoning_rewards())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_config(
    batch: RewardBatch,
    weights: dict[str, float],
    enabled: dict[str, float],
    extra: dict[str, Callable[[str, str], float]],
    rewards: dict[str, RewardSpec],
) -> None:
    # Configuration errors raise instead of being scored 0 per sample: a typo in a config must
    # not look like a policy that learns nothing.
    clashes = sorted(set(extra) & set(rewards))
    if clashes:
        raise ValueError(f"extra rewards {clashes} clash with built-in reward names")
    valid = [*rewards, *extra]
    # All names, weight 0 included: a misspelt name is a typo even while it is switched off.
    unknown = [name for name in weights if name not in valid]
    if unknown:
        raise ValueError(f"unknown reward names {unknown}; valid names are {valid}")
    bad_weights = {name: w for name, w in enabled.items() if not math.isfinite(w)}
    if bad_weights:
        raise ValueError(f"reward weights must be finite, got {bad_weights}")
    n, references, lengths = len(batch.completions), batch.references, batch.lengths
    if len(references) != n or len(lengths) != n:
        raise ValueError(
            f"got {n} completions, {len(references)} references and {len(lengths)} lengths"
        )
    if batch.task_verifier not in VERIFIERS:
        raise ValueError(f"unknown verifier {batch.task_verifier!r}; expected one of {VERIFIERS}")
    if batch.answer_format not in ANSWER_FORMATS:
        raise ValueError(
            f"unknown answer_format {batch.answer_format!r}; expected one of {ANSWER_FORMATS}"
        )
    check_target_language(batch.target_language)
    if not batch.timeout_s > 0:  # also rejects NaN
        raise ValueError(f"timeout_s must be > 0, got {batch.timeout_s!r}")
    if operator.index(batch.group_size) < 1:
        raise ValueError(f"group_size must be >= 1, got {batch.group_size}")
    for spec in rewards.values():
        if spec.name in enabled and spec.check is not None:
            spec.check(batch)


def compute_rewards(
    completions: list[str],
    references: list[str],
    weights: dict[str, float],
    *,
    group_size: int,
    lengths: list[int],
    task_verifier: str,
    answer_format: str,
    tolerance: float = 1e-6,
    target_language: str = "en",
    max_len: int = 0,
    timeout_s: float = 5.0,
    extra: dict[str, Callable[[str, str], float]] | None = None,
) -> RewardResult:
    """Compute the weighted rewards of a batch of completions, never raising on bad samples.

    Built-in rewards (by name in ``weights``; the entries of
    :data:`~r1pipe.rewards.registry.REASONING_REWARDS`):

    * ``"accuracy"``: :func:`~r1pipe.rewards.accuracy.accuracy_reward` with ``task_verifier``,
      ``answer_format`` and ``tolerance``;
    * ``"format"``: :func:`~r1pipe.rewards.format.format_reward` with ``answer_format``;
    * ``"language"``: :func:`~r1pipe.rewards.language.language_consistency_reward`;
    * ``"kimi_length"``: :func:`~r1pipe.rewards.length.kimi_length_rewards` per group, a group
      being each contiguous run of ``group_size`` completions;
    * ``"cosine_length"``: :func:`~r1pipe.rewards.length.cosine_length_reward` with
      ``max_len``.

    For both length rewards "correct" means :func:`~r1pipe.rewards.accuracy.is_correct`
    (accuracy >= 1): a code answer that passes only some of its tests is wrong there, while
    its ``"accuracy"`` reward is still the passed fraction.

    Only rewards with a non-zero weight are computed. Accuracy is also computed (and its
    failures counted) when only a length reward needs it.

    Args:
        completions: The generated texts, ``group_size`` consecutive ones per prompt.
        references: The reference answer of each completion's prompt.
        weights: Reward name -> weight; a built-in name or a key of ``extra``.
        group_size: Completions per prompt (>= 1).
        lengths: Length of each completion (e.g. in tokens), used by the length rewards.
        task_verifier: Accuracy verifier: ``"exact"``, ``"numeric"``, ``"math"`` or ``"code"``
            (then each reference is the problem's JSON test spec, which also sets the sandbox
            limits; ``timeout_s`` does not apply).
        answer_format: ``"answer_tag"``, ``"boxed"`` or ``"auto"``.
        tolerance: Relative tolerance of the numeric verifier.
        target_language: Language code of the language reward.
        max_len: End of the cosine length schedule; required (> 0) for ``"cosine_length"``.
        timeout_s: Wall-clock budget of each ``"math"`` verification (per distinct answer and
            reference; its worker process is killed at the deadline) and of each extra reward
            sample; a sample over budget scores 0 and counts as a failure.
        extra: Additional per-sample rewards ``fn(completion, reference) -> float`` by name,
            weighted by ``weights[name]``. They may raise or hang; their values must be finite.

    Returns:
        A :class:`RewardResult`.

    Raises:
        ValueError: On configuration errors: an unknown reward name (the message lists the
            valid ones), an extra name clashing with a built-in, non-finite weights, lists of
            different lengths, an unknown verifier/answer format/language, a batch that does
            not split into groups, ``max_len <= 0`` with ``"cosine_length"``, negative
            lengths, or ``timeout_s <= 0``.

    Example:
        >>> result = compute_rewards(
        ...     ["<think>2+2</think> <answer>4</answer>", "<think>2+2</think> <answer>5</answer>"],
        ...     ["4", "4"],
        ...     {"accuracy": 1.0, "format": 0.5, "kimi_length": 1.0},
        ...     group_size=2, lengths=[10, 30], task_verifier="numeric",
        ...     answer_format="answer_tag")
        >>> result.total
        [2.0, 0.0]
        >>> result.per_reward["kimi_length"], result.failures["accuracy"]
        ([0.5, -0.5], 0)
    """
    from r1pipe.rewards.registry import RewardBatch

    rewards = _reasoning_rewards()
    extra = dict(extra or {})
    enabled = {name: weight for name, weight in weights.items() if weight != 0}
    batch = RewardBatch(
        completions,
        references,
        lengths,
        group_size=group_size,
        task_verifier=task_verifier,
        answer_format=answer_format,
        tolerance=tolerance,
        target_language=target_language,
        max_len=max_len,
        timeout_s=timeout_s,
    )
    _check_config(batch, weights, enabled, extra, rewards)

    values: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    needs_correct = any(rewards[name].needs_correct for name in enabled if name in rewards)
    if "accuracy" in enabled or needs_correct:
        values["accuracy"], failures["accuracy"] = rewards["accuracy"].score(batch)
        batch = dataclasses.replace(batch, correct=[is_correct(v) for v in values["accuracy"]])

    pairs = list(zip(completions, references, strict=True))
    for name in enabled:
        if name == "accuracy":
            continue  # computed above
        if name in rewards:
            values[name], failures[name] = rewards[name].score(batch)
        else:
            values[name], failures[name] = _run_protected(
                extra[name], pairs, timeout_s, max_in_flight=_MAX_WORKERS
            )

    per_reward = {name: values[name] for name in enabled}
    n = len(completions)
    total = [
        math.fsum(weight * per_reward[name][i] for name, weight in enabled.items())
        for i in range(n)
    ]
    return RewardResult(total=total, per_reward=per_reward, failures=failures)
