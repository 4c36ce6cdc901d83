"""`r1pipe stage rl-reasoning`: after cold-start, R1-Zero mode, resume, 2 ranks = 1 rank."""

import json

import pytest
from clihelpers import ROOT, cli, manifest, metrics, ok, torchrun

RL_KEYS = (
    "reward",
    "reward/accuracy",
    "reward/format",
    "accuracy",
    "format_rate",
    "response_length_mean",
    "response_length_max",
    "truncation_rate",
    "kl",
    "entropy",
    "clip_frac",
    "grad_norm",
    "lr",
    "zero_variance_groups",
    "reflection_rate",
    "tokens_per_s",
    "time_generate",
    "time_reward",
    "time_train",
)


@pytest.fixture(scope="module")
def rl_run(smoke_run):
    ok(cli("stage", "rl-reasoning", "conf=smoke", f"run.dir={smoke_run}"))
    return smoke_run


def test_rl_after_cold_start(rl_run):
    entry = manifest(rl_run)["stages"]["rl-reasoning"]
    assert entry["status"] == "completed"
    assert entry["parent"] == "cold-start/checkpoint"
    assert entry["checkpoint"] == "rl-reasoning/checkpoint"
    rows = metrics(rl_run, "rl-reasoning")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in RL_KEYS:
        assert key in rows[0], key
    ev = json.loads((rl_run / "rl-reasoning" / "eval.json").read_text())
    assert "pass@1" in ev and "format_rate" in ev


def test_r1_zero_mode_from_base_model(tmp_path):
    from r1pipe.config import compose
    from r1pipe.models import save_tiny_base

    # R1-Zero's prompt is ~370 tokens of the char tokenizer, more than the smoke model's
    # 256-token context (prompts are checked against it now): a base model with 1024.
    base = tmp_path / "ctx1024" / "base-model"
    cfg, _ = compose(["conf=smoke", "model.max_position_embeddings=1024"])
    save_tiny_base(cfg.model, base, seed=0)
    res = ok(
        cli(
            "stage",
            "rl-reasoning",
            "conf=smoke",
            f"run.dir={tmp_path / 'run'}",
            f"model.path={base}",
            "task.template=r1_zero",
        )
    )
    tmp_path = tmp_path / "run"
    entry = manifest(tmp_path)["stages"]["rl-reasoning"]
    assert entry["status"] == "completed" and entry["parent"].endswith("base-model")
    assert (
        "A conversation between User and Assistant"
        in (tmp_path / "rl-reasoning" / "eval_samples.jsonl").read_text()
        or res.returncode == 0
    )


def test_bad_target_language_fails_at_composition(tmp_path):
    """A typo in a key the rewards read fails before any model, data or run directory: not
    at the first rollout with a traceback (and not as 'no completed cold-start' either)."""
    res = cli(
        "stage",
        "rl-reasoning",
        "conf=smoke",
        "stage.rl_reasoning.target_language=xx",
        f"run.dir={tmp_path}/r",
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith("error: config error: stage.rl_reasoning.target_language: ")
    assert "got 'xx'" in line
    assert not (tmp_path / "r").exists()  # begin_stage, which creates it, never ran


def test_rl_without_cold_start_is_a_clear_error(tmp_path):
    res = cli("stage", "rl-reasoning", "conf=smoke", f"run.dir={tmp_path}")
    assert res.returncode == 2 and "no completed cold-start" in res.stderr


def test_rl_resume_after_crash(rl_run, tmp_path):
    import shutil

    run_dir = tmp_path / "r"
    shutil.copytree(rl_run, run_dir, ignore=shutil.ignore_patterns("rl-reasoning"))
    data = json.loads((run_dir / "manifest.json").read_text())
    data["stages"].pop("rl-reasoning")
    (run_dir / "manifest.json").write_text(json.dumps(data))
    args = ("stage", "rl-reasoning", "conf=smoke", f"run.dir={run_dir}")
    assert cli(*args, env={"R1PIPE_FAULT_AT_STEP": "3"}).returncode == 137
    res = ok(cli(*args))
    assert "resuming from step-2" in res.stderr
    resumed, straight = metrics(run_dir, "rl-reasoning"), metrics(rl_run, "rl-reasoning")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(resumed, straight, strict=True):  # RNG restored: same samples, same curve
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-6), a["step"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), a["step"]


