"""Process-group set-up: the same code for one process, torchrun and the deepspeed launcher."""

from __future__ import annotations

import atexit
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed() -> DistInfo:
    """Initialise torch.distributed (gloo on CPU, NCCL on GPU) through DeepSpeed.

    A plain ``r1pipe ...`` is a world of one: the rendezvous variables are filled in so that
    DeepSpeed's engine runs unchanged.
    """
    import deepspeed

    if "WORLD_SIZE" not in os.environ:
        os.environ.update(
            RANK="0",
            LOCAL_RANK="0",
            WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if device.type == "cpu":
        # DeepSpeed JIT-compiles a shared-memory all-reduce op for CPU inference at init:
        # minutes on 2 cores, again whenever its build cache is invalidated, and training
        # never calls it (gloo does the collectives).
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        keep_freed_memory()
    if not torch_dist.is_initialized():
        deepspeed.init_distributed(
            dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False
        )
        # Tear the process group down before the interpreter exits: left to the C++
        # destructors, gloo's threads can abort a rank after its work is done
        # ("terminate called without an active exception", exit -6 under torchrun).
        atexit.register(_destroy)
    return DistInfo(torch_dist.get_rank(), torch_dist.get_world_size(), local_rank, device)


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory in the heap for reuse instead of returning it to the OS.

    A training step on CPU allocates and frees hundreds of MB of activations and gradients.
    glibc serves large blocks with ``mmap`` and unmaps them when freed (and trims the heap),
    so every step faults all those pages back in, each zeroed by the kernel: on the tiny
    default's GRPO step (128 completions of 64 tokens) about 60,000-77,000 minor page faults
    and 0.26 s of system CPU per training step; with the thresholds below, none and 0.03 s.
    Peak resident memory stays the same (the heap keeps at most what the peak needed; 1,000
    vs 1,002 MiB there). This is what jemalloc or tcmalloc do for PyTorch on CPU, without
    preloading a library. Returns False where the C library has no ``mallopt`` (not glibc).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    ok = mallopt(m_mmap_threshold, 1 << 30) == 1
    return bool(mallopt(m_trim_threshold, (1 << 31) - 1) == 1 and ok)


def _destroy() -> None:
    if not torch_dist.is_initialized():
        return
    if torch_dist.get_backend() == "gloo" and torch_dist.get_world_size() > 1:
        # Ranks tear gloo down together: a rank that closes its connections while a peer's
        # last messages are still in flight can abort the peer at exit ("terminate called
        # without an active exception", seen under load). Bounded: a peer that died already
        # costs 30 s, not a hang.
        from datetime import timedelta

        try:
            torch_dist.monitored_barrier(timeout=timedelta(seconds=30))
        except Exception:  # noqa: BLE001 - exiting anyway; the peer is gone
            pass
    torch_dist.destroy_process_group()


def barrier() -> None:
    if torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
        torch_dist.barrier()


def all_reduce_sum(value: float | int, device: torch.device) -> float:
    """Sum a Python number over ranks (float64 so token counts stay exact)."""
    if not torch_dist.is_initialized() or torch_dist.get_world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    torch_dist.all_reduce(t)
    return float(t.item())


def all_reduce_max(value: int, device: torch.device) -> int:
    """The largest of a Python integer over ranks."""
    if not torch_dist.is_initialized() or torch_dist.get_world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_objects(obj: Any) -> list[Any]:
    if not torch_dist.is_initialized() or torch_dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not torch_dist.is_initialized() or torch_dist.get_world_size() == 1:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=src)
    return box[0]
