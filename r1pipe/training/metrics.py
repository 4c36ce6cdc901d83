"""``STAGE/metrics.jsonl``: one JSON object per logged step, written by rank 0 only, and the
same scalars as TensorBoard event files beside it (``tensorboard --logdir RUN_DIR``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from r1pipe.run_dir import atomic_write_text


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf; null says "not available"
    return v


class MetricsLogger:
    """Append-only metrics log.

    Args:
        path: ``STAGE/metrics.jsonl``.
        enabled: False on ranks other than 0.
        resume_step: When resuming from ``step-N``, lines with ``step > N`` (logged after the
            checkpoint by the interrupted run) are dropped so the curve continues cleanly;
            None starts a fresh file. TensorBoard is told to drop its events past N too.
    """

    def __init__(self, path: Path, *, enabled: bool, resume_step: int | None = None):
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        kept: list[str] = []
        if resume_step is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    break  # a torn last line from a crash
        atomic_write_text(path, "".join(s + "\n" for s in kept))
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(
            str(path.parent), purge_step=None if resume_step is None else resume_step + 1
        )

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        assert "step" in record
        with self.path.open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        for k, v in record.items():
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                if math.isfinite(v):
                    self._tb.add_scalar(k, v, record["step"])
        self._tb.flush()  # a crash must not lose what metrics.jsonl already has

    def close(self) -> None:
        if self.enabled:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
