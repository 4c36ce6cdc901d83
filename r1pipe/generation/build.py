"""The one place a generator is built from ``cfg.generation``.

Stages, evaluation and the hf judge all call :func:`build_generator`, so a knob of
``generation.*`` means the same thing everywhere, and a back end that is asked for but cannot
run fails here with one message instead of being replaced by another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1pipe.config.schema import ConfigError, GenerationConfig
from r1pipe.generation.base import Generator


def build_generator(
    model: Any,
    tokenizer: Any,
    gen_cfg: GenerationConfig,
    *,
    synced_gpus: bool = False,
    batch_size: int | None = None,
    model_path: str | Path | None = None,
    dist: Any = None,
    seed: int = 0,
    training: bool = False,
) -> Generator:
    """The generator ``gen_cfg`` describes, sampling from ``model``.

    Args:
        model: The causal LM, already on its device (read at call time, so a trainer's
            updates are seen without a copy; vllm starts from ``model_path`` and takes
            updates through ``update_weights``).
        tokenizer: Its tokenizer.
        gen_cfg: ``cfg.generation``: the back end and its knobs.
        synced_gpus: Keep ranks in lockstep (the model is ZeRO-3 partitioned).
        batch_size: Sequences per decode batch, for callers with their own batch size
            (``eval.batch_size``, ``judge.batch_size``); None: ``gen_cfg.batch_size``.
        model_path: The checkpoint ``model`` was loaded from (vllm loads it itself).
        dist: This rank (vllm: world size and rank of the engine's group).
        seed: vllm: the base sampling seed (each tensor-parallel group adds its index).
        training: vllm: colocated with a trainer (sleeps between generations when enabled).

    Raises:
        ConfigError: ``gen_cfg.backend`` is not a back end this version can build, vllm is
            not installed, or vllm is asked for without a checkpoint path.
    """
    if gen_cfg.backend == "hf":
        from r1pipe.generation.hf import HFGenerator

        return HFGenerator(
            model,
            tokenizer,
            batch_size=gen_cfg.batch_size if batch_size is None else batch_size,
            synced_gpus=synced_gpus,
            decoder=gen_cfg.decoder,
            num_threads=gen_cfg.num_threads,
            fused_step=gen_cfg.fused_step,
            static_batch=gen_cfg.static_batch,
            cuda_graphs=gen_cfg.cuda_graphs,
        )
    if gen_cfg.backend == "vllm":
        from r1pipe.generation.vllm import import_vllm, start_vllm

        import_vllm()  # one clear error when it is not installed, before anything else
        if model_path is None:
            raise ConfigError("generation.backend: vllm needs the checkpoint's path here")
        config = model.config
        context = gen_cfg.max_model_len or getattr(config, "max_position_embeddings", 0)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        return start_vllm(
            model_path,
            tokenizer,
            gen_cfg,
            max_model_len=context,
            dtype=dtype,
            seed=seed,
            rank=getattr(dist, "rank", 0),
            world_size=getattr(dist, "world_size", 1),
            zero3=synced_gpus,
            training=training,
        )
    raise ConfigError(f"generation.backend: unknown back end {gen_cfg.backend!r}; use hf or vllm")
