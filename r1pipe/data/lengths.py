"""Prompt length against the model's context, checked before any training.

A prompt that leaves no room in the context is never useful: SFT truncates its response away
(a loss of 0 on it), generation runs out of positions, and a megabyte prompt costs its
tokenization and then terabytes of attention. :func:`check_prompt_lengths` counts such
prompts once, before a stage starts, and skips or refuses them (``task.overlong_prompts``).

A stage calls, with the prompt text it will really feed the model::

    limit = prompt_token_budget(model_context(model.config, tokenizer), max_new_tokens,
                                cfg.task.max_prompt_tokens)
    train, n_skipped = check_prompt_lengths(
        train, lambda e: build_prompt(e.question, cfg.task, tokenizer), tokenizer, limit,
        policy=cfg.task.overlong_prompts, where=f"task.train_file={cfg.task.train_file}",
        log=ctx.log,
    )
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from r1pipe.config.schema import ConfigError
from r1pipe.errors import UserError

T = TypeVar("T")

# The first of these a model config has is its context length.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
# Hugging Face sets model_max_length to int(1e30) when a tokenizer does not know its model's.
_NO_LIMIT = 10**9


def model_context(model_config: Any, tokenizer: Any | None = None) -> int | None:
    """The most tokens the model can attend to: the smallest of the model config's
    ``max_position_embeddings`` (or ``n_positions``, ``max_sequence_length``, ``seq_length``)
    and the tokenizer's ``model_max_length``; None when neither says.

    >>> from types import SimpleNamespace
    >>> model_context(SimpleNamespace(max_position_embeddings=512),
    ...               SimpleNamespace(model_max_length=4096))
    512
    """
    known = []
    for key in CONTEXT_KEYS:
        value = getattr(model_config, key, None)
        if isinstance(value, int) and value > 0:
            known.append(value)
            break
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
        known.append(limit)
    return min(known) if known else None


def prompt_token_budget(context: int | None, reserve: int, max_prompt_tokens: int = 0) -> int:
    """Tokens a prompt may take: the context less ``reserve`` (what follows the prompt: the
    stage's ``max_new_tokens`` when sampling, 1 when training on a response), capped by
    ``max_prompt_tokens`` (``task.max_prompt_tokens``) when it is > 0.

    >>> prompt_token_budget(512, 128), prompt_token_budget(512, 128, 256)
    (384, 256)

    Raises:
        ConfigError: No context is known and no ``max_prompt_tokens`` is set, or nothing is
            left for a prompt.
    """
    if context is None:
        if max_prompt_tokens > 0:
            return max_prompt_tokens
        raise ConfigError(
            "task.max_prompt_tokens: the model does not say its context length; set it"
        )
    budget = context - reserve
    if max_prompt_tokens > 0:
        budget = min(budget, max_prompt_tokens)
    if budget < 1:
        raise ConfigError(
            f"max_new_tokens: {reserve} tokens for the response leave no room for a prompt in "
            f"the model's context of {context} tokens"
        )
    return budget


def max_token_chars(tokenizer: Any) -> int:
    """The most characters of text one token can stand for: the longest token of the vocab.

    Exact for byte-level BPE (GPT-2, Qwen, Llama 3: a token's string has one character per
    byte, and a byte is at least part of one character), SentencePiece (``▁`` stands for one
    space) and the tiny character tokenizer; special tokens count too, since the template
    writes them. It would not hold for a normalizer that deletes characters, which causal LMs'
    tokenizers do not have.
    """
    return max((len(t) for t in tokenizer.get_vocab()), default=1) or 1


def check_prompt_lengths(
    examples: Sequence[T],
    prompt_text: Callable[[T], str],
    tokenizer: Any,
    max_prompt_tokens: int,
    *,
    policy: str,
    where: str,
    log: Callable[[str], None] | None = None,
) -> tuple[list[T], int]:
    """Leave out (``skip``) or refuse (``refuse``) the prompts longer than the limit.

    A prompt whose text is longer than ``max_prompt_tokens * max_token_chars(tokenizer)``
    characters is over the limit however it tokenizes, and is not tokenized at all (a 1 MB
    prompt costs a ``len``); the others are tokenized in one batch, as the stages do
    (``add_special_tokens=False``).

    Args:
        examples: The rows, in order (``Example``, ``GeneralExample``, ...); an ``id``
            attribute, when they have one, names them in messages.
        prompt_text: The exact text the model sees for a row (template and instruction).
        tokenizer: The policy's tokenizer.
        max_prompt_tokens: The limit (:func:`prompt_token_budget`).
        policy: ``skip`` or ``refuse`` (``task.overlong_prompts``).
        where: What the rows came from, e.g. ``task.train_file=/data/train.jsonl``.
        log: Where the one line about skipped rows goes (a stage's ``ctx.log``); None: a
            logging warning.

    Returns:
        The rows that fit, in order, and how many were left out.

    Raises:
        UserError: ``refuse`` and a row is over the limit; ``skip`` and no row fits.
    """
    if policy not in ("skip", "refuse"):
        raise ValueError(f"policy must be skip or refuse, got {policy!r}")
    max_chars = max_prompt_tokens * max_token_chars(tokenizer)
    texts = [prompt_text(e) for e in examples]
    lengths: list[int | None] = [None] * len(texts)  # None: over the limit by its characters
    to_count = [i for i, t in enumerate(texts) if len(t) <= max_chars]
    if to_count:
        ids = tokenizer([texts[i] for i in to_count], add_special_tokens=False)["input_ids"]
        for i, tokens in zip(to_count, ids, strict=True):
            lengths[i] = len(tokens)
    over = [i for i, n in enumerate(lengths) if n is None or n > max_prompt_tokens]
    if not over:
        return list(examples), 0
    first = over[0]
    name = getattr(examples[first], "id", first)
    size = (
        f"{lengths[first]} tokens"
        if lengths[first] is not None
        else f"{len(texts[first])} characters"
    )
    what = (
        f"{where}: {len(over)} of {len(examples)} prompts are over the {max_prompt_tokens}-token "
        f"limit (the first: id {name!r}, {size})"
    )
    if policy == "refuse":
        raise UserError(
            f"{what}; shorten them, or set task.overlong_prompts=skip to leave them out"
        )
    if len(over) == len(examples):
        raise UserError(f"{what}: none is left")
    (log or logging.getLogger(__name__).warning)(f"{what}: skipped (task.overlong_prompts=skip)")
    skipped = set(over)
    return [e for i, e in enumerate(examples) if i not in skipped], len(over)
