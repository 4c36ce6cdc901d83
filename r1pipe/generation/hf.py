"""The transformers back end: batched sampling with a KV cache, CPU and GPU.

Two decoders behind one ``generate``:

* ``loop`` (default): r1pipe's own decode loop over the model's forward. The KV cache is
  allocated once per batch at its final length and written in place (transformers'
  ``DynamicCache`` concatenates the whole cache every token, which is quadratic copying
  and took about half the decode time of the tiny default on CPU), and a prompt is
  prefilled once for its whole group of ``n`` completions. Sampling (temperature, top-k,
  top-p, min new tokens) is done here.
  For Qwen2/Llama/Mistral models the decode steps (not the prefill) run in
  :class:`r1pipe.generation.fused.FusedStep`, which computes the same logits in fewer,
  larger operations and reads each prompt's keys and values once per group.

  Two ways to step a batch (``static_batch``):

  - compacting (the default on CPU): finished rows are dropped from the batch and its KV
    cache, and the host looks at the sampled tokens every step;
  - static (the default on GPU): every row stays in the batch, a finished one fed ``pad``
    and its output discarded (its length fixed at the step it finished); the host looks
    for the end of the batch only every ``CHECK_EVERY`` steps (every step with stop
    strings, which are matched on the host), so the GPU is not left waiting for it.

  Both give the same tokens and log-probs for a seed: a batch draws all its uniform
  numbers up front, one per (step, row), so a row's draws do not depend on the others.
  With ``cuda_graphs`` (GPU, fused step, static batch), the decode step is
  :class:`r1pipe.generation.fused.StaticFusedStep` (fixed shapes and addresses), captured
  once per batch in a CUDA graph and replayed each step; sampling runs outside the graph.
* ``generate``: ``model.generate`` of transformers, for models whose cache is not a plain
  full-attention KV cache (sliding windows, linear attention, remote code).

Both return the same thing: token ids, the sampling log-probs (of the processed
distribution the token was drawn from) and a finish reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache, DynamicLayer

from r1pipe.generation import fused
from r1pipe.generation.base import HF_DECODERS, Completion, SamplingParams
from r1pipe.models import count_parameters, has_plain_kv_cache

DECODERS = HF_DECODERS
#: A static batch looks at the host for the end of the batch every this many steps.
CHECK_EVERY = 16
#: The values of ``static_batch`` and ``cuda_graphs``.
SWITCH = ("auto", "true", "false")


class _InPlaceLayer(DynamicLayer):
    """One layer's KV cache, allocated at its final length and filled in place."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, _, d = key_states.shape
        self.k_buf = key_states.new_empty(b, h, self.capacity, d)
        self.v_buf = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kw: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        q = key_states.shape[-2]
        end = self.length + q
        if end > self.capacity:
            raise RuntimeError(f"KV cache overflow: {end} > capacity {self.capacity}")
        self.k_buf[:, :, self.length : end] = key_states
        self.v_buf[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.k_buf, self.v_buf = self.k_buf[indices], self.v_buf[indices]
            self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.k_buf = self.k_buf.repeat_interleave(repeats, dim=0)
            self.v_buf = self.v_buf.repeat_interleave(repeats, dim=0)
            self._views()

    def _views(self) -> None:
        self.keys, self.values = self.k_buf[:, :, : self.length], self.v_buf[:, :, : self.length]


class _ForwardStep:
    """Decode steps through the model's own forward, for one batch after its prefill: each
    row's KV cache (the prompt's, repeated ``n`` times, then the completion) in place, the
    attention mask one column per step. Same interface as ``fused.FusedStep``."""

    def __init__(
        self,
        model: PreTrainedModel,
        cache: DynamicCache,
        mask: torch.Tensor,
        pos: torch.Tensor,
        n: int,
        max_new_tokens: int,
    ):
        if n > 1:  # one prefill per prompt, then n rows each
            cache.batch_repeat_interleave(n)
            mask, pos = mask.repeat_interleave(n, dim=0), pos.repeat_interleave(n, dim=0)
        self.model, self.cache, self.width = model, cache, mask.shape[1]
        # full-width buffer of mask columns, so that a step only writes one column
        self.full_mask = torch.cat([mask, mask.new_zeros(mask.shape[0], max_new_tokens)], 1)
        self.pos = pos[:, -1:]

    def select(self, keep: torch.Tensor) -> None:
        """Keep only these batch rows (indices into the current batch)."""
        self.cache.batch_select_indices(keep)
        self.full_mask, self.pos = self.full_mask[keep], self.pos[keep]

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Logits ``[rows, V]`` after feeding ``tokens [rows]`` as completion token ``t``."""
        self.full_mask[:, self.width + t] = 1
        self.pos = self.pos + 1
        return self.model(
            input_ids=tokens[:, None],
            attention_mask=self.full_mask[:, : self.width + t + 1],
            position_ids=self.pos,
            past_key_values=self.cache,
            use_cache=True,
        ).logits[:, -1]


_Step = fused.FusedStep | _ForwardStep
#: A decoded batch: token ids and log-probs ``[rows, T]`` (host) and each row's length.
_Decoded = tuple[torch.Tensor, torch.Tensor, list[int]]


def process_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The logits the sampler draws from: temperature, then top-k, then top-p (fp32).

    Filtered-out tokens get ``-inf``; ``log_softmax`` of the result is the sampling
    distribution. Greedy (``temperature == 0``) leaves the logits as they are.
    """
    logits = logits.float()
    if params.temperature == 0:
        return logits
    if params.temperature != 1.0:
        logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= params.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def decode_threads(model: PreTrainedModel, num_threads: int) -> int:
    """Intra-op threads for decoding: ``num_threads``; for 0 (auto), torch's setting, except
    on a CPU that other processes already keep busy (1-minute load average above the core
    count) for models under 100M parameters: then 1. Measured on the tiny default, 2 cores:
    idle, 2 threads decode in 0.90 s what 1 thread does in 1.20 s; loaded, 2 threads took
    17.5 s and 1 thread 1.4 s (threads spin-wait on descheduled siblings)."""
    if num_threads > 0:
        return num_threads
    p = next(model.parameters())
    small = count_parameters(model) < 100_000_000
    if p.device.type == "cpu" and small and os.getloadavg()[0] > (os.cpu_count() or 1):
        return 1
    return torch.get_num_threads()


def sample_tokens(probs: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row of ``probs [rows, V]`` by inverse-CDF sampling: one uniform number
    per row, ``u [rows]`` in ``[0, 1)`` (drawn here when not given; ``torch.multinomial``
    draws one exponential per vocabulary entry, about a tenth of the tiny default's decode
    time). Zero-probability tokens are never drawn."""
    if u is None:
        u = torch.rand(probs.shape[0], device=probs.device)
    cdf = probs.cumsum(-1)
    x = (1.0 - u[:, None]) * cdf[:, -1:]  # (0, total]
    return torch.searchsorted(cdf, x).squeeze(-1).clamp(max=probs.shape[-1] - 1)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads."""
    if n <= 0 or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class HFGenerator:
    """Generate with a transformers model already in memory.

    Args:
        model: A causal LM (its weights are read at call time: no copy, so the trainer's
            updates are seen without a weight push).
        tokenizer: Its tokenizer.
        batch_size: Sequences (prompts x n) per decode batch.
        synced_gpus: Keep ranks in lockstep (needed when the model is ZeRO-3 partitioned).
        decoder: ``loop`` (r1pipe's decode loop) or ``generate`` (transformers'); ``loop``
            falls back to ``generate`` for models it does not support.
        num_threads: Intra-op CPU threads while decoding (0: auto, see ``decode_threads``).
        fused_step: ``loop``: decode steps of supported models (Qwen2, Llama, Mistral under
            1B parameters, not ZeRO-3) with :class:`r1pipe.generation.fused.FusedStep`
            instead of the model's forward (the prefill always uses the forward).
        static_batch: ``loop``: ``true``: keep finished rows in the batch, masked, and look
            for the end every ``CHECK_EVERY`` steps; ``false``: drop them as they end;
            ``auto``: static when the model is on a CUDA device.
        cuda_graphs: ``loop``: replay each batch's decode step from a CUDA graph; ``auto``:
            when the model is on CUDA with the fused step and a static batch; ``true``
            raises ``ValueError`` when one of those is missing (no GPU, for one).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 256,
        synced_gpus: bool = False,
        decoder: str = "loop",
        num_threads: int = 0,
        fused_step: bool = True,
        static_batch: str = "auto",
        cuda_graphs: str = "auto",
    ):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.static_batch, self.cuda_graphs = str(static_batch).lower(), str(cuda_graphs).lower()
        for key, value in (("static_batch", self.static_batch), ("cuda_graphs", self.cuda_graphs)):
            if value not in SWITCH:
                raise ValueError(f"generation.{key} must be one of {SWITCH}, got {value!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # ZeRO-3: every rank must run the same number of forward passes (parameters are
        # gathered collectively), so ranks keep stepping until all are done.
        self.synced_gpus = synced_gpus
        self.decoder = decoder if decoder == "generate" or has_plain_kv_cache(model) else "generate"
        self.num_threads = num_threads
        # decided once: ZeRO-3 partitioning and the parameter count do not change
        self.fused = (
            self.decoder == "loop" and fused_step and not synced_gpus and fused.supported(model)
        )
        # for tests on CPU: a static batch steps with the static-shaped fused step (what
        # CUDA graphs capture), without a graph
        self.static_shapes = False
        if self.cuda_graphs == "true":  # fail here, not at the first generate call
            self._loop_modes(next(model.parameters()).device)

    @torch.no_grad()
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        tok = self.tokenizer
        was_training = self.model.training
        self.model.eval()
        if params.seed is not None:
            torch.manual_seed(params.seed)
        out: list[list[Completion]] = [[] for _ in prompts]
        # whole groups per batch: a prompt's n completions share one prefill
        per_batch = max(1, self.batch_size // max(1, params.n))
        n_batches = -(-len(prompts) // per_batch)
        if self.synced_gpus:
            from r1pipe.training.dist import all_gather_objects

            # the same number of decode calls on every rank (a spare call repeats a prompt)
            n_batches = max(all_gather_objects(n_batches))
        if self.decoder == "loop":  # fused weights from the current parameters, once a call
            weights = fused.FusedWeights(self.model) if self.fused else None
            decode = partial(self._decode_loop, weights=weights)
        else:
            decode = self._decode_generate
        with _threads(decode_threads(self.model, self.num_threads)):
            for b in range(n_batches):
                idx = list(range(b * per_batch, min(len(prompts), (b + 1) * per_batch)))
                if not idx and not prompts:
                    break  # nothing to mirror; only reachable without prompts at all
                mirror = not idx
                chunk = [prompts[i] for i in idx] if idx else prompts[:1]
                enc = [tok(p, add_special_tokens=False)["input_ids"] for p in chunk]
                rows = decode(enc, params)
                if mirror:
                    continue
                for j, (token_ids, lps) in enumerate(rows):
                    pi = idx[j // params.n]
                    out[pi].append(self._completion(pi, token_ids, lps, params))
        if was_training:
            self.model.train()
        return out

    # ---- the two decoders: prompt token ids -> n rows per prompt of (token ids, logprobs)

    def update_weights(self, model: PreTrainedModel) -> None:
        """Nothing to do: this back end samples from the live training model itself."""
        if model is not self.model:
            raise ValueError("the hf generator samples from the model it was built with")

    def _left_pad(self, enc: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for j, e in enumerate(enc):  # left padding: generation continues at the right edge
            ids[j, width - len(e) :] = torch.tensor(e)
            mask[j, width - len(e) :] = 1
        return ids, mask

    def _any_rank(self, flag: bool, device: torch.device) -> bool:
        if not self.synced_gpus:
            return flag
        from r1pipe.training.dist import all_reduce_sum

        return bool(all_reduce_sum(int(flag), device))

    def _loop_modes(self, device: torch.device) -> tuple[bool, bool]:
        """``(static batch, CUDA graphs)`` of the decode loop for a model on ``device``."""
        cuda = device.type == "cuda"
        static = cuda if self.static_batch == "auto" else self.static_batch == "true"
        if self.cuda_graphs != "true":
            return static, self.cuda_graphs == "auto" and cuda and static and self.fused
        if not cuda:
            raise ValueError(
                f"generation.cuda_graphs: true needs the model on a CUDA device (it is on "
                f"{device}); use auto or false"
            )
        if not (static and self.fused):
            raise ValueError(
                "generation.cuda_graphs: true needs generation.static_batch (auto or true) and "
                "the fused step (decoder loop, fused_step true, a supported model, not ZeRO-3)"
            )
        return static, True

    def _decode_loop(
        self, enc: list[list[int]], params: SamplingParams, weights: fused.FusedWeights | None
    ) -> list[tuple[list[int], list[float]]]:
        model = self.model
        device = next(model.parameters()).device
        static, graphs = self._loop_modes(device)
        n, T = params.n, params.max_new_tokens
        ids, mask = self._left_pad(enc)
        ids, mask = ids.to(device), mask.to(device)
        width = ids.shape[1]
        cache = DynamicCache(config=model.config)
        # the fused step keeps the prompts' keys and values as they are and the completions'
        # in its own buffers; the model's forward appends to one per-row buffer
        capacity = width if weights is not None else width + T
        cache.layers = [_InPlaceLayer(capacity) for _ in cache.layers]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        step: _Step
        if weights is not None:
            prompt_kv = [(layer.keys, layer.values) for layer in cache.layers]
            last_pos = pos[:, -1].repeat_interleave(n)
            static_shapes = graphs or (static and self.static_shapes)
            kind = fused.StaticFusedStep if static_shapes else fused.FusedStep
            step = kind(weights, prompt_kv, mask, n, last_pos, T)
            if graphs:
                step.capture()
        else:
            step = _ForwardStep(model, cache, mask, pos, n, T)
        if n > 1:
            logits = logits.repeat_interleave(n, dim=0)
        rows = logits.shape[0]
        # every uniform number the batch can use, one per (step, row): a row's draws do not
        # depend on which other rows are still in the batch, nor on how many steps it takes
        u = torch.rand(T, rows, device=device) if params.temperature > 0 else None
        loop = self._static_steps if static else self._compacting_steps
        tokens, lps, lengths = loop(step, logits, params, u)
        return [(tokens[r, :k].tolist(), lps[r, :k].tolist()) for r, k in enumerate(lengths)]

    @staticmethod
    def _sample(
        logits: torch.Tensor,
        params: SamplingParams,
        t: int,
        u: torch.Tensor | None,
        eos: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Completion token ``t`` of each row from its ``logits`` (``u``: a uniform number
        per row; None: greedy), and its log-prob."""
        scores = process_logits(logits, params)
        if eos is not None and t < params.min_new_tokens:
            scores[:, eos] = float("-inf")
        logp = scores.log_softmax(-1)
        nxt = scores.argmax(-1) if u is None else sample_tokens(logp.exp(), u)
        return nxt, logp.gather(-1, nxt[:, None]).squeeze(-1)

    def _stop_hits(
        self, params: SamplingParams, texts: list[str], rows: list[int], tokens: list[int]
    ) -> torch.Tensor:
        """Append each row's new token to its recent text; True where a stop string is in it."""
        keep = max(len(s) for s in params.stop) + 32
        hits = torch.zeros(len(rows), dtype=torch.bool)
        for j, (r, tid) in enumerate(zip(rows, tokens, strict=True)):
            piece = self.tokenizer.decode([tid], skip_special_tokens=False)
            texts[r] = (texts[r] + piece)[-keep:]
            hits[j] = any(s in texts[r] for s in params.stop)
        return hits

    def _compacting_steps(
        self, step: _Step, logits: torch.Tensor, params: SamplingParams, u: torch.Tensor | None
    ) -> _Decoded:
        """Decode, dropping finished rows from the batch (and its KV cache) as they end; one
        host sync a step. Returns tokens and log-probs ``[rows, T]`` and each row's length."""
        T, eos = params.max_new_tokens, self.tokenizer.eos_token_id
        rows, device = logits.shape[0], logits.device
        alive = torch.arange(rows, device=device)  # batch row -> output row
        compacted = False
        # per step: the batch's sampled tokens, their log-probs and output rows; written into
        # [rows, T] once at the end (two scatters per step cost more than the bookkeeping)
        step_tokens: list[torch.Tensor] = []
        step_lps: list[torch.Tensor] = []
        step_rows: list[torch.Tensor] = []
        lengths = torch.full((rows,), T, dtype=torch.long)
        finished = torch.zeros(rows, dtype=torch.bool)
        stop_texts = [""] * rows if params.stop else None
        for t in range(T):
            u_t = None if u is None else u[t, alive] if compacted else u[t]
            nxt, lp = self._sample(logits, params, t, u_t, eos)
            step_tokens.append(nxt)
            step_lps.append(lp)
            step_rows.append(alive)
            eos_allowed = eos is not None and t >= params.min_new_tokens
            done = (nxt == eos).cpu() if eos_allowed else None
            if stop_texts is not None:
                hits = self._stop_hits(params, stop_texts, alive.tolist(), nxt.tolist())
                done = hits if done is None else done | hits
            ending = done is not None and bool(done.any())
            keep = None
            if ending:
                alive_cpu = alive.cpu()
                ended = alive_cpu[done & ~finished[alive_cpu]]
                lengths[ended], finished[ended] = t + 1, True
                keep = ~done
            running = keep is None or bool(keep.any())
            if not self._any_rank(running and t < T - 1, device):
                break
            if keep is not None:
                if not running:  # this rank is done but another is not: step one dummy row
                    keep[0] = True
                if not keep.all():  # drop finished rows from the batch
                    sel = keep.nonzero().squeeze(-1).to(device)
                    step.select(sel)
                    alive, nxt = alive[sel], nxt[sel]
                    compacted = True
            logits = step.step(nxt, t)
        out_tokens = torch.full((rows, T), -1, dtype=torch.long)
        out_lps = torch.zeros((rows, T))
        sizes = torch.tensor([len(r) for r in step_rows])
        cols = torch.repeat_interleave(torch.arange(len(step_rows)), sizes)
        where = (torch.cat(step_rows).cpu(), cols)
        out_tokens[where] = torch.cat(step_tokens).cpu()
        out_lps[where] = torch.cat(step_lps).float().cpu()
        return out_tokens, out_lps, lengths.tolist()

    def _static_steps(
        self, step: _Step, logits: torch.Tensor, params: SamplingParams, u: torch.Tensor | None
    ) -> _Decoded:
        """Decode with every row kept in the batch: a finished row is fed ``pad`` (its
        output is discarded; its length was fixed at the step it finished). Without stop
        strings the host looks at the batch only every ``CHECK_EVERY`` steps, so a step
        queues its work without waiting for the last one; same results as
        :meth:`_compacting_steps`."""
        T, tok = params.max_new_tokens, self.tokenizer
        eos = tok.eos_token_id
        fill = next((x for x in (tok.pad_token_id, eos) if x is not None), 0)
        rows, device = logits.shape[0], logits.device
        tokens = torch.zeros((rows, T), dtype=torch.long, device=device)
        lps = torch.zeros((rows, T), device=device)
        lengths = torch.full((rows,), T, dtype=torch.long, device=device)
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        stop_texts = [""] * rows if params.stop else None
        every = 1 if params.stop else CHECK_EVERY  # stop strings need the tokens each step
        for t in range(T):
            nxt, lp = self._sample(logits, params, t, None if u is None else u[t], eos)
            tokens[:, t], lps[:, t] = nxt, lp
            done = None
            if eos is not None and t >= params.min_new_tokens:
                done = nxt == eos
            if stop_texts is not None:
                live = (~finished).nonzero().squeeze(-1)
                hits = self._stop_hits(params, stop_texts, live.tolist(), nxt[live].tolist())
                stopped = torch.zeros(rows, dtype=torch.bool, device=device)
                stopped[live] = hits.to(device)
                done = stopped if done is None else done | stopped
            if done is not None:
                ended = done & ~finished
                lengths.masked_fill_(ended, t + 1)
                finished |= ended
            if t == T - 1:
                break
            if (t + 1) % every == 0:  # a host sync: is any row of any rank still going?
                if not self._any_rank(not bool(finished.all()), device):
                    break
            logits = step.step(nxt.masked_fill(finished, fill), t)
        return tokens.cpu(), lps.float().cpu(), lengths.tolist()

    def _decode_generate(
        self, enc: list[list[int]], params: SamplingParams
    ) -> list[tuple[list[int], list[float]]]:
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        enc = [e for e in enc for _ in range(params.n)]  # each prompt n times, consecutive
        ids, mask = self._left_pad(enc)
        greedy = params.temperature == 0
        gen_kwargs = dict(
            max_new_tokens=params.max_new_tokens,
            min_new_tokens=params.min_new_tokens or None,
            do_sample=not greedy,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            return_dict_in_generate=True,
            output_scores=True,
            synced_gpus=self.synced_gpus,
        )
        if not greedy:
            gen_kwargs.update(
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None
            )
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            gen_kwargs.update(stop_strings=params.stop, tokenizer=tok)
        res = self.model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs
        )
        new = res.sequences[:, ids.shape[1] :].cpu()  # [b, T_new]
        # scores are the processed logits the sampler drew from (temperature, top-p).
        scores = torch.stack(res.scores, 1).float().log_softmax(-1).cpu()  # [b, T, V]
        lps = scores.gather(-1, new[..., None]).squeeze(-1)
        result = []
        for j in range(new.shape[0]):
            row = new[j].tolist()
            k = len(row)
            if tok.eos_token_id in row:
                k = row.index(tok.eos_token_id) + 1  # keep EOS: it is a sampled token
            elif params.stop:  # a row ended by a stop string is padded after it
                while k and row[k - 1] == tok.pad_token_id:
                    k -= 1
            result.append((row[:k], lps[j, :k].tolist()))
        return result

    def _completion(
        self, pi: int, token_ids: list[int], lps: list[float], params: SamplingParams
    ) -> Completion:
        tok = self.tokenizer
        eos = tok.eos_token_id
        ended = bool(token_ids) and token_ids[-1] == eos
        text = tok.decode([t for t in token_ids if t != eos], skip_special_tokens=False)
        stopped = ended or (bool(params.stop) and any(s in text for s in params.stop))
        return Completion(
            prompt_index=pi,
            text=text,
            token_ids=token_ids,
            logprobs=lps if params.return_logprobs else None,
            finish_reason="stop" if stopped else "length",
        )
