"""Every YAML in conf/ composes and validates; bad config fails with one message naming the key."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from r1pipe.config import compose, conf_dir
from r1pipe.config.schema import R1Config
from r1pipe.errors import UserError

CONF = conf_dir()
# Options that need a value the YAML leaves to the user (???), and that value.
REQUIRED = {
    ("model", "hf"): ["model.path=/models/x"],
    ("experiment", "r1_zero"): ["model.path=/models/x"],
    ("task", "gsm8k"): ["task.train_file=a.jsonl", "task.eval_file=b.jsonl"],
    ("task", "math"): ["task.train_file=a.jsonl", "task.eval_file=b.jsonl"],
    ("task", "code"): ["task.train_file=a.jsonl", "task.eval_file=b.jsonl"],
}


def _options():
    for group_dir in sorted(p for p in CONF.iterdir() if p.is_dir()):
        for yaml in sorted(group_dir.glob("*.yaml")):
            yield group_dir.name, yaml.stem


@pytest.mark.parametrize(("group", "option"), list(_options()))
def test_every_yaml_composes(group, option):
    extra = REQUIRED.get((group, option), [])
    key = "conf" if group == "experiment" else group
    cfg, dcfg = compose([f"{key}={option}", *extra])
    assert isinstance(cfg, R1Config)
    # The resolved tree round-trips through YAML (what STAGE/config.yaml stores).
    assert OmegaConf.to_yaml(dcfg)
    if group == "experiment":
        assert cfg.experiment == option


def test_default_is_tiny_experiment():
    cfg, _ = compose([])
    assert cfg.experiment == "tiny"
    assert cfg.model.path is None and cfg.task.kind == "addition"


def test_smoke_overrides_apply():
    cfg, _ = compose(["conf=smoke", "stage.cold_start.lr=0.5", "run.dir=/tmp/x"])
    assert cfg.stage.cold_start.lr == 0.5 and cfg.run.dir == "/tmp/x"
    assert cfg.stage.cold_start.max_steps < 50


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model.foo=1"], "unknown config key 'model.foo'"),
        (["stage.cold_start.lr=abc"], "'stage.cold_start.lr'"),
        (["model.hidden_size=big"], "'model.hidden_size'"),
        (["conf=nope"], "unknown config option 'experiment/nope'"),
        (["deepspeed=zero9"], "available: zero0, zero1, zero2, zero3, zero3_offload"),
        (["model=hf"], "'model.path' is required"),
        (["stage.cold_start.micro_batch_size=5"], "stage.cold_start.global_batch_size"),
        (["task.answer_format=xml"], "task.answer_format"),
        (["deepspeed.offload_params=true"], "deepspeed.offload_params"),
        (["eval.num_samples=4"], "eval.num_samples"),
        (["conf=/no/such/file.yaml"], "experiment file not found"),
    ],
)
def test_bad_config_one_clear_message(overrides, needle):
    with pytest.raises(UserError) as e:
        compose(overrides)
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg  # one line


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["stage.rl_reasoning.target_language=xx"], "stage.rl_reasoning.target_language"),
        (["stage.rl_all.target_language=xx"], "stage.rl_all.target_language"),
        (
            ["stage.rejection_sft.filters.target_language=xx"],
            "stage.rejection_sft.filters.target_language",
        ),
        (["stage.rl_reasoning.reward_timeout_s=0"], "stage.rl_reasoning.reward_timeout_s"),
        (["stage.rl_all.reward_timeout_s=-1"], "stage.rl_all.reward_timeout_s"),
        (["stage.rl_reasoning.rewards.accuracy=nan"], "stage.rl_reasoning.rewards.accuracy"),
        (["stage.rl_all.general_rewards.format=inf"], "stage.rl_all.general_rewards.format"),
        (["stage.rl_all.helpfulness.weight=nan"], "stage.rl_all.helpfulness.weight"),
        (["task.tolerance=-0.1"], "task.tolerance"),
        (["task.num_digits=1", "task.eval_size=81"], "task.eval_size"),  # 9 x 9 problems
        (["generation.backend=sglang"], "generation.backend"),
        (
            ["generation=vllm", "generation.tensor_parallel_size=0"],
            "generation.tensor_parallel_size",
        ),
        (["generation.enable_sleep_mode=maybe"], "generation.enable_sleep_mode"),
    ],
)
def test_static_checks_fail_at_composition(overrides, key):
    """Checks that once waited for the first rollout or the data loader: now the schema's."""
    with pytest.raises(UserError) as e:
        compose(["conf=smoke", *overrides])
    msg = str(e.value)
    assert msg.startswith(f"config error: {key}: ") and "\n" not in msg


def test_static_checks_accept_the_edge_values():
    cfg, _ = compose(
        [
            "stage.rl_reasoning.target_language=zh",
            "stage.rl_all.target_language=ja",
            "stage.rejection_sft.filters.target_language=ru",
            "task.tolerance=0",
            "task.num_digits=1",
            "task.eval_size=80",  # one of the 81 problems is left to train on
        ]
    )
    assert cfg.stage.rl_reasoning.target_language == "zh" and cfg.task.eval_size == 80


def test_conf_path_experiment(tmp_path: Path):
    exp = tmp_path / "mine.yaml"
    exp.write_text(
        "# @package _global_\n"
        "defaults:\n  - override /deepspeed: zero2\n"
        "experiment: mine\nstage:\n  cold_start:\n    max_steps: 7\n"
    )
    cfg, _ = compose([f"conf={exp}"])
    assert cfg.experiment == "mine"
    assert cfg.deepspeed.zero_stage == 2 and cfg.stage.cold_start.max_steps == 7


def test_conf_path_with_unknown_key_names_it(tmp_path: Path):
    exp = tmp_path / "bad.yaml"
    exp.write_text("# @package _global_\nmodel:\n  hidden_sise: 3\n")
    with pytest.raises(UserError, match="hidden_sise"):
        compose([f"conf={exp}"])
