"""Issue 12, "validation that comes too late, or never": what composition refuses, in one line
naming the key or the file, before any stage runs."""

import pytest

from r1pipe.config import compose
from r1pipe.config.inputs import validate_eval_inputs
from r1pipe.errors import UserError
from r1pipe.preflight import validate_inputs


def _refused(overrides: list[str]) -> str:
    with pytest.raises(UserError) as e:
        compose(["conf=smoke", *overrides])
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ---- Hydra's `+` adds keys the schema never saw ----------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+stage.cold_start.max_stepz=5",
            "config error: unknown config key 'stage.cold_start.max_stepz' (did you mean "
            "'stage.cold_start.max_steps'?)",
        ),
        ("+stage.max_steps=abc", "config error: unknown config key 'stage.max_steps'"),
        ("++stage.cold_start.max_stepz=5", "config error: unknown config key"),
        ("+foo=1", "config error: unknown config key 'foo'"),
        ("+model.hidden_sise=3", "(did you mean 'model.hidden_size'?)"),
    ],
)
def test_plus_cannot_add_a_key_the_schema_lacks(override, message):
    assert message in _refused([override])


def test_plus_into_an_open_mapping_is_still_typed():
    # deepspeed.extra is dict[str, Any] and the reward weights dict[str, float]: new keys are
    # fine there, values of the wrong type are not.
    cfg, _ = compose(["conf=smoke", "+deepspeed.extra.wall_clock_breakdown=true"])
    assert cfg.deepspeed.extra == {"wall_clock_breakdown": True}
    msg = _refused(["+stage.rl_reasoning.rewards.accuracy2=abc"])
    assert "'stage.rl_reasoning.rewards.accuracy2'" in msg


# ---- conf=PATH: one line naming the user's file ---------------------------------------------

GOOD = "# @package _global_\nexperiment: mine\nstage:\n  cold_start:\n    max_steps: 7\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"# @package _global_\nstage:\n  cold_start: [\n",
            "not valid YAML (line 4, column 1: expected the node content, but found "
            "'<stream end>')",
        ),
        (
            b"# @package _global_\nexperiment: caf\xe9\n",
            "not UTF-8 text (byte 0xe9 at line 2, column 16); save it as UTF-8",
        ),
        (
            b"stage:\n  cold_start:\n    max_steps: 3\n",
            "has no '# @package' header; an experiment sets top-level keys (model:, task:, "
            "stage:, ...), so make '# @package _global_' its first line",
        ),
        (
            # a plain comment before the header ends Hydra's header: the same mistake
            b"# my run\n# @package _global_\nexperiment: x\n",
            "has no '# @package' header",
        ),
        (
            b"# @package _global_\n- a\n- b\n",
            "an experiment file is a mapping of config keys (model:, task:, stage:, ...), not "
            "a list; see conf/experiment/smoke.yaml",
        ),
        (b"# @package _global_\n# nothing yet\n", "has no config keys"),
        (b"", "is empty (0 bytes)"),
    ],
    ids=["syntax", "latin-1", "no-header", "comment-first", "list", "comments-only", "empty"],
)
def test_bad_experiment_file_named_in_one_line(tmp_path, content, message):
    exp = tmp_path / "mine.yaml"
    exp.write_bytes(content)
    with pytest.raises(UserError) as e:
        compose([f"conf={exp}"])
    msg = str(e.value)
    assert msg.startswith(f"conf={exp}: ") and message in msg, msg
    assert "\n" not in msg and "r1pipe-conf-" not in msg  # not the private copy


def test_experiment_file_that_is_a_directory(tmp_path):
    (tmp_path / "exp.yaml").mkdir()
    with pytest.raises(UserError, match=r"conf=.*exp.yaml: is a directory, not a file$"):
        compose([f"conf={tmp_path / 'exp.yaml'}"])


def test_experiment_file_with_a_byte_order_mark_composes(tmp_path):
    exp = tmp_path / "mine.yaml"
    exp.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    cfg, _ = compose([f"conf={exp}"])
    assert cfg.experiment == "mine" and cfg.stage.cold_start.max_steps == 7


def test_composition_error_in_experiment_file_names_the_file(tmp_path):
    exp = tmp_path / "mine.yaml"
    exp.write_text("# @package _global_\ndefaults:\n  - override /model: huge\n")
    with pytest.raises(UserError) as e:
        compose([f"conf={exp}"])
    assert "r1pipe-conf-" not in str(e.value) and "\n" not in str(e.value)
    assert "model/huge" in str(e.value)


# ---- every file the config names, checked before any stage runs -----------------------------

PIPELINE = ["cold-start", "rl-reasoning", "rejection-sft", "rl-all"]


