"""`r1pipe eval` and `r1pipe report` through the CLI, on a copy of the smoke run."""

import json
import re
import shutil
from pathlib import Path

import pytest
from clihelpers import ROOT, cli, metrics, ok

ASSETS = ROOT / "tests" / "assets"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A benchmark folder laid out like ../shared/data with the 50-row GSM8K sample."""
    d = tmp_path_factory.mktemp("data")
    (d / "gsm8k").mkdir()
    shutil.copy(ASSETS / "gsm8k_sample.jsonl", d / "gsm8k" / "test.jsonl")
    return d


def widen_context(run: Path, tokens: int = 1024) -> None:
    """GSM8K prompts (~370 tokens of the char tokenizer) do not fit the smoke model's 256-token
    context, and r1pipe eval leaves out prompts that do not fit; the models' rotary positions
    do not depend on it, so the copies here declare a longer one."""
    for config in run.glob("*/checkpoint/config.json"):
        data = json.loads(config.read_text())
        data["max_position_embeddings"] = tokens
        config.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def run(smoke_run, tmp_path_factory) -> Path:
    """The smoke cold-start run plus rl-reasoning with a held-out evaluation every 2 steps."""
    run = tmp_path_factory.mktemp("evalrun") / "run"
    shutil.copytree(smoke_run, run)
    ok(
        cli(
            "stage",
            "rl-reasoning",
            "conf=smoke",
            f"run.dir={run}",
            "stage.rl_reasoning.eval_every=2",
        )
    )
    widen_context(run)
    return run


@pytest.fixture(scope="module")
def evaluated(run, data_dir) -> Path:
    """The run's last stage evaluated on 20 GSM8K problems, k=2, into the default folder."""
    ok(
        cli(
            "eval",
            f"run.dir={run}",
            "benchmark=gsm8k",
            f"data_dir={data_dir}",
            "limit=20",
            "eval.num_samples=2",
            "eval.max_new_tokens=16",
        )
    )
    return run


def test_rl_evaluates_held_out_every_n_steps(run):
    rows = metrics(run, "rl-reasoning")
    assert [r["step"] for r in rows if "eval/pass@1" in r] == [2]  # not at 4: the final eval is
    assert json.loads((run / "rl-reasoning" / "eval.json").read_text())["num_problems"] == 16
    # TensorBoard event files beside metrics.jsonl
    for stage in ("cold-start", "rl-reasoning"):
        assert list((run / stage).glob("events.out.tfevents.*")), stage


def test_eval_tiny_checkpoint_on_gsm8k_sample(evaluated):
    out = evaluated / "eval" / "rl-reasoning" / "gsm8k"  # the last completed stage by default
    summary = json.loads((out / "eval.json").read_text())
    assert summary["num_problems"] == 20 and summary["num_completions"] == 40
    for key in ("pass@1", "cons@2", "pass@2", "samples_per_s", "format_rate"):
        assert key in summary, key
    assert 0 <= summary["pass@1"] <= summary["pass@2"] <= 1 and summary["samples_per_s"] > 0
    proto = summary["protocol"]
    assert (proto["temperature"], proto["top_p"], proto["max_new_tokens"]) == (0.6, 0.95, 16)
    assert proto["instruction"].endswith("put your final answer within \\boxed{}.")
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 40 and {s["sample"] for s in samples} == {0, 1}
    assert {"id", "completion", "answer", "correct", "reference"} <= set(samples[0])
    assert samples[0]["reference"] == "18"  # GSM8K reference read after ####


def test_eval_scores_predictions_without_a_model(tmp_path):
    res = ok(cli("eval", f"predictions={ASSETS / 'math500_sample.jsonl'}", f"out={tmp_path}"))
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["pass@1"] >= 0.99 and summary["num_problems"] == 50
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 50
    assert "pass@1 100.0%" in res.stderr


def test_eval_bad_predictions_row_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "completion": "\\\\boxed{1}", "answer": "1"}\n{"id": 2}\n')
    res = cli("eval", f"predictions={bad}", f"out={tmp_path / 'o'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{bad}:2: row has no completion" in res.stderr


def test_report_on_the_smoke_run(evaluated):
    res = ok(cli("report", f"run.dir={evaluated}"))
    index = evaluated / "report" / "index.html"
    assert str(index) in res.stdout
    page = index.read_text()
    pngs = re.findall(r"<img src='([^']+)'", page)
    for name in ("rewards.png", "accuracy.png", "response_length.png", "kl.png", "sft_loss.png"):
        assert name in pngs, name
    for name in pngs:
        assert (evaluated / "report" / name).read_bytes()[:4] == b"\x89PNG"
    assert "cold-start" in page and "rl-reasoning" in page and ">gsm8k<" in page
    assert "cons@2" in page  # the benchmark result of the last stage is in the table


@pytest.mark.slow
def test_eval_under_torchrun_two_ranks(run, data_dir, tmp_path):
    # each rank generates for its share of the problems; rank 0 writes all of them
    args = [f"run.dir={run}", "stage=cold-start", "benchmark=gsm8k", f"data_dir={data_dir}"]
    ok(cli("eval", *args, "limit=6", "eval.max_new_tokens=8", f"out={tmp_path}", nproc=2))
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["world_size"] == 2 and summary["num_problems"] == 6
    ids = [json.loads(x)["id"] for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert sorted(set(ids)) == sorted(str(i) for i in range(6)) and len(ids) == 24


def test_eval_skips_a_prompt_longer_than_the_context(run, tmp_path):
    """A 1 MB problem is counted and left out before any generation (it was tokenized and
    allocated in full: 1.1 TB asked for); with task.overlong_prompts of the benchmark at its
    default, skip."""
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    rows = [json.loads(line) for line in (ASSETS / "gsm8k_sample.jsonl").read_text().splitlines()]
    rows[0]["question"] = "How many? " * 100_000
    (data / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    res = ok(
        cli(
            "eval",
            f"run.dir={run}",
            "benchmark=gsm8k",
            f"data_dir={data}",
            f"out={tmp_path / 'out'}",
            "eval.max_new_tokens=8",
        )
    )
    assert "1 of 3 prompts are over the" in res.stderr and "skipped" in res.stderr
    summary = json.loads(next((tmp_path / "out").rglob("eval.json")).read_text())
    assert summary["num_problems"] == 2
