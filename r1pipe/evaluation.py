"""Evaluation: pass@k and cons@k, the held-out evaluation every stage runs, and ``r1pipe eval``.

The R1 protocol (paper, section 3.1): zero-shot, the instruction "Please reason step by step,
and put your final answer within \\boxed{}.", k samples per problem at temperature 0.6 and
top-p 0.95. Reported:

* ``pass@1``: the share of correct samples of a problem, averaged over problems;
* ``cons@k``: majority vote over the k extracted answers (equivalent forms such as ``0.5``
  and ``\\frac12`` vote together; a tie counts as a uniformly random pick among the tied
  answers, i.e. the share of them that is correct);
* ``pass@k``: the unbiased estimator of Chen et al. (2021) from the k samples.

A sample is correct when its accuracy reward is 1 (:func:`~r1pipe.rewards.accuracy.is_correct`):
a program of a code task only when it passes every test, as in Chen et al.; the share of tests
it passes is kept apart as ``test_pass_rate``.

``evaluate_sharded`` shares the problems out over ranks and gathers the records, for a
stage's held-out evaluation (``evaluate_held_out``) and ``r1pipe eval`` alike. ``run_eval(cfg)``
is the ``r1pipe eval`` command: generate with a checkpoint and score, or score a predictions
file written by any model; it writes ``eval.json`` and ``samples.jsonl``.

Raises :class:`~r1pipe.errors.UserError` for a missing benchmark, checkpoint, or bad row.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import PreTrainedTokenizerBase

from r1pipe.config.schema import EvalConfig, R1Config, TaskConfig
from r1pipe.data.templates import build_prompt
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.generation.base import Generator, SamplingParams
from r1pipe.rewards import accuracy_reward, format_reward
from r1pipe.rewards.accuracy import answer_matches, is_correct, parse_number
from r1pipe.rewards.parsing import extract_answer, extract_gsm8k_reference, split_think
from r1pipe.training.dist import DistInfo, all_gather_objects, broadcast_object

console = Console(stderr=True)

# Equivalent forms are merged among this many most frequent distinct answers of a problem;
# rarer answers vote by their text only. Each merge test can cost a sympy comparison
# (1-40 ms), and a spread of more distinct answers than this has no meaningful majority.
MAX_VOTE_CANDIDATES = 16

# Padded prompt tokens per completion slot of a generate call (see length_batches).
PROMPT_TOKENS_PER_ROW = 512


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021).

    ``1 - C(n - c, k) / C(n, k)``: the chance that k samples drawn without replacement from the
    n contain a correct one.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 0, 2), pass_at_k(4, 3, 2)
    (0.25, 0.0, 1.0)
    """
    if not 0 <= c <= n:
        raise ValueError(f"c={c} must be in [0, n={n}]")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, n={n}]")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(
    answers: Sequence[str | None],
    correct: Sequence[float],
    same: Callable[[str, str], bool] | None = None,
) -> float:
    """cons@k of one problem: is the most frequent answer correct?

    Args:
        answers: The extracted answer of each sample (None: no answer; it does not vote).
        correct: Each sample's correctness (1.0 / 0.0).
        same: Whether two different answer texts are equivalent (e.g. math-verify); None
            compares texts (whitespace-normalized) only.

    Returns:
        1.0 or 0.0, or for a tie between the largest groups the share of tied groups that
        are correct (the expected score of a uniformly random tie-break). 0.0 when no sample
        has an answer.

    >>> majority_vote(["3", "4", "4", None], [0, 1, 1, 0])
    1.0
    >>> majority_vote(["3", "4", "3", "4"], [1, 0, 1, 0])  # a tie: one of two groups right
    0.5
    """
    counts: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        if a is not None:
            counts.setdefault(" ".join(a.split()), []).append(i)
    if not counts:
        return 0.0
    ranked = sorted(counts.values(), key=len, reverse=True)  # stable: first seen first
    groups: list[list[int]] = []
    for members in ranked[:MAX_VOTE_CANDIDATES]:
        text = answers[members[0]]
        assert text is not None
        home = None
        if same is not None:
            home = next((g for g in groups if same(text, answers[g[0]] or "")), None)
        if home is None:
            groups.append(list(members))
        else:
            home.extend(members)
    groups += [list(m) for m in ranked[MAX_VOTE_CANDIDATES:]]
    top = max(len(g) for g in groups)
    tied = [g for g in groups if len(g) == top]
    return sum(float(correct[g[0]]) for g in tied) / len(tied)


