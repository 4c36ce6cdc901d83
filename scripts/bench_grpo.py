"""One GRPO training step on CPU: r1pipe's GRPO trainer against TRL's GRPOTrainer.

What is measured
    The wall time of a whole GRPO step (sample the completions, score them, group advantages,
    forward + backward of the clipped objective, clip, AdamW step) and the peak resident memory
    of each stack, over ``--steps`` timed steps after ``--warmup`` untimed ones. Both sides
    train the same model with the same settings:

    ==================  =================================================================
    model               the tiny default of ``compose([])`` (the character-level Qwen2,
                        fp32, sdpa attention), built once with ``save_tiny_base(..., seed
                        0)`` into a temporary directory that both sides load; untrained.
                        ``--cold-start-steps N``: instead, the tiny default's cold-start
                        SFT trained for N steps (``r1pipe stage cold-start``), the model
                        rl-reasoning starts from; ``--model DIR``: any checkpoint
    prompts             the synthetic addition train split, chat template: r1pipe's
                        ``build_prompt`` text and TRL's conversational prompt render to the
                        same token ids (checked: ``same_prompt_ids``); the very same
                        prompts in the same order (r1pipe's ``sample_order`` per step, read
                        by TRL sequentially with ``shuffle_dataset=False``)
    batch               ``--prompts`` (16) prompts x ``--group-size`` (8) completions per
                        step, one generate call, one micro-batch, one optimizer step
                        (r1pipe: ``generation.batch_size=256``, ``micro_batch_size=128``;
                        TRL: ``per_device_train_batch_size=128``,
                        ``gradient_accumulation_steps=1`` so ``steps_per_generation=1``)
    sampling            temperature 1.0, top-p 1, no top-k, ``--max-new-tokens`` (64)
                        tokens: by default every completion is forced to the full length
                        (``min_new_tokens`` = max on both sides) so that both sides
                        generate and train on exactly prompts x G x 64 tokens;
                        ``--allow-eos`` lets completions stop at EOS (lengths then differ)
    objective           clipped ratio, epsilon 0.2 both ways, no KL and no reference model
                        (r1pipe ``kl_coef=0``, TRL ``beta=0``; ``--kl-coef`` sets both: k3
                        KL to a frozen reference on both sides), ``mu`` / ``num_iterations``
                        1, token-mean aggregation (r1pipe ``token-mean`` = TRL ``dapo``),
                        advantages scaled by the group std
    reward              exact-match accuracy, r1pipe's ``accuracy_reward``, the same
                        function on both sides (an untrained model scores 0, so the
                        advantages and the update are 0; every step still runs in full)
    optimizer           AdamW lr 1e-4, betas 0.9/0.99, eps 1e-8, no weight decay,
                        constant schedule, gradient clipping at 1.0
    r1pipe              ``GRPOTrainer`` of ``r1pipe/rl/trainer.py`` built by
                        ``build_grpo_trainer`` (no run dir), DeepSpeed ZeRO-0, run by
                        the stages' ``fit`` loop; a callback reads each step's times
    TRL                 ``trl.GRPOTrainer`` (transformers ``generate``, no vLLM,
                        ``use_cpu=True``, no gradient checkpointing, fp32, no logging,
                        saving or evaluation) run with ``trainer.train()`` for
                        ``warmup + steps`` optimizer steps
    ==================  =================================================================

    Step time. r1pipe: the step's ``time_step`` (rollout + ``train_on``) as the trainer
    records it. TRL: a
    callback stamps ``on_step_end``; a step is the time between two stamps (the first step
    from its ``on_step_begin``), so it covers everything TRL does per optimizer step (batch
    fetch, generation, reward, loss, backward, clip, AdamW). Warmup steps are left out; as
    with r1pipe they are in the same process, so the timed steps are steady-state steps.

    Where the time goes. ``generate``: r1pipe's ``time_generate`` (prompt order, templating,
    tokenizing, ``generate``, decoding); TRL: time in ``GRPOTrainer._generate`` (the same
    work). ``reward``: r1pipe's ``time_reward``; TRL: time in ``_calculate_rewards``.
    ``train``: r1pipe's ``train_on`` (log-prob forward, loss, backward, optimizer step);
    TRL: the step minus the time in ``_generate_and_score_completions`` (the same work,
    plus the Trainer loop). ``other``: the rest (advantages, batch tensors, bookkeeping).

    Peak RSS is the child process's ``ru_maxrss``: each side runs in its own subprocess
    (``python scripts/bench_grpo.py --only NAME``), which prints one JSON line; the parent
    prints the table and writes ``--out`` JSON when given. ``setup RSS`` is the peak before
    the first step (imports, model, optimizer state, trainer); the difference is the
    training's own peak. Speed-up = TRL step time / r1pipe step time; RSS ratio = r1pipe /
    TRL.

Peer measured: ``trl==1.16.0`` (with accelerate 1.15.0, transformers 5.19.0, torch 2.13.0+cpu,
deepspeed 0.19.8 for r1pipe).

How to run
    ``pip install -e .[bench]`` (TRL), then ``python scripts/bench_grpo.py [--steps 5
    --warmup 1 --prompts 16 --group-size 8 --max-new-tokens 64 --repeat 2 --out bench.json]``.
    About 20 seconds per side and repeat on 2 idle CPU cores with the defaults (about 2
    seconds per step); ``--repeat N`` runs each side N times, round-robin, and shows the
    fastest run of each (interference only ever slows a run down).

    ``--tiny-default`` is the setting rl-reasoning of the tiny default actually runs in: its
    cold-start checkpoint (trained first, about 1.5 minutes, unless ``--model``), completions
    that end at EOS (at most 96 tokens; about 57 on average), KL 0.1 to the cold-start model.
    The completions then differ in length and in number of tokens between the sides (each
    samples its own); the table shows both.

Caveats
    * A tiny model on CPU: the numbers say how much framework overhead costs at this scale
      (each step is about half generation, 64 sequential decode steps of a 1M-parameter
      model over 128 rows, and half training), not how either stack does on a GPU with a
      real model or with vLLM.
    * Both sides run with ``torch.set_num_threads(os.cpu_count())`` (``--threads N`` sets
      another number for both). r1pipe's hf back end decodes with 1 thread on CPU for
      models under 100M parameters (``generation.num_threads=0``, auto): one-token steps of
      small matrices lose more to thread synchronisation than they gain. TRL decodes with
      the process's threads; ``--threads 1`` puts both sides at 1 thread everywhere, which
      isolates this choice from the rest. Other processes on the
      CPU slow a run more than their share (threads wait on a descheduled sibling): the
      ``others`` column is the CPU other processes used during the timed steps, and the script
      warns above 10%. On a shared 2-core VM runs vary by +-25% even when idle: use
      ``--repeat`` and do not read much into smaller differences. Under load it is far
      worse: beside another training job on the 2 cores, a first step with only 8 new tokens
      took 5-6 s; an idle step with 64 takes about 2 s.
    * The sampled completions differ between the sides (different RNG streams), so the
      rewards and texts differ; with the default forced length the token counts do not.
    * Differences that remain: TRL divides the advantages by ``std + 1e-4``, r1pipe by
      ``std + 1e-6`` (no effect here: all advantages are 0 on the untrained model); TRL's
      log-probs come from transformers' fused LM head (``fused_lm_head=True``: log-probs and
      entropy without materialising the logits), r1pipe's from its own chunked and
      checkpointed output layer (``logprob_chunk_size`` 2048 rows); TRL decodes completions
      with ``skip_special_tokens=True``, r1pipe keeps special tokens except EOS (the reward
      only reads the ``<answer>`` tag, which is not a special token).
    * Peak RSS includes each stack's imports (DeepSpeed, Hydra and the run dir for r1pipe;
      datasets, accelerate and TRL for TRL).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import FullLength, accuracy_rewards, peak_rss_mib, quiet
from bench_common import accuracy as _accuracy

CONFIGS = ("r1pipe", "trl")
MARK = "BENCH_RESULT "
TRL_MISSING = (
    "TRL is not installed, so the TRL baseline cannot run: pip install -e .[bench] "
    "(or `make bench`)"
)


# ---- shared set-up (child processes) ---------------------------------------------------


def _overrides(args: argparse.Namespace, run_dir: str | None = None) -> list[str]:
    """r1pipe config overrides of the benchmark (also what the TRL side reads its knobs from)."""
    rl = "stage.rl_reasoning."
    out = [
        f"model.path={args.model_dir}",
        "deepspeed=zero0",
        "generation.backend=hf",
        f"generation.batch_size={args.gen_batch_size}",
        f"{rl}prompts_per_step={args.prompts}",
        f"{rl}group_size={args.group_size}",
        f"{rl}micro_batch_size={args.micro_batch_size or args.prompts * args.group_size}",
        f"{rl}max_new_tokens={args.max_new_tokens}",
        f"{rl}lr={args.lr}",
        f"{rl}lr_scheduler=constant",
        f"{rl}warmup_ratio=0.0",
        f"{rl}weight_decay=0.0",
        f"{rl}max_grad_norm=1.0",
        f"{rl}temperature=1.0",
        f"{rl}top_p=1.0",
        f"{rl}top_k=0",
        f"{rl}mu=1",
        f"{rl}clip_eps_low=0.2",
        f"{rl}clip_eps_high=0.2",
        f"{rl}kl_coef={args.kl_coef}",
        f"{rl}loss_aggregation=token-mean",
        f"{rl}scale_rewards_std=true",
        f"{rl}dynamic_sampling=false",
        f"{rl}overlong_filter=false",
        f"{rl}overlong_penalty=false",
        f"{rl}max_steps={args.warmup + args.steps}",
        f"{rl}save_every=0",
        f"{rl}eval_every=0",
    ]
    if args.seed is not None:
        out.append(f"run.seed={args.seed}")
    if run_dir is not None:
        out.append(f"run.dir={run_dir}")
    return out


def _compose(args: argparse.Namespace, run_dir: str | None = None) -> Any:
    from r1pipe.config.compose import compose

    return compose(_overrides(args, run_dir))


def _step_prompts(cfg: Any, train: list[Any], total: int) -> list[list[int]]:
    """Train indices of each step's prompts: exactly r1pipe's (first sampling round)."""
    from r1pipe.training.order import sample_order

    rl = cfg.stage.rl_reasoning
    n = len(train)
    return [sample_order(s, rl.prompts_per_step, n, cfg.run.seed) for s in range(total)]


def _cpu_snapshot() -> tuple[float, float]:
    """CPU seconds used so far by the whole machine (Linux; NaN elsewhere) and by this process."""
    own = os.times()
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user .. steal
        machine = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # - idle, iowait
    except (OSError, ValueError, IndexError):
        machine = float("nan")
    return machine, own.user + own.system


def _finish(
    name: str, args: argparse.Namespace, cfg: Any, steps: list[dict[str, float]],
    window: tuple[float, float], cpu: tuple[tuple[float, float], tuple[float, float]],
    setup_rss: float, extra: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The result record. ``steps``: per timed step ``step``, ``generate``, ``reward``,
    ``train`` seconds and ``gen_tokens``, ``loss_tokens``; ``window``: its start and end;
    ``cpu``: :func:`_cpu_snapshot` at the start and the end of the window."""

    import torch
    import transformers

    seconds = window[1] - window[0]
    (m0, own0), (m1, own1) = cpu
    others = max(0.0, (m1 - m0) - (own1 - own0)) / (seconds * (os.cpu_count() or 1))

    def mean(key: str) -> float:
        return statistics.fmean(s[key] for s in steps)

    step_s = [s["step"] for s in steps]
    other_s = [s["step"] - s["generate"] - s["reward"] - s["train"] for s in steps]
    rl = cfg.stage.rl_reasoning
    return {
        "config": name,
        "steps": args.steps,
        "warmup": args.warmup,
        "prompts": rl.prompts_per_step,
        "group_size": rl.group_size,
        "max_new_tokens": rl.max_new_tokens,
        "lr": rl.lr,
        "seed": cfg.run.seed,
        "allow_eos": args.allow_eos,
        "kl_coef": args.kl_coef,
        "model": args.model_label,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "step_s_mean": statistics.fmean(step_s),
        "step_s_median": statistics.median(step_s),
        "generate_s": mean("generate"),
        "reward_s": mean("reward"),
        "train_s": mean("train"),
        "other_s": statistics.fmean(other_s),
        "gen_tokens_per_step": mean("gen_tokens"),
        "loss_tokens_per_step": mean("loss_tokens"),
        "gen_tokens_per_s": sum(s["gen_tokens"] for s in steps) / sum(s["generate"] for s in steps),
        "reward_mean": mean("reward_mean"),
        "other_cpu": others,  # share of all cores used by other processes during the window
        "step_s": step_s,
        "per_step": steps,
        "setup_rss_mib": setup_rss,
        "peak_rss_mib": peak_rss_mib(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **extra,
    }


# ---- r1pipe ---------------------------------------------------------------------------


def run_r1pipe(args: argparse.Namespace) -> dict[str, Any]:
    import deepspeed

    from r1pipe.data.tasks import load_task
    from r1pipe.models import load_tokenizer
    from r1pipe.rl.build import build_grpo_trainer
    from r1pipe.rl.prompts import SeededPrompts
    from r1pipe.training.dist import init_distributed
    from r1pipe.training.loop import Callback, FitOutputs, FitPlan, fit

    cfg, _ = _compose(args)
    rl, task = cfg.stage.rl_reasoning, cfg.task
    train, _ = load_task(task)
    dist = init_distributed()

    trainer = build_grpo_trainer(
        cfg, rl, "rl_reasoning", args.model_dir, load_tokenizer(args.model_dir), dist,
        rewards=accuracy_rewards(task), prompts=SeededPrompts(train, rl, cfg.run.seed),
    )  # fmt: skip
    if not args.allow_eos:
        trainer.generator = FullLength(trainer.generator)
    setup_rss = peak_rss_mib()

    class Clock(Callback):
        """The steps' records and times: the window starts after the warmup steps."""

        def __init__(self) -> None:
            self.steps: list[dict[str, float]] = []
            self.losses: list[float] = []
            self.start, self.cpu0 = time.perf_counter(), _cpu_snapshot()

        def on_step_end(self, done: int, record: dict[str, Any]) -> None:
            self.losses.append(record["loss"])
            if done == args.warmup:
                self.start, self.cpu0 = time.perf_counter(), _cpu_snapshot()
            if done > args.warmup:
                self.steps.append(
                    {
                        "step": record["time_step"],
                        "generate": record["time_generate"],
                        "reward": record["time_reward"],
                        "train": record["time_train"],
                        "gen_tokens": record["generated_tokens"],
                        "loss_tokens": record["trained_tokens"],
                        "reward_mean": record["reward"],
                    }
                )

    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="bench-r1pipe-") as tmp:
        plan = FitPlan(args.warmup + args.steps, log_every=1, save_every=0, keep_last=1)
        fit(trainer, plan, FitOutputs(Path(tmp), final_dir=None), dist, callbacks=[clock])
    end = time.perf_counter()
    cpu = (clock.cpu0, _cpu_snapshot())
    return _finish(
        "r1pipe", args, cfg, clock.steps, (clock.start, end), cpu, setup_rss,
        {
            "deepspeed": deepspeed.__version__,
            "zero_stage": cfg.deepspeed.zero_stage,
            "micro_batches": trainer.grad_accum,
            "losses": clock.losses,
        },
    )  # fmt: skip


