"""Reward-model rewards for general prompts (rl-all): helpfulness and harmlessness.

The DeepSeek-R1 paper's last RL stage scores general (non-reasoning) prompts with reward
models, and looks at different parts of a response for each:

* **helpfulness** sees only the final summary (the text after ``</think>``), so that the
  reward model cannot reach into, and reshape, the reasoning;
* **harmlessness** sees the whole response, reasoning included, so that harmful content is
  penalised wherever it appears.

:func:`preference_rewards` applies that split to any scorer ``(prompts, responses) -> scores``
and is pure (tests pass recording fakes). :class:`RewardModel` is the scorer for a real
``AutoModelForSequenceClassification`` directory or hub id with one output (a scalar reward).

Example:
    >>> seen = []
    >>> def length_scorer(prompts, responses):
    ...     seen.extend(responses)
    ...     return [float(len(r)) for r in responses]
    >>> preference_rewards(["hi"], ["<think>greet</think> Hello!"],
    ...                    helpfulness=length_scorer, harmlessness=None)
    {'helpfulness': [6.0]}
    >>> seen
    ['Hello!']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from r1pipe.errors import UserError
from r1pipe.rewards.parsing import THINK_CLOSE, THINK_OPEN

__all__ = [
    "RewardModel",
    "ScoreFn",
    "final_summary",
    "general_format_reward",
    "preference_rewards",
]

#: ``(prompts, responses) -> one score per response``.
ScoreFn = Callable[[list[str], list[str]], list[float]]


def final_summary(completion: str) -> str:
    """The part of ``completion`` that helpfulness is judged on: the text after ``</think>``.

    After the last ``</think>`` when there is one. A response that opened ``<think>`` and
    never closed it has no summary (``""``): its text is all reasoning. A response with no
    think tags at all is all summary.

    >>> final_summary("<think> 2+2 </think> It is 4.")
    'It is 4.'
    >>> final_summary("<think> still thinking"), final_summary("Just an answer.")
    ('', 'Just an answer.')
    """
    if THINK_CLOSE in completion:
        return completion.rpartition(THINK_CLOSE)[2].strip()
    if THINK_OPEN in completion:
        return ""
    return completion.strip()


def general_format_reward(completion: str) -> float:
    """The R1 format for a general prompt: 1.0 iff the response opens with one think block
    (which may be empty: "hello" needs no reasoning) followed by a non-empty summary.

    Unlike :func:`~r1pipe.rewards.format.format_reward` it asks for no checkable answer.

    >>> general_format_reward("<think> </think> Hello!"), general_format_reward("Hello!")
    (1.0, 0.0)
    """
    if not completion.lstrip().startswith(THINK_OPEN):
        return 0.0
    if completion.count(THINK_OPEN) != 1 or completion.count(THINK_CLOSE) != 1:
        return 0.0
    return 1.0 if final_summary(completion) else 0.0


def preference_rewards(
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    helpfulness: ScoreFn | None,
    harmlessness: ScoreFn | None,
) -> dict[str, list[float]]:
    """Score completions of general prompts with the two reward models, each on its part.

    Args:
        prompts: The user prompt of each completion (the question, without template).
        completions: The generated texts.
        helpfulness: Scorer shown only :func:`final_summary` of each completion; None skips it.
        harmlessness: Scorer shown each whole completion; None skips it.

    Returns:
        ``{"helpfulness": [...], "harmlessness": [...]}`` (raw scores, one per completion)
        for the scorers given.

    Raises:
        ValueError: If the lists differ in length or a scorer returns the wrong number of
            scores.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions")
    out: dict[str, list[float]] = {}
    for name, scorer, texts in (
        ("helpfulness", helpfulness, [final_summary(c) for c in completions]),
        ("harmlessness", harmlessness, list(completions)),
    ):
        if scorer is None:
            continue
        scores = list(scorer(list(prompts), texts))
        if len(scores) != len(texts):
            raise ValueError(f"{name} scorer returned {len(scores)} scores for {len(texts)} texts")
        out[name] = scores
    return out


class RewardModel:
    """A scalar reward model (``AutoModelForSequenceClassification``, one label) as a scorer.

    The prompt and response are rendered with the reward model's own chat template (user
    turn, assistant turn) when it has one, else joined by a newline; the score is the
    model's logit at the last token. Texts longer than ``max_length`` tokens keep their end
    (the score is read there). A batch that fails is retried one text at a time; a text that
    still fails, or scores NaN/inf, scores 0 and is counted in :attr:`failures`: one bad
    sample must not stop a training step.

    Args:
        path: Local directory or hub id.
        device: Where to run it.
        dtype: Weights dtype (bf16 on GPU is fine for scoring).
        batch_size: Texts per forward pass.
        max_length: Token budget per text.
        use_chat_template: Render with the tokenizer's chat template when it has one.
        trust_remote_code: Passed to transformers.
        key: The config key that named ``path``, used in error messages.

    Raises:
        UserError: If the path is missing or not a sequence-classification model with one
            output.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 32,
        max_length: int = 1024,
        use_chat_template: bool = True,
        trust_remote_code: bool = False,
        key: str = "reward model path",
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path, self.key = str(path), key
        local = Path(self.path).expanduser()
        if self.path.startswith((".", "/", "~")) and not (local / "config.json").is_file():
            raise UserError(f"{key}={path}: not a Hugging Face model directory (no config.json)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.path, trust_remote_code=trust_remote_code
            )
            self.model = AutoModelForSequenceClassification.from_pretrained(
                self.path, dtype=dtype, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError, ImportError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"{key}={path}: cannot load a sequence-classification reward model ({first})"
            ) from None
        if self.model.config.num_labels != 1:
            raise UserError(
                f"{key}={path}: a reward model has one output (num_labels=1), this one has "
                f"{self.model.config.num_labels}"
            )
        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = tok.pad_token_id
        tok.padding_side = "right"
        tok.truncation_side = "left"  # the score is read at the last token: keep the end
        self.use_chat_template = use_chat_template and tok.chat_template is not None
        self.batch_size, self.max_length = batch_size, max_length
        self.device = torch.device(device)
        self.model.to(self.device).eval().requires_grad_(False)
        self.failures = 0

    def render(self, prompt: str, response: str) -> str:
        """The text the reward model reads for one (prompt, response) pair."""
        if self.use_chat_template:
            messages = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": response},
            ]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            assert isinstance(text, str)
            return text
        return f"{prompt}\n{response}"

    @torch.no_grad()
    def _forward(self, texts: list[str]) -> list[float]:
        enc = self.tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=False,
        ).to(self.device)
        logits = self.model(**enc).logits  # [B, 1]
        return logits[:, 0].float().cpu().tolist()

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        texts = [self.render(p, r) for p, r in zip(prompts, responses, strict=True)]
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        scores = [0.0] * len(texts)
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            try:
                values = self._forward([texts[i] for i in idx])
            except Exception:  # e.g. out of memory on one long batch: try one at a time
                values = []
                for i in idx:
                    try:
                        values.extend(self._forward([texts[i]]))
                    except Exception:
                        values.append(math.nan)
            for i, v in zip(idx, values, strict=True):
                if math.isfinite(v):
                    scores[i] = v
                else:
                    self.failures += 1
        return scores

    def __repr__(self) -> str:
        return f"RewardModel({self.path!r})"
