"""How models are loaded (issue 15): in the training dtype straight onto a CUDA device, as
before on CPU, partitioned at construction under ZeRO-3; and the held-out evaluation of a
stage's export uses the trained model still in memory instead of loading it again."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from clihelpers import torchrun
from transformers import AutoModelForCausalLM
from transformers.integrations.deepspeed import deepspeed_config as ds_config
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

import r1pipe.generation.build
import r1pipe.models
import r1pipe.stages.common
from r1pipe.config import compose
from r1pipe.config.schema import DeepSpeedConfig, OptimizerConfig
from r1pipe.models import (
    load_kwargs,
    load_model,
    load_policy,
    save_tiny_base,
    training_dtype,
)
from r1pipe.stages.common import Trained, checkpoint_generator
from r1pipe.training.dist import DistInfo
from r1pipe.training.engine import deepspeed_config

ROOT = Path(__file__).resolve().parents[2]
CPU = DistInfo(0, 1, 0, torch.device("cpu"))
GPU = DistInfo(0, 1, 0, torch.device("cuda", 0))
OPTIM = OptimizerConfig(lr=1e-3, micro_batch_size=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg, _ = compose(["conf=smoke"])
    path = tmp_path_factory.mktemp("tiny")
    save_tiny_base(cfg.model, path, seed=0)
    return cfg, path


def test_load_arguments_per_device():
    cuda = torch.device("cuda", 1)
    assert load_kwargs(torch.bfloat16, cuda) == {"dtype": torch.bfloat16, "device_map": {"": cuda}}
    assert load_kwargs(torch.float32, torch.device("cpu")) == {"dtype": torch.float32}
    assert load_kwargs(torch.float32, None) == {"dtype": torch.float32}
    # zero.Init places the partitions; transformers refuses a device_map under ZeRO-3
    assert load_kwargs(torch.bfloat16, cuda, zero3_init=True) == {"dtype": torch.bfloat16}
    assert training_dtype(True, cuda) == torch.bfloat16
    assert training_dtype(False, cuda) == torch.float32
    assert training_dtype(True, torch.device("cpu")) == torch.float32  # as before on CPU


def test_cpu_load_is_the_plain_fp32_load(tiny):
    cfg, path = tiny
    before = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    for model in (
        load_model(path, cfg.model, dtype=torch.float32, device=torch.device("cpu")),
        load_policy(path, cfg.model, DeepSpeedConfig(), CPU, optim=OPTIM, grad_accum=1),
    ):
        state, expected = model.state_dict(), before.state_dict()
        assert state.keys() == expected.keys()
        for k, v in state.items():
            assert v.dtype == torch.float32 and v.device.type == "cpu", k
            assert torch.equal(v, expected[k]), k
        assert not any(hasattr(p, "ds_id") for p in model.parameters())


@pytest.fixture
def calls(monkeypatch):
    """``from_pretrained`` replaced by a recorder of its arguments (and of whether a ZeRO-3
    config was visible to transformers during the call)."""
    seen = []

    class Loaded:  # what load_model then moves onto the device (a no-op here)
        def to(self, *args, **kwargs):
            return self

    def record(path, **kwargs):
        seen.append({**kwargs, "zero3_enabled": is_deepspeed_zero3_enabled(), "ds": ds_config()})
        return Loaded()

    monkeypatch.setattr(r1pipe.models.AutoModelForCausalLM, "from_pretrained", record)
    return seen


def test_gpu_policy_is_read_in_bf16_onto_its_device(tiny, calls):
    cfg, path = tiny
    load_policy(path, cfg.model, DeepSpeedConfig(), GPU, optim=OPTIM, grad_accum=1)
    load_policy(path, cfg.model, DeepSpeedConfig(bf16="false"), GPU, optim=OPTIM, grad_accum=1)
    assert [(c["dtype"], c.get("device_map"), c["zero3_enabled"]) for c in calls] == [
        (torch.bfloat16, {"": GPU.device}, False),
        (torch.float32, {"": GPU.device}, False),
    ]


def test_zero3_policy_is_built_under_zero_init(tiny, calls):
    cfg, path = tiny
    ds = DeepSpeedConfig(zero_stage=3)
    load_policy(path, cfg.model, ds, GPU, optim=OPTIM, grad_accum=2)
    assert calls[0]["zero3_enabled"] and "device_map" not in calls[0]
    assert calls[0]["dtype"] == torch.bfloat16
    # the engine's DeepSpeed config (its GPU sizes from the hidden size), less the optimizer
    engine_config = deepspeed_config(
        ds,
        micro_batch_size=OPTIM.micro_batch_size,
        grad_accum=2,
        world_size=1,
        max_grad_norm=OPTIM.max_grad_norm,
        bf16=True,
        optimizer=None,
        device_type="cuda",
        hidden_size=cfg.model.hidden_size,
    )
    assert calls[0]["ds"] == engine_config
    # the ZeRO-3 config is seen only during that load: later loads are whole models
    assert not is_deepspeed_zero3_enabled()


def run_ok(cmd: list[str]) -> str:
    """Run ``cmd`` from the repository (one thread per process); its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


