"""Tests of the safe reward combiner: weights, group-wise length rewards, failures and timeouts."""

from __future__ import annotations

import doctest
import math
import threading
import time

import pytest

from r1pipe.rewards import combine as combine_mod
from r1pipe.rewards import scorers as scorers_mod
from r1pipe.rewards.combine import BUILTIN_REWARDS, RewardResult, compute_rewards


def _tagged(answer: str, reasoning: str = "some reasoning") -> str:
    return f"<think>{reasoning}</think> So <answer>{answer}</answer>"


GOOD = _tagged("4")
WRONG = _tagged("5")
UNFORMATTED = "the answer is 4"  # no think block, no tag: accuracy 0, format 0


def _run(completions, weights, *, references=None, lengths=None, group_size=1, **kwargs):
    kwargs.setdefault("task_verifier", "numeric")
    kwargs.setdefault("answer_format", "answer_tag")
    return compute_rewards(
        completions,
        references if references is not None else ["4"] * len(completions),
        weights,
        group_size=group_size,
        lengths=lengths if lengths is not None else [10] * len(completions),
        **kwargs,
    )


# --- weights and built-ins -----------------------------------------------------------------


def test_weights_applied_by_hand():
    mixed = "<think>The answer 是 4</think> <answer>4</answer>"  # language 2/3
    result = _run(
        [GOOD, WRONG, UNFORMATTED, mixed],
        {"accuracy": 2.0, "format": 0.5, "language": -1.0},
    )
    assert result.per_reward["accuracy"] == [1.0, 0.0, 0.0, 1.0]
    assert result.per_reward["format"] == [1.0, 1.0, 0.0, 1.0]
    assert result.per_reward["language"] == pytest.approx([1.0, 1.0, 1.0, 2 / 3])
    assert result.total == pytest.approx(
        [
            2.0 * 1 + 0.5 * 1 - 1.0 * 1,  # 1.5
            2.0 * 0 + 0.5 * 1 - 1.0 * 1,  # -0.5
            2.0 * 0 + 0.5 * 0 - 1.0 * 1,  # -1.0
            2.0 * 1 + 0.5 * 1 - 1.0 * (2 / 3),  # 1.8333...
        ]
    )
    assert result.failures == {"accuracy": 0, "format": 0, "language": 0}


def test_zero_weight_rewards_are_not_computed(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a zero-weight reward was computed")

    monkeypatch.setattr(scorers_mod, "language_consistency_reward", boom)
    result = _run([GOOD], {"accuracy": 1.0, "language": 0.0})
    assert list(result.per_reward) == ["accuracy"]
    assert "language" not in result.failures
    assert result.total == [1.0]


def test_per_reward_follows_weights_order():
    result = _run([GOOD], {"format": 1.0, "accuracy": 1.0})
    assert list(result.per_reward) == ["format", "accuracy"]
    assert isinstance(result, RewardResult)


def test_kimi_length_by_hand_per_group():
    # Two groups of three; correctness from accuracy.
    completions = [GOOD, GOOD, WRONG, WRONG, GOOD, WRONG]
    lengths = [100, 300, 200, 50, 50, 150]
    result = _run(completions, {"kimi_length": 1.0}, lengths=lengths, group_size=3)
    # Group 1: min 100, max 300 -> lambdas 0.5, -0.5, 0.0; third wrong -> min(0, 0.0) = 0.
    # Group 2: min 50, max 150 -> lambdas 0.5, 0.5, -0.5; first wrong -> min(0, 0.5) = 0.
    assert result.per_reward["kimi_length"] == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.5, -0.5])
    assert result.total == pytest.approx(result.per_reward["kimi_length"])
    # Accuracy was needed for correctness, so it was computed (and can fail) but has no weight.
    assert "accuracy" not in result.per_reward
    assert result.failures["accuracy"] == 0


