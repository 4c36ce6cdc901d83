"""Per-token log-probs and entropy of completions, without full fp32 logits for the batch.

Only completion positions go through the output layer, in chunks of ``chunk_size`` rows;
with gradients on, each chunk is checkpointed so that backward keeps the hidden states of a
chunk, not its ``[rows, vocab]`` fp32 logits. Peak extra memory is one chunk's logits.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def _chunk_logprobs(
    hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float()  # [rows, V]
    if temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, dim=-1)  # [rows]
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - logz
    probs = torch.softmax(logits, dim=-1)
    entropy = logz - (probs * logits).sum(-1)
    return logp, entropy


def completion_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    *,
    temperature: float = 1.0,
    chunk_size: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies of the completion tokens.

    Args:
        model: A HF causal LM (or a DeepSpeed engine wrapping one).
        input_ids: ``[N, P + T]``: left-padded prompts (width P), then right-padded completions.
        attention_mask: ``[N, P + T]``, 0 on padding.
        prompt_len: P, the column where completions start.
        temperature: The sampling temperature (log-probs are of the tempered distribution).
        chunk_size: Rows of ``[rows, vocab]`` logits computed at a time.

    Returns:
        ``logprobs [N, T]`` and ``entropy [N, T]`` (entropy carries no gradient).
    """
    module = getattr(model, "module", model)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    decoder = module.get_decoder()
    hidden = decoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
    ).last_hidden_state  # [N, P + T, H]
    # position t predicts token t + 1: completion tokens P..P+T-1 come from P-1..P+T-2
    h = hidden[:, prompt_len - 1 : -1]  # [N, T, H]
    targets = input_ids[:, prompt_len:]  # [N, T]
    N, T, H = h.shape
    flat_h, flat_t = h.reshape(N * T, H), targets.reshape(N * T)
    head = module.get_output_embeddings()
    lps, ents = [], []
    for s in range(0, N * T, chunk_size):
        hc, tc = flat_h[s : s + chunk_size], flat_t[s : s + chunk_size]
        if torch.is_grad_enabled() and hc.requires_grad:
            lp, ent = checkpoint(_chunk_logprobs, hc, head, tc, temperature, use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(hc, head, tc, temperature)
        lps.append(lp)
        ents.append(ent.detach())
    return torch.cat(lps).view(N, T), torch.cat(ents).view(N, T)
