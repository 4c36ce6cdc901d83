"""Generation: one interface (``Generator``), back ends ``hf`` and (on GPUs) ``vllm``."""

from r1pipe.generation.base import Completion, Generator, SamplingParams
from r1pipe.generation.build import build_generator
from r1pipe.generation.hf import HFGenerator

__all__ = ["Completion", "Generator", "HFGenerator", "SamplingParams", "build_generator"]
