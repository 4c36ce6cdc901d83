"""The CLI's contract for bad config: exit 2 and one line, whenever the error is found."""

from typer.testing import CliRunner

from r1pipe import cli
from r1pipe.config.schema import ConfigError
from r1pipe.stages import STAGES


def test_a_config_error_raised_after_composition_is_one_line(monkeypatch, tmp_path):
    def stage(cfg, dcfg):  # a check that can only run once the stage is under way
        raise ConfigError("stage.cold_start.micro_batch_size: too large for this GPU")

    monkeypatch.setitem(STAGES, "cold-start", stage)
    res = CliRunner().invoke(
        cli.app, ["stage", "cold-start", "conf=smoke", f"run.dir={tmp_path}/r"]
    )
    assert res.exit_code == 2, res.output
    assert res.output == "error: stage.cold_start.micro_batch_size: too large for this GPU\n"


def _never_called(cfg, dcfg):
    raise AssertionError("the stage ran")


def test_plus_override_of_an_unknown_key_is_refused_before_the_stage(monkeypatch, tmp_path):
    monkeypatch.setitem(STAGES, "cold-start", _never_called)
    res = CliRunner().invoke(
        cli.app,
        ["stage", "cold-start", "conf=smoke", f"run.dir={tmp_path}/r", "+stage.max_steps=abc"],
    )
    assert res.exit_code == 2, res.output
    assert res.output == "error: config error: unknown config key 'stage.max_steps'\n"
    assert not (tmp_path / "r").exists()
