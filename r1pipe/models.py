"""Models and tokenizers: load any HF causal LM, or build the tiny one offline.

The tiny model is written to disk in Hugging Face format (weights, config, tokenizer with a
chat template, generation config) before any stage uses it, so every stage, transformers and
vLLM treat it like any other checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from r1pipe.config.schema import DeepSpeedConfig, ModelConfig, OptimizerConfig
from r1pipe.errors import UserError
from r1pipe.training.dist import DistInfo

# Whole-token tags: one id each so that the format reward and the tiny model see them as units.
PAD, EOS, BOS_TURN = "<|endoftext|>", "<|im_end|>", "<|im_start|>"
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen-style ChatML. The assistant turn ends with <|im_end|>, which is also the EOS token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer (byte-level BPE with no merges) plus chat and R1 tags.

    Built offline. It is stored in the same byte-level BPE format as Qwen2's tokenizer, so
    transformers' ``Qwen2Tokenizer`` and vLLM load it unchanged; with no merges every byte of
    the text is one token, which keeps the tiny task's digits one token each.

    >>> tok = build_char_tokenizer()
    >>> tok.decode(tok("<think>1+2</think>")["input_ids"])
    '<think>1+2</think>'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = [PAD, EOS, BOS_TURN]
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(byte_symbols)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    tok.add_tokens(TAG_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int
) -> PreTrainedModel:
    """A small Qwen2/Llama causal LM from the spec in ``cfg`` (random init from ``seed``)."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        rope_theta=10000.0,
    )
    config = Qwen2Config(**common) if cfg.arch == "qwen2" else LlamaConfig(**common)
    config._attn_implementation = cfg.attn_implementation
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return model


def save_tiny_base(cfg: ModelConfig, out_dir: Path, seed: int) -> Path:
    """Build the tiny model and tokenizer and save both in HF format into ``out_dir``."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg, tokenizer, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or os.path.exists(path) or path.count("/") > 1


def resolve_dtype(cfg: ModelConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "float32":
        return torch.float32
    if cfg.dtype == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure it can pad and has a chat template."""
    _check_model_path(str(path))
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"model.path={path}: cannot load a tokenizer ({_first_line(e)})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def training_dtype(bf16: bool, device: torch.device) -> torch.dtype:
    """The dtype a model that is about to be trained is loaded in: bf16 when training is bf16
    on CUDA (DeepSpeed would cast the weights to it anyway, before it makes its fp32 master
    copy, so no fp32 copy of the model is ever needed); fp32 otherwise, which on CPU is the
    load of every earlier version (DeepSpeed casts there when ``deepspeed.bf16=true``).

    >>> training_dtype(True, torch.device("cuda", 1)), training_dtype(True, torch.device("cpu"))
    (torch.bfloat16, torch.float32)
    """
    return torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32


def load_kwargs(
    dtype: torch.dtype, device: torch.device | None, *, zero3_init: bool = False
) -> dict[str, Any]:
    """``from_pretrained``'s dtype and placement for a model used on ``device``.

    On CUDA the weights are read straight onto the device in ``dtype`` (``device_map``), so
    no full copy is materialised on the host first; under a ZeRO-3 ``zero.Init`` load
    DeepSpeed places the partitions itself (transformers refuses a ``device_map`` there); on
    CPU (or no device) the load is the one of every earlier version.

    >>> load_kwargs(torch.bfloat16, torch.device("cuda", 1))
    {'dtype': torch.bfloat16, 'device_map': {'': device(type='cuda', index=1)}}
    >>> load_kwargs(torch.float32, torch.device("cpu"))
    {'dtype': torch.float32}
    >>> load_kwargs(torch.bfloat16, torch.device("cuda", 0), zero3_init=True)
    {'dtype': torch.bfloat16}
    """
    kwargs: dict[str, Any] = {"dtype": dtype}
    if device is not None and device.type == "cuda" and not zero3_init:
        kwargs["device_map"] = {"": device}
    return kwargs


@contextmanager
def zero3_init(ds_config: dict[str, Any] | None) -> Iterator[None]:
    """While open, transformers' ``from_pretrained`` builds models under DeepSpeed's
    ``zero.Init`` with ``ds_config`` (a ZeRO-3 DeepSpeed config dict): every parameter is
    partitioned over the ranks as it is created and each rank reads only its share of the
    checkpoint into it. None: nothing changes.

    transformers finds the config through a weak reference to a live ``HfDeepSpeedConfig``;
    it is kept alive here and dropped on exit, so later loads in the process (the held-out
    evaluation's per-rank model, reward models, a judge) are whole models again."""
    if ds_config is None:
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    hf_ds_config = HfDeepSpeedConfig(ds_config)  # the reference that keeps it alive
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        del hf_ds_config


