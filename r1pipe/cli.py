"""The ``r1pipe`` command line: parse, compose the config, call a stage's ``run``.

    r1pipe stage cold-start [OVERRIDES...]
    r1pipe run-all [conf=NAME|PATH] [OVERRIDES...]
    r1pipe eval [OVERRIDES...]
    r1pipe report [OVERRIDES...]
    r1pipe distill [OVERRIDES...]
    r1pipe doctor [--stage NAME] [--json] [OVERRIDES...]

OVERRIDES use Hydra's grammar (``key=value``, ``group=option``, ``+key=value``); ``conf=``
picks an experiment (a name under ``conf/experiment/`` or a YAML path). Bad input exits
with status 2 and one line naming the key, file or line.
"""

from __future__ import annotations

import os
import sys

import typer

from r1pipe.errors import UserError

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
OVERRIDES_HELP = "Hydra overrides: key=value, group=option, conf=EXPERIMENT|PATH.yaml"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Train a reasoning model the DeepSeek-R1 way: cold-start SFT, reasoning RL (GRPO), "
    "rejection-sampling SFT, RL for all scenarios. Every stage writes into one run "
    "directory (run.dir=PATH). With no conf=, the tiny CPU default runs.",
)


def _quiet() -> None:
    """Keep the console to our own lines: library progress bars and banners off."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
    except ImportError:
        pass
    import logging

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _fail(msg: str, code: int = 2) -> None:
    if _is_main():
        typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _fail_with(e: UserError) -> None:
    """One line for a user error; a stage stopped by a signal exits 128 + its number."""
    _fail(str(e), getattr(e, "exit_code", 2))


def _compose(overrides: list[str] | None, stages: list[str] | None = None):
    """The validated config; with ``stages``, also every file those stages will read and the
    run directory they write (before any of them runs)."""
    from r1pipe.config import compose

    cfg, dcfg = compose(list(overrides or []))
    if stages is not None:
        # imported only now: it pulls in transformers and math-verify (seconds), which a
        # config error does not need to wait for
        from r1pipe.preflight import validate_inputs

        validate_inputs(cfg, stages)
        _start_checks(cfg, stages)
    return cfg, dcfg


# The doctor's checks a stage also runs at its start (milliseconds): installed versions
# against the pins, tensor parallelism against the GPUs. The others are either the stage's
# own errors (batches vs world size) or only warnings at a start (a node-local run.dir).
START_CHECKS = ("versions", "tensor_parallel")


def _start_checks(cfg, stages: list[str]) -> None:
    from r1pipe.doctor import PROBLEM, cheap_checks

    problems = [
        f.line()
        for f in cheap_checks(cfg, stages)
        if f.level == PROBLEM and f.check in START_CHECKS
    ]
    if problems:
        raise UserError("; ".join(problems) + " (r1pipe doctor checks the whole set-up)")


@app.command(
    context_settings=EXTRA,
    help="Run one stage: cold-start | rl-reasoning | "
    "rejection-sft | rl-all. It reads its input from the run's manifest unless "
    "model.path= is given.",
)
def stage(
    name: str = typer.Argument(..., help="cold-start, rl-reasoning, rejection-sft or rl-all"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
) -> None:
    from r1pipe.stages import STAGES

    if name not in STAGES:
        _fail(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
    fn = STAGES[name]
    try:
        cfg, dcfg = _compose(overrides, [name])
        if fn is None:
            raise UserError(
                f"stage '{name}' is not built yet in this version of r1pipe (built: "
                f"{', '.join(k for k, v in STAGES.items() if v is not None)})"
            )
        _quiet()
        fn(cfg, dcfg)
    except UserError as e:
        _fail_with(e)


@app.command(
    "run-all",
    context_settings=EXTRA,
    help="Run the four stages in order, each from the previous stage's checkpoint; skips "
    "stages already completed with the same config, resumes interrupted ones from their last "
    "checkpoint, and refuses to retrain a completed stage whose config changed unless "
    "--allow-changed. model.path= names the base model of cold-start.",
)
def run_all(
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    start: str | None = typer.Option(
        None, "--from", help="Start at this stage; the earlier ones are used as they are."
    ),
    only: str | None = typer.Option(None, "--only", help="Run only this stage."),
    allow_changed: bool = typer.Option(
        False,
        "--allow-changed",
        help="Retrain completed stages whose config changed (and the stages after them).",
    ),
) -> None:
    try:
        from r1pipe.stages.run_all import plan
        from r1pipe.stages.run_all import run_all as run_stages

        cfg, dcfg = _compose(
            [*(overrides or []), "run.skip_completed=true", "run.chain=true"], plan(start, only)
        )

        _quiet()
        results: dict[str, dict] = {}
        try:
            run_stages(
                cfg, dcfg, start=start, only=only, allow_changed=allow_changed, results=results
            )
        finally:
            if results and _is_main():
                _print_table(results)
    except UserError as e:
        _fail_with(e)


def _print_table(results: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="held-out evaluation after each stage")
    for col in ("stage", "pass@1", "format rate", "mean response tokens"):
        table.add_column(col)
    for name, m in results.items():
        table.add_row(
            name,
            f"{100 * m.get('pass@1', float('nan')):.1f}%",
            f"{100 * m.get('format_rate', float('nan')):.1f}%",
            f"{m.get('mean_response_tokens', float('nan')):.1f}",
        )
    Console(stderr=True).print(table)


# `r1pipe eval` shorthands for keys of the `bench` block.
EVAL_SHORTHANDS = {
    "benchmark": "bench.name",
    "checkpoint": "bench.checkpoint",
    "stage": "bench.stage",
    "predictions": "bench.predictions",
    "out": "bench.out",
    "limit": "bench.limit",
    "data_dir": "bench.data_dir",
}


def _eval_overrides(overrides: list[str]) -> list[str]:
    """Expand the shorthands; sample with the R1 protocol (``eval=r1``) unless told otherwise."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        out.append(f"{EVAL_SHORTHANDS[key]}={value}" if sep and key in EVAL_SHORTHANDS else o)
    if not any(o.startswith("eval=") for o in out):
        out.insert(0, "eval=r1")
    return out