def answer_equivalence(verifier: str, tolerance: float = 1e-6) -> Callable[[str, str], bool] | None:
    """``same(a, b)`` for majority voting under a task's verifier; None where only equal texts
    are the same answer (``exact``, and ``code``, whose programs are not compared)."""
    if verifier not in ("numeric", "math"):
        return None

    def same(a: str, b: str) -> bool:
        x, y = parse_number(a), parse_number(b)
        if x is not None and y is not None:  # numbers compare fast, without sympy
            return abs(x - y) <= tolerance * max(1.0, abs(y))
        return verifier == "math" and answer_matches(a, b, "math", tolerance)

    return same


def final_answer(text: str, answer_format: str, gsm8k_fallback: bool = False) -> str | None:
    """The final answer of a completion: from the summary after ``</think>`` (the whole text
    without a think block), in ``answer_format``; with ``gsm8k_fallback``, a completion with
    none ending in a GSM8K-style ``#### N`` line gives N.

    >>> final_answer("<think>2+2</think> so \\\\boxed{4}", "boxed")
    '4'
    >>> final_answer("3 + 4 = 7\\n#### 7", "boxed", gsm8k_fallback=True)
    '7'
    """
    _, summary = split_think(text)
    answer = extract_answer(summary, answer_format)
    if answer is None and gsm8k_fallback and "####" in summary:
        lines = extract_gsm8k_reference(summary).splitlines()
        answer = lines[0].strip() if lines and lines[0].strip() else None
    return answer


def score_completion(
    text: str, reference: str, task: TaskConfig, *, gsm8k_fallback: bool = False
) -> dict[str, Any]:
    """``answer`` (extracted), ``correct`` (1.0 / 0.0) and ``format`` (R1 format reward); for a
    code task also ``test_pass_rate``, the share of tests the program passes.

    ``correct`` is :func:`~r1pipe.rewards.accuracy.is_correct` of the task's accuracy reward,
    so a held-out evaluation checks what training rewards, and a program is correct only if it
    passes every test; ``gsm8k_fallback`` (``r1pipe eval`` only) also credits a final ``#### N``
    line.

    >>> score_completion("<think>1+2</think> <answer>3</answer>", "3", TaskConfig())
    {'answer': '3', 'correct': 1.0, 'format': 1.0}
    """
    accuracy = accuracy_reward(
        text,
        reference,
        verifier=task.verifier,
        answer_format=task.answer_format,
        tolerance=task.tolerance,
    )
    correct = 1.0 if is_correct(accuracy) else 0.0
    answer = final_answer(text, task.answer_format)
    if answer is None and gsm8k_fallback and task.verifier != "code":
        answer = final_answer(text, task.answer_format, gsm8k_fallback=True)
        if answer is not None:
            correct = float(answer_matches(answer, reference, task.verifier, task.tolerance))
    out: dict[str, Any] = {
        "answer": answer,
        "correct": correct,
        "format": format_reward(text, task.answer_format),
    }
    if task.verifier == "code":
        out["test_pass_rate"] = accuracy
    return out


