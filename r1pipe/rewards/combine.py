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
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from r1pipe.rewards.accuracy import VERIFIERS, is_correct
from r1pipe.rewards.parsing import ANSWER_FORMATS
from r1pipe.rewards.registry import REASONING_REWARDS, RewardBatch, RewardSpec
from r1pipe.rewards.scorers import _MAX_WORKERS, _run_protected, check_target_language

__all__ = ["BUILTIN_REWARDS", "RewardResult", "compute_rewards"]  # noqa: F822 (__getattr__)


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


# ---- combining them -------------------------------------------------------------------------


def __getattr__(name: str) -> Any:
    # BUILTIN_REWARDS: the reward names compute_rewards knows without ``extra``, read from the
    # registry (which imports this module) when asked for.
    if name == "BUILTIN_REWARDS":
        return tuple(REASONING_REWARDS)
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

    rewards = REASONING_REWARDS
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