def test_cosine_length_by_hand():
    completions = [GOOD, GOOD, WRONG, WRONG]
    lengths = [0, 500, 0, 1000]
    result = _run(
        completions, {"cosine_length": 1.0, "accuracy": 1.0}, lengths=lengths, max_len=1000
    )
    assert result.per_reward["cosine_length"] == pytest.approx([1.0, 0.75, -0.5, 0.0])
    assert result.total == pytest.approx([2.0, 1.75, -0.5, 0.0])


def test_length_rewards_count_a_partly_passing_program_as_wrong():
    # Correct means accuracy >= 1 (is_correct), as in rejection sampling and pass@k: a program
    # passing 1 of 2 tests has accuracy 0.5 but is a wrong answer for the length rewards.
    import json

    from sandboxhelpers import sandbox_python

    from r1pipe.rewards.accuracy import is_correct

    tests = ["assert double(0) == 0", "assert double(1) == 2"]
    ref = json.dumps({"tests": tests, "python": sandbox_python(), "timeout_s": 20})

    def program(body: str) -> str:
        return f"<think>x</think> <answer>```python\ndef double(x):\n    {body}\n```</answer>"

    partial, full = program("return x * x"), program("return x + x")  # x * x: right for 0 only
    result = _run(
        [partial, full],
        {"accuracy": 1.0, "kimi_length": 1.0, "cosine_length": 1.0},
        references=[ref, ref],
        lengths=[0, 1000],
        group_size=2,
        max_len=1000,
        task_verifier="code",
    )
    assert result.per_reward["accuracy"] == [0.5, 1.0]
    # Kimi: lambdas 0.5 (shortest), -0.5 (longest); the partial one is wrong: min(0, 0.5) = 0.
    assert result.per_reward["kimi_length"] == pytest.approx([0.0, -0.5])
    # Cosine (defaults): wrong at length 0 -> -0.5; correct at max_len -> 0.5.
    assert result.per_reward["cosine_length"] == pytest.approx([-0.5, 0.5])
    assert result.total == pytest.approx([0.5 + 0.0 - 0.5, 1.0 - 0.5 + 0.5])
    assert (is_correct(1.0), is_correct(0.999), is_correct(0.5), is_correct(0.0)) == (
        True,
        False,
        False,
        False,
    )


def test_math_verifier_runs_correctly_in_worker_processes():
    completions = [
        r"<think>r</think> \boxed{\frac{1}{2}}",
        r"<think>r</think> \boxed{0.5}",
        r"<think>r</think> \boxed{0.6}",
    ]
    result = _run(
        completions,
        {"accuracy": 1.0},
        references=["0.5", r"\frac{1}{2}", "0.5"],
        task_verifier="math",
        answer_format="boxed",
    )
    assert result.per_reward["accuracy"] == [1.0, 1.0, 0.0]
    assert result.failures == {"accuracy": 0}


def test_numeric_fast_path_scales():
    completions = [_tagged(str(i % 7), "add the numbers then multiply " * 5) for i in range(3000)]
    start = time.perf_counter()
    result = _run(
        completions,
        {"accuracy": 1.0, "format": 0.2, "language": 0.1, "kimi_length": 0.5},
        references=[str(i % 7) for i in range(3000)],
        lengths=[i % 100 for i in range(3000)],
        group_size=6,
    )
    elapsed = time.perf_counter() - start
    assert result.per_reward["accuracy"] == [1.0] * 3000
    # Generous for a shared 2-core machine; one future per sample would still be well under,
    # but a regression to per-sample sympy or a quadratic tokenizer would not.
    assert elapsed < 3.0


def test_empty_batch():
    result = _run([], {"accuracy": 1.0, "format": 1.0}, references=[], lengths=[])
    assert result.total == []
    assert result.per_reward == {"accuracy": [], "format": []}


# --- protection ------------------------------------------------------------------------------


