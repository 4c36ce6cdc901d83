"""One decode step of a Llama-family model in few, large tensor operations.

The decode loop of the hf back end (:mod:`r1pipe.generation.hf`) feeds one token per row
per step. Through the model's own forward, a step of the tiny default is about 45 small
operations per layer (masks, rotary tables, norms, reshapes), each with a fixed CPU cost
that outweighs its arithmetic. This module runs the same step of a ``Qwen2``, ``Llama``
or ``Mistral`` causal LM (full attention, SiLU MLP, RMSNorm, rotary embeddings) with the
weights rearranged once per generate call (:class:`FusedWeights`):

* q, k and v come from one matrix product, together with q and k already rotated by
  half a head (``rotate_half`` is linear, so it is folded into copies of the weights):
  rotary embedding is then ``qk * cos + qk_rot * sin``, one fused multiply-add; the
  attention scale is folded into q;
* the MLP's gate and up projections are one matrix product;
* attention over the prompt reads the prompt's keys and values once per *prompt*, not per
  completion: the ``n`` rows of a group share them (as prefix caching does), and the
  completion part is a plain per-row product. The two parts are joined in one softmax.

Only the decode steps run here; the prompt prefill uses the model's own forward (its keys
and values are taken from the cache). It computes the same function as the model's
forward (tests compare the logits step by step and the sampled tokens with the model's
own forward) and is used only for the classes and options checked by :func:`supported`.

:class:`StaticFusedStep` is the same step with fixed shapes and addresses for a static
batch (no rows dropped; the completions' keys and values in ``[rows, kv_heads,
max_new_tokens, D]`` buffers attended with a mask over the columns not written yet; the
tokens and the step index in device tensors), so that it can be captured once in a CUDA
graph and replayed: one launch a step instead of about a thousand kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1pipe.models import count_parameters, has_plain_kv_cache

CLASSES = ("Qwen2ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM")
ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # position-only tables (not "dynamic")
MAX_PARAMETERS = 1_000_000_000  # the rearranged weights are a copy of the attention and MLP


def supported(model: torch.nn.Module) -> bool:
    """True when :class:`FusedStep` computes exactly what ``model``'s forward does."""
    if type(model).__name__ not in CLASSES or not has_plain_kv_cache(model):
        return False
    cfg = model.config
    inner = getattr(model, "model", None)
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is None or getattr(rotary, "rope_type", "default") not in ROPE_TYPES:
        return False
    if getattr(cfg, "hidden_act", None) != "silu" or getattr(cfg, "pretraining_tp", 1) != 1:
        return False
    if any(getattr(p, "ds_id", None) is not None for p in model.parameters()):
        return False  # ZeRO-3 partitioned parameters: only the model's forward gathers them
    return count_parameters(model) < MAX_PARAMETERS


