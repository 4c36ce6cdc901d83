"""SFT tokenization and collation, packed or padded.

A sequence is the prompt tokens followed by the response tokens; the loss mask is true on
response tokens only. A micro-batch is either

* packed: its sequences bin-packed into a few rows of at most ``pack_length`` tokens, with
  ``position_ids`` restarting at 0 for each sequence and a block-diagonal causal mask, so
  almost no compute goes to padding and no token attends across a sequence boundary; or
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


def tokenize_sft(
    prompt: str, response: str, tokenizer: PreTrainedTokenizerBase, max_len: int
) -> TokenizedSFT:
    """Tokenize prompt and response separately so that the mask boundary is exact.

    The response ends with the EOS token (the end of the assistant turn), which is trained on
    so that the model learns to stop.
    """
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids, mask = p + r, [False] * len(p) + [True] * len(r)
    truncated = len(ids) > max_len
    return TokenizedSFT(ids[:max_len], mask[:max_len], truncated)


def pack_rows(lengths: list[int], pack_length: int) -> list[list[int]]:
    """First-fit-decreasing bin packing of sequence indices into rows of <= pack_length tokens.

    >>> pack_rows([5, 3, 4, 2], 8)
    [[0, 1], [2, 3]]
    """
    rows: list[list[int]] = []
    space: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(space):
            if lengths[i] <= free:
                rows[r].append(i)
                space[r] -= lengths[i]
                break
        else:
            rows.append([i])
            space.append(pack_length - lengths[i])
    return [sorted(r) for r in rows]


def collate(
    batch: list[TokenizedSFT],
    *,
    packing: bool,
    pad_id: int,
    pack_length: int = 0,
    attn_implementation: str = "sdpa",
    rows: list[list[int]] | None = None,
    width: int = 0,
) -> dict[str, torch.Tensor]:
    """Build model inputs and labels for one micro-batch.

    Packed: sequences are bin-packed into rows of at most ``pack_length`` tokens (0, and
    any value below it, means the longest sequence of the micro-batch), or placed as
    ``rows`` says (indices into ``batch`` per row); ``position_ids`` restart at 0 for each
    sequence. With sdpa or eager attention the mask is block-diagonal causal
    ``[R, 1, L, L]``; flash and flex attention get no mask: transformers finds the
    sequences from ``position_ids`` (variable-length flash kernels; a block-sparse flex
    mask), so no compute goes to padding or across sequences. With a dense mask, rows are
    short on purpose: attention cost grows with the square of the row length.
    Padded: ``[B, L_max]`` right-padded with a 2-D attention mask.
    ``width``: rows at least this long (a fixed shape from step to step).

    ``labels`` are aligned with ``input_ids`` (``IGNORE`` off the loss mask); the loss shifts.
    """
    if packing:
        lengths = [len(ex.input_ids) for ex in batch]
        if rows is None:
            rows = pack_rows(lengths, max(pack_length, max(lengths)))
        L = max(width, max(sum(lengths[i] for i in row) for row in rows))
        ids = torch.full((len(rows), L), pad_id)
        labels = torch.full((len(rows), L), IGNORE)
        pos = torch.zeros((len(rows), L), dtype=torch.long)
        seq = torch.full((len(rows), L), -1)  # -1: padding at the end of a row
        for r, row in enumerate(rows):
            at = 0
            for j, i in enumerate(row):
                ex, n = batch[i], lengths[i]
                ids[r, at : at + n] = torch.tensor(ex.input_ids)
                labels[r, at : at + n] = torch.tensor(
                    [t if m else IGNORE for t, m in zip(ex.input_ids, ex.loss_mask, strict=True)]
                )
                pos[r, at : at + n] = torch.arange(n)
                seq[r, at : at + n] = j
                at += n
            pos[r, at:] = torch.arange(L - at)
        out = {"input_ids": ids, "labels": labels, "position_ids": pos}
        if not attn_implementation.startswith(("flash", "flex")):
            causal = torch.ones(L, L, dtype=torch.bool).tril_()
            # Padding tokens attend to themselves only (a fully masked row would give NaN).
            same = seq[:, :, None] == seq[:, None, :]
            out["attention_mask"] = (causal & same)[:, None]  # [R, 1, L, L]
        return out
    L = max(width, max(len(ex.input_ids) for ex in batch))
    ids = torch.full((len(batch), L), pad_id)
    labels = torch.full((len(batch), L), IGNORE)
    attn = torch.zeros((len(batch), L), dtype=torch.long)
    for i, ex in enumerate(batch):
        n = len(ex.input_ids)
        ids[i, :n] = torch.tensor(ex.input_ids)
        labels[i, :n] = torch.tensor(
            [t if m else IGNORE for t, m in zip(ex.input_ids, ex.loss_mask, strict=True)]
        )
        attn[i, :n] = 1
    pos = (attn.cumsum(-1) - 1).clamp_(min=0)
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "attention_mask": attn}


def sft_loss_sum(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over response tokens, and how many tokens it covers.

    Summing (not averaging) lets the engine divide by the token count of the whole global
    batch, so that micro-batching, packing and the number of ranks do not change the loss.
    """
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # use_cache=False also matters for packing: transformers derives the per-sequence mask
    # from position_ids only when there is no cache
    logits = model(**inputs, use_cache=False).logits  # [B, T, V]
    shift_logits = logits[:, :-1].flatten(0, 1).float()
    shift_labels = labels[:, 1:].flatten()
    loss = torch.nn.functional.cross_entropy(
        shift_logits, shift_labels, ignore_index=IGNORE, reduction="sum"
    )
    return loss, (shift_labels != IGNORE).sum()  # a tensor: no host sync per micro-batch