def evaluate(
    generator: Generator,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    task: TaskConfig,
    cfg: EvalConfig,
    seed: int = 0,
    *,
    gsm8k_fallback: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Sample ``cfg.num_samples`` completions per example and score them.

    Returns:
        The summary (:func:`summarize`, plus ``seconds`` and ``generate_seconds``) and one
        record per completion: ``id``, ``sample``, ``question``, ``reference``,
        ``completion``, ``finish_reason``, ``num_tokens``, ``answer``, ``correct``, ``format``
        (and ``test_pass_rate`` for a code task).
    """
    t0 = time.perf_counter()
    per_example, t_gen = _sample_and_score(
        generator, tokenizer, examples, task, cfg, seed, gsm8k_fallback=gsm8k_fallback
    )
    records = [r for group in per_example for r in group]
    summary = summarize(records, cfg.num_samples, verifier=task.verifier, tolerance=task.tolerance)
    summary["seconds"] = time.perf_counter() - t0
    summary["generate_seconds"] = t_gen
    return summary, records


def _sample_and_score(
    generator: Generator,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    task: TaskConfig,
    cfg: EvalConfig,
    seed: int,
    *,
    gsm8k_fallback: bool,
) -> tuple[list[list[dict[str, Any]]], float]:
    """One generate call for ``examples``: each example's scored records (see :func:`evaluate`),
    and the seconds the call took."""
    t0 = time.perf_counter()
    prompts = [build_prompt(e.question, task, tokenizer) for e in examples]
    params = SamplingParams(
        n=cfg.num_samples,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=seed,
    )
    groups = generator.generate(prompts, params)
    t_gen = time.perf_counter() - t0
    return [
        [
            {
                "id": ex.id,
                "sample": j,
                "question": ex.question,
                "reference": ex.reference,
                "completion": c.text,
                "finish_reason": c.finish_reason,
                "num_tokens": len(c.token_ids),
                **score_completion(c.text, ex.reference, task, gsm8k_fallback=gsm8k_fallback),
            }
            for j, c in enumerate(comps)
        ]
        for ex, comps in zip(examples, groups, strict=True)
    ], t_gen


def evaluate_sharded(
    generator: Generator,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    task: TaskConfig,
    cfg: EvalConfig,
    dist: DistInfo,
    *,
    seed: int,
    length_batched: bool = False,
    gsm8k_fallback: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Evaluate ``examples`` over all ranks: this rank samples and scores ``examples[rank::world]``.

    Without ``length_batched`` the share is one generate call, made even when it is empty (with
    ZeRO-3 every rank must take part in every forward pass); with it, the share is split by
    :func:`length_batches` (``cfg.batch_size`` completions a call). A call gets the seed
    ``seed + 1000 * rank + done``, ``done`` the problems of this rank before it: rank 0's first
    (or only) call gets ``seed``. ``progress(done, len(share), records so far)`` follows each
    call. Every rank must call this (the records are gathered from all of them).

    Returns:
        On rank 0 every rank's records (:func:`evaluate`) in the order of ``examples``, by
        example and then sample; ``[]`` on other ranks. And the seconds this rank spent in
        generate calls.
    """
    positions = range(dist.rank, len(examples), dist.world_size)
    share = [examples[p] for p in positions]
    if length_batched:
        lengths = [
            len(tokenizer(build_prompt(e.question, task, tokenizer))["input_ids"]) for e in share
        ]
        batches = _length_batch_indices(lengths, cfg.num_samples, cfg.batch_size)
    else:
        batches = [list(range(len(share)))]
    mine: list[tuple[int, list[dict[str, Any]]]] = []
    gen_seconds = 0.0
    done = num_records = 0
    for batch in batches:
        per_example, t_gen = _sample_and_score(
            generator,
            tokenizer,
            [share[i] for i in batch],
            task,
            cfg,
            seed + 1000 * dist.rank + done,
            gsm8k_fallback=gsm8k_fallback,
        )
        mine += [(positions[i], group) for i, group in zip(batch, per_example, strict=True)]
        gen_seconds += t_gen
        done += len(batch)
        num_records += sum(len(group) for group in per_example)
        if progress is not None:
            progress(done, len(share), num_records)
    gathered = all_gather_objects(mine)
    if not dist.is_main:
        return [], gen_seconds
    ranked = [(p, r) for part in gathered for p, group in part for r in group]
    ranked.sort(key=lambda pr: (pr[0], pr[1]["sample"]))
    return [r for _, r in ranked], gen_seconds


def evaluate_held_out(
    generator: Generator,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    task: TaskConfig,
    cfg: EvalConfig,
    dist: DistInfo,
    *,
    seed: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A stage's held-out evaluation: :func:`evaluate_sharded` in one call per rank.

    Returns:
        The summary (:func:`summarize` of all records, plus ``seconds``) on every rank, and
        the records (in the order of ``examples``) on rank 0, ``[]`` on other ranks.
    """
    t0 = time.perf_counter()
    records, _ = evaluate_sharded(generator, tokenizer, examples, task, cfg, dist, seed=seed)
    summary: dict[str, Any] = {}
    if dist.is_main:
        summary = summarize(
            records, cfg.num_samples, verifier=task.verifier, tolerance=task.tolerance
        )
        summary["seconds"] = time.perf_counter() - t0
    return broadcast_object(summary), records


def summarize(
    records: list[dict[str, Any]], k: int, *, verifier: str = "exact", tolerance: float = 1e-6
) -> dict[str, Any]:
    """pass@1, format rate, lengths; ``pass@k`` and ``cons@k`` when k > 1.

    Records are grouped by ``id``; each has ``correct``, ``format`` and ``answer``, and when
    generated also ``num_tokens`` and ``finish_reason``. A sample counts as correct when
    :func:`~r1pipe.rewards.accuracy.is_correct` of its ``correct`` holds (1.0), in pass@1,
    pass@k and cons@k alike. A problem with fewer than k samples (a predictions file) enters
    pass@k with its own count. When the records have ``test_pass_rate`` (code tasks), its mean
    is reported too, averaged per problem like pass@1.

    >>> rows = [{"id": "a", "answer": "def f", "correct": 0.0, "format": 1.0,
    ...          "test_pass_rate": 0.75}] * 4
    >>> s = summarize(rows, 4, verifier="code")
    >>> s["pass@1"], s["pass@4"], s["cons@4"], s["test_pass_rate"]
    (0.0, 0.0, 0.0, 0.75)
    """
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_id.setdefault(str(r["id"]), []).append(r)
    n_total = max(1, len(records))
    n_problems = max(1, len(by_id))
    ok = {pid: [1.0 if is_correct(r["correct"]) else 0.0 for r in g] for pid, g in by_id.items()}
    summary: dict[str, Any] = {
        "pass@1": sum(_mean(flags) for flags in ok.values()) / n_problems,
        "format_rate": sum(r["format"] for r in records) / n_total,
        "num_problems": len(by_id),
        "num_samples": k,
        "num_completions": len(records),
    }
    if records and all("test_pass_rate" in r for r in records):
        summary["test_pass_rate"] = (
            sum(_mean([r["test_pass_rate"] for r in g]) for g in by_id.values()) / n_problems
        )
    if records and "num_tokens" in records[0]:
        summary["mean_response_tokens"] = sum(r["num_tokens"] for r in records) / n_total
        summary["truncation_rate"] = sum(r["finish_reason"] == "length" for r in records) / n_total
    if k > 1 and by_id:
        same = answer_equivalence(verifier, tolerance)
        passk, cons = [], []
        for pid, group in by_id.items():
            c = int(sum(ok[pid]))
            passk.append(pass_at_k(len(group), c, min(k, len(group))))
            cons.append(majority_vote([r["answer"] for r in group], ok[pid], same))
        summary[f"cons@{k}"] = sum(cons) / len(cons)
        summary[f"pass@{k}"] = sum(passk) / len(passk)
    return summary


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


# ---- the `r1pipe eval` command ---------------------------------------------------------


def bench_task(cfg: R1Config, source: str) -> TaskConfig:
    """The task a benchmark is prompted and checked with (``bench.*``)."""
    b = cfg.bench
    return TaskConfig(
        name=b.name or "predictions",
        kind="jsonl",
        train_file=source,
        eval_file=source,
        answer_format=b.answer_format,
        verifier=b.verifier,
        template=b.template,
        instruction=b.instruction,
        system_prompt=b.system_prompt,
    )


def resolve_checkpoint(cfg: R1Config) -> tuple[str, str]:
    """``(checkpoint, label)``: ``checkpoint=``, a stage of ``run.dir``, or the run's last
    completed stage. ``model.path`` is not used: experiments set it to the base model."""
    from r1pipe.run_dir import STAGE_ORDER, RunDir

    b = cfg.bench
    if b.checkpoint:
        p = Path(b.checkpoint)
        return b.checkpoint, (p.parent.name if p.name == "checkpoint" else p.name) or "model"
    run = RunDir(cfg.run.dir)
    stages = run.read_manifest()["stages"]
    if b.stage:
        entry = stages.get(b.stage)
        if not entry or entry.get("status") != "completed" or not entry.get("checkpoint"):
            have = ", ".join(f"{k} {v.get('status')}" for k, v in stages.items()) or "none"
            raise UserError(
                f"stage={b.stage}: {run.manifest_path} has no completed {b.stage} stage "
                f"(stages: {have})"
            )
        return str(run.resolve(entry["checkpoint"])), b.stage
    done = [s for s in STAGE_ORDER if stages.get(s, {}).get("status") == "completed"]
    if not done:
        raise UserError(
            f"r1pipe eval: nothing to evaluate: give checkpoint=PATH, stage=NAME (with "
            f"run.dir=; {run.manifest_path} has no completed stage) or predictions=FILE.jsonl"
        )
    return str(run.resolve(stages[done[-1]]["checkpoint"])), done[-1]


def _out_dir(cfg: R1Config, label: str, bench_label: str) -> Path:
    from r1pipe.run_dir import RunDir

    if cfg.bench.out:
        return Path(cfg.bench.out).expanduser()
    return RunDir(cfg.run.dir).path / "eval" / label / bench_label


def write_results(out: Path, summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """``out/eval.json`` (atomic) and ``out/samples.jsonl``."""
    from r1pipe.run_dir import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_text(out / "eval.json", json.dumps(summary, indent=2) + "\n")


def headline(summary: dict[str, Any]) -> str:
    """``pass@1 12.5%, cons@4 20.0%, pass@4 30.0%`` from a summary."""
    keys = [k for k in summary if k.startswith(("pass@", "cons@"))]
    keys.sort(key=lambda k: (k != "pass@1", k))
    return ", ".join(f"{k} {100 * summary[k]:.1f}%" for k in keys)


def score_predictions(cfg: R1Config) -> dict[str, Any]:
    """Score ``bench.predictions`` without generating; write eval.json and samples.jsonl."""
    from r1pipe.benchmarks import file_label, load_predictions

    b = cfg.bench
    assert b.predictions is not None
    t0 = time.perf_counter()
    preds, source = load_predictions(b.predictions, b)
    task = bench_task(cfg, source)
    records = [
        {
            "id": p.id,
            "sample": j,
            "question": p.question,
            "reference": p.reference,
            "completion": text,
            **score_completion(text, p.reference, task, gsm8k_fallback=True),
        }
        for p in preds
        for j, text in enumerate(p.completions)
    ]
    k = min(len(p.completions) for p in preds)
    summary: dict[str, Any] = {
        "benchmark": b.name,
        "predictions": source,
        **summarize(records, k, verifier=task.verifier, tolerance=task.tolerance),
        "max_samples_per_problem": max(len(p.completions) for p in preds),
        "protocol": {"answer_format": b.answer_format, "verifier": b.verifier},
        "seconds": time.perf_counter() - t0,
    }
    out = _out_dir(cfg, file_label(Path(source)), b.name or "scored")
    write_results(out, summary, records)
    console.print(
        f"[bold cyan]\\[eval][/] {source}: {headline(summary)} "
        f"({summary['num_problems']} problems, {len(records)} completions) -> {out}"
    )
    return summary


def length_batches(
    examples: list[Example], prompt_len: dict[str, int], k: int, batch_size: int
) -> list[list[Example]]:
    """Problems in generate calls of similar prompt length, shortest first.

    A call left-pads every prompt to its longest one (MATH-500 runs from 20 to 1,733
    characters) and padding costs what text costs, so problems are sorted by length; a call
    holds at most ``batch_size`` completions and ``batch_size * PROMPT_TOKENS_PER_ROW`` padded
    prompt tokens, which keeps the attention memory of long prompts bounded.

    >>> ex = [Example(str(i), "q", "a") for i in range(5)]
    >>> lens = {"0": 900, "1": 10, "2": 20, "3": 30, "4": 1000}
    >>> [[e.id for e in b] for b in length_batches(ex, lens, k=2, batch_size=4)]
    [['1', '2'], ['3'], ['0'], ['4']]
    """
    lengths = [prompt_len[e.id] for e in examples]
    return [[examples[i] for i in batch] for batch in _length_batch_indices(lengths, k, batch_size)]


def _length_batch_indices(lengths: list[int], k: int, batch_size: int) -> list[list[int]]:
    """:func:`length_batches` of problems given by their prompt lengths, as indices."""
    ordered = sorted(range(len(lengths)), key=lengths.__getitem__)
    budget = batch_size * PROMPT_TOKENS_PER_ROW
    batches: list[list[int]] = []
    for i in ordered:  # ascending: the newest problem is the longest of its call
        rows = (len(batches[-1]) + 1) * k if batches else 0
        if not batches or rows > batch_size or rows * lengths[i] > budget:
            batches.append([])
        batches[-1].append(i)
    return batches


def run_eval(cfg: R1Config) -> dict[str, Any]:
    """``r1pipe eval``: generate k samples per problem with a checkpoint and score them.

    Under ``torchrun`` each rank generates for its share of the problems; rank 0 writes.
    """
    if cfg.bench.predictions:
        return score_predictions(cfg)
    from r1pipe.benchmarks import load_benchmark

    examples, source, bench_label = load_benchmark(cfg.bench)
    checkpoint, label = resolve_checkpoint(cfg)
    out = _out_dir(cfg, label, bench_label)
    task = bench_task(cfg, source)
    ev = cfg.eval

    import torch

    from r1pipe.generation.build import build_generator
    from r1pipe.models import load_model, load_tokenizer, resolve_dtype
    from r1pipe.training.dist import init_distributed

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist = init_distributed()
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dist = DistInfo(0, 1, 0, device)
    log = console.print if dist.is_main else (lambda *a, **k: None)
    tokenizer = load_tokenizer(checkpoint, cfg.model.trust_remote_code)
    dtype = resolve_dtype(cfg.model, dist.device)
    model = load_model(checkpoint, cfg.model, dtype=dtype, device=dist.device)
    context = getattr(model.config, "max_position_embeddings", None)
    if context and ev.max_new_tokens > context:
        # No model writes more than its context window; the paper's 32k would only make a
        # small model that never stops run for hours.
        log(f"[bold cyan]\\[eval][/] max_new_tokens {ev.max_new_tokens} -> {context} (context)")
        ev = dataclasses.replace(ev, max_new_tokens=context)
    from r1pipe.data.lengths import check_prompt_lengths, model_context, prompt_token_budget

    # A prompt longer than the context is refused or skipped before any generation (a 1 MB
    # prompt would otherwise be tokenized and allocated in full); the response gets what is
    # left, as max_new_tokens above.
    limit = prompt_token_budget(model_context(model.config, tokenizer), 1, task.max_prompt_tokens)
    examples, _ = check_prompt_lengths(
        examples,
        lambda e: build_prompt(e.question, task, tokenizer),
        tokenizer,
        limit,
        policy=task.overlong_prompts,
        where=source,
        log=lambda msg: log(f"[bold cyan]\\[eval][/] {msg}"),
    )
    generator = build_generator(
        model,
        tokenizer,
        cfg.generation,
        batch_size=ev.batch_size,
        model_path=checkpoint,
        dist=dist,
        seed=cfg.run.seed,
    )
    log(
        f"[bold cyan]\\[eval][/] {checkpoint} on {source}: {len(examples)} problems x "
        f"k={ev.num_samples}, temperature {ev.temperature}, top-p {ev.top_p}, max "
        f"{ev.max_new_tokens} new tokens, world size {dist.world_size}"
    )
    t0 = time.perf_counter()

    def progress(done: int, total: int, num_records: int) -> None:
        log(
            f"[bold cyan]\\[eval][/] {done}/{total} problems"
            + (" (rank 0)" if dist.world_size > 1 else "")
            + f", {num_records / (time.perf_counter() - t0):.2f} samples/s"
        )

    all_records, gen_seconds = evaluate_sharded(
        generator,
        tokenizer,
        examples,
        task,
        ev,
        dist,
        seed=cfg.run.seed,
        length_batched=True,
        gsm8k_fallback=True,
        progress=progress if dist.is_main else None,
    )
    seconds = time.perf_counter() - t0
    close = getattr(generator, "close", None)
    if close is not None:  # a vLLM engine: shut down here, not at interpreter exit
        close()
    if not dist.is_main:
        return {}
    summary: dict[str, Any] = {
        "benchmark": bench_label,
        "source": source,
        "checkpoint": checkpoint,
        "label": label,
        **summarize(all_records, ev.num_samples, verifier=task.verifier, tolerance=task.tolerance),
        "samples_per_s": len(all_records) / seconds,
        "tokens_per_s": sum(r["num_tokens"] for r in all_records) / seconds,
        "seconds": seconds,
        "generate_seconds": gen_seconds,
        "world_size": dist.world_size,
        "protocol": {
            "num_samples": ev.num_samples,
            "temperature": ev.temperature,
            "top_p": ev.top_p,
            "max_new_tokens": ev.max_new_tokens,
            "template": task.template,
            "instruction": task.instruction,
            "answer_format": task.answer_format,
            "verifier": task.verifier,
            "seed": cfg.run.seed,
        },
    }
    write_results(out, summary, all_records)
    log(
        f"[bold cyan]\\[eval][/] {bench_label}: {headline(summary)} "
        f"({summary['num_problems']} problems x {ev.num_samples}, "
        f"{summary['samples_per_s']:.2f} samples/s) -> {out}"
    )
    return summary
