"""A step with a non-finite loss or gradient leaves weights and optimizer state untouched, on
every rank and ZeRO stage; too many in a row stop training (tests/dist/nonfinite_step.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clihelpers import torchrun

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("nproc,zero", [(1, 0), (2, 2), (2, 3)])
def test_nonfinite_step_is_skipped_and_repeated_ones_stop(tmp_path, nproc, zero):
    out = tmp_path / "out.json"
    script = str(ROOT / "tests" / "dist" / "nonfinite_step.py")
    cmd = torchrun(nproc, script, str(out), str(zero)) if nproc > 1 else [sys.executable, script]
    if nproc == 1:
        cmd += [str(out), str(zero)]
    res = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["bad_loss"] != r["bad_loss"]  # NaN: reported, not hidden
    assert r["skipped_after_bad"] == 1 and r["skipped_after_good"] == 1
    assert r["weights_kept"] and r["moments_kept"] and r["moments_checked"] > 0
    assert r["good_moved"] and r["good_finite"]
    assert "3 optimizer steps in a row had a non-finite loss" in r["error"]
