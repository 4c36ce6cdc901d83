"""Before a stage runs: every input its config names, checked in one pass right after
composition (``r1pipe stage``, ``run-all``, ``distill``), with the loaders the stages use.
Above config/ and data/ (it reads data with data/'s loaders), below the CLI."""

from __future__ import annotations

from collections.abc import Iterable

from r1pipe.config.inputs import check_file, model_dir, writable_dir
from r1pipe.config.schema import R1Config
from r1pipe.data.general import load_general
from r1pipe.data.tasks import load_task
from r1pipe.errors import UserError


def validate_inputs(cfg: R1Config, stages: Iterable[str]) -> None:
    """Check, before any of ``stages`` runs, every file and directory they read or write.

    Each stage refuses only what it reads: ``r1pipe stage cold-start`` does not care about
    rl-all's reward models, ``run-all`` checks them before cold-start trains. Data files are
    read in full with the loaders the stages use, so a bad row, a repeated id or a file that
    is not UTF-8 is reported now, not after the earlier stages have trained. Model paths are
    checked on disk; a hub id cannot be checked offline.

    Args:
        cfg: The composed config.
        stages: CLI names: ``cold-start``, ``rl-reasoning``, ``rejection-sft``, ``rl-all``,
            ``distill``.

    Raises:
        UserError: One line naming the key and the path.
    """
    stages = list(stages)
    check_backend(cfg)
    writable_dir(cfg.run.dir, "run.dir")
    if cfg.model.path is not None and (
        not cfg.run.chain or {"cold-start", "distill"} & set(stages)
    ):
        model_dir(cfg.model.path, "model.path")
    if stages:
        load_task(cfg.task)  # every stage reads the task (rl-all and distill its held-out split)
    if "rejection-sft" in stages:
        rs = cfg.stage.rejection_sft
        key = "stage.rejection_sft"
        if rs.general_file:
            load_general(rs.general_file, f"{key}.general_file")
        judged = rs.verify != "rule" or (rs.cot_for_complex and rs.cot_generator == "judge")
        if judged and rs.judge.backend == "hf" and rs.judge.path:
            model_dir(rs.judge.path, f"{key}.judge.path")
        if rs.start == "base" and rs.base_path:
            model_dir(rs.base_path, f"{key}.base_path")
    if "rl-all" in stages:
        rl = cfg.stage.rl_all
        key = "stage.rl_all"
        general = load_general(rl.general_file, f"{key}.general_file")
        if rl.general_fraction > 0 and len(general) <= rl.general_eval_size:
            raise UserError(
                f"{key}.general_file={rl.general_file}: {len(general)} prompts, all held out by "
                f"{key}.general_eval_size={rl.general_eval_size}; none left to train on"
            )
        for kind in ("helpfulness", "harmlessness"):
            rm = getattr(rl, kind)
            if rm.weight != 0 and rm.path is not None:
                model_dir(rm.path, f"{key}.{kind}.path")
    if "distill" in stages and cfg.stage.distill.samples:
        check_file(cfg.stage.distill.samples, "stage.distill.samples")


def check_backend(cfg: R1Config) -> None:
    """The generation back end asked for can be imported (vllm is an optional extra).

    Raises:
        UserError: One line saying how to install it, or to use ``generation=hf``.
    """
    import importlib.util

    if cfg.generation.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        from r1pipe.generation.vllm import VLLM_MISSING

        raise UserError(VLLM_MISSING)