# ---- TRL ------------------------------------------------------------------------------


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import trl
    except ImportError:
        sys.exit(TRL_MISSING)
    import accelerate
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from r1pipe.data.tasks import load_task
    from r1pipe.data.templates import build_prompt
    from r1pipe.models import load_model, load_tokenizer

    cfg, _ = _compose(args)
    rl, task = cfg.stage.rl_reasoning, cfg.task
    if task.template != "chat":
        sys.exit("the TRL side needs task.template=chat (conversational prompts)")
    total = args.warmup + args.steps
    train, _ = load_task(task)
    order = _step_prompts(cfg, train, total)
    examples = [train[i] for step in order for i in step]

    def messages(question: str) -> list[dict[str, str]]:
        m = [{"role": "system", "content": task.system_prompt}] if task.system_prompt else []
        return m + [{"role": "user", "content": question + task.instruction}]

    dataset = Dataset.from_dict(
        {
            "prompt": [messages(e.question) for e in examples],
            "reference": [e.reference for e in examples],
        }
    )

    def accuracy(completions: list[Any], reference: list[str], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [_accuracy(task, t, r) for t, r in zip(texts, reference, strict=True)]

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.begin: list[float] = []
            self.ends: list[float] = []
            self.cpu: list[tuple[float, float]] = []
            self.totals: list[dict[str, float]] = []

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.begin.append(time.perf_counter())
            if len(self.begin) == args.warmup + 1:
                self.cpu_begin = _cpu_snapshot()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            self.ends.append(time.perf_counter())
            self.cpu.append(_cpu_snapshot())
            self.totals.append(dict(trainer.clock))

    class Trainer(GRPOTrainer):
        """TRL's trainer with cumulative timers around its generation and reward calls."""

        clock = {"generate": 0.0, "reward": 0.0, "score": 0.0, "gen_tokens": 0.0}
        clock.update(loss_tokens=0.0, reward_sum=0.0, reward_n=0.0)
        losses: list[float] = []

        def _generate(self, prompts: list[Any]) -> Any:
            t = time.perf_counter()
            out = super()._generate(prompts)
            self.clock["generate"] += time.perf_counter() - t
            self.clock["gen_tokens"] += sum(len(c) for c in out[1])
            return out

        def _calculate_rewards(self, *a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            out = super()._calculate_rewards(*a, **k)
            self.clock["reward"] += time.perf_counter() - t
            self.clock["reward_sum"] += float(out.sum())
            self.clock["reward_n"] += out.shape[0]
            return out

        def _generate_and_score_completions(self, *a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            out = super()._generate_and_score_completions(*a, **k)
            self.clock["score"] += time.perf_counter() - t
            self.clock["loss_tokens"] += float(out["num_items_in_batch"])
            return out

        def training_step(self, *a: Any, **k: Any) -> Any:
            loss = super().training_step(*a, **k)
            self.losses.append(float(loss))
            return loss

    n = rl.prompts_per_step * rl.group_size
    model = load_model(args.model_dir, cfg.model, dtype=torch.float32)
    tok = load_tokenizer(args.model_dir)
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out_dir:
        config = GRPOConfig(
            output_dir=out_dir, max_steps=total, per_device_train_batch_size=n,
            gradient_accumulation_steps=1, num_generations=rl.group_size,
            max_completion_length=rl.max_new_tokens, temperature=rl.temperature,
            top_p=rl.top_p, top_k=rl.top_k, learning_rate=rl.lr, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=rl.weight_decay, adam_beta1=rl.adam_beta1,
            adam_beta2=rl.adam_beta2, adam_epsilon=rl.adam_eps,
            max_grad_norm=rl.max_grad_norm, optim="adamw_torch", beta=args.kl_coef,
            num_iterations=rl.mu, epsilon=rl.clip_eps_low, epsilon_high=rl.clip_eps_high,
            loss_type="dapo", scale_rewards="group", mask_truncated_completions=False,
            use_vllm=False, use_cpu=True, bf16=False, fp16=False,
            gradient_checkpointing=False, shuffle_dataset=False, dataloader_num_workers=0,
            generation_kwargs=None if args.allow_eos else {"min_new_tokens": rl.max_new_tokens},
            report_to=[], logging_strategy="no", save_strategy="no", eval_strategy="no",
            log_completions=False, disable_tqdm=True, seed=cfg.run.seed,
        )  # fmt: skip
        clock = Clock()
        trainer = Trainer(
            model=model, reward_funcs=accuracy, args=config, train_dataset=dataset,
            processing_class=tok, callbacks=[clock],
        )  # fmt: skip
        assert config.steps_per_generation == 1 and config.generation_batch_size == n
        # The prompt token ids TRL generates from equal r1pipe's (build_prompt + tokenizer).
        first = examples[: rl.prompts_per_step]
        trl_ids = trainer._tokenize_prompts([messages(e.question) for e in first])[0]
        ours = [
            tok(build_prompt(e.question, task, tok), add_special_tokens=False)["input_ids"]
            for e in first
        ]
        same_ids = [list(x) for x in trl_ids] == ours
        setup_rss = peak_rss_mib()
        trainer.train()
    w = args.warmup
    steps = []
    for i in range(w, total):
        prev = clock.ends[i - 1] if i else clock.begin[0]
        a = clock.totals[i - 1] if i else dict.fromkeys(clock.totals[0], 0.0)
        b = clock.totals[i]
        d = {k: b[k] - a[k] for k in b}
        step = clock.ends[i] - prev
        steps.append(
            {
                "step": step,
                "generate": d["generate"],
                "reward": d["reward"],
                "train": step - d["score"],
                "gen_tokens": d["gen_tokens"],
                "loss_tokens": d["loss_tokens"],
                "reward_mean": d["reward_sum"] / max(d["reward_n"], 1.0),
            }
        )
    start = clock.ends[w - 1] if w else clock.begin[0]
    cpu = (clock.cpu[w - 1] if w else clock.cpu_begin, clock.cpu[total - 1])
    return _finish(
        "trl", args, cfg, steps, (start, clock.ends[total - 1]), cpu, setup_rss,
        {
            "trl": trl.__version__,
            "accelerate": accelerate.__version__,
            "same_prompt_ids": same_ids,
            "generation_batch_size": config.generation_batch_size,
            "steps_per_generation": config.steps_per_generation,
            "losses": Trainer.losses,
        },
    )  # fmt: skip


def _build_model(model_dir: Path, seed: int) -> None:
    """The tiny default model, built offline (untrained) into ``model_dir``."""
    from r1pipe.config.compose import compose
    from r1pipe.models import save_tiny_base

    save_tiny_base(compose([])[0].model, model_dir, seed)


def _cold_start(run_dir: Path, steps: int) -> str:
    """The tiny default's cold-start SFT (``r1pipe stage cold-start``, ``steps`` steps) into
    ``run_dir``; returns its checkpoint directory (the model rl-reasoning starts from)."""
    cmd = [sys.executable, "-m", "r1pipe", "stage", "cold-start", f"run.dir={run_dir}"]
    cmd += [f"stage.cold_start.max_steps={steps}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    ckpt = run_dir / "cold-start" / "checkpoint"
    if proc.returncode != 0 or not ckpt.is_dir():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        sys.exit(f"[bench] cold-start failed (exit {proc.returncode}):\n{tail}")
    return str(ckpt)


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    quiet()
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        if args.model_dir is None:  # run on its own: build the model here
            args.model_dir = str(Path(tmp) / "model")
            _build_model(Path(args.model_dir), 0)
        result = run_r1pipe(args) if args.only == "r1pipe" else run_trl(args)
    print(MARK + json.dumps(result), flush=True)


# ---- parent ---------------------------------------------------------------------------

_FLAGS = ("steps", "warmup", "prompts", "group_size", "max_new_tokens", "lr", "seed")
_FLAGS += ("micro_batch_size", "gen_batch_size", "model_dir", "threads", "kl_coef", "model_label")


def _run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--only", name]
    for flag in _FLAGS:
        value = getattr(args, flag)
        if value is not None:
            cmd += ["--" + flag.replace("_", "-"), str(value)]
    if args.allow_eos:
        cmd.append("--allow-eos")
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        sys.exit(f"[bench] {name} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1][len(MARK) :])
    result["wall_s"] = time.perf_counter() - t
    print(
        f"[bench] {name}: {result['step_s_mean']:.2f} s/step, peak RSS "
        f"{result['peak_rss_mib']:.0f} MiB ({result['wall_s']:.0f} s wall)",
        file=sys.stderr,
        flush=True,
    )
    return result


def _table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'config':<7} {'step s':>7} {'median':>7} {'generate':>8} {'reward':>7} "
        f"{'train':>6} {'other':>6} {'gen tok':>7} {'loss tok':>8} {'gen tok/s':>9} "
        f"{'setup RSS':>9} {'peak RSS':>9} {'others':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['config']:<7} {r['step_s_mean']:>7.2f} {r['step_s_median']:>7.2f} "
            f"{r['generate_s']:>8.2f} {r['reward_s']:>7.3f} {r['train_s']:>6.2f} "
            f"{r['other_s']:>6.2f} {r['gen_tokens_per_step']:>7.0f} "
            f"{r['loss_tokens_per_step']:>8.0f} {r['gen_tokens_per_s']:>9,.0f} "
            f"{r['setup_rss_mib']:>5.0f} MiB {r['peak_rss_mib']:>5.0f} MiB "
            f"{100 * r['other_cpu']:>5.0f}%"
        )
    return "\n".join(lines)


def parent(args: argparse.Namespace) -> None:
    import importlib.util

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        sys.exit(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    if "trl" in names and importlib.util.find_spec("trl") is None:
        sys.exit(TRL_MISSING)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        if args.model_dir is None and args.cold_start_steps:
            print(
                f"[bench] training a cold-start checkpoint ({args.cold_start_steps} steps) ...",
                file=sys.stderr,
                flush=True,
            )
            args.model_dir = _cold_start(Path(tmp) / "run", args.cold_start_steps)
            args.model_label = f"cold-start checkpoint, {args.cold_start_steps} SFT steps"
        elif args.model_dir is None:  # built once; every child loads the same files
            print("[bench] building the tiny model ...", file=sys.stderr, flush=True)
            args.model_dir = str(Path(tmp) / "model")
            _build_model(Path(args.model_dir), 0)
            args.model_label = "untrained"
        else:
            args.model_label = args.model_label or args.model_dir
        for _ in range(args.repeat):  # round-robin, so that a slow spell hits every config
            for n in names:
                runs[n].append(_run_child(n, args))
    results = []
    for n in names:  # interference only ever slows a run down: the fastest one stands
        best = min(runs[n], key=lambda r: r["step_s_mean"])
        results.append({**best, "runs": len(runs[n])})
    r0 = results[0]
    print(
        f"\nGRPO step, CPU, {r0['threads']} threads: tiny model fp32, {r0['prompts']} prompts x "
        f"G={r0['group_size']}, {r0['max_new_tokens']} new tokens"
        f"{' (EOS allowed)' if r0['allow_eos'] else ' (forced)'}, KL {r0['kl_coef']}, "
        f"model: {r0['model']}, lr {r0['lr']}, "
        f"{r0['steps']} timed steps after {r0['warmup']} warmup, seed {r0['seed']}; "
        f"torch {r0['torch']}, transformers {r0['transformers']}"
    )
    versions = {k: r[k] for r in results for k in ("trl", "deepspeed", "accelerate") if k in r}
    print(", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    print(
        "seconds per step (mean over the timed steps; median); generate / reward / train / "
        "other: its parts;\ngen tok: completion tokens sampled per step; loss tok: tokens in "
        "the loss per step; others: CPU used\nby other processes during the timed steps "
        "(share of all cores)\n"
    )
    print(_table(results))
    by = {r["config"]: r for r in results}
    if "r1pipe" in by and "trl" in by:
        a, b = by["r1pipe"], by["trl"]
        print(
            f"\nr1pipe vs TRL: speed-up {b['step_s_mean'] / a['step_s_mean']:.2f}x (TRL step "
            f"time / r1pipe's; generate {b['generate_s'] / a['generate_s']:.2f}x, train "
            f"{b['train_s'] / a['train_s']:.2f}x), peak RSS "
            f"{a['peak_rss_mib'] / b['peak_rss_mib']:.2f}x (r1pipe / TRL)"
        )
        if not b.get("same_prompt_ids"):
            print("WARNING: TRL's prompt token ids differ from r1pipe's", file=sys.stderr)
        if a["kl_coef"]:
            print(
                "note: TRL computes the reference log-probs while scoring the completions (its "
                "'other' column), r1pipe in 'train'",
                file=sys.stderr,
            )
        if a["gen_tokens_per_step"] != b["gen_tokens_per_step"]:
            print("note: the sides generated different numbers of tokens", file=sys.stderr)
    if args.repeat > 1:
        print(f"\nfastest of {args.repeat} runs per config; s/step of every run:")
        for n in names:
            print(f"  {n:<7} " + "  ".join(f"{r['step_s_mean']:.2f}" for r in runs[n]))
        if "r1pipe" in runs and "trl" in runs:
            # each round ran the two sides back to back: its ratio is less exposed to the
            # machine's slow spells (minutes long on a shared VM) than fastest-vs-fastest
            pairs = [
                t["step_s_mean"] / r["step_s_mean"]
                for r, t in zip(runs["r1pipe"], runs["trl"], strict=True)
            ]
            print(
                "speed-up of each round (TRL / r1pipe, back to back): "
                + "  ".join(f"{x:.2f}x" for x in pairs)
                + f"; median {statistics.median(pairs):.2f}x"
            )
    busy = [r["config"] for r in results if r["other_cpu"] > 0.1]
    if busy:
        print(
            f"\nWARNING: other processes used over 10% of the CPU during {', '.join(busy)}: "
            "a busy machine can slow a run\nseveral-fold (its threads wait on each other), so "
            "these numbers are not comparable; rerun on an idle machine.",
            file=sys.stderr,
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "runs": runs}, indent=2) + "\n")
        print(f"\nwrote {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed GRPO steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--group-size", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="completion length")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=None, help="default: run.seed of the config")
    p.add_argument("--micro-batch-size", type=int, default=None, help="r1pipe; default: all")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads, both sides (default: all)"
    )
    p.add_argument("--gen-batch-size", type=int, default=256, help="r1pipe generation batch")
    p.add_argument(
        "--allow-eos", action="store_true", help="let completions stop at EOS (default: forced)"
    )
    p.add_argument(
        "--kl-coef", type=float, default=0.0, help="KL to a reference (r1pipe kl_coef, TRL beta)"
    )
    p.add_argument(
        "--model",
        "--model-dir",
        dest="model_dir",
        default=None,
        help="a checkpoint both sides load (default: the untrained tiny model)",
    )
    p.add_argument(
        "--cold-start-steps",
        type=int,
        default=0,
        help="train the tiny default's cold-start SFT for N steps first and load that",
    )
    p.add_argument(
        "--tiny-default",
        action="store_true",
        help="the tiny default's RL setting: its cold-start checkpoint (trained here unless "
        "--model), completions ending at EOS (at most 96 tokens), KL 0.1",
    )
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    p.add_argument("--repeat", type=int, default=1, help="runs per config; the fastest is shown")
    p.add_argument("--out", default=None, help="write all results as JSON here")
    p.add_argument("--model-label", default=None, help=argparse.SUPPRESS)
    p.add_argument("--only", choices=CONFIGS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.tiny_default:
        args.allow_eos, args.max_new_tokens, args.kl_coef = True, 96, 0.1
        if args.model_dir is None and not args.cold_start_steps:
            from r1pipe.config.compose import compose

            args.cold_start_steps = compose([])[0].stage.cold_start.max_steps
    if min(args.steps, args.prompts, args.repeat, args.max_new_tokens) < 1 or args.warmup < 0:
        p.error("--steps, --prompts, --max-new-tokens and --repeat must be >= 1, --warmup >= 0")
    if args.group_size < 2:
        p.error("--group-size must be >= 2")
    if args.only:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
