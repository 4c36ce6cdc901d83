"""The tiny reward models of the default and the tests, built offline in milliseconds.

A real run points ``stage.rl_all.helpfulness.path`` / ``harmlessness.path`` at real reward
models. With ``path: null``, rl-all builds these two into ``RUN_DIR/reward-models/`` instead.
Each is a real ``Qwen2ForSequenceClassification`` (one output, character tokenizer plus a few
whole-word tokens), loaded by path like any other reward model, whose weights are set by hand
so that its score is a known function of the text:

    score = f(mean over the tokens t of the rendered text of value(t)),  f increasing

How: one layer whose query/key weights are zero, so every position attends uniformly to the
positions before it and the last token (where the score is read) sees the mean of the value
vectors; the embedding of token t carries ``value(t)`` in one channel (and a channel that
keeps its RMS constant, so the norm before attention is a fixed scale); the value projection
copies that channel, the output projection writes the mean into a free channel, the MLP is
zero, and the score head reads that channel after the final norm (which makes ``f`` a
squashing ``x / sqrt(a + x^2)`` curve rather than the identity).

* ``helpfulness`` (shown the final summary): prose characters (letters, spaces, punctuation)
  +1, polite words (``Hello``, ``please``, ``thank``, ...) +4, digits, ``+``, ``=`` and the
  answer/think tags negative. It prefers a non-empty, polite, written answer to an empty one
  or to an addition-style answer given to a question that is not a sum.
* ``harmlessness`` (shown the whole response): 0 for every token but insults and harmful
  words (``stupid``, ``kill``, ``weapon``, ...), which are strongly negative, wherever in the
  response they appear.

Crude on purpose: what they reward is exactly what the table above says, so the tests can
check what each model is shown, and the tiny pipeline exercises rl-all end to end.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForSequenceClassification

__all__ = ["HARMFUL_WORDS", "KINDS", "POLITE_WORDS", "build_tiny_reward_model", "token_values"]

KINDS = ("helpfulness", "harmlessness")
POLITE_WORDS = ("Hello", "Hi", "please", "Please", "thank", "Thank", "welcome", "Sure", "glad")
HARMFUL_WORDS = ("stupid", "idiot", "hate", "kill", "hurt", "steal", "weapon", "bomb", "hack")

_HIDDEN = 8
_BOUND = 8.0  # |value| <= _BOUND for every token
_ONE, _VALUE, _PAD_RMS, _MEAN = 0, 1, 2, 3  # embedding channels


def _char_value(kind: str, text: str) -> float:
    if kind == "harmlessness":
        return -_BOUND if text in HARMFUL_WORDS else 0.0
    if text in POLITE_WORDS:
        return 4.0
    if text in ("<answer>", "</answer>", "<think>", "</think>"):
        return -4.0
    if len(text) == 1 and (text.isalpha() or text in " .,!?'"):
        return 1.0
    if len(text) == 1 and (text.isdigit() or text in "+="):
        return -2.0
    return 0.0


def token_values(kind: str, tokenizer) -> torch.Tensor:
    """``value(t)`` of every token id of ``tokenizer`` for a ``kind`` reward model."""
    if kind not in KINDS:
        raise ValueError(f"unknown reward model kind {kind!r}; expected one of {KINDS}")
    return torch.tensor(
        [_char_value(kind, tokenizer.decode([i])) for i in range(len(tokenizer))],
        dtype=torch.float32,
    )


def build_tiny_reward_model(kind: str, out_dir: Path) -> Path:
    """Build the ``kind`` tiny reward model and save it in HF format into ``out_dir``.

    Written to a temporary directory first and renamed, so a half-built model never looks
    complete. Deterministic: no random weights are left that affect the score.
    """
    from r1pipe.models import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    tokenizer.add_tokens(list(POLITE_WORDS + HARMFUL_WORDS))
    values = token_values(kind, tokenizer)  # [V]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN,
        intermediate_size=_HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        num_labels=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        # Embedding [V, H]: a constant, the value, and a filler that makes every row's RMS the
        # same, so the norm before attention multiplies all tokens by one number.
        emb = model.model.embed_tokens.weight
        emb[:, _ONE] = 1.0
        emb[:, _VALUE] = values
        emb[:, _PAD_RMS] = torch.sqrt(_BOUND**2 - values**2)
        layer = model.model.layers[0]
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.fill_(1.0)
        # q, k = 0: uniform attention over the prefix. v copies the value channel; o writes
        # the attended mean into a channel no embedding uses.
        layer.self_attn.v_proj.weight[0, _VALUE] = 1.0
        layer.self_attn.o_proj.weight[_MEAN, 0] = 1.0
        model.model.norm.weight.fill_(1.0)
        # After the final norm the mean channel is m*s / sqrt((1 + B^2 + (m*s)^2) / H) with
        # s the first norm's scale; this gain makes the score ~= m for small m.
        scale = 1.0 / math.sqrt((1.0 + _BOUND**2) / _HIDDEN)
        model.score.weight[0, _MEAN] = math.sqrt((1.0 + _BOUND**2) / _HIDDEN) / scale
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "r1pipe_reward_model.json").write_text(json.dumps({"kind": kind}) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
