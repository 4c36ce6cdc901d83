"""pass@k, cons@k and summaries worked out by hand; scoring completions without a model."""

import itertools
import json
import random
from pathlib import Path

import pytest

from r1pipe.config.schema import BenchConfig, TaskConfig
from r1pipe.evaluation import (
    answer_equivalence,
    final_answer,
    majority_vote,
    pass_at_k,
    score_completion,
    summarize,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MATH = answer_equivalence("math")


# ---- pass@k ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 2 / 5),  # pass@1 is the share of correct samples
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
        (5, 2, 4, 1.0),  # only 3 wrong samples: any 4 contain a correct one
        (4, 1, 3, 1 - 1 / 4),  # k larger than the number of correct samples: 1 - C(3,3)/C(4,3)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (8, 0, 8, 0.0),  # nothing correct: 0 for every k
        (8, 8, 1, 1.0),
        (1, 1, 1, 1.0),
    ],
)
def test_pass_at_k_hand_worked(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_equals_enumerating_every_subset():
    # The estimator is the exact share of k-subsets of the n samples that hold a correct one.
    for n in range(1, 7):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                share = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(share), (n, c, k)


@pytest.mark.parametrize("n, c, k", [(4, 1, 5), (4, 5, 1), (4, 1, 0), (4, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# ---- cons@k (majority vote) -----------------------------------------------------------


@pytest.mark.parametrize(
    "answers, correct, expected",
    [
        (["4", "4", "5"], [1, 1, 0], 1.0),  # the majority is right
        (["5", "5", "4"], [0, 0, 1], 0.0),  # the right answer is a minority (pass@3 would be 1)
        (["4", "5"], [1, 0], 0.5),  # a two-way tie, one group right: expected score 1/2
        (["4", "5", "6"], [1, 0, 0], 1 / 3),  # a three-way tie
        (["5", "5", "6", "6", "4"], [0, 0, 0, 0, 1], 0.0),  # a tie of wrong answers on top
        (["4", "4", "5", "5", "6"], [1, 1, 0, 0, 0], 0.5),  # a tie with a smaller group below
        ([None, None, "4"], [0, 0, 1], 1.0),  # no answer, no vote
        ([None, None], [0, 0], 0.0),  # no answer at all
        (["  4 ", "4"], [1, 1], 1.0),  # whitespace does not split a vote
    ],
)
def test_majority_vote_hand_worked(answers, correct, expected):
    assert majority_vote(answers, correct) == pytest.approx(expected)


def test_majority_vote_merges_equivalent_answers():
    answers = ["0.5", "\\frac{1}{2}", "1/3"]
    correct = [1, 1, 0]
    # as text: a three-way tie, two of three groups right
    assert majority_vote(answers, correct) == pytest.approx(2 / 3)
    # as math: 0.5 and 1/2 are one answer with two votes
    assert majority_vote(answers, correct, MATH) == 1.0
    # numbers written differently vote together without sympy
    assert majority_vote(["1,000", "1000", "999"], [1, 1, 0], MATH) == 1.0
    # under the exact verifier "1,000" is another (wrong) answer than "1000": no merging
    assert answer_equivalence("exact") is None and answer_equivalence("code") is None


def test_summarize_hand_worked():
    def rec(pid, answer, correct):
        return {"id": pid, "answer": answer, "correct": correct, "format": 1.0}

    records = [
        rec("a", "4", 1.0), rec("a", "4", 1.0), rec("a", "5", 0.0), rec("a", None, 0.0),
        rec("b", "7", 1.0), rec("b", "8", 0.0), rec("b", "8", 0.0), rec("b", "9", 0.0),
    ]  # fmt: skip
    s = summarize(records, 4)
    # a: 2/4 right, majority 4 right; b: 1/4 right, majority 8 wrong, but 7 is among the 4
    assert s["pass@1"] == pytest.approx((0.5 + 0.25) / 2)
    assert s["cons@4"] == pytest.approx((1 + 0) / 2)
    assert s["pass@4"] == pytest.approx(1.0)
    assert s["num_problems"] == 2 and s["num_completions"] == 8
    assert "pass@1" in summarize(records, 1) and "cons@1" not in summarize(records, 1)


def test_pass_at_1_averages_per_problem_when_counts_differ():
    records = [{"id": "a", "answer": "1", "correct": 1.0, "format": 0.0}] + [
        {"id": "b", "answer": "2", "correct": 0.0, "format": 0.0} for _ in range(3)
    ]
    # each problem weighs the same: (1 + 0) / 2, not 1 / 4
    assert summarize(records, 1)["pass@1"] == 0.5


# ---- scoring completions ----------------------------------------------------------------


def test_final_answer_and_gsm8k_fallback():
    assert final_answer("<think>x</think> it is \\boxed{12}", "boxed") == "12"
    assert final_answer("3 + 4 = 7\n#### 7", "boxed") is None
    assert final_answer("3 + 4 = 7\n#### 1,007", "boxed", gsm8k_fallback=True) == "1007"
    # a box wins over a #### line
    assert final_answer("#### 3\nso \\boxed{4}", "boxed", gsm8k_fallback=True) == "4"


def test_score_completion_math_verifier():
    task = TaskConfig(answer_format="boxed", verifier="math")
    out = score_completion("<think>half</think> \\boxed{0.5}", "\\frac{1}{2}", task)
    assert out["answer"] == "0.5" and out["correct"] == 1.0 and out["format"] == 1.0
    assert score_completion("no box 0.5", "\\frac{1}{2}", task)["correct"] == 0.0


@pytest.mark.parametrize(
    "text, gsm8k_fallback, answer, correct, fmt",
    [
        # think block and tag: right answer, right format
        ("<think>1+2</think> <answer>3</answer>", False, "3", 1.0, 1.0),
        ("<think>1+2</think> <answer>4</answer>", False, "4", 0.0, 1.0),
        # no think block: the whole text is searched, the tag's content is stripped; no format
        ("<answer> 3</answer>", False, "3", 1.0, 0.0),
        # the right number without a tag is no answer (as in training)
        ("3", False, None, 0.0, 0.0),
        ("#### 3", False, None, 0.0, 0.0),
        # r1pipe eval credits a final GSM8K line
        ("#### 3", True, "3", 1.0, 0.0),
    ],
)
def test_held_out_scoring_hand_worked(text, gsm8k_fallback, answer, correct, fmt):
    task = TaskConfig()  # the addition task: <answer> tags, exact match
    got = score_completion(text, "3", task, gsm8k_fallback=gsm8k_fallback)
    assert got == {"answer": answer, "correct": correct, "format": fmt}


# ---- code tasks: correct means every test passes ----------------------------------------


SQUARE_TESTS = [
    "assert square(0) == 0",
    "assert square(1) == 1",
    "assert square(2) == 4",
    "assert square(3) == 9",
]


def _program(body: str) -> str:
    return f"<think>square it</think> <answer>```python\ndef square(x):\n    {body}\n```</answer>"


@pytest.fixture(scope="module")
def code_task_and_reference():
    from sandboxhelpers import sandbox_python

    task = TaskConfig(kind="jsonl", train_file="x.jsonl", eval_file="x.jsonl", verifier="code")
    reference = json.dumps({"tests": SQUARE_TESTS, "python": sandbox_python(), "timeout_s": 20})
    return task, reference


def test_code_sample_is_correct_only_when_every_test_passes(code_task_and_reference):
    task, ref = code_task_and_reference
    right = score_completion(_program("return x * x"), ref, task)
    assert right["correct"] == 1.0 and right["test_pass_rate"] == 1.0
    # x + x is right for 0 and 2 only: 2 of 4 tests, not correct
    half = score_completion(_program("return x + x"), ref, task)
    assert half["correct"] == 0.0 and half["test_pass_rate"] == 0.5
    assert "test_pass_rate" not in score_completion("<answer>3</answer>", "3", TaskConfig())


def test_code_pass_at_k_counts_only_programs_that_pass_every_test(code_task_and_reference):
    task, ref = code_task_and_reference
    # Problem a: four programs, each wrong on a different input: 3 of 4 tests each, none right.
    nearly = [_program(f"return x * x if x != {i} else -1") for i in range(4)]
    # Problem b: one right program, three that return 0 (right for square(0) only: 1 of 4).
    b = [_program("return x * x")] + [_program("return 0")] * 3
    records = [
        {"id": pid, **score_completion(text, ref, task)}
        for pid, texts in (("a", nearly), ("b", b))
        for text in texts
    ]
    assert [r["correct"] for r in records] == [0.0] * 4 + [1.0, 0.0, 0.0, 0.0]
    assert [r["test_pass_rate"] for r in records] == [0.75] * 4 + [1.0, 0.25, 0.25, 0.25]
    s = summarize(records, 4, verifier="code")
    # a: 0 of 4 correct -> pass@1 0, pass@4 0; b: 1 of 4 -> pass@1 1/4, pass@4 1
    assert s["pass@1"] == pytest.approx((0 + 0.25) / 2)
    assert s["pass@4"] == pytest.approx((0 + 1) / 2)
    # a: four different programs tie, none correct; b: "return 0" wins the vote, wrong
    assert s["cons@4"] == 0.0
    # per problem: a 0.75, b (1 + 3 * 0.25) / 4 = 0.4375
    assert s["test_pass_rate"] == pytest.approx((0.75 + 0.4375) / 2)


def test_summarize_counts_a_fractional_correct_as_wrong():
    # Records written with a pass fraction as "correct" (each program passes 3 of 4 tests)
    # must not add up to correct samples: int(0.75 * 4) = 3 would make pass@4 = 1.
    records = [
        {"id": "a", "answer": f"program {i}", "correct": 0.75, "format": 1.0} for i in range(4)
    ]
    s = summarize(records, 4, verifier="code")
    assert (s["pass@1"], s["pass@4"], s["cons@4"]) == (0.0, 0.0, 0.0)
    assert "test_pass_rate" not in s


def _rows(name: str) -> list[dict]:
    return [json.loads(x) for x in (ASSETS / name).read_text().splitlines()]


def _score_file(tmp_path: Path, rows: list[dict], **bench) -> tuple[dict, list[dict]]:
    from r1pipe.benchmarks import load_predictions

    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds, _ = load_predictions(str(path), BenchConfig(**bench))
    task = TaskConfig(answer_format="boxed", verifier="math")
    records = [
        {"id": p.id, **score_completion(c, p.reference, task, gsm8k_fallback=True)}
        for p in preds
        for c in p.completions
    ]
    return summarize(records, 1), records


def test_math500_reference_solutions_score_as_predictions(tmp_path):
    rows = _rows("math500_sample.jsonl")
    summary, _ = _score_file(tmp_path, rows)  # the rows as they are: solution is the completion
    assert summary["num_problems"] == 50 and summary["pass@1"] >= 0.99


def test_math500_solutions_against_other_problems_answers_score_near_zero(tmp_path):
    rows = _rows("math500_sample.jsonl")
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    shifted = order[1:] + order[:1]  # a derangement: every row gets another row's answer
    swapped = [
        {"id": r["unique_id"], "completion": r["solution"], "answer": rows[j]["answer"]}
        for r, j in zip((rows[i] for i in order), shifted, strict=True)
    ]
    summary, records = _score_file(tmp_path, swapped)
    assert summary["pass@1"] < 0.02, [r for r in records if r["correct"]]


def test_gsm8k_reference_answers_score_as_predictions(tmp_path):
    rows = _rows("gsm8k_sample.jsonl")
    preds = [
        {"question": r["question"], "completion": r["answer"], "answer": r["answer"]} for r in rows
    ]
    summary, _ = _score_file(tmp_path, preds)
    assert summary["num_problems"] == 50 and summary["pass@1"] == 1.0


def test_predictions_group_completions_by_problem(tmp_path):
    rows = [
        {"id": "p1", "completions": ["\\boxed{3}", "\\boxed{4}"], "answer": "3"},
        {"id": "p1", "completion": "\\boxed{3}", "answer": "3"},  # one more for p1
        {"problem": "2+2?", "response": "\\boxed{4}", "reference": 4},  # id: the problem text
    ]
    summary, records = _score_file(tmp_path, rows)
    assert [r["id"] for r in records] == ["p1", "p1", "p1", "2+2?"]
    # per problem: p1 2/3 right, "2+2?" 1/1
    assert summary["pass@1"] == pytest.approx((2 / 3 + 1) / 2)


@pytest.mark.parametrize(
    "lines, needle",
    [
        (
            ['{"id": 1, "completion": "x", "answer": "1"}', "{not json"],
            "preds.jsonl:2: not valid JSON",
        ),
        (['{"id": 1, "answer": "1"}'], "preds.jsonl:1: row has no completion"),
        (['{"id": 1, "completion": "x"}'], "preds.jsonl:1: row has no reference answer"),
        (['{"id": 1, "completion": 5, "answer": "1"}'], "'completion' must be a string"),
        (['{"completion": "x", "answer": "1"}'], "neither an id"),
        (
            [
                '{"id": 1, "completion": "x", "answer": "1"}',
                '{"id": 1, "completion": "y", "answer": "2"}',
            ],
            "preds.jsonl:2: problem '1' has reference '2' here but '1' on line 1",
        ),
        (['{"id": 1, "completion": "x", "answer": "no marker"}'], None),  # plain reference: fine
    ],
)
def test_bad_prediction_rows_name_file_and_line(tmp_path, lines, needle):
    from r1pipe.benchmarks import load_predictions
    from r1pipe.errors import UserError

    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    if needle is None:
        load_predictions(str(path), BenchConfig())
        return
    with pytest.raises(UserError, match=None) as e:
        load_predictions(str(path), BenchConfig())
    assert needle in str(e.value)


# ---- what `r1pipe eval` evaluates --------------------------------------------------------


def test_resolve_checkpoint_from_the_run_manifest(tmp_path):
    from r1pipe.config import compose
    from r1pipe.errors import UserError
    from r1pipe.evaluation import resolve_checkpoint

    def resolve(*overrides):
        cfg, _ = compose([f"run.dir={tmp_path}", *overrides])
        return resolve_checkpoint(cfg)

    with pytest.raises(UserError, match="nothing to evaluate"):
        resolve()
    stages = {
        "cold-start": {"status": "completed", "checkpoint": "cold-start/checkpoint"},
        "rl-reasoning": {"status": "completed", "checkpoint": "rl-reasoning/checkpoint"},
        "rejection-sft": {"status": "failed", "checkpoint": None},
    }
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": stages}))
    assert resolve() == (str(tmp_path / "rl-reasoning/checkpoint"), "rl-reasoning")  # the last
    assert resolve("bench.stage=cold-start") == (
        str(tmp_path / "cold-start/checkpoint"),
        "cold-start",
    )
    with pytest.raises(UserError, match="no completed rejection-sft stage.*rejection-sft failed"):
        resolve("bench.stage=rejection-sft")
    assert resolve("bench.checkpoint=/m/rl-all/checkpoint") == ("/m/rl-all/checkpoint", "rl-all")
    assert resolve("bench.checkpoint=/models/Qwen2.5-1.5B")[1] == "Qwen2.5-1.5B"
    with pytest.raises(UserError, match="bench.stage"):
        resolve("bench.stage=nope")