def load_model(
    path: str | Path,
    cfg: ModelConfig,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    zero3_config: dict[str, Any] | None = None,
) -> PreTrainedModel:
    """Load a causal LM from a local HF directory or a hub id, with one clear error.

    Args:
        dtype: The weights' dtype.
        device: Where the model is used: on CUDA the weights are read straight onto it,
            elsewhere loaded on the host and moved there; None: left on the host. (Under
            ``zero3_config`` DeepSpeed places the partitions.)
        zero3_config: A ZeRO-3 DeepSpeed config dict: the model is partitioned at
            construction (:func:`zero3_init`), each rank holding its share.
    """
    _check_model_path(str(path))
    try:
        with zero3_init(zero3_config):
            model = AutoModelForCausalLM.from_pretrained(
                str(path),
                **load_kwargs(dtype, device, zero3_init=zero3_config is not None),
                attn_implementation=cfg.attn_implementation,
                trust_remote_code=cfg.trust_remote_code,
            )
    except (OSError, ValueError, ImportError) as e:
        raise UserError(f"model.path={path}: cannot load a causal LM ({_first_line(e)})") from None
    if device is not None and zero3_config is None:
        model.to(device)  # no copy where device_map put it there already
    return model


def load_policy(
    path: str | Path,
    cfg: ModelConfig,
    ds_cfg: DeepSpeedConfig,
    dist: DistInfo,
    *,
    optim: OptimizerConfig,
    grad_accum: int,
    micro_batch_size: int | None = None,
) -> PreTrainedModel:
    """The model a :class:`~r1pipe.training.engine.TrainEngine` with the same arguments will
    train: in the training dtype (:func:`training_dtype`), straight onto ``dist.device`` on
    CUDA, and under ZeRO-3 partitioned at construction with the engine's DeepSpeed config
    (less its optimizer block, which construction does not read)."""
    from r1pipe.training.engine import deepspeed_config, use_bf16

    bf16 = use_bf16(ds_cfg, dist.device)
    zero3 = None
    if ds_cfg.zero_stage == 3:
        _check_model_path(str(path))
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=cfg.trust_remote_code)
        zero3 = deepspeed_config(
            ds_cfg,
            micro_batch_size=micro_batch_size or optim.micro_batch_size,
            grad_accum=grad_accum,
            world_size=dist.world_size,
            max_grad_norm=optim.max_grad_norm,
            bf16=bf16,
            optimizer=None,
            device_type=dist.device.type,
            hidden_size=getattr(config, "hidden_size", None),
        )
    dtype = training_dtype(bf16, dist.device)
    return load_model(path, cfg, dtype=dtype, device=dist.device, zero3_config=zero3)


def _check_model_path(path: str) -> None:
    if _looks_local(path):
        p = Path(path).expanduser()
        if not p.is_dir():
            raise UserError(f"model.path={path}: no such directory")
        if not (p / "config.json").is_file():
            raise UserError(
                f"model.path={path}: not a Hugging Face model directory (no config.json)"
            )


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def has_plain_kv_cache(model: torch.nn.Module) -> bool:
    """True when every layer of ``model`` keeps a plain full-attention KV cache (no sliding
    window, no linear attention): what r1pipe's decode loop and shared-prompt log-probs need."""
    cfg = model.config.get_text_config(decoder=True)
    types = getattr(cfg, "layer_types", None) or ["full_attention"]
    sliding = getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True)
    return all(t == "full_attention" for t in types) and not sliding


