"""The interpreter the code sandbox can run on this machine, for the code reward tests.

As root, the sandbox runs programs as a uid of their own. In namespaces (bubblewrap) the
interpreter's installation is made readable to it; without them (``isolation="none"``, or no
bubblewrap), that uid cannot execute an interpreter installed under ``/root`` (pyenv there is
common in containers), and a system ``python3`` then stands in.
"""

import functools
import sys

import pytest

from r1pipe.rewards.sandbox import SandboxConfig, run_python


@functools.cache
def _find_python(isolation: str) -> str | None:
    for candidate in (sys.executable, "/usr/local/bin/python3", "/usr/bin/python3"):
        config = SandboxConfig(python=candidate, timeout_s=30, isolation=isolation)
        probe = run_python("print('ok')", config=config)
        if probe.status == "passed" and probe.stdout == "ok\n":
            return candidate
    return None


def sandbox_python(isolation: str = "auto") -> str:
    """An interpreter the sandbox user can run with ``isolation``; skips the test where there
    is none."""
    python = _find_python(isolation)
    if python is None:
        pytest.skip("no Python interpreter the sandbox user can execute")
    return python
