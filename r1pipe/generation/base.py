"""The one generator interface. Trainers and evaluation depend on this, not on a back end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

#: The generation back ends (``generation.backend``), built by :func:`~r1pipe.generation.build.
#: build_generator`.
BACKENDS = ("hf", "vllm")
#: The hf back end's decoders (``generation.decoder``): r1pipe's loop or transformers'.
HF_DECODERS = ("loop", "generate")


@dataclass
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding."""

    n: int = 1
    """Completions per prompt (the GRPO group size)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    """EOS is not sampled before this many new tokens (benchmarks force full lengths)."""
    stop: list[str] = field(default_factory=list)
    """Extra stop strings (the EOS token always stops)."""
    return_logprobs: bool = False
    seed: int | None = None


@dataclass
class Completion:
    """One sampled continuation of one prompt."""

    prompt_index: int
    text: str
    token_ids: list[int]
    logprobs: list[float] | None
    """Log-probability of each sampled token under the sampling distribution."""
    finish_reason: str
    """``stop`` (EOS or a stop string) or ``length`` (hit max_new_tokens)."""


class Generator(Protocol):
    """Samples completions for prompts given as text.

    A trainer calls :meth:`update_weights` after its optimizer steps, before it samples
    again: a back end that holds its own copy of the weights (vLLM) loads the new ones there;
    one that samples from the live training model (hf) has nothing to do.
    """

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """Return, for each prompt, ``params.n`` completions."""
        ...

    def update_weights(self, model: Any) -> None:
        """Take the trainer's current weights from ``model`` (the HF module being trained)."""
        ...
