"""Supervised fine-tuning as a step function for :func:`r1pipe.training.loop.fit`.

One step: the global batch of the step (a seeded order, :func:`~r1pipe.training.order.
sample_order`), this rank's contiguous share cut into micro-batches, each packed into rows
(:func:`~r1pipe.training.packing.collate`); the loss is the sum over response tokens divided
by the response tokens of the whole global batch, so ranks and micro-batches do not change it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from r1pipe.config.schema import SFTConfig
from r1pipe.errors import UserError
from r1pipe.training.dist import DistInfo, all_reduce_max, all_reduce_sum
from r1pipe.training.loop import Engine, FitPlan
from r1pipe.training.order import micro_batch_tokens, rank_micro_batches, sample_order
from r1pipe.training.packing import (
    TokenizedSFT,
    budget_micro_batches,
    collate,
    empty_micro_batch,
    num_loss_tokens,
    sft_loss_sum,
)


def sft_schedule(sft: SFTConfig, num_examples: int, world_size: int, key: str) -> tuple[int, int]:
    """(total optimizer steps, micro-batches per rank and step) for ``num_examples``. The
    second is what DeepSpeed is told (a rank's share, ``micro_batch_size`` sequences at a
    time); the engine takes however many a step brings (micro-batches sized in tokens vary).

    Raises:
        UserError: The global batch does not split over the ranks (``key`` names the config
            block).
    """
    if sft.global_batch_size % world_size:
        raise UserError(
            f"config error: {key}.global_batch_size={sft.global_batch_size} must be a "
            f"multiple of the world size {world_size}"
        )
    grad_accum = -(-sft.global_batch_size // world_size // sft.micro_batch_size)
    total = (
        sft.max_steps
        if sft.max_steps > 0
        else math.ceil(sft.epochs * num_examples / sft.global_batch_size)
    )
    return total, grad_accum


def sft_plan(sft: SFTConfig, total_steps: int) -> FitPlan:
    return FitPlan(total_steps, sft.log_every, sft.save_every, sft.keep_last)


class SFTTrainer:
    """Prompt -> response fine-tuning of ``engine``'s model on tokenized ``data``.

    Args:
        engine: The training engine (its ``grad_accum`` micro-batches make a step).
        data: Tokenized examples (prompt masked out of the loss).
        sft: The stage's SFT knobs (batch sizes, packing).
        dist: This rank.
        tokenizer: For the pad id and the export.
        seed: The data order's seed.
        attn_implementation: The model's attention (packing builds its mask for it).
    """

    def __init__(
        self,
        engine: Engine,
        data: list[TokenizedSFT],
        sft: SFTConfig,
        dist: DistInfo,
        tokenizer: Any,
        *,
        seed: int,
        attn_implementation: str,
    ):
        self.engine, self.data, self.sft, self.dist = engine, data, sft, dist
        self.tokenizer, self.seed, self.attn = tokenizer, seed, attn_implementation
        self.token_budget = micro_batch_tokens(sft.micro_batch_tokens, dist.device)

    def micro_batches(self, step: int) -> list[list[int]]:
        """This rank's micro-batches of step ``step``, as indices into ``data`` (with a
        token budget: one list, the rank's whole share, cut by :meth:`batches`)."""
        order = sample_order(step, self.sft.global_batch_size, len(self.data), self.seed)
        per_rank = self.sft.global_batch_size // self.dist.world_size
        size = per_rank if self.token_budget else self.sft.micro_batch_size
        return list(rank_micro_batches(order, self.dist.rank, self.dist.world_size, size))

    def batches(self, micro_idx: list[list[int]]) -> list[dict[str, torch.Tensor]]:
        """The model inputs of this rank's micro-batches; with a token budget, as many on
        every rank (the ranks with fewer run empty ones: ZeRO-2/3 need the same passes)."""
        sft, pad = self.sft, self.tokenizer.pad_token_id
        if not self.token_budget:
            return [
                collate(
                    [self.data[i] for i in mb],
                    packing=sft.packing,
                    pad_id=pad,
                    attn_implementation=self.attn,
                    pack_length=sft.pack_length,
                )
                for mb in micro_idx
            ]
        batches = budget_micro_batches(
            [self.data[i] for mb in micro_idx for i in mb],
            packing=sft.packing,
            budget=self.token_budget,
            row_length=sft.pack_length or sft.max_seq_len,
            pad_id=pad,
            attn_implementation=self.attn,
        )
        count = all_reduce_max(len(batches), self.dist.device)
        return batches + [empty_micro_batch(batches[0], pad)] * (count - len(batches))

    def train_step(self, step: int) -> dict[str, Any]:
        sft, dist = self.sft, self.dist
        micro_idx = self.micro_batches(step)
        batches = self.batches(micro_idx)
        local_tokens = sum(num_loss_tokens(b) for b in batches)
        local_input = sum(len(self.data[i].input_ids) for mb in micro_idx for i in mb)
        normalizer = all_reduce_sum(local_tokens, dist.device)
        out = self.engine.train_step(batches, sft_loss, normalizer)
        return {
            "loss": out["loss"],
            "grad_norm": out["grad_norm"],
            "lr": out["lr"],
            "loss_tokens": int(normalizer),
            "epoch": (step + 1) * sft.global_batch_size / len(self.data),
            "tokens": all_reduce_sum(local_input, dist.device),
        }

    def save_extras(self, path: Path, done: int) -> None:
        """Nothing beyond the engine's checkpoint: the data order is a function of the step."""

    def load_extras(self, path: Path) -> None:
        """Nothing to restore (see :meth:`save_extras`)."""


def sft_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """The summed response-token cross-entropy of one packed micro-batch."""
    loss, n = sft_loss_sum(model, batch)
    return loss, {"loss_tokens": n}  # a tensor: summed on the device by the engine