def test_zero3_load_partitions_at_construction_and_trains_the_same(tmp_path):
    """2 ranks (gloo): policy and reference are partitioned before deepspeed.initialize, the
    reference holds the checkpoint's weights, and two steps give the losses of a whole load
    (tests/dist/zero_init_load.py)."""
    run_ok(torchrun(2, str(ROOT / "tests" / "dist" / "zero_init_load.py"), str(tmp_path)))
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["world_size"] == 2
    for rank in out["held"]:
        for kind in ("policy", "reference"):
            h = rank[kind]
            assert h["with_ds_id"] == h["params"] > 0, kind
            assert h["partitioned"] > 0, kind
            assert h["local"] <= h["full"] // 2 + h["params"], kind  # its share, not the whole
        assert rank["whole"]["with_ds_id"] == 0 and rank["whole"]["local"] == rank["whole"]["full"]
    assert out["reference_equal"]
    assert out["losses_init"] == pytest.approx(out["losses_whole"], abs=1e-5)
    assert out["losses_init"][0] != out["losses_init"][1]  # the step changed the weights


# ---- the held-out evaluation of a stage's export ------------------------------------------

# In a process of its own (a world of one): a ZeRO-2 step, then the stages' keep_trained.
KEEP_TRAINED = """
import dataclasses, gc, json, sys, weakref
from types import SimpleNamespace
import torch
from r1pipe.config import compose
from r1pipe.config.schema import DeepSpeedConfig, OptimizerConfig
from r1pipe.models import build_char_tokenizer, build_tiny_model
from r1pipe.stages.common import Trained
from r1pipe.stages.training import keep_trained
from r1pipe.training.dist import init_distributed
from r1pipe.training.engine import TrainEngine

dist = init_distributed()
cfg, _ = compose(["conf=smoke", "deepspeed=zero2"])
model = build_tiny_model(cfg.model, build_char_tokenizer(), seed=0)
optim = OptimizerConfig(lr=1e-3, micro_batch_size=2)
engine = TrainEngine(
    model, ds_cfg=cfg.deepspeed, dist=dist, optim=optim, total_steps=1, grad_accum=1
)
ids = torch.randint(0, 100, (2, 8))
def loss_fn(m, b):
    return m(input_ids=b["input_ids"], labels=b["input_ids"]).loss, {}
engine.train_step([{"input_ids": ids}], loss_fn, 1.0)
optimizer = weakref.ref(engine.engine.optimizer)
ctx = SimpleNamespace(cfg=cfg, final_dir=sys.argv[1], trained=Trained())
keep_trained(ctx, engine)
del engine, model
gc.collect()
print(json.dumps({"freed": optimizer() is None, "kept": ctx.trained.model is not None}))
"""


