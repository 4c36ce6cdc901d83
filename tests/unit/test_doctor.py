"""`r1pipe doctor`: the tiny default passes; each broken set-up gives its one line and exit 1."""

import json
import shutil
import socket

import pytest
from typer.testing import CliRunner

from r1pipe import cli, doctor
from r1pipe.config.schema import ModelConfig
from r1pipe.models import save_tiny_base


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return save_tiny_base(ModelConfig(path=None), tmp_path_factory.mktemp("m") / "base", 0)


@pytest.fixture(autouse=True)
def one_rank(monkeypatch):
    for var in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


def _model(tiny_base, tmp_path, edit=None):
    """A copy of the tiny base whose tokenizer files ``edit(dir)`` changes."""
    path = tmp_path / "model"
    shutil.copytree(tiny_base, path)
    if edit is not None:
        edit(path)
    return path


def _doctor(tmp_path, *args):
    res = CliRunner().invoke(cli.app, ["doctor", f"run.dir={tmp_path}/run", *args])
    problems = [line for line in res.output.splitlines() if line.startswith("problem:")]
    return res, problems


def _one_problem(tmp_path, check, *args):
    res, problems = _doctor(tmp_path, *args)
    assert res.exit_code == 1, res.output
    assert len(problems) == 1 and problems[0].startswith(f"problem: [{check}] "), res.output
    assert "; fix: " in problems[0]
    return problems[0]


def test_the_tiny_default_passes(tmp_path):
    res, problems = _doctor(tmp_path)
    assert res.exit_code == 0, res.output
    assert problems == []
    assert "info: [versions] python=" in res.output
    assert "info: [memory] estimate:" in res.output


def test_json_output_parses(tmp_path):
    res = CliRunner().invoke(cli.app, ["doctor", "--json", f"run.dir={tmp_path}/run"])
    assert res.exit_code == 0, res.output
    findings = json.loads(res.output)
    assert {f["check"] for f in findings} >= {"versions", "memory", "context", "filesystem"}
    assert all(set(f) == {"check", "message", "fix", "level"} for f in findings)


def test_no_chat_template_with_template_chat(tiny_base, tmp_path):
    path = _model(tiny_base, tmp_path, lambda p: (p / "chat_template.jinja").unlink())
    line = _one_problem(tmp_path, "chat_template", f"model.path={path}")
    assert "no chat template" in line and "task.template=r1_zero" in line
    # the paper's R1-Zero prompt needs none
    res, problems = _doctor(tmp_path, f"model.path={path}", "task.template=r1_zero")
    assert res.exit_code == 0 and problems == [], res.output


def _drop_tokens(path, *names):
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    for name in names:
        cfg[name] = None  # a missing key would fall back to a default token
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))


def test_no_eos_token(tiny_base, tmp_path):
    path = _model(tiny_base, tmp_path, lambda p: _drop_tokens(p, "eos_token", "pad_token"))
    line = _one_problem(tmp_path, "special_tokens", f"model.path={path}")
    assert "no EOS token" in line and "no pad token either" in line


def test_pad_equal_to_eos_is_info_only(tiny_base, tmp_path):
    """r1pipe masks its losses explicitly, never by pad id: pad == EOS does not hide EOS."""

    def pad_is_eos(p):
        cfg = json.loads((p / "tokenizer_config.json").read_text())
        cfg["pad_token"] = cfg["eos_token"]
        (p / "tokenizer_config.json").write_text(json.dumps(cfg))

    path = _model(tiny_base, tmp_path, pad_is_eos)
    res, problems = _doctor(tmp_path, f"model.path={path}")
    assert res.exit_code == 0 and problems == [], res.output
    assert "info: [special_tokens] pad token: the EOS token" in res.output


def test_a_template_that_prefills_think(tiny_base, tmp_path):
    def prefill(p):
        t = (p / "chat_template.jinja").read_text()
        assert "'<|im_start|>assistant\n'" in t
        t = t.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")
        (p / "chat_template.jinja").write_text(t)

    path = _model(tiny_base, tmp_path, prefill)
    line = _one_problem(tmp_path, "think_prefill", f"model.path={path}")
    assert "format reward" in line and "task.template=r1_zero" in line


def test_tensor_parallel_beyond_the_devices(monkeypatch, tmp_path):
    import torch

    from r1pipe import preflight

    monkeypatch.setattr(preflight, "check_backend", lambda cfg: None)  # vllm may be absent
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res, problems = _doctor(tmp_path, "generation=vllm", "generation.tensor_parallel_size=2")
    assert res.exit_code == 1, res.output
    assert problems == [
        "problem: [tensor_parallel] generation.tensor_parallel_size=2 is more than this node "
        "has (no GPU (CPU: 1)); fix: generation.tensor_parallel_size=1",
        "problem: [tensor_parallel] generation.tensor_parallel_size=2 does not divide the world "
        "size (1); fix: a tensor_parallel_size that divides WORLD_SIZE (e.g. 1)",
    ], res.output


