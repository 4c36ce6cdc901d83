"""scripts/bench_gpu.py (issue 15) runs: ``--tiny`` on this machine writes every figure, each
ratio is its figure over its ceiling, and what only a GPU can measure is null on a CPU."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_gpu.py"
PHASES = ("generate", "reward", "ref_logprobs", "train", "weight_sync", "other", "step")
TARGETS = (
    "SFT / ceiling",
    "GRPO train / ceiling",
    "hf decode speed-up vs 20.9 ms",
    "GPU busy in the RL loop",
)


def _positive(value: object, what: str) -> None:
    assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (what, value)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("bench_gpu") / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, proc.stderr


def test_every_figure_is_there_and_positive(tiny_run: tuple[dict, str, str]) -> None:
    r, _, _ = tiny_run
    assert r["tiny"] is True
    for part in ("sft", "grpo_train"):
        _positive(r["ceiling"][part]["tokens_per_s"], f"ceiling {part}")
        _positive(r["ceiling"][part]["peak_memory_mib"], f"ceiling {part} memory")
    sft, grpo = r["sft"], r["grpo"]
    for key in ("tokens_per_s", "tokens_per_step", "step_s", "ratio", "peak_memory_mib"):
        _positive(sft[key], f"sft {key}")
    for key in ("train_tokens_per_s", "train_ratio", "generated_tokens_per_s", "peak_memory_mib"):
        _positive(grpo[key], f"grpo {key}")
    assert set(grpo["phases_s"]) == set(PHASES)
    for phase in ("generate", "ref_logprobs", "train", "step"):  # kl_coef > 0: a reference
        _positive(grpo["phases_s"][phase], phase)
    for phase in ("reward", "other"):  # may round to nothing on a tiny step
        assert math.isfinite(grpo["phases_s"][phase]) and grpo["phases_s"][phase] >= 0
    _positive(grpo["decode"]["step_ms"], "decode step")
    assert grpo["decode"]["forced_length_held"] is True
    _positive(r["peak_memory_mib"], "peak memory")
    _positive(r["model"]["parameters"], "parameters")
    assert [t["name"] for t in r["targets"]] == list(TARGETS)
    # the new knobs are passed through and recorded, not decided here
    assert r["config"]["micro_batch_tokens"] == {"sft": "auto", "rl": "auto"}
    assert r["config"]["logprob_length_groups"] == "auto"


def test_ratios_are_figure_over_ceiling_as_printed(tiny_run: tuple[dict, str, str]) -> None:
    r, stdout, _ = tiny_run
    sft, grpo, ceil = r["sft"], r["grpo"], r["ceiling"]
    assert sft["ratio"] == pytest.approx(sft["tokens_per_s"] / ceil["sft"]["tokens_per_s"])
    assert grpo["train_ratio"] == pytest.approx(
        grpo["train_tokens_per_s"] / ceil["grpo_train"]["tokens_per_s"]
    )
    dec = grpo["decode"]
    assert dec["speedup"] == pytest.approx(20.9 / dec["step_ms"])
    values = {t["name"]: t["value"] for t in r["targets"]}
    assert values["SFT / ceiling"] == sft["ratio"]
    assert values["GRPO train / ceiling"] == grpo["train_ratio"]
    assert values["hf decode speed-up vs 20.9 ms"] == dec["speedup"]
    assert values["GPU busy in the RL loop"] == grpo["gpu_busy"]
    rows = {line.split("│")[1].strip(): line for line in stdout.splitlines() if "│" in line}
    assert f"{100 * sft['ratio']:.1f}%" in rows["SFT step"]
    assert f"{sft['tokens_per_s']:,.0f} tok/s" in rows["SFT step"]
    assert f"{100 * grpo['train_ratio']:.1f}%" in rows["GRPO train phase"]
    assert f"{dec['speedup']:.2f}x" in rows[f"hf decode step ({dec['rows']} rows)"]


def test_gpu_only_figures_are_null_on_cpu(tiny_run: tuple[dict, str, str]) -> None:
    r, stdout, _ = tiny_run
    if r["device"] != "cpu":
        pytest.skip("ran on a GPU")
    grpo = r["grpo"]
    assert grpo["gpu_busy"] is None and grpo["gpu_profile"] is None
    assert grpo["phases_s"]["weight_sync"] is None  # hf samples from the live model
    assert r["grpo_vllm"] is None
    assert r["peak_memory_kind"] == "peak RSS"
    assert r["model"]["compute_dtype"] == "fp32"
    assert r["ceiling"]["sft"]["optimizer"] == "AdamW(foreach=True)"
    assert all(t["met"] is None for t in r["targets"])  # the targets are the GPU run's
    assert "GPU busy" in stdout and "n/a" in stdout


@pytest.fixture(scope="module")
def script() -> object:
    """scripts/bench_gpu.py as a module (its top level imports only the standard library)."""
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    saved = list(sys.path)
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def test_union_of_device_intervals(script: object) -> None:
    union = script.union_seconds  # type: ignore[attr-defined]
    assert union([]) == 0
    assert union([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]) == pytest.approx(4.0)
    assert union([(1.0, 4.0), (2.0, 3.0)]) == pytest.approx(3.0)  # nested: once


def test_plain_table_without_rich(
    script: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich.table", None)  # import rich.table -> ImportError
    rows = [("SFT step", "1 tok/s", "2 tok/s", "50.0%", ">= 60.0%", "n/a")]
    script.show("title", "caption", rows)  # type: ignore[attr-defined]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "title" and out[-1] == "caption"
    assert out[1].split("│")[1].strip() == "figure"
    assert [c.strip() for c in out[2].split("│")[1:-1]] == list(rows[0])


def test_the_log_keeps_each_parts_figures_as_it_finishes(tiny_run: tuple[dict, str, str]) -> None:
    """A run cut short by a device's time limit writes no JSON: its log must already hold the
    parts it finished, the same figures as the JSON's."""
    r, _, stderr = tiny_run
    parts = {}
    for line in stderr.splitlines():
        for label in ("SFT:", "SFT ceiling:", "GRPO (hf):", "GRPO train ceiling:"):
            head = f"] {label} "
            if head in line:
                parts[label] = json.loads(line.split(head, 1)[1])
    assert parts["SFT:"]["tokens_per_s"] == pytest.approx(r["sft"]["tokens_per_s"])
    assert parts["SFT ceiling:"]["tokens_per_s"] == pytest.approx(
        r["ceiling"]["sft"]["tokens_per_s"]
    )
    assert parts["GRPO (hf):"]["train_ratio"] == pytest.approx(r["grpo"]["train_ratio"])
    assert parts["GRPO train ceiling:"]["tokens_per_s"] == pytest.approx(
        r["ceiling"]["grpo_train"]["tokens_per_s"]
    )