@app.command(
    "eval",
    context_settings=EXTRA,
    help="Evaluate a checkpoint on a benchmark with the R1 protocol (k samples at "
    "temperature 0.6, top-p 0.95; pass@1, cons@k, pass@k), or score predictions=FILE.jsonl "
    "written by any model. Keys: benchmark=gsm8k|math500|aime24|aime25|amc23|PATH, "
    "checkpoint=PATH or stage=NAME (of run.dir=), predictions=FILE, out=DIR, limit=N, "
    "data_dir=DIR, eval.num_samples=K, eval.max_new_tokens=N. Writes eval.json and "
    "samples.jsonl into out= (default RUN_DIR/eval/LABEL/BENCHMARK/).",
)
def eval_cmd(overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP)) -> None:
    try:
        from r1pipe.config.inputs import validate_eval_inputs

        cfg, _ = _compose(_eval_overrides(list(overrides or [])))
        validate_eval_inputs(cfg)
        if not cfg.bench.predictions:  # scoring a predictions file generates nothing
            from r1pipe.preflight import check_backend  # after the config: seconds to import

            check_backend(cfg)
        _quiet()
        from r1pipe.evaluation import run_eval

        run_eval(cfg)
    except UserError as e:
        _fail(str(e))


@app.command(
    context_settings=EXTRA,
    help="Plots (PNG) and an offline HTML summary of a run directory (run.dir=PATH) into "
    "RUN_DIR/report/: rewards, accuracy, response length, reflection words, KL, entropy, clip "
    "fraction, SFT loss; the per-stage table of held-out and benchmark results, the lineage "
    "and each stage's config.",
)
def report(overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP)) -> None:
    try:
        cfg, _ = _compose(overrides)
        from r1pipe.report import write_report

        index = write_report(cfg.run.dir)
        typer.echo(f"report: {index}")
    except UserError as e:
        _fail(str(e))


@app.command(
    context_settings=EXTRA,
    help="Distillation: SFT of a student (model=OPTION, model.path=..., or model.* for a tiny "
    "one) on the accepted rejection-sft samples of run.dir= (or stage.distill.samples=FILE); "
    "writes RUN_DIR/distill/. Not part of run-all.",
)
def distill(overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP)) -> None:
    try:
        cfg, dcfg = _compose(overrides, ["distill"])
        _quiet()
        from r1pipe.stages import distill as distill_stage

        distill_stage.run(cfg, dcfg)
    except UserError as e:
        _fail(str(e))


@app.command(
    context_settings=EXTRA,
    help="Check a config before any training: input files and fields, run directory, chat "
    "template, EOS/pad tokens, a <think> prefill, world size against the batches, tensor "
    "parallelism, prompt + max_new_tokens against the context, the judge server, versions "
    "against the pins, a GPU memory estimate. One line per problem with its fix; exit 0 only "
    "when none. Same OVERRIDES as `r1pipe stage`.",
)
def doctor(
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    stage_name: str | None = typer.Option(
        None, "--stage", help="Check for this stage only (default: the four of run-all)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as a JSON list."),
) -> None:
    try:
        cfg, _ = _compose(overrides)
        _quiet()
        from r1pipe.doctor import RUN_ALL, as_dicts, diagnose, has_problems

        findings = diagnose(cfg, [stage_name] if stage_name else RUN_ALL)
    except UserError as e:
        _fail(str(e))
    if as_json:
        import json

        typer.echo(json.dumps(as_dicts(findings), indent=1))
    else:
        for f in findings:
            color = {"problem": typer.colors.RED, "warning": typer.colors.YELLOW}.get(f.level)
            typer.secho(f.line(), fg=color)
    raise typer.Exit(1 if has_problems(findings) else 0)


def main() -> None:
    # Run directories (checkpoints, data splits, logs) and everything else r1pipe writes are
    # its user's alone: model-written code runs on this machine, and without namespaces it
    # could otherwise read them (the task's solutions among them).
    os.umask(0o077)
    from r1pipe.stages import stop

    stop.install()  # SIGINT/SIGTERM: checkpoint, record `interrupted`, exit with one line
    app(args=sys.argv[1:], prog_name="r1pipe")


if __name__ == "__main__":
    main()
