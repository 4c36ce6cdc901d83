"""The run report from a hand-made run directory (no model): which plots, the table, offline."""

import json
import math
import re
from pathlib import Path

import pytest

from r1pipe.errors import UserError
from r1pipe.report import write_report
from r1pipe.training.metrics import MetricsLogger

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stage(run: Path, name: str, rows: list[dict], held_out: dict | None = None) -> None:
    d = run / name
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "config.yaml").write_text(f"experiment: test\nnote: <{name}> & co\n")
    if held_out is not None:
        (d / "eval.json").write_text(json.dumps(held_out))


@pytest.fixture
def run(tmp_path) -> Path:
    run = tmp_path / "run"
    sft = [{"step": s, "loss": 2.0 / s, "lr": 1e-3} for s in range(1, 11)]
    rl = [
        {
            "step": s,
            "reward": s / 40,
            "reward/accuracy": s / 40,
            "reward/format": 1.0,
            "accuracy": s / 40,
            "response_length_mean": 20 + s,
            "truncation_rate": 0.1,
            "reflection_words_per_response": 0.01 * s,
            "reflection_rate": 0.005 * s,
            "kl": 0.001 * s,
            "entropy": 1.0 - 0.01 * s,
            "clip_frac": 0.02,
            "clip_frac_low": 0.01,
            "clip_frac_high": 0.01,
            "loss": 0.1,
            **({"eval/pass@1": 0.5 + s / 100} if s % 10 == 0 else {}),
        }
        for s in range(1, 41)  # long enough for the smoothed line
    ]
    _stage(
        run, "cold-start", sft, {"pass@1": 0.75, "format_rate": 0.99, "mean_response_tokens": 30}
    )
    _stage(run, "rl-reasoning", rl, {"pass@1": 0.89, "format_rate": 1.0})
    cold = {
        "status": "completed",
        "parent": "base-model",
        "checkpoint": "cold-start/checkpoint",
        "config_hash": "abc",
        "start_time": "2026-01-01T10:00:00+0000",
        "metrics": {"wall_seconds": 60},
    }
    rl_entry = {
        "status": "failed",
        "parent": "cold-start/checkpoint",
        "error": "RuntimeError: boom",
    }
    manifest = {"stages": {"cold-start": cold, "rl-reasoning": rl_entry}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    bench = run / "eval" / "rl-reasoning" / "math500"
    bench.mkdir(parents=True)
    bench_res = {
        "pass@1": 0.25,
        "cons@4": 0.5,
        "pass@4": 0.75,
        "num_samples": 4,
        "num_problems": 500,
    }
    (bench / "eval.json").write_text(json.dumps(bench_res))
    other = run / "eval" / "qwen-1.5b" / "math500"
    other.mkdir(parents=True)
    (other / "eval.json").write_text(json.dumps({"pass@1": 0.3, "num_samples": 1}))
    return run


def test_report_plots_table_lineage_and_configs(run):
    index = write_report(run)
    out = run / "report"
    assert index == out / "index.html"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(
        [
            "rewards.png",
            "accuracy.png",
            "response_length.png",
            "reflection.png",
            "kl.png",
            "entropy.png",
            "clip_fraction.png",
            "sft_loss.png",
        ]
    )
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == PNG_MAGIC
    page = index.read_text()
    # every image is a file beside the page; nothing is fetched from elsewhere
    assert sorted(re.findall(r"<img src='([^']+)'", page)) == pngs
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    # the per-stage table: held-out and benchmark results
    assert "75.0%" in page and "89.0%" in page
    assert "pass@1 25.0%<br>cons@4 50.0%<br>pass@4 75.0%" in page
    assert "qwen-1.5b" in page  # a checkpoint evaluated into the run that is not a stage
    # lineage, failure and config (escaped)
    assert "RuntimeError: boom" in page and "2026-01-01 10:00:00" in page
    assert "note: &lt;cold-start&gt; &amp; co" in page


def test_report_without_rl_has_no_rl_plots_and_drops_stale_ones(run):
    write_report(run)
    (run / "rl-reasoning" / "metrics.jsonl").write_text("")
    write_report(run)
    assert sorted(p.name for p in (run / "report").glob("*.png")) == ["sft_loss.png"]


def test_report_needs_a_run(tmp_path):
    with pytest.raises(UserError, match="no manifest.json"):
        write_report(tmp_path)


def test_metrics_logger_writes_tensorboard_events_and_purges_on_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = tmp_path / "metrics.jsonl"
    log = MetricsLogger(path, enabled=True)
    for s in range(1, 5):
        log.log({"step": s, "loss": 1.0 / s, "reward/accuracy": 0.1 * s, "nan": math.nan})
    log.close()
    # resume from step 2: steps 3-4 of the interrupted run are dropped, 3-5 written again
    log = MetricsLogger(path, enabled=True, resume_step=2)
    for s in range(3, 6):
        log.log({"step": s, "loss": 10.0 + s, "reward/accuracy": 0.0})
    log.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "reward/accuracy"}
    loss = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert loss == [(1, 1.0), (2, 0.5), (3, 13.0), (4, 14.0), (5, 15.0)]
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4, 5]