def _inputs_refused(overrides: list[str], stages=PIPELINE) -> str:
    cfg, _ = compose(["conf=smoke", *overrides])
    with pytest.raises(UserError) as e:
        validate_inputs(cfg, stages)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_the_defaults_pass(tmp_path):
    cfg, _ = compose(["conf=smoke", f"run.dir={tmp_path}/run"])
    validate_inputs(cfg, [*PIPELINE, "distill"])
    assert not (tmp_path / "run").exists()  # nothing created


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "stage.rl_all.general_file=/no/prompts.jsonl",
            "stage.rl_all.general_file=/no/prompts.jsonl: no such file",
        ),
        (
            "stage.rejection_sft.general_file=/no/chat.jsonl",
            "stage.rejection_sft.general_file=/no/chat.jsonl: no such file",
        ),
        (
            "stage.rl_all.helpfulness.path=/no/rm",
            "stage.rl_all.helpfulness.path=/no/rm: no such directory",
        ),
        (
            "stage.rl_all.harmlessness.path=./no-rm",
            "stage.rl_all.harmlessness.path=./no-rm: no such directory",
        ),
        ("stage.rl_all.general_eval_size=1000", "none left to train on"),
        ("model.path=/no/model", "model.path=/no/model: no such directory"),
    ],
)
def test_a_later_stage_file_is_refused_before_the_first_stage(override, message):
    assert message in _inputs_refused([override])


def test_judge_base_model_and_distill_samples(tmp_path):
    judge = [
        "stage.rejection_sft.verify=judge",
        "stage.rejection_sft.judge.backend=hf",
        f"stage.rejection_sft.judge.path={tmp_path}",  # a directory without config.json
    ]
    assert _inputs_refused(judge) == (
        f"stage.rejection_sft.judge.path={tmp_path}: not a Hugging Face model directory "
        "(no config.json)"
    )
    (tmp_path / "f").write_text("x")
    base = ["stage.rejection_sft.start=base", f"stage.rejection_sft.base_path={tmp_path / 'f'}"]
    assert "is a file, not a model directory" in _inputs_refused(base)
    samples = [f"stage.distill.samples={tmp_path}"]
    assert _inputs_refused(samples, ["distill"]) == (
        f"stage.distill.samples={tmp_path}: is a directory, not a file"
    )


def test_each_stage_refuses_only_what_it_reads(tmp_path):
    missing = ["stage.rl_all.helpfulness.path=/no/rm"]
    # the stage that reads it refuses; rl-all's reward model is not cold-start's business
    assert "stage.rl_all.helpfulness.path=/no/rm" in _inputs_refused(missing, ["rl-all"])
    cfg, _ = compose(["conf=smoke", *missing])
    assert validate_inputs(cfg, ["cold-start"]) is None  # no UserError
    cfg, _ = compose(["conf=smoke", "stage.rl_all.helpfulness.path=hub-org/rm"])
    assert validate_inputs(cfg, PIPELINE) is None  # a hub id is left to the loader
    cfg, _ = compose(["conf=smoke", *missing, "stage.rl_all.helpfulness.weight=0"])
    assert validate_inputs(cfg, PIPELINE) is None  # weight 0: never loaded


def test_task_rows_are_read_before_any_stage(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"question": "q", "answer": ["#### 3"]}\n')
    cfg, _ = compose(["task=gsm8k", f"task.train_file={f}", f"task.eval_file={f}"])
    with pytest.raises(UserError, match=r"d.jsonl:1: field 'answer' .* got a list$"):
        validate_inputs(cfg, ["rl-all"])


def test_run_dir_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("x")
    msg = _inputs_refused([f"run.dir={tmp_path / 'file'}"])
    assert msg == f"run.dir={tmp_path / 'file'}: exists and is not a directory"
    msg = _inputs_refused([f"run.dir={tmp_path / 'file' / 'run'}"])
    assert msg == f"run.dir={tmp_path / 'file' / 'run'}: {tmp_path / 'file'} is not a directory"
    # /sys refuses new files even to root (a chmod'ed directory would not stop root)
    msg = _inputs_refused(["run.dir=/sys/r1pipe-run"])
    assert msg.startswith("run.dir=/sys/r1pipe-run: cannot write in /sys (")


def test_eval_out_that_is_a_file(tmp_path):
    out = tmp_path / "eval.json"
    out.write_text("{}")
    cfg, _ = compose(["conf=smoke", f"bench.out={out}", f"bench.predictions={out}"])
    with pytest.raises(UserError) as e:
        validate_eval_inputs(cfg)
    assert str(e.value) == f"out={out}: exists and is not a directory"
    cfg, _ = compose(["conf=smoke", f"bench.out={tmp_path}/o", f"bench.predictions={tmp_path}"])
    with pytest.raises(UserError, match=r"^predictions=.*: is a directory, not a file$"):
        validate_eval_inputs(cfg)
