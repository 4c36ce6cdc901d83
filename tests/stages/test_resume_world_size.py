"""A checkpoint saved by N ranks resumes with M ranks: under ZeRO-1/2 the weights, step and
schedule come back and Adam's moments start afresh (logged); under ZeRO-3 it is refused with
how to resume. Compared with the uninterrupted 1-rank run of the same config."""

import pytest
from clihelpers import cli, manifest, metrics

# smoke cold-start: 6 steps, a checkpoint every 2
ARGS = ("stage", "cold-start", "conf=smoke")


def test_two_rank_zero2_checkpoint_resumes_with_one_rank(smoke_run, tmp_path):
    run = tmp_path / "r"
    killed = cli(*ARGS, f"run.dir={run}", "deepspeed=zero2", nproc=2,
                 env={"R1PIPE_FAULT_AT_STEP": "4"})  # fmt: skip
    assert killed.returncode != 0 and (run / "cold-start/checkpoints/step-4/COMPLETE").exists()
    res = cli(*ARGS, f"run.dir={run}", "deepspeed=zero2")  # one rank now
    assert res.returncode == 0, res.stderr[-3000:]
    assert "step-4 was saved by another number of ranks" in res.stderr
    assert manifest(run)["stages"]["cold-start"]["status"] == "completed"
    straight = [r["loss"] for r in metrics(smoke_run, "cold-start")]
    resumed = [r["loss"] for r in metrics(run, "cold-start")]
    assert len(resumed) == len(straight) == 6
    # steps 1-5: the same weights (2 ranks = 1 rank, and the weights restored at step 4)
    for a, b in zip(straight[:5], resumed[:5], strict=True):
        assert abs(a - b) < 1e-4 * abs(a)
    # step 6, one update after the restart with fresh moments: the curve goes on, close by
    assert abs(straight[5] - resumed[5]) < 0.05 * straight[5] and resumed[5] < resumed[3]


@pytest.mark.extended
def test_zero3_checkpoint_of_two_ranks_is_refused_with_one_and_says_how(tmp_path):
    run = tmp_path / "r"
    killed = cli(*ARGS, f"run.dir={run}", "deepspeed=zero3", nproc=2,
                 env={"R1PIPE_FAULT_AT_STEP": "2"})  # fmt: skip
    assert killed.returncode != 0
    res = cli(*ARGS, f"run.dir={run}", "deepspeed=zero3")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "saved by 2 ranks under ZeRO-3" in res.stderr
    assert "torchrun --nproc_per_node 2" in res.stderr and "run.resume=false" in res.stderr
