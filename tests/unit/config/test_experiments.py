"""The real-model experiments compose, validate, and carry the paper's hyperparameters; they
cannot run here (GPUs, model downloads), so this is what checks them."""

import pytest

from r1pipe.config import compose

REAL = ["r1_qwen2.5_1.5b", "r1_llama3.2_1b"]


@pytest.mark.parametrize("name", REAL)
def test_real_model_experiment_asks_for_vllm(name, monkeypatch):
    monkeypatch.setenv("R1PIPE_DATA", "/data")
    cfg, _ = compose([f"conf={name}"])
    assert cfg.generation.backend == "vllm" and cfg.generation.tensor_parallel_size >= 1


@pytest.mark.parametrize("name", REAL)
def test_real_model_experiment_follows_the_paper(name, monkeypatch):
    monkeypatch.setenv("R1PIPE_DATA", "/data")
    cfg, dcfg = compose([f"conf={name}", "generation=hf"])
    assert cfg.experiment == name and cfg.model.path and cfg.model.dtype == "bfloat16"
    assert cfg.run.chain  # every stage after cold-start starts from the previous checkpoint
    assert cfg.generation.backend == "hf" and cfg.deepspeed.zero_stage == 3
    # the experiment's own generation keys still apply on top of the hf option
    assert cfg.generation.gpu_memory_utilization == 0.35
    assert cfg.task.train_file == "/data/gsm8k/train.jsonl"
    assert dcfg.task.eval_file == "/data/gsm8k/test.jsonl"  # resolved in what config.yaml stores
    rl, rs, ra = cfg.stage.rl_reasoning, cfg.stage.rejection_sft, cfg.stage.rl_all
    for stage in (rl, ra):
        assert stage.group_size == 16 and stage.kl_coef == 0.001
        assert stage.prompts_per_step == 32 and stage.lr == 3e-6
        assert stage.ref_update_every == 400
    assert rl.temperature == 1.0 and ra.temperature == 0.7
    assert rs.sft.epochs == 2.0 and rs.start == "base"
    assert ra.preference_start_frac == pytest.approx(1 - 400 / 1700, abs=0.01)
    assert ra.helpfulness.path and ra.harmlessness.path  # real reward models, by path


def test_smoke_rl_reasoning_checkpoints_often_enough_to_be_killed_and_resumed():
    cfg, _ = compose(["conf=smoke"])
    for stage in (cfg.stage.rl_reasoning, cfg.stage.rl_all):
        assert stage.max_steps >= 4 and stage.save_every == 2
