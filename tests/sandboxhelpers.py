"""The interpreter the code sandbox can run on this machine, for the code reward tests.

As root, the sandbox runs programs as ``nobody``, who cannot execute an interpreter installed
under ``/root`` (pyenv there is common in containers); a system ``python3`` then stands in.
"""

import functools
import sys

import pytest

from r1pipe.rewards.sandbox import SandboxConfig, run_python


@functools.cache
def _find_python() -> str | None:
    for candidate in (sys.executable, "/usr/local/bin/python3", "/usr/bin/python3"):
        probe = run_python("print('ok')", config=SandboxConfig(python=candidate, timeout_s=30))
        if probe.status == "passed" and probe.stdout == "ok\n":
            return candidate
    return None


def sandbox_python() -> str:
    """An interpreter the sandbox user can run; skips the test where there is none."""
    python = _find_python()
    if python is None:
        pytest.skip("no Python interpreter the sandbox user can execute")
    return python