@pytest.mark.slow
@pytest.mark.parametrize("zero", [pytest.param("zero2", marks=pytest.mark.extended), "zero3"])
def test_two_rank_grpo_step_equals_one_rank(smoke_run, tmp_path, zero):
    import subprocess

    common = [
        "stage.rl_reasoning.kl_coef=0.05",
        "stage.rl_reasoning.mu=2",
        "stage.rl_reasoning.prompts_per_step=4",
        "stage.rl_reasoning.group_size=4",
        "stage.rl_reasoning.micro_batch_size=4",
    ]
    # ZeRO-3's two ranks take micro-batches of at most 22 token positions: 6 on one rank
    # and 7 on the other for this batch, so one rank runs an empty one (every rank must make
    # the same passes under ZeRO-3); the one rank takes 4 completions at a time
    budget = ["stage.rl_reasoning.micro_batch_tokens=22"] if zero == "zero3" else []
    outs = {}
    for nproc, ds, extra in ((1, "zero0", []), (2, zero, budget)):
        out = tmp_path / f"{nproc}.json"
        cmd = torchrun(
            nproc,
            str(ROOT / "tests" / "dist" / "grpo_step.py"),
            str(smoke_run / "base-model"),
            str(out),
            f"run.dir={tmp_path / str(nproc)}",
            f"deepspeed={ds}",
            *common,
            *extra,
        )
        res = subprocess.run(
            cmd,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
        )
        assert res.returncode == 0, res.stderr[-4000:]
        outs[nproc] = json.loads(out.read_text())
    one, two = outs[1], outs[2]
    for s1, s2 in zip(one["stats"], two["stats"], strict=True):
        for key in ("loss", "grad_norm", "kl", "clip_frac", "entropy"):
            assert s2[key] == pytest.approx(s1[key], rel=1e-4, abs=1e-6), key
    assert two["param_sum"] == pytest.approx(one["param_sum"], rel=1e-5)
    assert two["param_abs_sum"] == pytest.approx(one["param_abs_sum"], rel=1e-5)


@pytest.mark.slow
def test_rl_under_torchrun_zero3(rl_run, tmp_path):
    """Each rank generates its share of the groups; ZeRO-3 generation stays in lockstep."""
    import shutil

    run_dir = tmp_path / "z3"
    shutil.copytree(rl_run, run_dir, ignore=shutil.ignore_patterns("rl-reasoning"))
    ok(
        cli(
            "stage",
            "rl-reasoning",
            "conf=smoke",
            f"run.dir={run_dir}",
            "deepspeed=zero3",
            "stage.rl_reasoning.max_steps=2",
            "stage.rl_reasoning.kl_coef=0.01",
            nproc=2,
        )
    )
    rows = metrics(run_dir, "rl-reasoning")
    assert [r["step"] for r in rows] == [1, 2]  # rank 0 alone writes
    assert rows[0]["generated_tokens"] > 0
    assert manifest(run_dir)["stages"]["rl-reasoning"]["status"] == "completed"


def test_warmup_counts_optimizer_steps_with_mu(smoke_run, tmp_path):
    """4 RL steps x mu 2 = 8 optimizer steps; warmup_ratio 0.5 -> 4 warm-up steps. The logged
    lr is the mean over the step's two optimizer steps of the rate after each, f(k) =
    (k + 1) / 4 while k < 4: step 1 (f(1) + f(2)) / 2 = 0.625, then 1.0 (warm-up of 2 optimizer
    steps, as before the fix, would give 1.0 from step 1)."""
    ok(
        cli(
            "stage",
            "rl-reasoning",
            "conf=smoke",
            f"run.dir={tmp_path}",
            f"model.path={smoke_run / 'cold-start' / 'checkpoint'}",
            "stage.rl_reasoning.mu=2",
            "stage.rl_reasoning.lr=1e-4",
            "stage.rl_reasoning.lr_scheduler=constant",
            "stage.rl_reasoning.warmup_ratio=0.5",
            "stage.rl_reasoning.save_every=0",
        )
    )
    lrs = [r["lr"] for r in metrics(tmp_path, "rl-reasoning")]
    assert lrs == pytest.approx([0.625e-4, 1e-4, 1e-4, 1e-4], rel=1e-6)


