"""`r1pipe stage cold-start` end to end: artifacts, HF export, resume, bad input."""

import importlib.util
import json

import pytest
import torch
from clihelpers import cli, manifest, metrics, ok
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_smoke_artifacts_and_manifest(smoke_run):
    entry = manifest(smoke_run)["stages"]["cold-start"]
    assert entry["status"] == "completed"
    assert entry["checkpoint"] == "cold-start/checkpoint"
    assert entry["parent"] == "base-model" and len(entry["config_hash"]) == 16
    assert entry["start_time"] and entry["end_time"]
    for key in ("pass@1", "format_rate", "train_loss", "steps"):
        assert key in entry["metrics"]
    stage = smoke_run / "cold-start"
    assert (stage / "config.yaml").read_text().count("cold_start:") == 1
    ev = json.loads((stage / "eval.json").read_text())
    assert 0.0 <= ev["pass@1"] <= 1.0 and 0.0 <= ev["format_rate"] <= 1.0
    assert ev["num_problems"] == 16
    steps = [m["step"] for m in metrics(smoke_run)]
    assert steps == list(range(1, 7))
    # periodic checkpoints at 2 and 4 (keep_last=2), each marked complete
    ckpts = sorted(p.name for p in (stage / "checkpoints").glob("step-*"))
    assert ckpts == ["step-2", "step-4"]
    assert all((stage / "checkpoints" / c / "COMPLETE").is_file() for c in ckpts)


def test_loss_decreases(smoke_run):
    losses = [m["loss"] for m in metrics(smoke_run)]
    assert losses[-1] < losses[0] - 0.5


def test_checkpoint_loads_with_transformers_and_generates(smoke_run):
    path = smoke_run / "cold-start" / "checkpoint"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "12+34=?"}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    # trained weights differ from the untrained base
    base = AutoModelForCausalLM.from_pretrained(smoke_run / "base-model")
    assert not torch.equal(next(model.parameters()), next(base.parameters()))


def test_resume_after_crash_continues_the_same_curve(smoke_run, tmp_path):
    """Killed at step 5 and resumed, with micro-batches sized in tokens (rows of 64
    positions, two a micro-batch): the same curve as the uninterrupted run of the default
    micro-batches of 4 sequences (the same sums in another order: rel 1e-5)."""
    run_dir = tmp_path / "crash"
    budget = ("stage.cold_start.micro_batch_tokens=128", "stage.cold_start.pack_length=64")
    args = ("stage", "cold-start", "conf=smoke", f"run.dir={run_dir}", *budget)
    crashed = cli(*args, env={"R1PIPE_FAULT_AT_STEP": "5"})
    assert crashed.returncode == 137
    assert manifest(run_dir)["stages"]["cold-start"]["status"] == "running"
    assert [m["step"] for m in metrics(run_dir)] == [1, 2, 3, 4, 5]
    res = ok(cli(*args))
    assert "resuming from step-4" in res.stderr
    entry = manifest(run_dir)["stages"]["cold-start"]
    assert entry["status"] == "completed" and entry["resumed_from"].endswith("step-4")
    resumed, straight = metrics(run_dir), metrics(smoke_run)
    assert [m["step"] for m in resumed] == list(range(1, 7))  # step 5 redone, not duplicated
    for a, b in zip(resumed, straight, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7), a["step"]
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)


