"""Shared fixture: one uninterrupted smoke cold-start run."""

from pathlib import Path

import pytest
from clihelpers import cli, ok


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One uninterrupted smoke cold-start run, shared by several tests."""
    run_dir = tmp_path_factory.mktemp("smoke")
    ok(cli("stage", "cold-start", "conf=smoke", f"run.dir={run_dir}"))
    return run_dir
