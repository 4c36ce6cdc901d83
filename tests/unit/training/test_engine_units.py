import pytest

from r1pipe.config.schema import DeepSpeedConfig
from r1pipe.training.engine import deepspeed_config, lr_lambda


def test_lr_schedule_by_hand():
    f = lr_lambda("cosine", total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.5) and f(1) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert f(10) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)
    lin = lr_lambda("linear", 10, 0, 0.0)
    assert lin(5) == pytest.approx(0.5)
    assert lr_lambda("constant", 10, 0, 0.0)(9) == 1.0


def test_deepspeed_config_from_group():
    ds = DeepSpeedConfig(
        zero_stage=3,
        offload_optimizer=True,
        offload_params=True,
        extra={"zero_optimization": {"reduce_bucket_size": 7}},
    )
    c = deepspeed_config(
        ds,
        micro_batch_size=4,
        grad_accum=2,
        world_size=2,
        max_grad_norm=1.0,
        bf16=True,
        optimizer={"type": "AdamW", "params": {"lr": 1e-5}},
    )
    assert c["train_batch_size"] == 16
    z = c["zero_optimization"]
    assert z["stage"] == 3 and z["offload_optimizer"]["device"] == "cpu"
    assert z["offload_param"]["device"] == "cpu" and z["reduce_bucket_size"] == 7
    assert c["bf16"] == {"enabled": True} and c["optimizer"]["type"] == "AdamW"