# What transformers' causal LMs do to the output layer's logits in their forward, by class:
# the config attribute (of the text config) and the operation. Checked against the forwards of
# transformers 5.x (``modeling_*.py``); a value of None means the forward does nothing.
_SOFTCAP = ("final_logit_softcapping", "softcap")  # logits = tanh(logits / v) * v
FINAL_LOGIT_TRANSFORMS: dict[str, tuple[str, str]] = {
    "Gemma2ForCausalLM": _SOFTCAP,
    "Gemma3ForCausalLM": _SOFTCAP,
    "Gemma3nForCausalLM": _SOFTCAP,
    "Gemma3nForConditionalGeneration": _SOFTCAP,
    "Gemma4ForCausalLM": _SOFTCAP,
    "Gemma4ForConditionalGeneration": _SOFTCAP,
    "Gemma4UnifiedForCausalLM": _SOFTCAP,
    "Gemma4UnifiedForConditionalGeneration": _SOFTCAP,
    "VaultGemmaForCausalLM": _SOFTCAP,
    "NanoChatForCausalLM": _SOFTCAP,
    "RecurrentGemmaForCausalLM": ("logits_soft_cap", "softcap"),
    "GraniteForCausalLM": ("logits_scaling", "div"),
    "GraniteSWAForCausalLM": ("logits_scaling", "div"),
    "GraniteMoeForCausalLM": ("logits_scaling", "div"),
    "GraniteMoeSWAForCausalLM": ("logits_scaling", "div"),
    "GraniteMoeSharedForCausalLM": ("logits_scaling", "div"),
    "GraniteMoeHybridForCausalLM": ("logits_scaling", "div"),
    # divides the hidden states before its bias-free lm_head: the same as dividing the logits
    "MiniCPM3ForCausalLM": ("logits_scaling", "div"),
    "HyperCLOVAXForCausalLM": ("logits_scaling", "mul"),
    "CohereForCausalLM": ("logit_scale", "mul"),
    "Cohere2ForCausalLM": ("logit_scale", "mul"),
    "Cohere2MoeForCausalLM": ("logit_scale", "mul"),
    "FalconH1ForCausalLM": ("lm_head_multiplier", "mul"),
}
# Config attributes that some transformers model applies to its final logits (or to the
# hidden states right before its output layer). A model of any other class that sets one is
# refused: how its forward uses the value is unknown here.
FINAL_LOGIT_ATTRIBUTES = (
    "final_logit_softcapping",
    "logits_soft_cap",
    "output_logit_soft_cap",
    "logits_scaling",
    "logit_scale",
    "lm_head_multiplier",
    "output_multiplier",
    "logits_mup_width_multiplier",
    "unpadded_vocab_size",
)

# Classes whose forward computes logits otherwise than ``get_output_embeddings()`` of the
# decoder's last hidden state, in a way no transform of its output can reproduce.
OTHER_HEADS = {
    "ModernBertDecoderForCausalLM": "runs a prediction head before its output embeddings",
    "Gemma4AssistantForCausalLM": "projects its hidden states and masks the vocabulary",
    "Gemma4UnifiedAssistantForCausalLM": "projects its hidden states and masks the vocabulary",
}


def _softcap(logits: torch.Tensor, value: float) -> torch.Tensor:
    return torch.tanh(logits / value) * value


def _mul(logits: torch.Tensor, value: float) -> torch.Tensor:
    return logits * value


def _div(logits: torch.Tensor, value: float) -> torch.Tensor:
    return logits / value


def final_logit_transform(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What ``model``'s forward applies to the output of ``get_output_embeddings()`` (final
    logit soft-capping, logit scaling), for code that calls the output layer itself; None when
    nothing. Raises :class:`UserError` for a class in :data:`OTHER_HEADS`, and for a model of
    a class not in :data:`FINAL_LOGIT_TRANSFORMS` whose config (or text config) sets one of
    :data:`FINAL_LOGIT_ATTRIBUTES`."""
    name = type(model).__name__
    text_cfg = model.config.get_text_config(decoder=True)
    if name in OTHER_HEADS:
        raise UserError(
            f"model type {text_cfg.model_type!r} ({name}) {OTHER_HEADS[name]}: r1pipe's "
            "log-probs call the output layer itself and cannot reproduce its logits"
        )
    if name in FINAL_LOGIT_TRANSFORMS:
        attr, op = FINAL_LOGIT_TRANSFORMS[name]
        value = getattr(text_cfg, attr, None)
        if value is None or (op != "softcap" and float(value) == 1.0):
            return None
        return partial({"softcap": _softcap, "mul": _mul, "div": _div}[op], value=float(value))
    for cfg in (model.config, text_cfg) if text_cfg is not model.config else (text_cfg,):
        for attr in FINAL_LOGIT_ATTRIBUTES:
            value = getattr(cfg, attr, None)
            if value is not None:
                raise UserError(
                    f"model type {cfg.model_type!r} ({name}): config.{attr}={value!r} changes "
                    "the final logits in some transformers models, and r1pipe does not know "
                    "whether or how this one applies it; its log-probs would not match the "
                    "sampling distribution"
                )
    return None
