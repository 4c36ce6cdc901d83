"""`r1pipe stage rejection-sft` and `r1pipe distill` end to end on the smoke config:
samples.jsonl with reasons, acceptance statistics in the manifest, SFT from previous or base,
resume that reuses the samples, distillation into a smaller student, bad input."""

import json
import shutil

import pytest
from clihelpers import cli, manifest, metrics, ok

from r1pipe.rejection import REASONS


def copy_run(src, dst, stages=("cold-start",)):
    """A copy of a run directory with only ``stages`` (and the base model)."""
    dst.mkdir(parents=True)
    shutil.copytree(src / "base-model", dst / "base-model")
    for name in stages:
        shutil.copytree(src / name, dst / name)
    data = manifest(src)
    data["stages"] = {k: v for k, v in data["stages"].items() if k in stages}
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst


def samples(run_dir):
    text = (run_dir / "rejection-sft" / "samples.jsonl").read_text()
    return [json.loads(x) for x in text.splitlines()]


@pytest.fixture(scope="module")
def rsft_run(smoke_run, tmp_path_factory):
    """cold-start (shared) -> rl-reasoning -> rejection-sft, as a user runs them."""
    run_dir = copy_run(smoke_run, tmp_path_factory.mktemp("rsft") / "run")
    ok(cli("stage", "rl-reasoning", "conf=smoke", f"run.dir={run_dir}"))
    ok(cli("stage", "rejection-sft", "conf=smoke", f"run.dir={run_dir}"))
    return run_dir


def test_samples_have_reasons_and_the_manifest_has_the_statistics(rsft_run):
    entry = manifest(rsft_run)["stages"]["rejection-sft"]
    assert entry["status"] == "completed"
    assert entry["parent"] == "rl-reasoning/checkpoint"
    assert entry["checkpoint"] == "rejection-sft/checkpoint"
    m = entry["metrics"]
    rows = samples(rsft_run)
    reasoning = [r for r in rows if r["source"] == "reasoning"]
    general = [r for r in rows if r["source"] == "general"]
    assert len(reasoning) == 8 * 4  # num_prompts x num_samples
    assert len({r["prompt_id"] for r in reasoning}) == m["reasoning_prompts"] == 8
    assert len(general) == m["general_examples"] == 8  # min_general: the smoke model is weak
    for r in rows:
        assert r["reason"] in REASONS and r["accepted"] == (r["reason"] == "accepted")
        assert r["completion"] is not None and r["prompt"] and r["reference"]
    assert any(r["accepted"] for r in rows) and any(not r["accepted"] for r in rows)
    assert all(r["completion"].startswith("<think>\n</think>\n") for r in general)
    # the manifest counts what samples.jsonl holds
    assert m["reasoning_samples"] == 32
    assert m["accepted_reasoning"] == sum(r["accepted"] for r in reasoning)
    assert m["sft_examples"] == m["accepted_reasoning"] + 8 == m["train_examples"]
    for reason in REASONS[1:]:
        assert m[f"rejected/{reason}"] == sum(r["reason"] == reason for r in reasoning)
    assert 0.0 <= m["acceptance_rate"] <= 1.0 and "pass@1" in m
    assert m["sft_start"] == "rl-reasoning/checkpoint" and m["steps"] == 3
    assert [r["step"] for r in metrics(rsft_run, "rejection-sft")] == [1, 2, 3]
    assert (rsft_run / "rejection-sft" / "checkpoint" / "config.json").is_file()
    assert "pass@1" in json.loads((rsft_run / "rejection-sft" / "eval.json").read_text())


def test_sft_from_base_and_resume_reuses_the_samples(rsft_run, tmp_path):
    run_dir = copy_run(rsft_run, tmp_path / "r", stages=("cold-start", "rl-reasoning"))
    args = (
        "stage",
        "rejection-sft",
        "conf=smoke",
        f"run.dir={run_dir}",
        "stage.rejection_sft.start=base",
    )
    assert cli(*args, env={"R1PIPE_FAULT_AT_STEP": "3"}).returncode == 137
    before = (run_dir / "rejection-sft" / "samples.jsonl").read_text()
    res = ok(cli(*args))
    assert "reusing 40 samples" in res.stderr and "resuming from step-2" in res.stderr
    assert (run_dir / "rejection-sft" / "samples.jsonl").read_text() == before
    entry = manifest(run_dir)["stages"]["rejection-sft"]
    assert entry["status"] == "completed" and entry["metrics"]["sft_start"] == "base-model"
    assert [r["step"] for r in metrics(run_dir, "rejection-sft")] == [1, 2, 3]


STUDENT = [
    "model.hidden_size=16",
    "model.intermediate_size=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.num_kv_heads=1",
]


def test_distill_into_a_smaller_student(rsft_run):
    from transformers import AutoModelForCausalLM

    ok(cli("distill", "conf=smoke", f"run.dir={rsft_run}", *STUDENT))
    entry = manifest(rsft_run)["stages"]["distill"]
    assert entry["status"] == "completed" and entry["checkpoint"] == "distill/checkpoint"
    assert entry["parent"].startswith("distill-base-")
    rows = [json.loads(x) for x in (rsft_run / "distill" / "train.jsonl").read_text().splitlines()]
    assert rows == [r for r in samples(rsft_run) if r["accepted"]]
    m = entry["metrics"]
    assert m["train_examples"] == len(rows) and m["steps"] == 3
    assert "pass@1" in m and "teacher_pass@1" in m
    student = AutoModelForCausalLM.from_pretrained(rsft_run / "distill" / "checkpoint")
    teacher = AutoModelForCausalLM.from_pretrained(rsft_run / "rejection-sft" / "checkpoint")
    assert student.config.hidden_size == 16 and student.config.num_hidden_layers == 1
    assert student.num_parameters() < teacher.num_parameters() / 2


