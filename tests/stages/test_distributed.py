"""Data parallel training under torchrun on CPU (gloo): 2 ranks equal 1 rank."""

import pytest
from clihelpers import cli, manifest, metrics, ok
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.slow

# Same global batch (8 sequences) either way: 1 rank x 2 micro-batches of 4, or 2 ranks x 1.
COMMON = (
    "stage",
    "cold-start",
    "conf=smoke",
    "stage.cold_start.global_batch_size=8",
    "stage.cold_start.micro_batch_size=4",
    "stage.cold_start.save_every=0",
)
TOL = dict(rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dp1")
    ok(cli(*COMMON, f"run.dir={run_dir}", "deepspeed=zero0"))
    return metrics(run_dir)


# ZeRO-3 with several micro-batches per rank also checks gradient accumulation under
# partitioning, here with micro-batches sized in tokens (rows of 64 positions, two a
# micro-batch: as many as the packing makes, agreed between the ranks every step).
@pytest.mark.parametrize(
    ("zero", "micro"),
    [("zero2", ["micro_batch_size=4"]), ("zero3", ["micro_batch_tokens=128", "pack_length=64"])],
)
def test_two_ranks_match_one_rank(tmp_path, one_rank, zero, micro):
    run_dir = tmp_path / zero
    ok(
        cli(
            *COMMON,
            f"run.dir={run_dir}",
            f"deepspeed={zero}",
            *[f"stage.cold_start.{m}" for m in micro],
            nproc=2,
        )
    )
    two = metrics(run_dir)
    assert [m["step"] for m in two] == [m["step"] for m in one_rank]
    for a, b in zip(two, one_rank, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], **TOL), a["step"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), a["step"]
    # rank 0 alone wrote the manifest and metrics (one line per step, no duplicates)
    assert manifest(run_dir)["stages"]["cold-start"]["status"] == "completed"
    model = AutoModelForCausalLM.from_pretrained(run_dir / "cold-start" / "checkpoint")
    assert sum(p.numel() for p in model.parameters()) > 0
