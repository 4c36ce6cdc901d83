"""The one training engine: DeepSpeed ZeRO 0-3 (optional CPU offload), on CPU and GPU.

Every stage trains through :class:`TrainEngine`. A step takes the micro-batches of this rank
and a loss function that returns a *summed* loss; the engine divides by the global
normaliser (e.g. response tokens over all ranks and micro-batches), so the gradient is the
same whatever the split into ranks and micro-batches (tests/stages/test_distributed.py).

Checkpoints are DeepSpeed checkpoints (model, optimizer, scheduler) plus, per rank, the RNG
state, in ``STAGE/checkpoints/step-N/``; a ``COMPLETE`` marker written after every rank has
saved makes a checkpoint eligible for resume, so a crash during a save is harmless. The marker
records the size and sha256 of every file of the checkpoint (hashed by all ranks, each its
share); :func:`resume_candidates` verifies them before a checkpoint is used, so a file
corrupted or truncated later is found and the previous complete checkpoint is used instead.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import math
import os
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from r1pipe.config.schema import DeepSpeedConfig, OptimizerConfig
from r1pipe.errors import UserError
from r1pipe.training.dist import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
)
from r1pipe.training.schedule import lr_lambda

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def use_bf16(ds_cfg: DeepSpeedConfig, device: torch.device) -> bool:
    flag = str(ds_cfg.bf16).lower()
    return device.type == "cuda" if flag == "auto" else flag == "true"


def deepspeed_config(
    ds_cfg: DeepSpeedConfig,
    *,
    micro_batch_size: int,
    grad_accum: int,
    world_size: int,
    max_grad_norm: float,
    bf16: bool,
    optimizer: dict[str, Any] | None,
    device_type: str = "cpu",
    hidden_size: int | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config dict for our settings.

    Two choices depend on the device:

    * ZeRO-0 in bf16 runs as ZeRO-1. DeepSpeed's ZeRO-0 bf16 path wraps a torch optimizer
      in its unfused per-parameter fp16/bf16 optimizer (an fp32 master copy and an overflow
      check per parameter: hundreds of blocking host syncs a step); ZeRO-1 keeps the same
      fp32 master weights in one flat buffer that a fused AdamW updates in one call. On one
      rank the two are the same computation; on several, ZeRO-1 also splits Adam's state.
    * ZeRO-3 on GPU keeps parameters under ``10 x hidden_size`` elements (norms, biases)
      resident and prefetches ``0.9 x hidden_size^2`` elements ahead (the sizes Hugging
      Face's integration derives from the hidden size); on CPU, where the gathers are
      memory copies, small fixed sizes.
    """
    stage = ds_cfg.zero_stage
    if stage == 0 and bf16:
        stage = 1
    zero: dict[str, Any] = {"stage": stage}
    if stage in (1, 2):
        # optimizer partitions saved so that a run with another number of ranks can load them
        zero["elastic_checkpoint"] = True
    if stage == 3:
        zero.update(
            stage3_gather_16bit_weights_on_model_save=True, stage3_param_persistence_threshold=1e4
        )
        if device_type == "cuda" and hidden_size:
            zero.update(
                stage3_param_persistence_threshold=10 * hidden_size,
                stage3_prefetch_bucket_size=int(0.9 * hidden_size * hidden_size),
                reduce_bucket_size=hidden_size * hidden_size,
                overlap_comm=True,
            )
    if ds_cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds_cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "gradient_clipping": max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if optimizer is not None:
        config["optimizer"] = optimizer
    _deep_update(config, dict(ds_cfg.extra))
    return config


