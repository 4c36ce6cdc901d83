"""The data order of training: which examples each step takes, as a pure function of the step.

Resume needs no sampler state: step ``N`` of a resumed run takes exactly the examples step
``N`` of an uninterrupted run took.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch


def sample_order(step: int, global_batch: int, n: int, seed: int) -> list[int]:
    """Indices of the global batch of ``step``: a seeded permutation per epoch, consumed in
    order. A pure function of the step, so resume needs no sampler state.

    >>> sample_order(0, 4, 6, 0) + sample_order(1, 4, 6, 0)[:2] == sample_order(0, 6, 6, 0)
    True
    """
    out = []
    for pos in range(step * global_batch, (step + 1) * global_batch):
        epoch, i = divmod(pos, n)
        out.append(_epoch_order(n, seed, epoch)[i])
    return out


@functools.lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The seeded permutation of one epoch (computed once, not once per sample)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def rank_micro_batches(batch: list[int], rank: int, world: int, micro: int) -> Iterator[list[int]]:
    """This rank's contiguous share of the global batch, cut into micro-batches."""
    per_rank = len(batch) // world
    mine = batch[rank * per_rank : (rank + 1) * per_rank]
    for i in range(0, len(mine), micro):
        yield mine[i : i + micro]


GPU_MICRO_BATCH_TOKENS = 16384
"""``micro_batch_tokens: auto`` on a GPU: 16k positions make each pass of a model of a few
hundred million parameters long enough to keep the GPU busy between launches."""


def micro_batch_tokens(value: str | int, device: torch.device) -> int:
    """The token budget of a micro-batch from ``stage.*.micro_batch_tokens``: ``auto`` is 0
    (micro-batches of ``micro_batch_size`` sequences, what pays on a CPU) on CPU and
    :data:`GPU_MICRO_BATCH_TOKENS` on GPU.

    >>> micro_batch_tokens("auto", torch.device("cpu")), micro_batch_tokens("4096", None)
    (0, 4096)
    """
    if str(value) == "auto":
        return GPU_MICRO_BATCH_TOKENS if device.type == "cuda" else 0
    return int(value)


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (sampling and initialisation)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