def test_a_world_size_the_batch_does_not_divide(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "3")
    line = _one_problem(tmp_path, "world_size", "--stage", "cold-start")
    assert "stage.cold_start.global_batch_size=" in line and "world size (3)" in line
    res, problems = _doctor(tmp_path)  # run-all: every block that does not split, one line each
    assert len([p for p in problems if "[world_size]" in p]) == 4, res.output


def test_a_run_dir_that_cannot_be_written(tmp_path):
    # /sys refuses new files even to root (a chmod'ed directory would not stop root)
    res = CliRunner().invoke(cli.app, ["doctor", "run.dir=/sys/r1"])
    problems = [line for line in res.output.splitlines() if line.startswith("problem:")]
    assert res.exit_code == 1, res.output
    assert len(problems) == 1 and problems[0].startswith("problem: [run_dir] run.dir=/sys/r1")


def _free_port():
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_judge(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    line = _one_problem(
        tmp_path,
        "judge",
        "stage.rejection_sft.verify=judge",
        "stage.rejection_sft.judge.backend=openai",
        "stage.rejection_sft.judge.model=judge",
        f"stage.rejection_sft.judge.base_url={url}",
    )
    assert f"judge.base_url={url}: no answer" in line


def test_a_reward_model_that_does_not_exist(tmp_path):
    line = _one_problem(tmp_path, "model_path", "stage.rl_all.helpfulness.path=/no/such/rm")
    assert "stage.rl_all.helpfulness.path=/no/such/rm: no such directory" in line


def test_a_data_file_without_the_mapped_field(tmp_path):
    good = tmp_path / "eval.jsonl"
    good.write_text('{"question": "1+1", "answer": "2"}\n')
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"q": "1+1", "answer": "2"}\n')
    line = _one_problem(
        tmp_path, "data", "task.kind=jsonl", f"task.train_file={bad}", f"task.eval_file={good}"
    )
    assert f"{bad}:1: row has no field 'question'" in line


def test_max_new_tokens_beyond_the_context(tmp_path):
    line = _one_problem(tmp_path, "context", "eval.max_new_tokens=600")
    assert "eval.max_new_tokens=600" in line and "the model's context (512)" in line


def test_a_version_off_the_pins(monkeypatch):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda d: "4.0.0" if d == "transformers" else real(d))
    problems = [f for f in doctor.check_versions() if f.level == doctor.PROBLEM]
    assert [f.message for f in problems] == [
        "transformers 4.0.0 does not match r1pipe's pin transformers<5.20,>=5.0"
    ]


def test_several_nodes_need_a_shared_run_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(doctor, "filesystem_type", lambda path: "ext4")
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    from r1pipe.config import compose

    cfg, _ = compose([f"run.dir={tmp_path}/run"])
    found = [f for f in doctor.cheap_checks(cfg) if f.check == "filesystem"]
    assert found[1].level == doctor.PROBLEM and "is local to one machine" in found[1].message


def test_general_prompts_all_held_out(tmp_path):
    line = _one_problem(tmp_path, "general_file", "stage.rl_all.general_eval_size=100000")
    assert "none left to train on" in line


def test_the_memory_estimate_against_a_small_gpu(monkeypatch, tmp_path):
    from r1pipe.config import compose

    cfg, _ = compose(
        [f"run.dir={tmp_path}/run", "generation=vllm", "generation.gpu_memory_utilization=0.5"]
    )
    subject = doctor.Subject(cfg)
    try:
        gpu = [2**30]  # 1 GiB, vLLM takes half
        monkeypatch.setattr(doctor, "gpu_memory", lambda: gpu[0])
        (fits,) = doctor.check_memory(cfg, subject)
        assert fits.level == doctor.INFO and "+ vLLM 50% of the GPU" in fits.message
        gpu[0] = 2**20  # 1 MiB: the tiny model's 0.8M parameters need ~13 MB
        (over,) = doctor.check_memory(cfg, subject)
        assert over.level == doctor.PROBLEM and "offload_optimizer" in over.fix
    finally:
        subject.close()


def test_a_stage_runs_the_cheap_checks_at_its_start():
    """`r1pipe stage`/`run-all` refuse a set-up the doctor's cheap checks find broken (here:
    2-way tensor parallelism on a machine with no GPU), before anything runs; the tiny
    default passes them."""
    import torch

    from r1pipe import cli
    from r1pipe.config import compose
    from r1pipe.errors import UserError

    if torch.cuda.device_count() >= 2:
        pytest.skip("two GPUs here: 2-way tensor parallelism is fine")
    cfg, _ = compose([])
    cli._start_checks(cfg, ["cold-start"])  # no error
    cfg.generation.backend = "vllm"
    cfg.generation.tensor_parallel_size = 2
    with pytest.raises(UserError, match=r"problem: \[tensor_parallel\]"):
        cli._start_checks(cfg, ["rl-reasoning"])