def budget_micro_batches(
    batch: list[TokenizedSFT],
    *,
    packing: bool,
    budget: int,
    row_length: int,
    pad_id: int,
    attn_implementation: str = "sdpa",
) -> list[dict[str, torch.Tensor]]:
    """One rank's share of a step cut into micro-batches of at most ``budget`` token
    positions (rows x row length, padding included).

    Packed: the sequences are bin-packed into rows of ``row_length`` tokens, every row padded
    to exactly that length (one shape for every micro-batch: what compiled kernels and the
    GPU allocator want), ``budget // row_length`` rows per micro-batch. Padded: sequences
    longest first, each micro-batch as many as fit in the budget at its longest length.
    A sequence longer than the budget still gets a micro-batch of its own.
    """
    lengths = [len(ex.input_ids) for ex in batch]
    if packing:
        row_length = max(row_length, max(lengths))
        rows = pack_rows(lengths, row_length)
        rows.sort(key=lambda r: min(r))  # a stable order: the data order, not the fill
        per = max(1, budget // row_length)
        out = []
        for s in range(0, len(rows), per):
            chunk = rows[s : s + per]
            members = [i for row in chunk for i in row]
            local = {i: j for j, i in enumerate(members)}
            out.append(
                collate(
                    [batch[i] for i in members],
                    packing=True,
                    pad_id=pad_id,
                    attn_implementation=attn_implementation,
                    rows=[[local[i] for i in row] for row in chunk],
                    width=row_length,
                )
            )
        return out
    order = sorted(range(len(batch)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:  # longest first: a group's first sequence sets its width
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return [collate([batch[i] for i in g], packing=False, pad_id=pad_id) for g in groups]


def empty_micro_batch(like: dict[str, torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """A micro-batch that carries no loss, shaped like one row of ``like``: a rank with
    fewer micro-batches than another runs these, so that every rank makes the same
    forward and backward passes (ZeRO-2/3 reduce or gather in each)."""
    out = {}
    for k, v in like.items():
        row = v[:1].clone()
        if k == "input_ids":
            row.fill_(pad_id)
        elif k == "labels":
            row.fill_(IGNORE)
        out[k] = row
    return out


def num_loss_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry loss after the shift (label positions 1..T-1)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
