"""evaluate_sharded / evaluate_held_out: shares, seeds, length batches, gather order, summary.

A fake generator answers from a script and records each call's prompts and seed. Two ranks are
simulated by running rank 1 and then rank 0 in this process with ``all_gather_objects``
monkeypatched: rank 1's payload is captured and handed to rank 0 as the other rank's part.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

import r1pipe.evaluation as evaluation
from r1pipe.config import compose
from r1pipe.data.types import Example
from r1pipe.evaluation import evaluate_held_out, evaluate_sharded
from r1pipe.generation.base import Completion, SamplingParams
from r1pipe.models import build_char_tokenizer
from r1pipe.training.dist import DistInfo

SEED = 7


class ScriptedGenerator:
    """Answers each question with the scripted answers, in turn; records every call."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[list[str], int | None]] = []

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((prompts, params.seed))
        out = []
        for i, prompt in enumerate(prompts):
            question = next(q for q in self.script if q + "<" in prompt)
            answers = self.script[question]
            assert len(answers) == params.n
            out.append(
                [Completion(i, f"<think>hm</think> {a}", [1, 2, 3], None, "stop") for a in answers]
            )
        return out


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def task():
    return compose(["conf=smoke"])[0].task


@pytest.fixture(scope="module")
def eval_cfg():
    return dataclasses.replace(compose(["conf=smoke"])[0].eval, num_samples=2, temperature=0.6)


def cpu(rank: int = 0, world: int = 1) -> DistInfo:
    return DistInfo(rank, world, 0, torch.device("cpu"))


def tag(x: str) -> str:
    return f"<answer>{x}</answer>"


# Questions of distinct lengths, not in length order; the reference is "1".
QUESTIONS = ["q-long-long-long", "q", "q-long-long", "q-l", "q-long-long-long-long", "q-lo"]
EXAMPLES = [Example(f"p{i}", q, "1") for i, q in enumerate(QUESTIONS)]
SCRIPT = {q: [tag("1"), tag(str(i))] for i, q in enumerate(QUESTIONS)}  # p1: both right


def ids_samples(records: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(r["id"], r["sample"]) for r in records]


EXPECTED_ORDER = [(e.id, j) for e in EXAMPLES for j in range(2)]


def test_one_batch_gets_the_seed_and_keeps_example_order(tokenizer, task, eval_cfg):
    gen = ScriptedGenerator(SCRIPT)
    records, gen_seconds = evaluate_sharded(
        gen, tokenizer, EXAMPLES, task, eval_cfg, cpu(), seed=SEED
    )
    assert [seed for _, seed in gen.calls] == [SEED]  # one call, exactly the stage's seed
    assert len(gen.calls[0][0]) == len(EXAMPLES)
    assert ids_samples(records) == EXPECTED_ORDER
    assert [r["answer"] for r in records[:4]] == ["1", "0", "1", "1"]
    assert [r["correct"] for r in records[:4]] == [1.0, 0.0, 1.0, 1.0]
    assert gen_seconds >= 0.0


def test_length_batches_get_seed_plus_problems_done(tokenizer, task, eval_cfg):
    # 2 completions a problem, 4 a call: two problems per call, shortest prompts first.
    cfg = dataclasses.replace(eval_cfg, batch_size=4)
    gen = ScriptedGenerator(SCRIPT)
    seen: list[tuple[int, int, int]] = []
    records, _ = evaluate_sharded(
        gen,
        tokenizer,
        EXAMPLES,
        task,
        cfg,
        cpu(),
        seed=SEED,
        length_batched=True,
        progress=lambda *a: seen.append(a),
    )
    assert [seed for _, seed in gen.calls] == [SEED, SEED + 2, SEED + 4]
    by_length = sorted(QUESTIONS, key=len)
    called = [[next(q for q in QUESTIONS if q + "<" in p) for p in ps] for ps, _ in gen.calls]
    assert called == [by_length[0:2], by_length[2:4], by_length[4:6]]
    assert seen == [(2, 6, 4), (4, 6, 8), (6, 6, 12)]
    assert ids_samples(records) == EXPECTED_ORDER  # back in the examples' order