def _deep_update(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v


class NonFiniteTraining(UserError):
    """Training produced non-finite values that skipping steps did not get past."""


class _LossModule(torch.nn.Module):
    """Runs a loss function inside the DeepSpeed engine's forward.

    DeepSpeed hooks its bookkeeping (ZeRO-3 gradient partitioning across accumulation steps,
    backward prologue) on ``engine.forward`` and its outputs. Loss functions here call the HF
    model in their own way (decoder, then a chunked output layer), so the whole loss function
    becomes the forward of this wrapper and DeepSpeed sees every micro-step.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, loss_fn: Callable[..., Any], batch: dict[str, torch.Tensor]) -> Any:
        return loss_fn(self.model, batch)


class TrainEngine:
    """DeepSpeed engine + optimizer + LR schedule for one model.

    Args:
        model: The HF model: full weights on every rank (ZeRO partitions them at init), or
            under ZeRO-3 already partitioned at construction (:func:`r1pipe.models.load_policy`).
        ds_cfg: ``cfg.deepspeed``.
        dist: Process-group info.
        optim: The stage's optimizer block: AdamW, schedule (warmup is
            ``warmup_ratio * total_steps``), gradient clip, ``micro_batch_size``.
        total_steps: Optimizer steps the schedule spans.
        grad_accum: Micro-batches per optimizer step on each rank.
        micro_batch_size: Sequences per micro-batch for DeepSpeed's bookkeeping (default
            ``optim.micro_batch_size``).
        gradient_checkpointing: Recompute activations in backward.
        max_nonfinite_steps: An optimizer step whose gradients are not all finite (on any
            rank) is skipped, leaving weights and optimizer state as they were; this many in
            a row raise :class:`NonFiniteTraining`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        ds_cfg: DeepSpeedConfig,
        dist: DistInfo,
        optim: OptimizerConfig,
        total_steps: int,
        grad_accum: int,
        micro_batch_size: int | None = None,
        gradient_checkpointing: bool = False,
        max_nonfinite_steps: int = 3,
    ):
        import deepspeed

        self.dist = dist
        self.grad_accum = grad_accum
        self.bf16 = use_bf16(ds_cfg, dist.device)
        if gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        model.to(dist.device)
        # Offloaded optimizer states need DeepSpeed's CPU Adam, which DeepSpeed builds from
        # its config; otherwise torch's AdamW (works on CPU and GPU, no compiled op).
        optimizer = None
        optimizer_cfg = None
        params = [p for p in model.parameters() if p.requires_grad]
        betas = (optim.adam_beta1, optim.adam_beta2)
        if ds_cfg.offload_optimizer:
            optimizer_cfg = {
                "type": "AdamW",
                "params": {
                    "lr": optim.lr,
                    "betas": list(betas),
                    "eps": optim.adam_eps,
                    "weight_decay": optim.weight_decay,
                },
            }
        else:
            # fused: one kernel for all parameters on GPU (no per-tensor launches or syncs)
            cuda = dist.device.type == "cuda"
            optimizer = torch.optim.AdamW(
                params,
                lr=optim.lr,
                betas=betas,
                eps=optim.adam_eps,
                weight_decay=optim.weight_decay,
                fused=True if cuda else None,
            )
        self.ds_config = deepspeed_config(
            ds_cfg,
            micro_batch_size=micro_batch_size or optim.micro_batch_size,
            grad_accum=grad_accum,
            world_size=dist.world_size,
            max_grad_norm=optim.max_grad_norm,
            bf16=self.bf16,
            optimizer=optimizer_cfg,
            device_type=dist.device.type,
            hidden_size=getattr(getattr(model, "config", None), "hidden_size", None),
        )
        warmup_steps = int(optim.warmup_ratio * total_steps)
        schedule = lr_lambda(optim.lr_scheduler, total_steps, warmup_steps, optim.min_lr_ratio)

        def make_scheduler(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
            return torch.optim.lr_scheduler.LambdaLR(opt, schedule)

        self.hf_model = model
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=_LossModule(model),
            model_parameters=params if optimizer is None else None,
            optimizer=optimizer,
            lr_scheduler=make_scheduler,
            config=self.ds_config,
        )
        self.max_nonfinite_steps = max_nonfinite_steps
        self.optimizer_restarted = False
        """The last resume changed the number of ranks: Adam's moments started afresh."""
        self.skipped_steps = 0
        self.nonfinite_in_a_row = 0
        self._step_skipped = False
        self._guard_optimizer()

    def _guard_optimizer(self) -> None:
        """Skip the update of a step whose gradients are not all finite.

        The check sits in the innermost optimizer's ``step`` (torch's AdamW or DeepSpeed's CPU
        Adam, under any ZeRO wrapper), where every rank holds the final, clipped gradients of
        its partition; one all-reduce makes the ranks agree. Skipped there, the weights and
        Adam's moments stay as they were (a NaN clipped into them would poison every later
        step)."""
        inner = self.engine.optimizer
        while getattr(inner, "optimizer", None) is not None and inner.optimizer is not inner:
            inner = inner.optimizer
        step = inner.step

        @functools.wraps(step)  # keeps the LR scheduler's mark on the step it wrapped
        def guarded_step(*args: Any, **kwargs: Any) -> Any:
            grads = [
                p.grad
                for group in inner.param_groups
                for p in group["params"]
                if p.grad is not None
            ]
            bad = 0.0
            if grads:
                bad = float(~torch.stack([torch.isfinite(g).all() for g in grads]).all())
            if all_reduce_sum(bad, self.dist.device) > 0:
                self._step_skipped = True
                return None
            return step(*args, **kwargs)

        inner.step = guarded_step

    @property
    def _norm_untracked(self) -> bool:
        return self.engine.zero_optimization_stage() == 0 and not self.bf16

    @property
    def module(self) -> torch.nn.Module:
        """The Hugging Face model being trained (for generation and export)."""
        return self.hf_model

    def train_step(
        self, micro_batches: Sequence[dict[str, torch.Tensor]], loss_fn: LossFn, normalizer: float
    ) -> dict[str, float]:
        """Forward/backward every micro-batch of this rank, then one optimizer step.

        Args:
            micro_batches: This rank's batches (tensors are moved to the device). Their
                number may change from step to step (micro-batches sized in tokens), but
                every rank must pass the same number in a step: under ZeRO-2/3 each backward
                is a collective (callers pad with micro-batches that carry no loss).
            loss_fn: ``(hf_model, batch) -> (summed_loss, stats)``; it runs inside the
                engine's forward. Stats may be tensors on the device: they are summed there
                and read to the host once, after the last micro-batch.
            normalizer: What the summed loss of the *global* batch is divided by (e.g. all
                response tokens over all ranks). DeepSpeed averages over ranks and divides
                by its configured accumulation steps, which the scaling below undoes.

        Returns:
            ``loss`` (global, normalised), ``grad_norm``, ``lr`` and summed stats of this rank.
        """
        assert micro_batches, "a step needs at least one micro-batch"
        self._step_skipped = False
        self.engine.train()
        scale = self.dist.world_size * self.grad_accum / max(normalizer, 1e-12)
        own_norm = float("nan")
        sums: dict[str, Any] = {}
        last = len(micro_batches) - 1
        for i, batch in enumerate(micro_batches):
            batch = {k: v.to(self.dist.device, non_blocking=True) for k, v in batch.items()}
            # the step's end is the last micro-batch, however many there are
            self.engine.set_gradient_accumulation_boundary(i == last)
            loss_sum, mb_stats = self.engine(loss_fn, batch)
            self.engine.backward(loss_sum * scale)
            if i == last and self._norm_untracked:
                # DeepSpeed clips fp32 ZeRO-0 gradients without keeping the norm; the
                # gradients are already all-reduced here, so this is the same global norm.
                grads = [p.grad for p in self.hf_model.parameters() if p.grad is not None]
                own_norm = float(torch.nn.utils.get_total_norm(grads))
            self.engine.step()
            for k, v in {"loss": loss_sum.detach(), **mb_stats}.items():
                sums[k] = sums[k] + v if k in sums else v
        # one read of the step's sums (a tensor per stat would be a host sync each)
        keys = list(sums)
        values = [sums[k] for k in keys]
        if any(isinstance(v, torch.Tensor) for v in values):
            device = next(v.device for v in values if isinstance(v, torch.Tensor))
            values = torch.stack(
                [torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values]
            ).tolist()
        stats = {k: float(v) for k, v in zip(keys, values, strict=True)}
        local_loss = stats.pop("loss")
        total = all_reduce_sum(local_loss, self.dist.device)
        grad_norm = own_norm if self._norm_untracked else self.engine.get_global_grad_norm()
        loss = total / max(normalizer, 1e-12)
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        skipped = self._step_skipped or not math.isfinite(loss)
        if skipped:
            self.skipped_steps += 1
            self.nonfinite_in_a_row += 1
            if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
                raise NonFiniteTraining(
                    f"{self.nonfinite_in_a_row} optimizer steps in a row had a non-finite loss "
                    f"or gradient (last: loss {loss:.4g}, grad_norm {grad_norm:.4g}); they were "
                    "skipped, so the weights are the last finite ones, but training is not "
                    "converging: lower the learning rate or check the data "
                    "(run.max_nonfinite_steps sets how many are tolerated)"
                )
        else:
            self.nonfinite_in_a_row = 0
        return {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": float(self.scheduler.get_last_lr()[0]) if self.scheduler else float("nan"),
            "skipped_steps": float(self.skipped_steps),
            **stats,
        }

    # ---- checkpoints -------------------------------------------------------------------

    def save_checkpoint(
        self, root: Path, step: int, client_state: dict[str, Any], keep_last: int
    ) -> Path:
        """Save resumable state to ``root/step-N`` on every rank; mark it complete.

        Raises:
            DiskFull: The file system ran out of space (the partial step is removed)."""
        tag = f"step-{step}"
        path = root / tag

        def estimate() -> int:
            # the last checkpoint's size, or fp32 weights and Adam's two moments
            n = sum(getattr(p, "ds_numel", p.numel()) for p in self.hf_model.parameters())
            return _newest_size(root) or 12 * n

        with disk_guard(path, f"checkpoint {tag}", estimate=estimate):
            self.engine.save_checkpoint(str(root), tag=tag, client_state=client_state)
            torch.save(_rng_state(), path / f"rng_rank{self.dist.rank}.pt")
        barrier()
        files = checkpoint_files(path, self.dist)
        if self.dist.is_main:
            marker = {"step": step, "files": files}
            (path / "COMPLETE").write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
            for old in complete_checkpoints(root)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()
        return path

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """Restore engine, optimizer, scheduler and this rank's RNG; return the client state.

        A checkpoint saved by another number of ranks: under ZeRO-0 it loads as it is (nothing
        is partitioned); under ZeRO-1/2 the model weights and the schedule are restored and the
        optimizer starts afresh (DeepSpeed cannot re-partition Adam's moments; logged); under
        ZeRO-3, whose weights are partitioned too, it is refused with how to resume.
        """
        saved_world = len(list(path.glob("rng_rank*.pt"))) or self.dist.world_size
        stage = self.engine.zero_optimization_stage()
        regroup = saved_world != self.dist.world_size and stage >= 1
        if regroup and stage == 3:
            raise UserError(
                f"{path}: saved by {saved_world} ranks under ZeRO-3, which partitions the weights "
                f"too; resume with {saved_world} ranks (torchrun --nproc_per_node "
                f"{saved_world} ...), or start over with run.resume=false"
            )
        _, client_state = self.engine.load_checkpoint(
            str(path.parent),
            tag=path.name,
            load_optimizer_states=not regroup,
            load_lr_scheduler_states=True,
        )
        if regroup:
            # the optimizer's fp32 partitions were built from the initial weights: refresh them
            # from the loaded ones, or the next step would write the old weights back
            self.engine.optimizer._restore_from_bit16_weights()
            self.optimizer_restarted = True
        if client_state is None:
            raise RuntimeError(f"{path}: DeepSpeed could not load this checkpoint")
        rng_file = path / f"rng_rank{self.dist.rank}.pt"
        if rng_file.exists():
            _set_rng_state(torch.load(rng_file, weights_only=False))
        return client_state

    def export_hf(self, out_dir: Path, tokenizer: Any) -> None:
        """Write the final model in Hugging Face format (ZeRO-3 shards gathered on rank 0)."""
        import deepspeed

        module = self.hf_model
        if self.engine.zero_optimization_stage() == 3:
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                state = (
                    {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                    if self.dist.is_main
                    else None
                )
        else:
            state = (
                {k: v.detach().cpu() for k, v in module.state_dict().items()}
                if self.dist.is_main
                else None
            )
        bad = None
        if self.dist.is_main:
            assert state is not None
            bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
        bad = broadcast_object(bad)
        if bad:
            raise NonFiniteTraining(
                f"not exporting {out_dir}: {len(bad)} tensors have non-finite values "
                f"(first {bad[0]})"
            )
        if self.dist.is_main:
            assert state is not None
            size = sum(v.numel() * v.element_size() for v in state.values())
            with disk_guard(out_dir, "the final model", estimate=lambda: size):
                out_dir.mkdir(parents=True, exist_ok=True)
                module.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
                tokenizer.save_pretrained(out_dir)
        barrier()


class DiskFull(UserError):
    """A write ran out of space; the message names the directory and the space needed."""


def _is_disk_full(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        text = str(seen)
        if "No space left on device" in text or "file write failed" in text:
            return True  # torch.save reports ENOSPC as a RuntimeError of its writer
        seen = seen.__cause__ or seen.__context__
    return False


def _newest_size(root: Path) -> int | None:
    done = complete_checkpoints(root)
    if not done:
        return None
    return sum(p.stat().st_size for p in done[-1].rglob("*") if p.is_file())


@contextmanager
def disk_guard(path: Path, what: str, estimate: Callable[[], int | None]) -> Iterator[None]:
    """Turn running out of disk while writing ``what`` to ``path`` into one :class:`DiskFull`
    line (free space, about what is needed); a partial ``path`` is removed, since nothing
    marks it complete and it only holds space."""
    failure = None
    try:
        yield
    except Exception as e:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        needed = estimate()
        # torch's writer often reports ENOSPC as "iostream error" or "unexpected pos": a write
        # that failed with (almost) no space left counts as a full disk too.
        if not (_is_disk_full(e) or free < max(needed or 0, 1 << 20)):
            raise
        failure = (probe, free, needed)
    if failure is None:
        return
    shutil.rmtree(path, ignore_errors=True)
    _truncate_open_files(path)
    probe, free, needed = failure
    hint = f"; it needs about {needed / 2**20:.1f} MiB" if needed else ""
    raise DiskFull(
        f"no space left on the device of {probe} while writing {what} "
        f"({free / 2**20:.1f} MiB free{hint}); free some space or set run.dir elsewhere, "
        "then run the same command to resume"
    )


def _truncate_open_files(path: Path) -> None:
    """Empty the files under ``path`` that this process still holds open. The failed write's
    frames (kept alive by the exception being handled) hold them; a removed file's space comes
    back only when it is closed, or emptied: without this the manifest could not be written."""
    prefix = str(path)
    for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            try:
                os.truncate(f"/proc/self/fd/{fd}", 0)
            except OSError:
                pass


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checkpoint_files(path: Path, dist: DistInfo) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under ``path`` (collective: each rank hashes its share).
    Call after every rank has written its files."""
    names = None
    if dist.is_main:
        names = sorted(
            str(p.relative_to(path))
            for p in path.rglob("*")
            if p.is_file() and p.name != "COMPLETE"
        )
    names = broadcast_object(names)
    mine = {
        name: {"size": (path / name).stat().st_size, "sha256": _sha256(path / name)}
        for name in names[dist.rank :: dist.world_size]
    }
    merged: dict[str, dict[str, Any]] = {}
    for part in all_gather_objects(mine):
        merged.update(part)
    return merged


def verify_checkpoint(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be used (a missing, truncated or altered file, an
    unreadable marker), or None. A marker of an older r1pipe without file hashes passes."""
    try:
        marker = json.loads((path / "COMPLETE").read_text())
    except (OSError, ValueError) as e:
        return f"its COMPLETE marker is unreadable ({e})"
    files = marker.get("files") if isinstance(marker, dict) else None
    if files is None:
        return None
    for name, want in sorted(files.items()):
        file = path / name
        try:
            size = file.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != want["size"]:
            return f"{name} has {size} bytes, {want['size']} when saved"
        if _sha256(file) != want["sha256"]:
            return f"{name} does not match its sha256 at save time"
    return None


def resume_candidates(root: Path, log: Callable[[str], None]) -> list[Path]:
    """Complete checkpoints under ``root`` whose files verify, newest first; each one that
    does not is named in ``log`` with the reason."""
    good = []
    for path in reversed(complete_checkpoints(root)):
        problem = verify_checkpoint(path)
        if problem is None:
            good.append(path)
        else:
            log(f"checkpoint {path.name} is damaged ({problem}); not used")
    return good


def complete_checkpoints(root: Path) -> list[Path]:
    """Periodic checkpoints under ``root`` that finished saving, oldest first."""
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if (p / "COMPLETE").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
