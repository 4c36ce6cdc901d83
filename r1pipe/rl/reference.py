"""The frozen reference policy of the KL term: loaded once, reset to the policy every
``ref_update_every`` steps (as the R1 paper does), saved with a checkpoint once it differs
from the start model. Under ZeRO-3 it is partitioned like the policy, and every method is
collective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from r1pipe.errors import UserError
from r1pipe.training.dist import DistInfo

REFERENCE_FILE = "reference.pt"


class Reference:
    """A frozen copy of the policy.

    Args:
        model: The reference model, on its device, in eval mode, no gradients.
        dist: This rank.
        zero3: The model is ZeRO-3 partitioned (gather to read or write it).
    """

    def __init__(self, model: torch.nn.Module, dist: DistInfo, *, zero3: bool = False):
        self.model, self.dist, self.zero3 = model, dist, zero3

    @classmethod
    def load(
        cls, start_model: Any, model_cfg: Any, dist: DistInfo, *, bf16: bool, zero3: bool
    ) -> Reference:
        """The start model as the reference (bf16 when training is), read straight onto the
        device on CUDA; under ZeRO-3 partitioned at construction (``zero.Init``)."""
        from r1pipe.models import load_model, training_dtype

        ds = {
            "train_micro_batch_size_per_gpu": 1,
            "zero_optimization": {"stage": 3},
            "bf16": {"enabled": bf16},
        }
        ref = load_model(
            start_model,
            model_cfg,
            dtype=training_dtype(bf16, dist.device),
            device=dist.device,
            zero3_config=ds if zero3 else None,
        )
        ref.requires_grad_(False)
        if zero3:
            import deepspeed

            ref = deepspeed.initialize(model=ref, config=ds)[0].module
        elif bf16:  # on CPU too, where it was read in fp32 (DeepSpeed casts the policy there)
            ref.to(dtype=torch.bfloat16)
        return cls(ref.eval(), dist, zero3=zero3)

    def refresh_from(self, policy: torch.nn.Module) -> None:
        """Copy the current policy into the reference."""
        if self.zero3:
            import deepspeed

            with (
                deepspeed.zero.GatheredParameters(list(policy.parameters())),
                deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=0),
            ):
                if self.dist.is_main:
                    for pr, pp in zip(self.model.parameters(), policy.parameters(), strict=True):
                        pr.data.copy_(pp.data)
        else:
            self.model.load_state_dict(policy.state_dict())

    def save(self, path: Path) -> None:
        """Write the full weights to ``path/reference.pt`` (rank 0)."""
        import deepspeed

        params = dict(self.model.named_parameters())
        with deepspeed.zero.GatheredParameters(list(params.values()), enabled=self.zero3):
            if self.dist.is_main:
                path.mkdir(parents=True, exist_ok=True)
                full = {k: p.detach().cpu().clone() for k, p in params.items()}
                torch.save(full, path / REFERENCE_FILE)

    def restore(self, path: Path) -> bool:
        """Restore from ``path/reference.pt`` if it is there (rank 0 reads, the shards are
        scattered); return whether it was restored."""
        import deepspeed

        file = path / REFERENCE_FILE
        if not file.exists():  # written only once a refresh made it differ from the start
            return False
        params = dict(self.model.named_parameters())
        with deepspeed.zero.GatheredParameters(
            list(params.values()), modifier_rank=0, enabled=self.zero3
        ):
            if self.dist.is_main or not self.zero3:
                saved = torch.load(file, map_location="cpu", weights_only=True)
                missing = sorted(set(params) - set(saved))
                if missing:
                    raise UserError(f"{file}: no weights for {missing[:3]} (not this model's)")
                for k, p in params.items():
                    p.data.copy_(saved[k].to(p.device, p.dtype))
        return True
