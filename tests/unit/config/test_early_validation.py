"""Issue 12, "validation that comes too late, or never": what composition refuses, in one line
naming the key or the file, before any stage runs."""

import pytest

from r1pipe.config import compose
from r1pipe.errors import UserError


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
