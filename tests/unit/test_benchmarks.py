"""The benchmark registry, the data folder search and loading problems from any source."""

import json
import shutil
from pathlib import Path

import pytest

from r1pipe.benchmarks import BENCHMARKS, data_dir_candidates, load_benchmark, read_reference
from r1pipe.config.schema import BenchConfig
from r1pipe.errors import UserError

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A data folder laid out like ../shared/data, holding the test samples."""
    for name, sample in (("gsm8k", "gsm8k_sample.jsonl"), ("math500", "math500_sample.jsonl")):
        (tmp_path / name).mkdir()
        shutil.copy(ASSETS / sample, tmp_path / name / "test.jsonl")
    return tmp_path


def test_named_benchmarks_from_a_data_folder(data_dir):
    gsm, source, label = load_benchmark(BenchConfig(name="gsm8k", data_dir=str(data_dir), limit=20))
    assert label == "gsm8k" and source.endswith("gsm8k/test.jsonl") and len(gsm) == 20
    first = json.loads((ASSETS / "gsm8k_sample.jsonl").read_text().splitlines()[0])
    assert gsm[0].question == first["question"] and gsm[0].reference == "18"  # after ####
    math, _, _ = load_benchmark(BenchConfig(name="math500", data_dir=str(data_dir)))
    assert len(math) == 50 and math[0].id == "test/precalculus/807.json"
    assert math[0].reference == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_data_folder_search_order(monkeypatch, tmp_path):
    monkeypatch.setenv("R1PIPE_DATA_DIR", str(tmp_path))
    assert data_dir_candidates(None)[0] == tmp_path.resolve()
    assert data_dir_candidates("/x/y") == [Path("/x/y")]


def test_missing_benchmark_file_says_where_it_looked(tmp_path):
    with pytest.raises(UserError, match=r"aime24/test.jsonl not found under .*data_dir="):
        load_benchmark(BenchConfig(name="aime24", data_dir=str(tmp_path)))
    with pytest.raises(UserError, match="benchmark= is required"):
        load_benchmark(BenchConfig())
    with pytest.raises(UserError, match="not a known benchmark"):
        load_benchmark(BenchConfig(name="./nope.jsonl"))


def test_registry_matches_the_shared_files_when_present():
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    if not shared.is_dir():
        pytest.skip("no ../shared/data on this machine")
    sizes = {"gsm8k": 1319, "math500": 500, "aime24": 30, "aime25": 30, "amc23": 40}
    for name in BENCHMARKS:
        problems, _, _ = load_benchmark(BenchConfig(name=name, data_dir=str(shared)))
        assert len(problems) == sizes[name], name


def test_any_file_with_field_detection_and_numeric_answers(tmp_path):
    # AIME25 stores answers as ints, AMC23 as floats like 27.0, AIME24 as "025" strings.
    rows = [
        {"id": 0, "problem": "p0", "answer": 70},
        {"id": 1, "problem": "p1", "answer": 27.0},
        {"id": 2, "problem": "p2", "answer": "025"},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems, _, label = load_benchmark(BenchConfig(name=str(path)))
    assert label == "mine" and [p.reference for p in problems] == ["70", "27", "025"]


def test_datasets_loadable_sources(tmp_path):
    from datasets import Dataset

    ds = Dataset.from_list(
        [{"q": "1+1?", "sol": "so \\boxed{2}"}, {"q": "2+2?", "sol": "\\boxed{4}"}]
    )
    ds.to_parquet(str(tmp_path / "x.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "x.parquet", tmp_path / "saved"):
        cfg = BenchConfig(name=str(source), prompt_field="q", answer_field="sol")
        problems, _, _ = load_benchmark(cfg)
        assert [(p.question, p.reference) for p in problems] == [("1+1?", "2"), ("2+2?", "4")]


def test_bad_rows_name_file_and_line(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"problem": "p", "answer": "1"}\n{"problem": "q"}\n')
    with pytest.raises(UserError, match=r"b.jsonl:2: row has no reference field"):
        load_benchmark(BenchConfig(name=str(path)))
    path.write_text('{"question": "p", "answer": "no marker"}\n')
    with pytest.raises(UserError, match=r"b.jsonl:1: reference has no '#### <answer>'"):
        load_benchmark(BenchConfig(name=str(path), reference="gsm8k"))
    path.write_text(
        '{"id": 1, "problem": "p", "answer": "1"}\n{"id": 1, "problem": "q", "answer": "2"}\n'
    )
    with pytest.raises(UserError, match=r"b.jsonl:2: id '1' appears twice"):
        load_benchmark(BenchConfig(name=str(path)))


def test_read_reference_modes():
    assert read_reference("work\n#### 1,234", None, "x") == "1234"
    assert read_reference("so $\\boxed{\\frac{1}{2}}$.", None, "x") == "\\frac{1}{2}"
    assert read_reference(" 3.5 ", None, "x") == "3.5"
    with pytest.raises(UserError, match="x: reference has no"):
        read_reference("7", "boxed", "x")


def test_file_labels_name_the_results_folder(tmp_path):
    from r1pipe.benchmarks import file_label

    (tmp_path / "amc").mkdir()
    assert (
        file_label(tmp_path / "amc" / "test.jsonl") == "amc-test"
    )  # a split name alone says little
    assert file_label(tmp_path / "amc" / "my_preds.jsonl") == "my_preds"
    assert file_label(tmp_path / "amc") == "amc"
