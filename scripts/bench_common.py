"""Helpers shared by the benchmark scripts (``bench_grpo.py``, ``bench_gpu.py``): quiet
logging, peak RSS, the exact-match reward and a generator that forces full-length
completions. Imported as ``bench_common`` (the scripts' folder is first on ``sys.path`` when
a script runs); nothing from r1pipe is imported at module level."""

from __future__ import annotations

import resource
from typing import Any


def quiet() -> None:
    """Silence transformers', DeepSpeed's and datasets' progress bars and chatter."""
    import logging
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:
        pass


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (``ru_maxrss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def accuracy(task: Any, completion: str, reference: str) -> float:
    """r1pipe's exact-match accuracy reward of one completion under ``task``'s settings."""
    from r1pipe.rewards.accuracy import accuracy_reward

    return accuracy_reward(
        completion,
        reference,
        verifier=task.verifier,
        answer_format=task.answer_format,
        tolerance=task.tolerance,
    )


def accuracy_rewards(task: Any) -> Any:
    """A GRPO reward function ``(examples, completions) -> Scores``: accuracy only."""
    import torch

    from r1pipe.rl.scoring import Scores

    def reward_fn(examples: list[Any], completions: list[Any]) -> Any:
        g = len(completions) // len(examples)
        r = [accuracy(task, c.text, examples[i // g].reference) for i, c in enumerate(completions)]
        acc = torch.tensor(r, dtype=torch.float32)
        return Scores(acc, {"accuracy": sum(r) / len(r)}, {}, acc)

    return reward_fn


class FullLength:
    """A generator that forces every completion to ``max_new_tokens`` (EOS is not sampled
    before), so that every run generates and trains on the same number of tokens."""

    def __init__(self, inner: Any):
        self.inner = inner

    def generate(self, prompts: list[str], params: Any) -> Any:
        import dataclasses

        forced = dataclasses.replace(params, min_new_tokens=params.max_new_tokens)
        return self.inner.generate(prompts, forced)

    def update_weights(self, model: Any) -> None:
        self.inner.update_weights(model)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