def test_gsm8k_fallback_is_passed_on(tokenizer, task, eval_cfg):
    ex = [Example("a", "q", "5")]
    gen = ScriptedGenerator({"q": ["2 + 3\n#### 5", "#### 4"]})
    plain, _ = evaluate_sharded(gen, tokenizer, ex, task, eval_cfg, cpu(), seed=0)
    fallback, _ = evaluate_sharded(
        gen, tokenizer, ex, task, eval_cfg, cpu(), seed=0, gsm8k_fallback=True
    )
    assert [r["correct"] for r in plain] == [0.0, 0.0]
    assert [(r["answer"], r["correct"]) for r in fallback] == [("5", 1.0), ("4", 0.0)]


def test_held_out_summary_by_hand(tokenizer, task, eval_cfg):
    ex = [Example("a", "qa", "3"), Example("b", "qb", "4"), Example("c", "qc", "5")]
    gen = ScriptedGenerator(
        {
            "qa": [tag("3"), tag("3")],  # 2/2
            "qb": [tag("4"), "no answer"],  # 1/2, one sample without the format
            "qc": [tag("6"), tag("7")],  # 0/2
        }
    )
    summary, records = evaluate_held_out(gen, tokenizer, ex, task, eval_cfg, cpu(), seed=SEED)
    assert [seed for _, seed in gen.calls] == [SEED]
    assert summary["pass@1"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert summary["pass@2"] == pytest.approx(2 / 3)  # a and b have a correct sample
    assert summary["format_rate"] == pytest.approx(5 / 6)
    assert summary["num_problems"] == 3 and summary["num_completions"] == 6
    assert summary["seconds"] >= 0.0
    assert ids_samples(records) == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]


@pytest.mark.parametrize("length_batched", [False, True])
def test_two_ranks_gather_into_example_order(
    monkeypatch, tokenizer, task, eval_cfg, length_batched
):
    """Rank 1 then rank 0 in one process; the fake gather hands rank 1's part to rank 0."""
    cfg = dataclasses.replace(eval_cfg, batch_size=4)
    payload: list[Any] = []

    def gather_rank1(obj: Any) -> list[Any]:
        payload.append(obj)
        return [None, obj]  # rank 1 must not use what it gathers

    gen1 = ScriptedGenerator(SCRIPT)
    monkeypatch.setattr(evaluation, "all_gather_objects", gather_rank1)
    records1, _ = evaluate_sharded(
        gen1, tokenizer, EXAMPLES, task, cfg, cpu(1, 2), seed=SEED, length_batched=length_batched
    )
    assert records1 == []

    gen0 = ScriptedGenerator(SCRIPT)
    monkeypatch.setattr(evaluation, "all_gather_objects", lambda obj: [obj, payload[0]])
    records0, _ = evaluate_sharded(
        gen0, tokenizer, EXAMPLES, task, cfg, cpu(0, 2), seed=SEED, length_batched=length_batched
    )

    def asked(gen: ScriptedGenerator) -> set[str]:
        return {q for ps, _ in gen.calls for p in ps for q in QUESTIONS if q + "<" in p}

    assert asked(gen0) == set(QUESTIONS[0::2]) and asked(gen1) == set(QUESTIONS[1::2])
    if length_batched:  # three problems a rank, two a call
        assert [s for _, s in gen0.calls] == [SEED, SEED + 2]
        assert [s for _, s in gen1.calls] == [SEED + 1000, SEED + 1002]
    else:
        assert [s for _, s in gen0.calls] == [SEED]
        assert [s for _, s in gen1.calls] == [SEED + 1000]
    assert ids_samples(records0) == EXPECTED_ORDER


def test_an_empty_share_still_makes_its_one_call(monkeypatch, tokenizer, task, eval_cfg):
    """With ZeRO-3 every rank must join every generate call, even one with no problems."""
    monkeypatch.setattr(evaluation, "all_gather_objects", lambda obj: [None, obj])
    gen = ScriptedGenerator(SCRIPT)
    records, _ = evaluate_sharded(
        gen, tokenizer, EXAMPLES[:1], task, eval_cfg, cpu(1, 2), seed=SEED
    )
    assert records == [] and gen.calls == [([], SEED + 1000)]