def test_distill_from_a_samples_file_keeps_accepted_reasoning_rows(tmp_path):
    def row(pid, source, accepted):
        return {
            "prompt_id": pid,
            "source": source,
            "prompt": "12+30=?" if source == "reasoning" else "Say hello.",
            "reference": "42",
            "completion": "<think>\n2+0=2\n1+3=4\n</think>\n12+30 = <answer>42</answer>",
            "accepted": accepted,
            "reason": "accepted" if accepted else "incorrect",
        }

    f = tmp_path / "samples.jsonl"
    rows = [row("a", "reasoning", True), row("b", "reasoning", False), row("g", "general", True)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "r"
    ok(
        cli(
            "distill",
            "conf=smoke",
            f"run.dir={run_dir}",
            f"stage.distill.samples={f}",
            "stage.distill.include_general=false",
            "stage.distill.sft.global_batch_size=2",
            "stage.distill.sft.micro_batch_size=1",
            *STUDENT,
        )
    )
    m = manifest(run_dir)["stages"]["distill"]["metrics"]
    assert m["reasoning_examples"] == 1 and m["general_examples"] == 0
    assert "teacher_pass@1" not in m  # no rejection-sft stage in this run


def test_bad_input_one_clear_message(smoke_run, tmp_path):
    ckpt = smoke_run / "cold-start" / "checkpoint"

    def fails(*args):
        res = cli(*args)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
        return line

    base = ("stage", "rejection-sft", "conf=smoke", f"run.dir={tmp_path}/r", f"model.path={ckpt}")
    line = fails(*base, "stage.rejection_sft.general_file=/no/such.jsonl")
    assert "stage.rejection_sft.general_file=/no/such.jsonl: no such file" in line
    assert not (tmp_path / "r").exists()  # refused before the stage touches the run directory
    line = fails(*base, "stage.rejection_sft.filters.target_language=xx")
    assert "stage.rejection_sft.filters.target_language" in line
    line = fails("distill", "conf=smoke", f"run.dir={tmp_path}/d", *STUDENT)
    assert "no samples file" in line and "stage.distill.samples" in line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_id": "a"}\n')
    line = fails("distill", "conf=smoke", f"run.dir={tmp_path}/d", f"stage.distill.samples={bad}")
    assert f"{bad}:1: row has no field(s) source" in line


@pytest.mark.slow
def test_two_ranks_share_the_sampling(rsft_run, tmp_path):
    """Each rank samples its share of the prompts; rank 0 writes every sample once."""
    run_dir = copy_run(rsft_run, tmp_path / "r", stages=("cold-start", "rl-reasoning"))
    ok(
        cli(
            "stage", "rejection-sft", "conf=smoke", f"run.dir={run_dir}", "deepspeed=zero2", nproc=2
        )
    )
    rows = samples(run_dir)
    reasoning = [r for r in rows if r["source"] == "reasoning"]
    assert len(reasoning) == 32 and len({r["prompt_id"] for r in reasoning}) == 8
    # in prompt order, as one rank would have written them
    assert [r["prompt_id"] for r in reasoning] == [
        r["prompt_id"] for r in samples(rsft_run) if r["source"] == "reasoning"
    ]
    entry = manifest(run_dir)["stages"]["rejection-sft"]
    assert entry["status"] == "completed" and entry["metrics"]["reasoning_samples"] == 32
    assert [r["step"] for r in metrics(run_dir, "rejection-sft")] == [1, 2, 3]


def test_rule_then_judge_with_an_openai_compatible_endpoint(smoke_run, tmp_path):
    """The stage asks a (stub) OpenAI-compatible server about what the rule rejects."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked = []

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            asked.append(body["messages"][0]["content"])
            reply = {"choices": [{"message": {"content": "**Verdict:** Correct."}}]}
            self.send_response(200)
            self.end_headers()
            self.wfile.write(json.dumps(reply).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run_dir = tmp_path / "r"
        ok(
            cli(
                "stage",
                "rejection-sft",
                "conf=smoke",
                f"run.dir={run_dir}",
                f"model.path={smoke_run / 'cold-start' / 'checkpoint'}",
                "stage.rejection_sft.verify=rule_then_judge",
                "stage.rejection_sft.judge.backend=openai",
                f"stage.rejection_sft.judge.base_url=http://127.0.0.1:{server.server_address[1]}/v1",
                "stage.rejection_sft.judge.model=stub",
                # the smoke model writes no format and never stops: let its samples reach the judge
                "stage.rejection_sft.filters.require_format=false",
                "stage.rejection_sft.filters.reject_truncated=false",
                "stage.rejection_sft.filters.mixed_language=false",
                "stage.rejection_sft.filters.code_in_reasoning=false",
            )
        )
    finally:
        server.shutdown()
        server.server_close()
    rows = [r for r in samples(run_dir) if r["source"] == "reasoning"]
    judged = [r for r in rows if "judge" in r]
    assert len(judged) == len(asked) == 32  # the rule rejected every sample of the smoke model
    assert all(r["judge"] == "**Verdict:** Correct." and r["correct"] is True for r in judged)
    assert {r["reason"] for r in rows} <= {"accepted", "duplicate", "over_k"}
    assert sum(r["accepted"] for r in rows) == 16  # K=2 for each of the 8 prompts
    m = manifest(run_dir)["stages"]["rejection-sft"]["metrics"]
    assert m["judge_calls"] == 32 and m["judge_failed"] == 0 and m["accepted_reasoning"] == 16
    assert "Reference answer:" in asked[0]
