"""SIGINT and SIGTERM end a stage cleanly: the step in progress finishes, a resumable
checkpoint is saved, the manifest says ``interrupted``, and r1pipe exits with one line.

SIGTERM is what Slurm, Kubernetes and torchrun send before they kill; SIGINT is Ctrl-C. The
CLI installs :func:`install` once per process (every rank under torchrun); training loops ask
:func:`requested` at each step boundary, which all ranks answer together (one all-reduce), so
they stop at the same step. A second signal exits at once, as without r1pipe's handler.

How long a stop takes: the rest of the current step plus one checkpoint save. Nothing is
checked inside a step (generation, a reward batch), so that the ranks stay in lockstep.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from r1pipe.errors import UserError

__all__ = ["StageInterrupted", "install", "requested", "signal_name"]

_received: list[int] = []


class StageInterrupted(UserError):
    """A stage stopped on a signal after saving a checkpoint; exit with ``128 + signum``."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handle(signum: int, frame: FrameType | None) -> None:
    if _received:  # the second one: stop now
        signal.signal(signum, signal.SIG_DFL)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.raise_signal(signum)
        return
    _received.append(signum)


def install() -> None:
    """Catch SIGINT and SIGTERM (main thread of the main interpreter only)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _handle)


def received() -> int | None:
    """The signal this process received, if any (no communication)."""
    return _received[0] if _received else None


def requested(device: object) -> int | None:
    """The signal any rank received (collective: every rank must call it at the same step),
    or None."""
    from r1pipe.training.dist import all_reduce_sum

    mine = float(_received[0]) if _received else 0.0
    # Any rank's signal stops all; one that received none names a signal another received
    # (the sum, exact when one rank or all ranks received the same one).
    total = all_reduce_sum(mine, device)  # type: ignore[arg-type]
    if total <= 0:
        return None
    return _received[0] if _received else int(total)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
