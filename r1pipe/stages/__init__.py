"""The stages of the recipe, by CLI name, in order. Each module has ``run(cfg, dcfg)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from r1pipe.config.schema import R1Config

StageFn = Callable[[R1Config, DictConfig], dict[str, Any]]


def _cold_start(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    from r1pipe.stages import cold_start

    return cold_start.run(cfg, dcfg)


def _rl_reasoning(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    from r1pipe.stages import rl_reasoning

    return rl_reasoning.run(cfg, dcfg)


def _rejection_sft(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    from r1pipe.stages import rejection_sft

    return rejection_sft.run(cfg, dcfg)


def _rl_all(cfg: R1Config, dcfg: DictConfig) -> dict[str, Any]:
    from r1pipe.stages import rl_all

    return rl_all.run(cfg, dcfg)


# Stages not built yet map to None; the CLI says so instead of failing obscurely.
STAGES: dict[str, StageFn | None] = {
    "cold-start": _cold_start,
    "rl-reasoning": _rl_reasoning,
    "rejection-sft": _rejection_sft,
    "rl-all": _rl_all,
}
