"""Code tasks from JSONL: the shipped sample loads, its reference programs pass their own tests
through the accuracy verifier, and bad rows or a sandbox that cannot run fail early."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from sandboxhelpers import sandbox_python

from r1pipe.config import conf_dir
from r1pipe.config.schema import CodeConfig, ConfigError, TaskConfig
from r1pipe.data.tasks import load_task
from r1pipe.errors import UserError
from r1pipe.rewards import accuracy_reward, format_reward
from r1pipe.rewards.code import parse_reference
from r1pipe.rewards.sandbox import SandboxConfig

ASSETS = Path(__file__).resolve().parents[2] / "assets"
SAMPLE = ASSETS / "code_sample.jsonl"


def _task(path: Path, **code) -> TaskConfig:
    # Built directly (Hydra composition costs a second): the shipped YAML is tested below.
    code.setdefault("python", sandbox_python())
    return TaskConfig(
        name="code",
        kind="jsonl",
        train_file=str(path),
        eval_file=str(path),
        answer_field="tests",
        verifier="code",
        code=CodeConfig(**code),
    )


def test_sample_loads_and_every_reference_solution_passes():
    # conf/task/code.yaml on its schema (what composition does for this group, minus Hydra's
    # start-up cost; test_compose composes it in full).
    overrides = {
        "train_file": str(SAMPLE),
        "eval_file": str(SAMPLE),
        "solution_field": "solution",
        "code": {"scoring": "all", "python": sandbox_python()},
    }
    task = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(TaskConfig),
            OmegaConf.load(conf_dir() / "task/code.yaml"),
            overrides,
        )
    )
    train, held = load_task(task)
    assert len(train) == len(held) == 12
    suites = [parse_reference(e.reference) for e in train]
    assert sum(1 for suite, _, _ in suites if suite.io) == 2  # two stdin/stdout problems
    assert all(
        scoring == "all" and sandbox.python == sandbox_python() for _, scoring, sandbox in suites
    )
    for e in train:
        assert e.response is not None and format_reward(e.response, "answer_tag") == 1.0
        assert accuracy_reward(e.response, e.reference, verifier="code") == 1.0, e.id
    # A wrong program fails the same references (an assert problem, a stdin/stdout one).
    wrong = "<think>.</think> <answer>```python\nprint(0)\n```</answer>"
    for e in (train[0], train[-1]):
        assert accuracy_reward(wrong, e.reference, verifier="code") == 0.0


def test_bad_rows_name_file_and_line(tmp_path):
    good = json.dumps({"question": "q", "tests": ["assert True"]})
    for row, needle in [
        ({"question": "q", "tests": "assert ("}, "bad tests in 'tests'"),
        ({"question": "q"}, "no field 'tests'"),
        ({"question": "q", "tests": [{"input": "1"}]}, "bad tests"),
        ({"tests": ["assert True"]}, "row has no field 'question'"),
        ({"question": 7, "tests": ["assert True"]}, "'question' .* must be a string, got an int"),
        ({"id": 0, "question": "q", "tests": ["assert True"]}, "id '0' repeats .*:1"),
    ]:
        path = tmp_path / "bad.jsonl"
        path.write_text(good + "\n" + json.dumps(row) + "\n")
        with pytest.raises(UserError, match=f"{path}:2: .*{needle}"):
            load_task(_task(path))


def test_tests_as_json_text_inside_a_string(tmp_path):
    path = tmp_path / "apps.jsonl"
    row = {"question": "q", "tests": json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]})}
    path.write_text(json.dumps(row) + "\n")
    (example,), _ = load_task(_task(path))
    assert parse_reference(example.reference)[0].io == (("1\n", "1\n"),)


def test_sandbox_that_cannot_run_fails_at_load():
    with pytest.raises(UserError, match="task.code: the sandbox cannot run Python"):
        load_task(_task(SAMPLE, python="/nonexistent/python3"))


def test_config_checks():
    for make, needle in [
        (lambda: CodeConfig(scoring="most"), "task.code.scoring"),
        (lambda: CodeConfig(timeout_s=0), "task.code.timeout_s"),
        (lambda: TaskConfig(verifier="code"), "code needs task.kind=jsonl"),
        (
            lambda: _task(SAMPLE).__class__(**{**vars(_task(SAMPLE)), "reference": "gsm8k"}),
            "task.reference",
        ),
    ]:
        with pytest.raises(ConfigError, match=needle):
            make()


def test_code_config_fields_are_sandbox_fields():
    # The loader passes task.code into SandboxConfig by name (through the reference).
    sandbox = {f.name for f in dataclasses.fields(SandboxConfig)}
    assert {f.name for f in dataclasses.fields(CodeConfig)} - {"scoring"} <= sandbox