def test_raising_extra_scores_zero_and_is_counted():
    def flaky(completion: str, reference: str) -> float:
        if "5" in completion:
            raise RuntimeError("bad sample")
        return 0.25

    result = _run([GOOD, WRONG, GOOD], {"accuracy": 1.0, "flaky": 2.0}, extra={"flaky": flaky})
    assert result.per_reward["flaky"] == [0.25, 0.0, 0.25]
    assert result.failures == {"accuracy": 0, "flaky": 1}
    assert result.total == pytest.approx([1.5, 0.0, 1.5])


def test_non_finite_extra_counts_as_failure():
    result = _run(
        [GOOD, GOOD],
        {"nan": 1.0, "text": 1.0},
        extra={"nan": lambda c, r: math.nan, "text": lambda c, r: "not a number"},
    )
    assert result.total == [0.0, 0.0]
    assert result.failures == {"nan": 2, "text": 2}


def test_raising_builtin_on_direct_path_is_counted(monkeypatch):
    def format_that_fails_on_wrong(completion: str, answer_format: str) -> float:
        if "5" in completion:
            raise RuntimeError("boom")
        return 1.0

    monkeypatch.setattr(scorers_mod, "format_reward", format_that_fails_on_wrong)
    result = _run([GOOD, WRONG], {"format": 1.0})
    assert result.per_reward["format"] == [1.0, 0.0]
    assert result.failures == {"format": 1}


def test_sleeping_extra_times_out_fast():
    def sleepy(completion: str, reference: str) -> float:
        time.sleep(2.0)
        return 1.0

    start = time.perf_counter()
    result = _run(
        [GOOD, WRONG, GOOD],
        {"accuracy": 1.0, "sleepy": 1.0},
        extra={"sleepy": sleepy},
        timeout_s=0.2,
    )
    elapsed = time.perf_counter() - start
    assert elapsed < 1.5
    assert result.per_reward["sleepy"] == [0.0, 0.0, 0.0]
    assert result.failures["sleepy"] == 3
    assert result.total == [1.0, 0.0, 1.0]


def test_one_slow_sample_does_not_zero_the_others():
    release = threading.Event()

    def slow_on_wrong(completion: str, reference: str) -> float:
        if "5" in completion:
            release.wait(5.0)
        return 1.0

    try:
        result = _run(
            [GOOD, WRONG, GOOD, GOOD],
            {"judge": 1.0},
            extra={"judge": slow_on_wrong},
            timeout_s=0.2,
        )
    finally:
        release.set()
    assert result.per_reward["judge"] == [1.0, 0.0, 1.0, 1.0]
    assert result.failures == {"judge": 1}


def test_math_accuracy_timeout_is_counted_per_sample(monkeypatch):
    # verify_math gives None for a pair whose worker was killed at the deadline (or crashed):
    # every sample with that answer scores 0 and counts as a failure.
    def verify_math(pairs, timeout_s):
        assert timeout_s == 0.2
        return [None if prediction == "5" else True for prediction, _ in pairs]

    monkeypatch.setattr(scorers_mod, "verify_math", verify_math)
    result = _run(
        [GOOD, WRONG, GOOD, WRONG],
        {"accuracy": 1.0, "cosine_length": 1.0},
        lengths=[0, 0, 0, 0],
        max_len=100,
        task_verifier="math",
        timeout_s=0.2,
    )
    assert result.per_reward["accuracy"] == [1.0, 0.0, 1.0, 0.0]
    assert result.failures["accuracy"] == 2
    # The timed-out samples count as wrong for the length reward.
    assert result.per_reward["cosine_length"] == pytest.approx([1.0, -0.5, 1.0, -0.5])


