import json
from pathlib import Path

import pytest

from r1pipe.config import compose
from r1pipe.data.synthetic import addition_cot, addition_response, addition_splits
from r1pipe.data.tasks import load_task
from r1pipe.errors import UserError
from r1pipe.rewards import accuracy_reward, format_reward

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def test_addition_cot_by_hand():
    assert addition_cot([47, 38]) == "7+8=15, carry 1\n4+3+1=8, carry 0"
    assert addition_cot([99, 1]).splitlines()[-1] == "final carry 1"
    assert addition_cot([123, 456, 789]).splitlines()[0] == "3+6+9=18, carry 1"


def test_splits_deterministic_disjoint_and_sized():
    kw = dict(num_digits=2, num_operands=2, train_size=300, eval_size=50)
    tr1, ev1 = addition_splits(seed=3, **kw)
    tr2, ev2 = addition_splits(seed=3, **kw)
    tr3, _ = addition_splits(seed=4, **kw)
    assert [e.question for e in tr1] == [e.question for e in tr2]
    assert [e.question for e in ev1] == [e.question for e in ev2]
    assert [e.question for e in tr1] != [e.question for e in tr3]
    assert len(tr1) == 300 and len(ev1) == 50
    assert not {e.question for e in tr1} & {e.question for e in ev1}


def test_synthetic_responses_pass_the_rewards():
    train, _ = addition_splits(num_digits=3, num_operands=2, train_size=50, eval_size=5, seed=0)
    for e in train:
        assert format_reward(e.response, "answer_tag") == 1.0
        assert accuracy_reward(e.response, e.reference, verifier="exact") == 1.0
    assert "<answer>" not in addition_response([1, 2], "boxed")


def test_small_space_keeps_every_problem_once():
    train, held = addition_splits(
        num_digits=1, num_operands=2, train_size=1000, eval_size=10, seed=0
    )
    assert len(train) + len(held) == 81


def _gsm8k_cfg(train, test):
    cfg, _ = compose(["task=gsm8k", f"task.train_file={train}", f"task.eval_file={test}"])
    return cfg


def test_gsm8k_jsonl_loader_real_sample():
    f = ASSETS / "gsm8k_sample.jsonl"
    cfg = _gsm8k_cfg(f, f)
    train, held = load_task(cfg.task)
    assert len(train) == 50
    first = json.loads(f.read_text().splitlines()[0])
    assert train[0].reference == first["answer"].split("####")[1].strip().replace(",", "")
    assert "<<" not in train[0].response  # calculator annotations stripped
    for e in train:
        assert format_reward(e.response, "boxed") == 1.0
        assert (
            accuracy_reward(e.response, e.reference, verifier="math", answer_format="boxed") == 1.0
        )


def test_math_jsonl_loader_real_sample():
    f = ASSETS / "math500_sample.jsonl"
    cfg, _ = compose(
        ["task=math", f"task.train_file={f}", f"task.eval_file={f}", "task.eval_size=10"]
    )
    train, held = load_task(cfg.task)
    assert len(train) == 50 and len(held) == 10
    assert held[0].id.startswith("test/")


def test_missing_file_named(tmp_path):
    cfg = _gsm8k_cfg(tmp_path / "nope.jsonl", tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match=r"task.train_file=.*nope.jsonl: no such file"):
        load_task(cfg.task)


def test_row_without_field_names_file_line_and_field(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(
        json.dumps({"question": "q1", "answer": "a #### 1"})
        + "\n"
        + json.dumps({"question": "q2"})
        + "\n"
    )
    cfg = _gsm8k_cfg(f, f)
    with pytest.raises(UserError, match=r"d.jsonl:2: row has no field 'answer'"):
        load_task(cfg.task)


def test_bad_json_line_named(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"question": "q1", "answer": "a #### 1"}) + "\n{oops\n")
    cfg = _gsm8k_cfg(f, f)
    with pytest.raises(UserError, match=r"d.jsonl:2: not valid JSON"):
        load_task(cfg.task)


def test_gsm8k_answer_without_marker_named(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"question": "q1", "answer": "just 4"}) + "\n")
    cfg = _gsm8k_cfg(f, f)
    with pytest.raises(UserError, match=r"d.jsonl:1: answer has no '####"):
        load_task(cfg.task)


def test_run_seed_does_not_move_the_held_out_problems():
    """Seeds vary sampling and order; the problems come from task.split_seed alone."""

    def problems(*overrides):
        cfg, _ = compose(["conf=smoke", *overrides])
        train, held = load_task(cfg.task)
        return [e.question for e in train], [e.question for e in held]

    train0, held0 = problems()
    train1, held1 = problems("run.seed=1")
    assert held1 == held0 and train1 == train0
    train2, held2 = problems("task.split_seed=1")
    assert held2 != held0
    assert not set(held2) & set(train2)  # its own split is still disjoint


