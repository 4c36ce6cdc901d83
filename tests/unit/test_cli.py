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


def test_run_all_refuses_a_later_stage_file_before_cold_start(monkeypatch, tmp_path):
    """rl-all's reward model path was read only when rl-all started, after three stages."""
    import r1pipe.stages.run_all as run_all_module

    monkeypatch.setattr(run_all_module, "run_all", _never_called)
    res = CliRunner().invoke(
        cli.app,
        [
            "run-all",
            "conf=smoke",
            f"run.dir={tmp_path}/r",
            "stage.rl_all.helpfulness.path=/no/such/rm",
        ],
    )
    assert res.exit_code == 2, res.output
    assert res.output == "error: stage.rl_all.helpfulness.path=/no/such/rm: no such directory\n"
    assert not (tmp_path / "r").exists()


def test_unwritable_places_are_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(STAGES, "cold-start", _never_called)
    # /sys refuses new files even to root (a chmod'ed directory would not stop root)
    res = CliRunner().invoke(cli.app, ["stage", "cold-start", "conf=smoke", "run.dir=/sys/r1"])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: run.dir=/sys/r1: cannot write in /sys (")
    assert res.output.count("\n") == 1
    out = tmp_path / "eval.json"
    out.write_text("{}")
    pred = tmp_path / "pred.jsonl"
    pred.write_text('{"id": "1", "completion": "\\\\boxed{1}", "answer": "1"}\n')
    res = CliRunner().invoke(cli.app, ["eval", f"predictions={pred}", f"out={out}"])
    assert res.exit_code == 2, res.output
    assert res.output == f"error: out={out}: exists and is not a directory\n"


def test_a_broken_experiment_file_is_one_line_from_the_real_cli(tmp_path):
    """Was 345 lines of traceback naming a temporary copy of the file."""
    from clihelpers import cli as run_cli

    exp = tmp_path / "mine.yaml"
    exp.write_text("# @package _global_\nstage:\n  cold_start: [\n")
    res = run_cli("stage", "cold-start", f"conf={exp}", f"run.dir={tmp_path}/r")
    assert res.returncode == 2, res.stderr
    assert res.stderr == (
        f"error: conf={exp}: not valid YAML (line 4, column 1: expected the node content, but "
        "found '<stream end>')\n"
    )


# math-verify (0.5 s) is still imported: the config's checks read its verifier names
HEAVY = ("torch", "transformers", "deepspeed")


def test_a_config_error_imports_none_of_the_heavy_libraries(tmp_path):
    """A typo in a key was answered after about 10 s spent importing torch and transformers
    (the config's check of generation.backend pulled in the hf back end, and the input checks
    were imported before the config was read); 1.8 s here now."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from r1pipe.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    for command in (
        ["stage", "cold-start", "conf=smoke", "model.foo=1", f"run.dir={tmp_path}/r"],
        ["eval", "conf=smoke", "model.foo=1"],
    ):
        res = subprocess.run(
            [sys.executable, "-c", script, *command], capture_output=True, text=True, timeout=120
        )
        assert res.stderr == "error: config error: unknown config key 'model.foo'\n", res.stderr
        assert res.stdout.splitlines() == ["exit 2", "[]"], (command, res.stdout)
    assert not (tmp_path / "r").exists()
