"""Generation: one interface (``Generator``), back ends ``hf`` and (on GPUs) ``vllm``.

The back ends are imported on first use (PEP 562): the config's validation reads the names in
``r1pipe.generation.base``, and a config error should not first wait seconds for torch and
transformers."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from r1pipe.generation.base import Completion, Generator, SamplingParams

if TYPE_CHECKING:
    from r1pipe.generation.build import build_generator
    from r1pipe.generation.hf import HFGenerator

__all__ = ["Completion", "Generator", "HFGenerator", "SamplingParams", "build_generator"]

_LAZY = {"build_generator": "r1pipe.generation.build", "HFGenerator": "r1pipe.generation.hf"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
