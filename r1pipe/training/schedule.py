"""Learning-rate schedules: linear warmup, then cosine, linear or constant. Pure functions."""

from __future__ import annotations

import math
from collections.abc import Callable

#: The learning-rate schedules after warmup (``lr_scheduler``).
LR_SCHEDULERS = ("cosine", "linear", "constant")


def lr_lambda(
    kind: str, total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> Callable[[int], float]:
    """Linear warmup, then cosine/linear decay to ``min_lr_ratio`` (or constant).

    >>> f = lr_lambda("cosine", 10, 2, 0.1)
    >>> [round(f(s), 3) for s in (0, 1, 2, 10)]
    [0.5, 1.0, 1.0, 0.1]
    """

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "linear":
            return 1.0 - (1.0 - min_lr_ratio) * progress
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f
