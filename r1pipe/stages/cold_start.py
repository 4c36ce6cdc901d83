"""Stage 1, cold start: SFT on long chain-of-thought data in the R1 format.

What it does, in order:

1. Finds its start model: ``model.path``, or the tiny base model built offline into
   ``RUN_DIR/base-model`` (the default).
2. Builds the task's train and held-out examples; every train example's target is
   ``<think> reasoning </think>`` then a summary with the checkable answer.
3. Tokenizes prompt and response separately; the loss is on response tokens only.
4. Trains with the DeepSpeed engine (:class:`r1pipe.training.sft.SFTTrainer` in the one fit
   loop): global batches drawn in a seeded order, split over ranks and micro-batches, each
   micro-batch packed into one row (no padding compute). The loss is the sum over response
   tokens divided by the response tokens of the whole global batch.
5. Saves a resumable checkpoint every ``save_every`` steps; resumes from the last complete one
   when the manifest says the stage was interrupted with the same config.
6. Exports the final model in HF format to ``cold-start/checkpoint`` and evaluates it on the
   held-out prompts (``eval.json``: pass@1, format_rate).

Departures from the paper: the paper's cold-start data is thousands of curated long CoTs; the
tiny default generates its CoTs from the synthetic task (``r1pipe/data/synthetic.py``).

Raises:
    UserError: the task has no worked solutions, a data file or row is bad, the start model
        cannot be loaded.

Launch: ``r1pipe stage cold-start [OVERRIDES]``, or for data parallel
``torchrun --nproc_per_node 2 -m r1pipe stage cold-start deepspeed=zero2``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from r1pipe.config.schema import R1Config
from r1pipe.data.tasks import load_task
from r1pipe.errors import UserError
from r1pipe.stages.common import begin_stage, finish_stage, heldout_eval, stage_guard
from r1pipe.stages.training import run_sft

NAME, KEY = "cold-start", "cold_start"


def run(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    """Run the cold-start stage; return its final metrics (held-out eval included)."""
    ctx = begin_stage(NAME, KEY, cfg, dcfg)
    if ctx.skipped is not None:
        return dict(ctx.skipped.get("metrics", {}))
    with stage_guard(ctx):
        examples, held_out = load_task(cfg.task)
        missing = [e.id for e in examples if not e.response]
        if missing:
            raise UserError(
                f"task {cfg.task.name}: {len(missing)} train examples have no worked solution "
                f"(first id {missing[0]}); cold-start needs task.solution_field"
            )
        sft = cfg.stage.cold_start
        metrics = run_sft(ctx, sft, examples[: sft.max_examples] if sft.max_examples else examples)
        metrics.update(heldout_eval(ctx, ctx.final_dir, held_out))
        finish_stage(ctx, metrics)
    return metrics
