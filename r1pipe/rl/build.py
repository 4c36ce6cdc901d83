"""The GRPO trainer's parts built from the config: the one place rl-reasoning, rl-all, the
benchmark and the distributed tests get a trainer from. No run directory is read here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1pipe.config.schema import GRPOConfig, R1Config
from r1pipe.data.general import example_prompt
from r1pipe.errors import UserError
from r1pipe.generation.build import build_generator
from r1pipe.models import load_policy
from r1pipe.rl.prompts import Prompts
from r1pipe.rl.reference import Reference
from r1pipe.rl.scoring import RewardFn
from r1pipe.rl.trainer import GRPOTrainer
from r1pipe.training.dist import DistInfo
from r1pipe.training.engine import TrainEngine
from r1pipe.training.order import set_seed


def build_grpo_trainer(
    cfg: R1Config,
    rl: GRPOConfig,
    key: str,
    start_model: Path | str,
    tokenizer: Any,
    dist: DistInfo,
    *,
    rewards: RewardFn,
    prompts: Prompts,
    log: Any = None,
) -> GRPOTrainer:
    """Policy engine, generator (from ``cfg.generation``), reference (when ``kl_coef > 0``)
    and trainer for ``rl`` (the block at ``stage.KEY``), starting from ``start_model``.

    Raises:
        UserError: ``prompts_per_step`` does not split over the ranks.
    """
    if rl.prompts_per_step % dist.world_size:
        raise UserError(
            f"config error: stage.{key}.prompts_per_step={rl.prompts_per_step} must be a "
            f"multiple of the world size {dist.world_size}"
        )
    set_seed(cfg.run.seed + 7919 * dist.rank)  # ranks sample differently
    completions_per_rank = rl.prompts_per_step // dist.world_size * rl.group_size
    grad_accum = -(-completions_per_rank // rl.micro_batch_size)
    micro_batch_size = min(rl.micro_batch_size, completions_per_rank)
    model = load_policy(
        start_model,
        cfg.model,
        cfg.deepspeed,
        dist,
        optim=rl,
        grad_accum=grad_accum,
        micro_batch_size=micro_batch_size,
    )
    engine = TrainEngine(
        model,
        ds_cfg=cfg.deepspeed,
        dist=dist,
        optim=rl,
        # the schedule counts optimizer steps: mu per RL step, warm-up included
        total_steps=rl.max_steps * rl.mu,
        grad_accum=grad_accum,
        micro_batch_size=micro_batch_size,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        max_nonfinite_steps=cfg.run.max_nonfinite_steps,
    )
    zero3 = cfg.deepspeed.zero_stage == 3
    generator = build_generator(
        engine.module,
        tokenizer,
        cfg.generation,
        synced_gpus=zero3,
        model_path=start_model,
        dist=dist,
        seed=cfg.run.seed,
        training=True,
    )
    reference = None
    if rl.kl_coef > 0:
        reference = Reference.load(start_model, cfg.model, dist, bf16=engine.bf16, zero3=zero3)
    return GRPOTrainer(
        engine,
        generator,
        rewards,
        prompts,
        reference,
        rl,
        dist,
        tokenizer=tokenizer,
        prompt_text=lambda e: example_prompt(e, cfg.task, tokenizer),
        zero3=zero3,
        log=log,
        sampler_holds_weights=cfg.generation.backend != "hf",
    )
