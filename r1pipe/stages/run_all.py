"""``r1pipe run-all``: the four stages in order, each from the previous stage's checkpoint.

What it does with a run directory that already holds some of the run:

* a stage ``completed`` with the config hash the current config gives is skipped (its
  metrics come from the manifest);
* a stage left ``running`` (killed) or ``failed`` with the same hash resumes from its last
  complete periodic checkpoint (``STAGE/checkpoints/step-N/``);
* a ``completed`` stage whose hash differs (its knobs, the model, task, eval or seed
  changed, or a stage before it will be retrained) is not silently retrained: run-all
  refuses, naming the stage and the changed keys, unless ``allow_changed``.

A stage's hash covers its parent's hash (:meth:`~r1pipe.run_dir.RunDir.parent_identity`),
so retraining a stage retrains every stage after it.

``start`` (``--from``) runs that stage and the ones after it, using the earlier stages as
they are in the manifest; ``only`` (``--only``) runs one stage.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from r1pipe.config.compose import from_yaml
from r1pipe.config.schema import R1Config
from r1pipe.errors import UserError
from r1pipe.run_dir import (
    PARENT_STAGE,
    STAGE_ORDER,
    RunDir,
    chained_parent,
    config_hash,
    refresh_config_hashes,
)
from r1pipe.stages import STAGES, stop
from r1pipe.training.dist import init_distributed

# The parts of the config a stage's hash covers (run_dir.config_hash), for naming changes.
HASHED = ("model", "task", "eval")


def stage_key(stage: str) -> str:
    """``rl-reasoning`` -> ``rl_reasoning`` (its block under ``stage.``)."""
    return stage.replace("-", "_")


def plan(start: str | None = None, only: str | None = None) -> list[str]:
    """The stages to run, in order.

    >>> plan()
    ['cold-start', 'rl-reasoning', 'rejection-sft', 'rl-all']
    >>> plan(start="rejection-sft"), plan(only="rl-all")
    (['rejection-sft', 'rl-all'], ['rl-all'])
    """
    for flag, value in (("--from", start), ("--only", only)):
        if value is not None and value not in STAGE_ORDER:
            raise UserError(
                f"run-all {flag} {value}: unknown stage; stages: {', '.join(STAGE_ORDER)}"
            )
    if start is not None and only is not None:
        raise UserError("run-all: give --from or --only, not both")
    if only is not None:
        return [only]
    return list(STAGE_ORDER[STAGE_ORDER.index(start) :] if start else STAGE_ORDER)


def expected_hashes(
    cfg: R1Config, dcfg: DictConfig, run_dir: RunDir, todo: list[str]
) -> dict[str, str]:
    """The config hash each stage of ``todo`` will get, as :func:`begin_stage` computes it:
    a stage before ``todo`` contributes its hash from the manifest, one in ``todo`` the hash
    it is about to get."""
    hashes: dict[str, str] = {}
    manifest = run_dir.read_manifest()["stages"]
    for stage in STAGE_ORDER:
        prev = PARENT_STAGE.get(stage)
        if stage not in todo:
            hashes[stage] = (manifest.get(stage) or {}).get("config_hash", "")
            continue
        if prev is None:  # as resolve_start_model: model.path, or the tiny base built in the run
            parent = cfg.model.path if cfg.model.path is not None else "base-model"
        else:
            entry = manifest.get(prev) or {}
            parent = entry.get("checkpoint") or f"{prev}/checkpoint"
            parent = chained_parent(parent, hashes[prev])
        hashes[stage] = config_hash(dcfg, stage_key(stage), parent)
    return hashes


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): tree}


def changed_keys(run_dir: RunDir, stage: str, dcfg: DictConfig) -> list[str]:
    """``key: old -> new`` for each hashed key that differs from what ``stage`` ran with
    (``STAGE/config.yaml``); empty when only its input changed or the file is gone."""
    saved_path = run_dir.stage_dir(stage) / "config.yaml"
    if not saved_path.is_file():
        return []
    try:  # through the schema: keys added since it ran show with their defaults, not "(none)"
        saved = OmegaConf.to_container(from_yaml(saved_path)[1], resolve=True)
    except UserError:
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
    now = OmegaConf.to_container(dcfg, resolve=True)
    assert isinstance(saved, dict) and isinstance(now, dict)
    key = stage_key(stage)

    def relevant(tree: dict) -> dict[str, Any]:
        part = {k: tree.get(k) for k in HASHED}
        part["run"] = {"seed": (tree.get("run") or {}).get("seed")}
        part["stage"] = {key: (tree.get("stage") or {}).get(key)}
        return _flatten(part)

    old, new = relevant(saved), relevant(now)
    out = []
    for k in sorted(set(old) | set(new)):
        before, after = old.get(k, "(none)"), new.get(k, "(none)")
        if before != after:
            out.append(f"{k}: {before} -> {after}")
    return out


def check_unchanged(cfg: R1Config, dcfg: DictConfig, todo: list[str], allow_changed: bool) -> None:
    """Refuse (UserError) to retrain a completed stage whose config changed, unless allowed."""
    run_dir = RunDir(cfg.run.dir)
    manifest = run_dir.read_manifest()["stages"]
    for stage in STAGE_ORDER[: STAGE_ORDER.index(todo[0])]:
        entry = manifest.get(stage) or {}
        if entry.get("status") != "completed":
            raise UserError(
                f"run-all: {todo[0]} starts after {stage}, which is not completed in "
                f"{run_dir.manifest_path} (status: {entry.get('status', 'absent')}); "
                f"run it first, e.g. run-all --from {stage}"
            )
    if allow_changed:
        return
    expected = expected_hashes(cfg, dcfg, run_dir, todo)
    for stage in todo:
        entry = manifest.get(stage) or {}
        if entry.get("status") != "completed" or entry.get("config_hash") == expected[stage]:
            continue
        later = todo[todo.index(stage) + 1 :]
        changes = changed_keys(run_dir, stage, dcfg)
        why = (
            "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
            if changes
            else f"its input, the {PARENT_STAGE.get(stage, 'base')} model, will change"
        )
        raise UserError(
            f"run-all: {stage} is completed in {run_dir.manifest_path} with another config "
            f"({why}); continuing would retrain it"
            + (f" and {', '.join(later)}" if later else "")
            + ". Pass --allow-changed to do that, or use another run.dir="
        )


def run_all(
    cfg: R1Config,
    dcfg: DictConfig,
    *,
    start: str | None = None,
    only: str | None = None,
    allow_changed: bool = False,
    results: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the planned stages; return every completed stage's metrics, in stage order.

    ``cfg`` must have been composed with ``run.skip_completed=true`` and ``run.chain=true``
    (the CLI adds both). ``results``, when given, is filled in as stages finish, so that a
    caller can show what completed when a later stage fails.
    """
    results = {} if results is None else results
    todo = plan(start, only)
    refresh_config_hashes(RunDir(cfg.run.dir))  # a run directory of an older r1pipe
    check_unchanged(cfg, dcfg, todo, allow_changed)
    manifest = RunDir(cfg.run.dir).read_manifest()["stages"]
    for stage in STAGE_ORDER[: STAGE_ORDER.index(todo[0])]:  # used as they are
        results[stage] = dict(manifest[stage].get("metrics", {}))
    for i, stage in enumerate(todo):
        fn = STAGES[stage]
        if fn is None:
            raise UserError(f"run-all: stage '{stage}' is not built yet in this version of r1pipe")
        results[stage] = fn(cfg, dcfg)
        if i + 1 < len(todo):
            # A signal during the stage's last step, export or evaluation: it completed, and
            # the next one does not start.
            signum = stop.requested(init_distributed().device)
            if signum:
                raise stop.StageInterrupted(
                    f"run-all interrupted by {stop.signal_name(signum)} after {stage} "
                    f"completed; run the same command to continue with {todo[i + 1]}",
                    signum,
                )
    return results