def _rotate_rows(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The rows of a projection ``[heads * head_dim, ...]`` reordered as ``rotate_half``
    reorders the output of each head: ``(x1, x2) -> (-x2, x1)``."""
    w = w.reshape(-1, head_dim, *w.shape[1:])
    w1, w2 = w.chunk(2, dim=1)
    return torch.cat((-w2, w1), dim=1).reshape(-1, *w.shape[2:])


def _cat_bias(parts: list[torch.Tensor | None], like: list[torch.Tensor]) -> torch.Tensor | None:
    if all(b is None for b in parts):
        return None
    return torch.cat(
        [w.new_zeros(w.shape[0]) if b is None else b for b, w in zip(parts, like, strict=True)]
    )


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as the models compute it: in fp32, then back to the input dtype, times weight."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)  # one call (35 vs 50 us on CPU)
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class FusedWeights:
    """A model's weights rearranged for :class:`FusedStep`, once per generate call (they are
    read then, so the trainer's updates are seen; every batch of the call shares them)."""

    def __init__(self, model: torch.nn.Module):
        inner = model.model
        cfg = model.config
        self.H, self.KV = cfg.num_attention_heads, cfg.num_key_value_heads
        self.D = inner.layers[0].self_attn.head_dim
        self.embed = inner.embed_tokens
        self.head = model.get_output_embeddings()
        self.rotary = inner.rotary_emb
        self.norm = (inner.norm.weight, inner.norm.variance_epsilon)
        self.layers = [self._prepare(layer) for layer in inner.layers]

    def _prepare(self, layer: torch.nn.Module) -> tuple:
        a, mlp = layer.self_attn, layer.mlp
        D = self.D
        wq, wk, wv = a.q_proj.weight * a.scaling, a.k_proj.weight, a.v_proj.weight
        bq = a.q_proj.bias * a.scaling if a.q_proj.bias is not None else None
        bk, bv = a.k_proj.bias, a.v_proj.bias
        ws = [wq, wk, _rotate_rows(wq, D), _rotate_rows(wk, D), wv]
        bs = [bq, bk, None if bq is None else _rotate_rows(bq, D)]
        bs += [None if bk is None else _rotate_rows(bk, D), bv]
        w_gu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        b_gu = _cat_bias([mlp.gate_proj.bias, mlp.up_proj.bias], [mlp.gate_proj.weight] * 2)
        ln1, ln2 = layer.input_layernorm, layer.post_attention_layernorm
        return (
            (ln1.weight, ln1.variance_epsilon),
            torch.cat(ws),
            _cat_bias(bs, ws),
            (a.o_proj.weight, a.o_proj.bias),
            (ln2.weight, ln2.variance_epsilon),
            (w_gu, b_gu),
            (mlp.down_proj.weight, mlp.down_proj.bias),
        )


class FusedStep:
    """Decode steps for one batch: ``n`` rows per prompt, after the prompts' prefill.

    Args:
        weights: The model's :class:`FusedWeights` (the model: :func:`supported`).
        prompt_kv: Per layer, the prompts' keys and values ``[prompts, kv_heads, W, D]``
            (rotary embedding applied, as the model's cache holds them).
        prompt_mask: ``[prompts, W]``, 0 on left padding.
        n: Rows per prompt (consecutive).
        last_pos: ``[prompts * n]`` position id of each row's last prompt token.
        max_new_tokens: Steps this batch can take (the completion cache's length).
    """

    def __init__(
        self,
        weights: FusedWeights,
        prompt_kv: list[tuple[torch.Tensor, torch.Tensor]],
        prompt_mask: torch.Tensor,
        n: int,
        last_pos: torch.Tensor,
        max_new_tokens: int,
    ):
        self.w = weights
        self.n = n
        self.prompt_kv = prompt_kv
        P, W = prompt_mask.shape
        self.P, self.W = P, W
        dtype = prompt_kv[0][0].dtype
        self.prompt_bias = torch.zeros(P, 1, 1, W, dtype=dtype, device=prompt_mask.device)
        self.prompt_bias.masked_fill_(prompt_mask[:, None, None] == 0, float("-inf"))
        rows = P * n
        kv_shape = (rows, weights.KV, max_new_tokens, weights.D)
        self.cache = [(k.new_empty(kv_shape), v.new_empty(kv_shape)) for k, v in prompt_kv]
        self.alive = torch.arange(rows, device=prompt_mask.device)  # batch row -> row
        self.all_alive = True
        # rotary tables for every position a completion token can take: [positions, D]
        end = int(last_pos.max()) + max_new_tokens + 1
        positions = torch.arange(end, device=prompt_mask.device)[None]
        cos, sin = weights.rotary(prompt_kv[0][0], positions)
        self.cos, self.sin = cos[0], sin[0]
        self.last_pos = last_pos

    def select(self, keep: torch.Tensor) -> None:
        """Keep only these batch rows (indices into the current batch)."""
        self.alive = self.alive[keep]
        self.all_alive = False
        self.cache = [(k[keep], v[keep]) for k, v in self.cache]

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Logits ``[rows, V]`` after feeding ``tokens [rows]`` as completion token ``t``."""
        return self._forward(tokens, self.last_pos[self.alive] + 1 + t, t)

    def _forward(
        self,
        tokens: torch.Tensor,
        pos: torch.Tensor,
        t: int | torch.Tensor,
        own_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The layers for ``tokens [R]`` at positions ``pos [R]``, their keys and values
        written at completion column ``t``. An int ``t`` attends over columns ``:t + 1``; a
        one-element tensor (:class:`StaticFusedStep`) over all of them, ``own_bias [T]``
        (``-inf`` after ``t``) masking the ones not written yet."""
        w = self.w
        H, KV, D = w.H, w.KV, w.D
        R = tokens.shape[0]
        g = H // KV
        qk_width = (H + KV) * D
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # [R, 1, D]
        x = w.embed(tokens)
        for li, (ln1, w_qkv, b_qkv, o, ln2, gu, down) in enumerate(w.layers):
            qkv = F.linear(_rms(x, *ln1), w_qkv, b_qkv)
            qk = qkv[:, :qk_width].view(R, H + KV, D)
            qk_rot = qkv[:, qk_width : 2 * qk_width].view(R, H + KV, D)
            qk = torch.addcmul(qk * cos, qk_rot, sin)
            q = qk[:, :H].reshape(R, KV, g, D)
            k_new, v_new = qk[:, H:], qkv[:, 2 * qk_width :].view(R, KV, D)
            ck, cv = self.cache[li]
            if own_bias is None:
                ck[:, :, t], cv[:, :, t] = k_new, v_new
                ck, cv = ck[:, :, : t + 1], cv[:, :, : t + 1]
            else:
                ck.index_copy_(2, t, k_new[:, :, None])
                cv.index_copy_(2, t, v_new[:, :, None])
            attn = self._attend(li, q, ck, cv, own_bias)
            x = x + F.linear(attn.reshape(R, H * D), *o)
            gate, up = F.linear(_rms(x, *ln2), *gu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, *down)
        return w.head(_rms(x, *w.norm))

    def _attend(
        self,
        li: int,
        q: torch.Tensor,
        ck: torch.Tensor,
        cv: torch.Tensor,
        own_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention of ``q [R, KV, g, D]`` over its prompt (shared by the group) and its own
        completion so far (``ck``/``cv`` columns, plus ``own_bias`` when given); returns
        ``[R, KV, g, D]``."""
        P, W, n = self.P, self.W, self.n
        R, KV, g, D = q.shape
        pk, pv = self.prompt_kv[li]
        # the prompt part: all rows of a prompt in one product, [P, KV, n * g, W]
        q_all = q
        if not self.all_alive:  # dropped rows: zeros in their place (results unused)
            q_all = q.new_zeros(P * n, KV, g, D).index_copy_(0, self.alive, q)
        q_grp = q_all.view(P, n, KV, g, D).transpose(1, 2).reshape(P, KV, n * g, D)
        s_prompt = torch.matmul(q_grp, pk.transpose(-1, -2)) + self.prompt_bias
        s_prompt = s_prompt.view(P, KV, n, g, W).transpose(1, 2).reshape(P * n, KV, g, W)
        if not self.all_alive:
            s_prompt = s_prompt[self.alive]
        s_own = torch.matmul(q, ck.transpose(-1, -2))  # [R, KV, g, t + 1] (or T)
        if own_bias is not None:
            s_own = s_own + own_bias
        probs = torch.cat([s_prompt, s_own], dim=-1).softmax(-1, dtype=torch.float32)
        probs = probs.to(q.dtype)
        p_prompt = probs[..., :W]
        if not self.all_alive:
            p_prompt = p_prompt.new_zeros(P * n, KV, g, W).index_copy_(0, self.alive, p_prompt)
        p_grp = p_prompt.reshape(P, n, KV, g, W).transpose(1, 2).reshape(P, KV, n * g, W)
        out = torch.matmul(p_grp, pv).view(P, KV, n, g, D).transpose(1, 2).reshape(P * n, KV, g, D)
        if not self.all_alive:
            out = out[self.alive]
        return out + torch.matmul(probs[..., W:], cv)


class StaticFusedStep(FusedStep):
    """:class:`FusedStep` with every shape and address fixed for the whole batch, so that a
    step can be captured once in a CUDA graph (:meth:`capture`) and replayed.

    All rows stay in the batch (:meth:`select` is refused; a static batch masks finished
    rows instead). Each step writes its keys and values into column ``t`` of the
    completion buffers ``[rows, kv_heads, max_new_tokens, D]`` and attends over all
    columns, the ones after ``t`` masked with ``-inf`` (the buffers start at zero, so a
    masked column adds exact zeros: ``0 * NaN`` from uninitialized memory would not). The
    tokens and ``t`` live in device tensors that :meth:`step` overwrites in place. Without
    :meth:`capture` (on CPU) it runs eagerly and computes what :class:`FusedStep` computes,
    up to the order of float additions. Same arguments as :class:`FusedStep`.
    """

    def __init__(self, *args: object, **kw: object):
        super().__init__(*args, **kw)
        for k, v in self.cache:
            k.zero_()
            v.zero_()
        device = self.last_pos.device
        T = self.cache[0][0].shape[2]
        self.tokens = torch.zeros_like(self.last_pos)
        self.t = torch.zeros(1, dtype=torch.long, device=device)
        self.columns = torch.arange(T, device=device)
        self.no_bias = torch.zeros(T, dtype=self.prompt_bias.dtype, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None

    def select(self, keep: torch.Tensor) -> None:
        raise RuntimeError("the static-shaped fused step keeps every row (mask finished ones)")

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Logits ``[rows, V]`` after feeding ``tokens [rows]`` as completion token ``t``.
        With a captured graph this is its output buffer, overwritten by the next step."""
        self.tokens.copy_(tokens)
        self.t.fill_(t)
        if self.graph is None:
            return self._static_forward()
        self.graph.replay()
        return self.logits

    def _static_forward(self) -> torch.Tensor:
        own_bias = self.no_bias.masked_fill(self.columns > self.t, float("-inf"))
        return self._forward(self.tokens, self.last_pos + 1 + self.t, self.t, own_bias)

    def capture(self, warmup: int = 2) -> None:
        """Record one step in a CUDA graph; :meth:`step` replays it from then on.

        The warm-up steps run on a side stream (as torch's CUDA graph notes ask), the
        capture on the same one (libraries that cache handles per stream then create them
        before the capture), with the current inputs; what they write in column ``t`` is
        overwritten by the real step.
        """
        if self.last_pos.device.type != "cuda":
            raise RuntimeError("CUDA graphs need the model on a CUDA device")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._static_forward()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=side):
            self.logits = self._static_forward()
