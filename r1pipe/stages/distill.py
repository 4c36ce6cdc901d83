"""Distillation: SFT of a (smaller) student on the accepted rejection-sft samples of a run, as
the R1 paper distilled DeepSeek-R1's ~800k samples into Qwen and Llama models.

What it does, in order:

1. The student is ``model.*``: ``model.path`` (e.g. ``model=qwen2.5-1.5b``), or a tiny model
   built offline from the ``model`` spec into ``RUN_DIR/distill-base-HASH``.
2. Reads the accepted rows of ``RUN_DIR/rejection-sft/samples.jsonl`` (or
   ``stage.distill.samples``): reasoning rows, and general rows unless ``include_general=false``;
   copies them to ``distill/train.jsonl``, which a resumed run reuses.
3. SFT with cold-start's code (:func:`r1pipe.stages.training.run_sft`); the held-out
   evaluation of the student; the teacher's held-out pass@1 (from the manifest) beside it.

Not a stage of ``run-all``: it writes ``RUN_DIR/distill/`` and a ``distill`` manifest entry.
Departures from the paper: the paper fine-tuned on all 800k samples for two epochs with no RL
afterwards; the tiny default distills the few hundred samples of its rejection-sft run.

Raises:
    UserError: no samples file, or no accepted rows in it; the student cannot be loaded.

Launch: ``r1pipe distill model=qwen2.5-1.5b run.dir=RUN``, or for a tiny student
``r1pipe distill model.hidden_size=64 model.num_layers=2 run.dir=RUN``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from r1pipe.config.schema import R1Config
from r1pipe.data.tasks import load_task
from r1pipe.errors import UserError
from r1pipe.rejection import read_samples, sft_examples
from r1pipe.run_dir import atomic_write_text
from r1pipe.stages.common import begin_stage, finish_stage, heldout_eval, stage_guard
from r1pipe.stages.training import run_sft
from r1pipe.training.dist import barrier

NAME, KEY = "distill", "distill"


def run(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    """Distil the run's accepted samples into ``model``; return the student's metrics."""
    ctx = begin_stage(NAME, KEY, cfg, dcfg)
    if ctx.skipped is not None:
        return dict(ctx.skipped.get("metrics", {}))
    with stage_guard(ctx):
        ds = cfg.stage.distill
        _, held_out = load_task(cfg.task)
        train_file = ctx.stage_dir / "train.jsonl"
        if ctx.resume_from is not None and train_file.is_file():
            rows = read_samples(train_file, "train")
        else:
            source = (
                Path(ds.samples).expanduser()
                if ds.samples
                else ctx.run_dir.stage_dir("rejection-sft") / "samples.jsonl"
            )
            if not ds.samples and not source.is_file():
                raise UserError(
                    f"distill: no samples file {source}; run `r1pipe stage rejection-sft` in "
                    f"this run first or pass stage.{KEY}.samples=PATH"
                )
            rows = [
                r
                for r in read_samples(source, f"stage.{KEY}.samples")
                if r["accepted"] and (ds.include_general or r["source"] != "general")
            ]
            if not rows:
                raise UserError(f"distill: {source} has no accepted samples to train on")
            if ctx.dist.is_main:
                atomic_write_text(train_file, "".join(json.dumps(r) + "\n" for r in rows))
            barrier()
        examples = sft_examples(rows)
        n_reasoning = sum(r["source"] == "reasoning" for r in rows)
        ctx.log(
            f"student {cfg.model.name} on {len(rows)} samples ({n_reasoning} reasoning, "
            f"{len(rows) - n_reasoning} general)"
        )
        metrics: dict[str, Any] = {
            "reasoning_examples": n_reasoning,
            "general_examples": len(rows) - n_reasoning,
            **run_sft(ctx, ds.sft, examples),
        }
        teacher = (ctx.run_dir.stage_entry("rejection-sft") or {}).get("metrics", {})
        if "pass@1" in teacher:
            metrics["teacher_pass@1"] = teacher["pass@1"]
        metrics.update(heldout_eval(ctx, ctx.final_dir, held_out))
        finish_stage(ctx, metrics)
    return metrics
