"""SFT tokenization and collation, packed or padded.

A sequence is the prompt tokens followed by the response tokens; the loss mask is true on
response tokens only. A micro-batch is either

* packed: all its sequences concatenated into one row ``[1, T]`` with ``position_ids``
  restarting at 0 for each sequence and a block-diagonal causal mask, so no compute goes to
  padding and no token attends across a sequence boundary; or
* padded: ``[B, L_max]`` right-padded with a 2-D attention mask.

Both give the same per-token losses (tests/unit/training/test_packing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE = -100


@dataclass
class TokenizedSFT:
    input_ids: list[int]
    loss_mask: list[bool]  # True where the token is a response token (trained on)
    truncated: bool = False


def tokenize_sft(prompt: str, response: str, tokenizer: PreTrainedTokenizerBase,
                 max_len: int) -> TokenizedSFT:
    """Tokenize prompt and response separately so that the mask boundary is exact.

    The response ends with the EOS token (the end of the assistant turn), which is trained on
    so that the model learns to stop.
    """
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids, mask = p + r, [False] * len(p) + [True] * len(r)
    truncated = len(ids) > max_len
    return TokenizedSFT(ids[:max_len], mask[:max_len], truncated)


def collate(batch: list[TokenizedSFT], *, packing: bool, pad_id: int,
            attn_implementation: str = "sdpa") -> dict[str, torch.Tensor]:
    """Build model inputs and shifted labels for one micro-batch.

    Returns a dict with ``input_ids``, ``labels`` (``IGNORE`` off the loss mask; aligned with
    ``input_ids``, the loss shifts them), ``position_ids`` and, except for packed flash
    attention (which finds the boundaries from ``position_ids``), ``attention_mask``.
    """
    if packing:
        ids = torch.tensor([t for ex in batch for t in ex.input_ids])[None]  # [1, T]
        labels = torch.tensor([t if m else IGNORE for ex in batch
                               for t, m in zip(ex.input_ids, ex.loss_mask, strict=True)])[None]
        pos = torch.cat([torch.arange(len(ex.input_ids)) for ex in batch])[None]  # [1, T]
        out = {"input_ids": ids, "labels": labels, "position_ids": pos}
        if not attn_implementation.startswith("flash"):
            seq = torch.cat([torch.full((len(ex.input_ids),), i) for i, ex in enumerate(batch)])
            T = seq.numel()
            causal = torch.ones(T, T, dtype=torch.bool).tril_()
            out["attention_mask"] = (causal & (seq[:, None] == seq[None, :]))[None, None]
        return out
    L = max(len(ex.input_ids) for ex in batch)
    ids = torch.full((len(batch), L), pad_id)
    labels = torch.full((len(batch), L), IGNORE)
    attn = torch.zeros((len(batch), L), dtype=torch.long)
    for i, ex in enumerate(batch):
        n = len(ex.input_ids)
        ids[i, :n] = torch.tensor(ex.input_ids)
        labels[i, :n] = torch.tensor([t if m else IGNORE
                                      for t, m in zip(ex.input_ids, ex.loss_mask, strict=True)])
        attn[i, :n] = 1
    pos = (attn.cumsum(-1) - 1).clamp_(min=0)
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "attention_mask": attn}


def sft_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over response tokens, and how many tokens it covers.

    Summing (not averaging) lets the engine divide by the token count of the whole global
    batch, so that micro-batching, packing and the number of ranks do not change the loss.
    """
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits  # [B, T, V]
    shift_logits = logits[:, :-1].flatten(0, 1).float()
    shift_labels = labels[:, 1:].flatten()
    loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE,
                                             reduction="sum")
    return loss, int((shift_labels != IGNORE).sum())


def num_loss_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry loss after the shift (label positions 1..T-1)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