def test_math_accuracy_verifies_each_distinct_answer_once(monkeypatch):
    seen = []

    def verify_math(pairs, timeout_s):
        seen.extend(pairs)
        return [prediction == reference for prediction, reference in pairs]

    monkeypatch.setattr(scorers_mod, "verify_math", verify_math)
    completions = [GOOD, GOOD, WRONG, UNFORMATTED, GOOD, "<think>x</think> no answer"]
    result = _run(completions, {"accuracy": 1.0}, references=["4", "4", "4", "4", "5", "4"],
                  task_verifier="math")  # fmt: skip
    # No answer, no verification; the same answer to the same reference, one verification.
    assert seen == [("4", "4"), ("5", "4"), ("4", "5")]
    assert result.per_reward["accuracy"] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert result.failures == {"accuracy": 0}


def test_more_hung_samples_than_workers_still_returns():
    # Every worker gets stuck; the pool must be replaced instead of deadlocking.
    release = threading.Event()
    n = 3 * scorers_mod._MAX_WORKERS
    try:
        start = time.perf_counter()
        result = _run(
            [GOOD] * n,
            {"hang": 1.0},
            extra={"hang": lambda c, r: release.wait(5.0)},
            timeout_s=0.05,
        )
        elapsed = time.perf_counter() - start
    finally:
        release.set()
    assert result.failures == {"hang": n}
    assert elapsed < 2.0
    # And the combiner still works afterwards.
    after = _run([GOOD] * 3, {"one": 1.0}, extra={"one": lambda c, r: 1.0}, timeout_s=1.0)
    assert after.total == [1.0, 1.0, 1.0]


def test_queued_samples_get_their_full_budget():
    # 24 samples of 0.1 s each on at most 8 workers take ~0.3 s in all; a deadline counted from
    # submission (not from the start of each sample) would time out the later ones.
    def steady(completion: str, reference: str) -> float:
        time.sleep(0.1)
        return 1.0

    result = _run([GOOD] * 24, {"steady": 1.0}, extra={"steady": steady}, timeout_s=0.25)
    assert result.failures == {"steady": 0}
    assert result.total == [1.0] * 24


# --- configuration errors --------------------------------------------------------------------


def test_unknown_reward_name_lists_valid_names():
    with pytest.raises(ValueError, match="accuracy") as info:
        _run([GOOD], {"acuracy": 1.0}, extra={"mine": lambda c, r: 1.0})
    message = str(info.value)
    assert "acuracy" in message
    for name in (*BUILTIN_REWARDS, "mine"):
        assert name in message
    # A typo is an error even while its weight is 0.
    with pytest.raises(ValueError, match="unknown reward"):
        _run([GOOD], {"acuracy": 0.0})


def test_extra_clashing_with_builtin_raises():
    with pytest.raises(ValueError, match="clash"):
        _run([GOOD], {"format": 1.0}, extra={"format": lambda c, r: 1.0})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(weights={"accuracy": 1.0}, references=["4", "4"]), "references"),
        (dict(weights={"accuracy": 1.0}, lengths=[1, 2]), "lengths"),
        (dict(weights={"accuracy": math.inf}), "finite"),
        (dict(weights={"accuracy": 1.0}, task_verifier="sympy"), "verifier"),
        (dict(weights={"format": 1.0}, answer_format="tags"), "answer_format"),
        (dict(weights={"language": 1.0}, target_language="xx"), "target_language"),
        (dict(weights={"accuracy": 1.0}, timeout_s=0.0), "timeout_s"),
        (dict(weights={"kimi_length": 1.0}, group_size=2), "groups"),
        (dict(weights={"kimi_length": 1.0}, group_size=0), "group_size"),
        (dict(weights={"cosine_length": 1.0}), "max_len"),
        (dict(weights={"cosine_length": 1.0}, max_len=10, lengths=[-1, 1, 1]), ">= 0"),
    ],
)
def test_config_errors_raise(kwargs, match):
    weights = kwargs.pop("weights")
    with pytest.raises(ValueError, match=match):
        _run([GOOD, WRONG, GOOD], weights, **{"lengths": [1, 1, 1], **kwargs})


def test_combine_docstring_examples_run():
    result = doctest.testmod(combine_mod)
    assert result.attempted > 0
    assert result.failed == 0