def _damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "overwrite":  # 4 KiB in the middle, the size kept
        middle = len(data) // 2
        data[middle : middle + 4096] = bytes(range(256)) * 16
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["overwrite", pytest.param("truncate", marks=pytest.mark.extended)])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(smoke_run, tmp_path, how):
    run_dir = tmp_path / how
    args = ("stage", "cold-start", "conf=smoke", f"run.dir={run_dir}")
    assert cli(*args, env={"R1PIPE_FAULT_AT_STEP": "5"}).returncode == 137
    newest = run_dir / "cold-start" / "checkpoints" / "step-4"
    states = sorted(newest.rglob("*model_states.pt"))
    assert states
    _damage(states[0], how)
    res = ok(cli(*args))
    assert "checkpoint step-4 is damaged" in res.stderr and "not used" in res.stderr
    assert "resuming from step-2" in res.stderr
    entry = manifest(run_dir)["stages"]["cold-start"]
    assert entry["status"] == "completed" and entry["resumed_from"].endswith("step-2")
    resumed, straight = metrics(run_dir), metrics(smoke_run)
    assert [m["step"] for m in resumed] == list(range(1, 7))
    assert resumed[-1]["loss"] == pytest.approx(straight[-1]["loss"], rel=1e-6, abs=1e-7)
    model = AutoModelForCausalLM.from_pretrained(run_dir / "cold-start" / "checkpoint")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_diverging_training_fails_the_stage_without_exporting(tmp_path):
    run_dir = tmp_path / "diverge"
    res = cli("stage", "cold-start", "conf=smoke", f"run.dir={run_dir}", "stage.cold_start.lr=1e30")
    assert res.returncode == 2
    assert "optimizer steps in a row had a non-finite loss" in res.stderr
    assert "Traceback" not in res.stderr
    entry = manifest(run_dir)["stages"]["cold-start"]
    assert entry["status"] == "failed" and "NonFiniteTraining" in entry["error"]
    assert not (run_dir / "cold-start" / "checkpoint").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB file system: room for the smoke base model (140 KiB), not for it and a
    checkpoint (376 KiB)."""
    import os
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)])
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_full_disk_is_one_line_and_the_manifest_says_so(small_disk):
    run_dir = small_disk / "run"
    res = cli("stage", "cold-start", "conf=smoke", f"run.dir={run_dir}")
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"no space left on the device of {run_dir}" in res.stderr
    assert "while writing checkpoint step-2" in res.stderr and "MiB free" in res.stderr
    assert "Traceback" not in res.stderr
    entry = manifest(run_dir)["stages"]["cold-start"]
    assert entry["status"] == "failed" and "DiskFull" in entry["error"]
    assert not (run_dir / "cold-start" / "checkpoints" / "step-2").exists()  # space given back


def test_overlong_prompts_are_counted_and_skipped_or_refused(tmp_path):
    """A 1 MB prompt among normal ones: skipped with one line before training (it was
    truncated into a zero loss, or allocated for its full length), or refused."""
    rows = [
        {"question": f"What is {i}+1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"} for i in range(20)
    ]
    rows[1]["question"] = "How many? " * 100_000
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = (
        "stage",
        "cold-start",
        "conf=smoke",
        "task=gsm8k",
        f"task.train_file={data}",
        f"task.eval_file={data}",
        "task.eval_size=4",
        "stage.cold_start.max_steps=2",
    )
    res = ok(cli(*args, f"run.dir={tmp_path / 'skip'}"))
    assert f"task.train_file={data}: 1 of {len(rows)} prompts are over the" in res.stderr
    assert "skipped (task.overlong_prompts=skip)" in res.stderr
    assert f"task.eval_file={data}: 1 of 4 prompts are over the" in res.stderr
    assert "train_examples=19" in res.stderr
    refused = cli(*args, f"run.dir={tmp_path / 'refuse'}", "task.overlong_prompts=refuse")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "set task.overlong_prompts=skip to leave them out" in refused.stderr


@pytest.mark.extended
def test_changed_config_starts_fresh(tmp_path):
    run_dir = tmp_path / "fresh"
    base = ("stage", "cold-start", "conf=smoke", f"run.dir={run_dir}")
    assert cli(*base, env={"R1PIPE_FAULT_AT_STEP": "3"}).returncode == 137
    res = ok(cli(*base, "stage.cold_start.lr=0.001"))
    assert "resuming" not in res.stderr
    assert "resumed_from" not in manifest(run_dir)["stages"]["cold-start"]


BAD_INPUT = [
    (["model.foo=1"], "unknown config key 'model.foo'"),
    (["stage.cold_start.lr=fast"], "invalid value for 'stage.cold_start.lr'"),
    (
        ["task=gsm8k", "task.train_file=/no/train.jsonl", "task.eval_file=/no/test.jsonl"],
        "task.train_file=/no/train.jsonl: no such file",
    ),
    (["model=hf"], "'model.path' is required"),
    (["model=hf", "model.path=/no/such/model"], "model.path=/no/such/model: no such directory"),
]


@pytest.mark.parametrize(("overrides", "needle"), BAD_INPUT)
def test_bad_input_one_clear_message(tmp_path, overrides, needle):
    res = cli("stage", "cold-start", "conf=smoke", f"run.dir={tmp_path}/r", *overrides)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], res.stderr


def test_data_row_without_field(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "x #### 1"}\n{"question": "q2"}\n')
    res = cli(
        "stage",
        "cold-start",
        "conf=smoke",
        f"run.dir={tmp_path}/r",
        "task=gsm8k",
        f"task.train_file={data}",
        f"task.eval_file={data}",
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{data}:2: row has no field 'answer'" in res.stderr
    # refused before the stage starts: the run directory is not touched
    assert not (tmp_path / "r").exists()


def test_vllm_is_refused_before_anything_runs(tmp_path):
    """Asking for the vLLM back end where vllm is not installed fails before the stage
    starts, never falls back to hf silently, and leaves no trace in the run directory."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    res = cli("stage", "cold-start", "conf=smoke", "generation=vllm", f"run.dir={tmp_path}/r")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("error: generation.backend: vllm is not installed here")
    assert not (tmp_path / "r").exists()


def test_unbuilt_commands_say_so():
    res = cli("eval")
    assert res.returncode == 2 and "benchmark= is required" in res.stderr
    res = cli("stage", "nope")
    assert res.returncode == 2 and "unknown stage 'nope'" in res.stderr
