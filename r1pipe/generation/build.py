"""The one place a generator is built from ``cfg.generation``.

Stages, evaluation and the hf judge all call :func:`build_generator`, so a knob of
``generation.*`` means the same thing everywhere, and a back end that is asked for but cannot
run fails here with one message instead of being replaced by another.
"""

from __future__ import annotations

from typing import Any

from r1pipe.config.schema import VLLM_NOT_BUILT, ConfigError, GenerationConfig
from r1pipe.generation.base import Generator


def build_generator(
    model: Any,
    tokenizer: Any,
    gen_cfg: GenerationConfig,
    *,
    synced_gpus: bool = False,
    batch_size: int | None = None,
) -> Generator:
    """The generator ``gen_cfg`` describes, sampling from ``model``.

    Args:
        model: The causal LM, already on its device (read at call time, so a trainer's
            updates are seen without a copy).
        tokenizer: Its tokenizer.
        gen_cfg: ``cfg.generation``: the back end and its knobs.
        synced_gpus: Keep ranks in lockstep (the model is ZeRO-3 partitioned).
        batch_size: Sequences per decode batch, for callers with their own batch size
            (``eval.batch_size``, ``judge.batch_size``); None: ``gen_cfg.batch_size``.

    Raises:
        ConfigError: ``gen_cfg.backend`` is not a back end this version can build.
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
        )
    if gen_cfg.backend == "vllm":
        raise ConfigError(f"generation.backend: {VLLM_NOT_BUILT}")
    raise ConfigError(f"generation.backend: unknown back end {gen_cfg.backend!r}; use hf")