@pytest.mark.slow
@pytest.mark.extended
def test_zero3_resume_restores_the_refreshed_reference(smoke_run, tmp_path):
    """2 ranks, ZeRO-3: the reference is reset to the policy at step 3 (ref_update_every 2),
    saved in the step-3 checkpoint and must come back on resume: step 4's KL (to that
    reference) equals the uninterrupted run's. Going back to the start model as reference
    gives a larger KL."""
    common = (
        "stage",
        "rl-reasoning",
        "conf=smoke",
        f"model.path={smoke_run / 'cold-start' / 'checkpoint'}",
        "deepspeed=zero3",
        "stage.rl_reasoning.kl_coef=0.05",
        "stage.rl_reasoning.ref_update_every=2",
        "stage.rl_reasoning.save_every=3",
        "stage.rl_reasoning.lr=1e-3",
        # the smoke model is never right: a length reward spreads every group, so it learns
        "+stage.rl_reasoning.rewards.kimi_length=1.0",
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ok(cli(*common, f"run.dir={straight}", nproc=2))
    killed = cli(*common, f"run.dir={resumed}", nproc=2, env={"R1PIPE_FAULT_AT_STEP": "3"})
    assert killed.returncode != 0
    assert (resumed / "rl-reasoning" / "checkpoints" / "step-3" / "reference.pt").is_file()
    res = ok(cli(*common, f"run.dir={resumed}", nproc=2))
    assert "reference model restored" in res.stderr
    a, b = metrics(straight, "rl-reasoning"), metrics(resumed, "rl-reasoning")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a[3]["kl"] > 0
    assert b[3]["kl"] == pytest.approx(a[3]["kl"], rel=1e-4, abs=1e-9)
    assert b[3]["loss"] == pytest.approx(a[3]["loss"], rel=1e-4, abs=1e-7)


def _inner_steps(smoke_run, tmp_path, *overrides) -> list[dict]:
    import os
    import subprocess

    out = tmp_path / "stats.json"
    cmd = torchrun(
        1,
        str(ROOT / "tests" / "dist" / "grpo_inner.py"),
        str(smoke_run / "base-model"),
        str(out),
        f"run.dir={tmp_path / 'run'}",
        "stage.rl_reasoning.prompts_per_step=4",
        "stage.rl_reasoning.group_size=4",
        "stage.rl_reasoning.micro_batch_size=16",
        "stage.rl_reasoning.lr=0.05",
        "stage.rl_reasoning.kl_coef=0.05",
        *overrides,
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests" / "dist")}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(out.read_text())


def test_one_inner_step_never_clips_and_a_refreshed_reference_has_zero_kl(smoke_run, tmp_path):
    """mu 1: the ratio is exactly 1 (nothing clips). KL is 0 against the start model before the
    first update, > 0 once the policy moved, and 0 again after the reference is reset to it."""
    s1, s2, s3 = _inner_steps(smoke_run, tmp_path, "stage.rl_reasoning.mu=1")
    assert s1["clip_frac"] == 0 and s2["clip_frac"] == 0
    assert s1["kl"] == pytest.approx(0, abs=1e-9)
    assert s2["kl"] > 1e-6
    assert s3["kl"] == pytest.approx(0, abs=1e-9)


def test_inner_steps_keep_the_sampling_policys_logprobs(smoke_run, tmp_path):
    """mu 2: the second optimizer step's ratio is against the log-probs of the policy that
    sampled, which the first step moved away from (lr 0.05): tokens clip. Recomputing the old
    log-probs per inner step would give ratio 1 and no clipping."""
    s1, _, _ = _inner_steps(smoke_run, tmp_path, "stage.rl_reasoning.mu=2")
    assert s1["clip_frac"] > 0.01
