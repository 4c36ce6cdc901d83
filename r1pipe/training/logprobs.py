"""Per-token log-probs and entropy of completions, without full fp32 logits for the batch.

Only completion positions go through the output layer, in chunks of ``chunk_size`` rows;
with gradients on, each chunk is checkpointed so that backward keeps the hidden states of a
chunk, not its ``[rows, vocab]`` fp32 logits. Peak extra memory is one chunk's logits.
The logits get what the model's forward does after its output layer (Gemma-2's soft-capping,
Granite's and Cohere's logit scaling: :func:`r1pipe.models.final_logit_transform`, in fp32),
then the temperature, as the sampler divides the model's logits; a model whose final logits
r1pipe cannot reproduce is refused.

Rows that share a prompt (a GRPO group: G completions of one prompt, consecutive) run the
prompt through the model once: the prompt pass keeps its KV cache, which is indexed out to
every row of the group, and the completions attend to it (gradients flow back through the
shared prompt pass). The result equals running every row in full.

Completions of one batch differ in length (a GRPO batch of the tiny default: 40 to 96
tokens), and a padded batch computes every row to the longest one. With ``bucket_overhead`` set,
rows are run in groups of similar completion length (:func:`length_buckets`), each padded
only to its own longest row; the result is put back in row order, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from r1pipe.models import final_logit_transform, has_plain_kv_cache

Transform = Callable[[torch.Tensor], torch.Tensor] | None


def _chunk_logprobs(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    transform: Transform,
    targets: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float()  # [rows, V]
    if transform is not None:  # the model's own final-logit transform, then the temperature
        logits = transform(logits)
    if temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, dim=-1)  # [rows]
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - logz
    probs = torch.softmax(logits, dim=-1)
    entropy = logz - (probs * logits).sum(-1)
    return logp, entropy


# What one more forward/backward call costs, in padded token positions: a call of the tiny
# default costs about 7 ms of fixed per-op overhead on a 2-core CPU where a position costs
# about 70 us (fwd + bwd). Larger models make positions dearer and calls relatively cheaper.
BUCKET_OVERHEAD_TOKENS = 100


def length_buckets(
    lengths: list[int], overhead: int = BUCKET_OVERHEAD_TOKENS, max_buckets: int | None = None
) -> list[list[int]]:
    """Rows grouped so that each group is padded only to its own longest row.

    The groups are contiguous runs of the rows sorted by length, chosen (exactly, by
    dynamic programming over the distinct lengths) to minimise the padded area
    ``sum(rows x longest)`` plus ``overhead`` per group, with at most ``max_buckets`` groups.
    Returns row indices per group, shortest rows first; every row is in exactly one.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if not order:
        return []
    vals = [max(1, lengths[i]) for i in order]
    # candidate cut points: the end of each run of equal lengths
    ends = [j + 1 for j in range(len(vals)) if j + 1 == len(vals) or vals[j + 1] != vals[j]]
    k_max = min(len(ends), max_buckets or len(ends))
    inf = float("inf")
    # best[k][e]: cost of the first ends[e] rows in k groups; arg remembers the previous cut
    best = [[inf] * len(ends) for _ in range(k_max + 1)]
    arg = [[-1] * len(ends) for _ in range(k_max + 1)]
    for e, end in enumerate(ends):
        best[1][e] = end * vals[end - 1] + overhead
    for k in range(2, k_max + 1):
        for e in range(len(ends)):
            for c in range(e):
                cost = best[k - 1][c] + (ends[e] - ends[c]) * vals[ends[e] - 1] + overhead
                if cost < best[k][e]:
                    best[k][e], arg[k][e] = cost, c
    last = len(ends) - 1
    k = min(range(1, k_max + 1), key=lambda k: best[k][last])
    cuts, e = [], last
    while k > 0:
        cuts.append(ends[e])
        e, k = arg[k][e], k - 1
    cuts = [0, *reversed(cuts)]
    return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def shared_prompts(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For rows whose prompt equals the previous row's: (first row of each run of equal
    prompts, the run index of every row); None when no two neighbours share a prompt.
    Reads the answer to the host: on a GPU, compute it on the CPU copy of the batch and pass
    it to :func:`completion_logprobs` as ``prompt_runs``."""
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
    bucket_overhead: int | None = BUCKET_OVERHEAD_TOKENS,
    prompt_runs: tuple[torch.Tensor, torch.Tensor] | None = None,
    min_chunks: int = 0,
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
        bucket_overhead: Run rows in groups of similar completion length (see above), with
            this cost per group in padded positions; None: all rows at once. Every call
            then makes a number of forward passes that depends on the data: keep it off
            where ranks must make the same calls (ZeRO-3 gathers parameters collectively).
            The groups are found on the host (a sync): a CPU choice.
        prompt_runs: :func:`shared_prompts` of these rows, computed beforehand (no host
            sync here); None: found here when ``share_prompts``.
        min_chunks: Call the output layer at least this many times (empty chunks past the
            data): under ZeRO-3 each call gathers its weights collectively, so every rank
            must make as many, whatever its number of completion tokens.

    Returns:
        ``logprobs [N, T]`` and ``entropy [N, T]`` (entropy carries no gradient).
    """
    module = getattr(model, "module", model)
    transform = final_logit_transform(module)  # refuses a model whose logits it cannot follow
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    decoder = module.get_decoder()
    T = input_ids.shape[1] - prompt_len
    shared = prompt_runs
    if shared is None and share_prompts:
        shared = shared_prompts(input_ids, attention_mask, prompt_len)
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
        prompt_kv = [(layer.keys, layer.values) for layer in cache.layers]

        def hidden(rows: torch.Tensor | slice, t: int) -> torch.Tensor:
            idx = index[rows]
            for layer, (k, v) in zip(cache.layers, prompt_kv, strict=True):
                # every row gets its prompt's keys and values (a fresh copy per group)
                layer.keys, layer.values = k.index_select(0, idx), v.index_select(0, idx)
            end = prompt_len + t
            rest = decoder(
                input_ids=input_ids[rows, prompt_len:end],
                attention_mask=attention_mask[rows, :end],
                position_ids=position_ids[rows, prompt_len:end],
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state  # [n, t, H]
            last = pre.last_hidden_state[:, -1:].index_select(0, idx)  # [n, 1, H]
            return torch.cat([last, rest[:, :-1]], dim=1)  # [n, t, H]

    else:

        def hidden(rows: torch.Tensor | slice, t: int) -> torch.Tensor:
            end = prompt_len + t
            out = decoder(
                input_ids=input_ids[rows, :end],
                attention_mask=attention_mask[rows, :end],
                position_ids=position_ids[rows, :end],
                use_cache=False,
            ).last_hidden_state  # [n, P + t, H]
            # position t predicts token t + 1: completion tokens P.. come from P-1..
            return out[:, prompt_len - 1 : -1]  # [n, t, H]

    head = module.get_output_embeddings()
    groups: list[list[int]] = []
    if bucket_overhead is not None:
        comp_len = attention_mask[:, prompt_len:].sum(1).tolist()
        groups = length_buckets(comp_len, bucket_overhead)
    if len(groups) <= 1:  # all rows in their own order, at full width
        return _head_logprobs(
            hidden(slice(None), T),
            input_ids[:, prompt_len:],
            head,
            transform,
            temperature,
            chunk_size,
            min_chunks,
        )
    lps, ents = [], []
    for group in groups:
        t = max(1, max(comp_len[i] for i in group))
        idx = torch.tensor(group, device=input_ids.device)
        targets = input_ids[idx, prompt_len : prompt_len + t]
        lp, ent = _head_logprobs(hidden(idx, t), targets, head, transform, temperature, chunk_size)
        lps.append(torch.nn.functional.pad(lp, (0, T - t)))
        ents.append(torch.nn.functional.pad(ent, (0, T - t)))
    order = torch.tensor([i for g in groups for i in g], device=input_ids.device)
    inverse = torch.argsort(order)  # back to row order
    return torch.cat(lps).index_select(0, inverse), torch.cat(ents).index_select(0, inverse)


def _head_logprobs(
    h: torch.Tensor,
    targets: torch.Tensor,
    head: torch.nn.Module,
    transform: Transform,
    temperature: float,
    chunk_size: int,
    min_chunks: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and (detached) entropies of ``targets [n, t]`` from hidden states
    ``h [n, t, H]``, ``chunk_size`` rows of logits at a time."""
    n, t, H = h.shape
    flat_h, flat_t = h.reshape(n * t, H), targets.reshape(n * t)
    lps, ents = [], []
    for s in range(0, max(n * t, min_chunks * chunk_size), chunk_size):
        hc, tc = flat_h[s : s + chunk_size], flat_t[s : s + chunk_size]
        if torch.is_grad_enabled() and hc.requires_grad:
            lp, ent = checkpoint(
                _chunk_logprobs, hc, head, transform, tc, temperature, use_reentrant=False
            )
        else:
            lp, ent = _chunk_logprobs(hc, head, transform, tc, temperature)
        lps.append(lp)
        ents.append(ent.detach())
    return torch.cat(lps).view(n, t), torch.cat(ents).view(n, t)