def test_keeping_the_trained_model_frees_the_optimizer(tmp_path):
    """The model stays in memory for the evaluation; DeepSpeed's optimizer (fp32 master
    weights, Adam's moments), which its hooks on the parameters would keep alive, does not."""
    out = run_ok([sys.executable, "-c", KEEP_TRAINED, str(tmp_path)])
    assert json.loads(out.strip().splitlines()[-1]) == {"freed": True, "kept": True}


class FakeGenerator:
    closed = False

    def close(self):
        self.closed = True


def context(cfg, trained):
    return SimpleNamespace(cfg=cfg, dist=CPU, trained=trained)


@pytest.fixture
def builds(monkeypatch):
    """``build_generator`` replaced by a recorder; ``load_model`` of the stages refused."""
    made = []

    def build(model, tokenizer, gen_cfg, **kwargs):
        made.append(model)
        return FakeGenerator()

    def no_load(*args, **kwargs):
        raise AssertionError("loaded the checkpoint again")

    monkeypatch.setattr(r1pipe.generation.build, "build_generator", build)
    monkeypatch.setattr(r1pipe.stages.common, "load_model", no_load)
    return made


def test_evaluation_uses_the_trained_model_in_memory(tiny, builds):
    cfg, path = tiny
    model = load_model(path, cfg.model)
    model.gradient_checkpointing_enable()
    trained = Trained()
    trained.keep(path, model, zero3=False)
    assert not model.is_gradient_checkpointing  # as a fresh load
    with checkpoint_generator(context(cfg, trained), path, None) as gen:
        assert isinstance(gen, FakeGenerator)
    assert builds == [model] and gen.closed
    assert trained.model is model  # still there for a second evaluation (rl-all's general)


def test_evaluation_casts_the_model_in_memory_to_the_evaluation_dtype(tiny, builds):
    cfg, path = tiny
    cfg = compose(["conf=smoke", "model.dtype=bfloat16"])[0]
    model = load_model(path, cfg.model)
    trained = Trained()
    trained.keep(path, model, zero3=False)
    with checkpoint_generator(context(cfg, trained), path, None):
        pass
    assert builds == [model] and next(model.parameters()).dtype == torch.bfloat16


def test_evaluation_reuses_the_trainers_vllm_engine(tiny, builds):
    cfg, path = tiny
    model = load_model(path, cfg.model)
    engine = FakeGenerator()
    trained = Trained()
    trained.keep(path, model, generator=engine, zero3=True)
    with checkpoint_generator(context(cfg, trained), path, None) as gen:
        assert gen is engine and not engine.closed
    assert engine.closed and trained.generator is None and builds == []


def test_one_rank_evaluation_closes_the_engine_and_builds_over_the_model(tiny, builds):
    cfg, path = tiny
    cfg = compose(["conf=smoke", "generation.backend=vllm"])[0]
    model = load_model(path, cfg.model)
    engine = FakeGenerator()
    trained = Trained()
    trained.keep(path, model, generator=engine, zero3=True)
    ctx = context(cfg, trained)
    with checkpoint_generator(ctx, path, None, this_rank_only=True):
        assert engine.closed  # before another engine starts
    assert builds == [model]  # vllm reads its config and dtype; it loads the weights itself


def test_zero3_hf_evaluation_and_other_checkpoints_load_from_disk(tiny, builds, monkeypatch):
    cfg, path = tiny
    loaded = []

    def load(checkpoint, model_cfg, **kwargs):
        loaded.append((checkpoint, kwargs))
        return load_model(path, model_cfg)

    monkeypatch.setattr(r1pipe.stages.common, "load_model", load)
    model = load_model(path, cfg.model)
    trained = Trained()
    trained.keep(path, model, zero3=True)  # partitioned: hf needs whole weights on each rank
    with checkpoint_generator(context(cfg, trained), path, None):
        pass
    trained.keep(path, model, zero3=False)
    with checkpoint_generator(context(cfg, trained), path / "other", None):
        pass
    assert [c for c, _ in loaded] == [path, path / "other"]
    assert loaded[0][1] == {"dtype": torch.float32, "device": CPU.device}
    assert model not in builds
