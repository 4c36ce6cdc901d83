"""Per-token log-probs and entropy of completions, without full fp32 logits for the batch.

Only completion positions go through the output layer, in chunks of ``chunk_size`` rows;
with gradients on, each chunk is checkpointed so that backward keeps the hidden states of a
chunk, not its ``[rows, vocab]`` fp32 logits. Peak extra memory is one chunk's logits.

Rows that share a prompt (a GRPO group: G completions of one prompt, consecutive) run the
prompt through the model once: the prompt pass keeps its KV cache, which is indexed out to
every row of the group, and the completions attend to it (gradients flow back through the
shared prompt pass). The result equals running every row in full.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from r1pipe.models import has_plain_kv_cache


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


def _shared_prompts(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For rows whose prompt equals the previous row's: (first row of each run of equal
    prompts, the run index of every row); None when no two neighbours share a prompt."""
    p_ids, p_mask = input_ids[:, :prompt_len], attention_mask[:, :prompt_len]
    if input_ids.shape[0] < 2 or prompt_len < 2:
        return None
    same = ((p_ids[1:] == p_ids[:-1]) & (p_mask[1:] == p_mask[:-1])).all(-1)
    if not bool(same.any()):
        return None
    starts = torch.cat([same.new_ones(1), ~same])  # True where a new prompt begins
    first = starts.nonzero().squeeze(-1)
    index = starts.long().cumsum(0) - 1
    return first, index


def _can_share(module: torch.nn.Module) -> bool:
    """Prompt sharing needs a plain KV cache that the forward pass actually uses (gradient
    checkpointing turns the cache off in training) and no sliding window."""
    if getattr(module, "is_gradient_checkpointing", False) and module.training:
        return False
    return has_plain_kv_cache(module)


def completion_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    *,
    temperature: float = 1.0,
    chunk_size: int = 2048,
    share_prompts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies of the completion tokens.

    Args:
        model: A HF causal LM (or a DeepSpeed engine wrapping one).
        input_ids: ``[N, P + T]``: left-padded prompts (width P), then right-padded completions.
        attention_mask: ``[N, P + T]``, 0 on padding.
        prompt_len: P, the column where completions start.
        temperature: The sampling temperature (log-probs are of the tempered distribution).
        chunk_size: Rows of ``[rows, vocab]`` logits computed at a time.
        share_prompts: Run each distinct prompt once when rows share it (see above).

    Returns:
        ``logprobs [N, T]`` and ``entropy [N, T]`` (entropy carries no gradient).
    """
    module = getattr(model, "module", model)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    decoder = module.get_decoder()
    shared = _shared_prompts(input_ids, attention_mask, prompt_len) if share_prompts else None
    if shared is not None and _can_share(module):
        # position t predicts token t + 1: the first completion token comes from the last
        # prompt position, the rest from the completion positions but the last
        first, index = shared
        pre = decoder(
            input_ids=input_ids[first, :prompt_len],
            attention_mask=attention_mask[first, :prompt_len],
            position_ids=position_ids[first, :prompt_len],
            use_cache=True,
        )
        cache = pre.past_key_values
        for layer in cache.layers:  # every row gets its prompt's keys and values
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        rest = decoder(
            input_ids=input_ids[:, prompt_len:],
            attention_mask=attention_mask,
            position_ids=position_ids[:, prompt_len:],
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state  # [N, T, H]
        last = pre.last_hidden_state[:, -1:].index_select(0, index)  # [N, 1, H]
        h = torch.cat([last, rest[:, :-1]], dim=1)  # [N, T, H]
    else:
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