# ---- issue 12: bad data refused per row, one reader for every file --------------------------


def _rows(tmp_path, *rows, raw: bytes = b""):
    f = tmp_path / "d.jsonl"
    f.write_bytes(raw + b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    return f


def _refusal(f, *overrides) -> str:
    cfg, _ = compose(["task=gsm8k", f"task.train_file={f}", f"task.eval_file={f}", *overrides])
    with pytest.raises(UserError) as e:
        load_task(cfg.task)
    assert "\n" not in str(e.value)
    return str(e.value)


GOOD = {"question": "q1", "answer": "a #### 1"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        # str(['... #### 3']) read after '####' was the reference "3']"
        (
            {"question": "q", "answer": ["x #### 3"]},
            ":2: field 'answer' (task.answer_field) must be a string or a number, got a list",
        ),
        (
            {"question": "q", "answer": {"v": "#### 3"}},
            ":2: field 'answer' (task.answer_field) must be a string or a number, got an object",
        ),
        (
            {"question": 42, "answer": "#### 3"},
            ":2: field 'question' (task.prompt_field) must be a string, got an int (42)",
        ),
        (
            {"question": "  ", "answer": "#### 3"},
            ":2: field 'question' (task.prompt_field) is empty",
        ),
        (
            {"question": "q", "answer": "#### 3", "id": [1]},
            ":2: field 'id' (the row's id) must be a string or an integer, got a list",
        ),
    ],
    ids=["list-answer", "dict-answer", "int-prompt", "empty-prompt", "list-id"],
)
def test_a_value_of_the_wrong_type_is_refused_with_file_and_line(tmp_path, row, message):
    f = _rows(tmp_path, GOOD, row)
    assert _refusal(f) == f"{f}{message}"


def test_a_numeric_answer_is_read_as_written(tmp_path):
    f = _rows(tmp_path, {"problem": "p", "answer": 27.0}, {"problem": "p2", "answer": 5})
    cfg, _ = compose(["task=math", f"task.train_file={f}", f"task.eval_file={f}"])
    cfg.task.solution_field = None
    train, _ = load_task(cfg.task)
    assert [e.reference for e in train] == ["27.0", "5"]


def test_duplicate_ids_refused_by_default_and_dropped_when_asked(tmp_path, caplog):
    rows = [
        {"question": "q1", "answer": "#### 1", "id": "a"},
        {"question": "q2", "answer": "#### 2", "id": "b"},
        {"question": "q3", "answer": "#### 3", "id": "a"},
        {"question": "q4", "answer": "#### 4", "id": "b"},
    ]
    f = _rows(tmp_path, *rows)
    assert _refusal(f) == (
        f"{f}:3: id 'a' repeats {f}:1 (2 rows repeat an earlier id); make the ids unique, "
        "or set task.duplicates=drop to keep the first row of each id"
    )
    cfg, _ = compose(
        ["task=gsm8k", f"task.train_file={f}", f"task.eval_file={f}", "task.duplicates=drop"]
    )
    train, held = load_task(cfg.task)
    assert [e.question for e in train] == ["q1", "q2"] and len(held) == 2
    assert "2 rows repeat an earlier id); dropped (task.train_file" in caplog.text
    with pytest.raises(UserError, match="task.duplicates: must be one of"):
        compose(["task.duplicates=keep"])


def test_byte_order_mark_accepted_and_other_encodings_named(tmp_path):
    f = _rows(tmp_path, GOOD, raw=b"\xef\xbb\xbf")
    train, _ = load_task(_gsm8k_cfg(f, f).task)
    assert train[0].question == "q1"
    f.write_bytes(json.dumps(GOOD).encode() + b'\n{"question": "caf\xe9", "answer": "#### 1"}\n')
    assert _refusal(f) == (f"{f}:2: not UTF-8 text (byte 0xe9 at column 18); save it as UTF-8")


def test_a_directory_or_an_empty_file_is_named_as_such(tmp_path):
    assert _refusal(tmp_path) == f"task.train_file={tmp_path}: is a directory, not a file"
    empty = tmp_path / "e.jsonl"
    empty.write_bytes(b"")
    assert _refusal(empty) == f"task.train_file={empty}: is empty (0 bytes)"
    empty.write_text("\n\n")
    assert _refusal(empty) == f"task.train_file={empty}: the file has no rows (only blank lines)"
