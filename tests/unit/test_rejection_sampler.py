"""The rejection sampler with a scripted policy and judge: every reason, rule vs judge vs
rule-then-judge, the general mix, chains of thought for complex queries, and the SFT data."""

import dataclasses

import pytest
import torch

from r1pipe.config import compose
from r1pipe.data.general import GeneralExample, example_prompt
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.generation.base import Completion
from r1pipe.models import build_char_tokenizer
from r1pipe.rejection import acceptance_stats, sft_examples
from r1pipe.rejection_sampler import RejectionSampler, choose_prompts
from r1pipe.training.dist import DistInfo


def R(think, answer):
    return f"<think>\n{think}\n</think>\n<answer>{answer}</answer>"


# Scripted completions per question, in sampling order.
SCRIPT = {
    "12+30=?": [
        (R("2+0=2\n1+3=4", 42), "stop"),  # accepted
        (R("2+0=2\n1+3=4", 42) + "  ", "stop"),  # the same up to whitespace: duplicate
        (R("2+0=2, 1+3=4", 42), "stop"),  # distinct and right: over K=1... or judged
        (R("2+0=2\n1+3=5", 52), "stop"),  # wrong
        (R("2+0=2 然后 1+3=4 是 4", 42), "stop"),  # mixed language
    ],
    "10+10=?": [
        (R("```\nprint(10+10)\n```", 20), "stop"),  # code in the reasoning
        ("<think>\n0+0=0\n1+1=", "length"),  # cut off: too long (also no format)
        ("20", "stop"),  # no format
        (R("0+0=0\n1+1=2", "twenty"), "stop"),  # wrong by rule, right by a judge
        (R("0+0=0\n1+1=2", 20), "stop"),  # accepted
    ],
}


class ScriptedPolicy:
    """A Generator that returns SCRIPT for reasoning prompts and a think block otherwise."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append((prompts, params))
        out = []
        for i, p in enumerate(prompts):
            q = next((q for q in SCRIPT if q in p), None)
            if q is None:  # a general query: a chain of thought
                items = [("<think>\nIt depends on the light.\n</think>\nBlue.", "stop")]
            else:
                items = SCRIPT[q][: params.n]
            out.append([Completion(i, t, [0] * len(t), None, r) for t, r in items])
        return out


class ScriptedJudge:
    def __init__(self, answer_for):
        self.answer_for, self.prompts = answer_for, []

    def complete(self, prompts):
        self.prompts += prompts
        return [self.answer_for(p) for p in prompts]


EXAMPLES = [Example("a", "12+30=?", "42"), Example("b", "10+10=?", "20")]


def sampler(judge=None, **rs_overrides):
    cfg, _ = compose(["conf=smoke"])
    rs = dataclasses.replace(
        cfg.stage.rejection_sft, **{"num_samples": 5, "max_per_prompt": 1, **rs_overrides}
    )
    dist = DistInfo(0, 1, 0, torch.device("cpu"))
    return RejectionSampler(cfg, rs, dist, ScriptedPolicy(), build_char_tokenizer(), judge)


def reasons(rows):
    return [(r["prompt_id"], r["reason"]) for r in rows]


def test_rule_verification_every_reason():
    s = sampler()
    rows = s.sample_reasoning(EXAMPLES)
    assert reasons(rows) == [
        ("a", "accepted"),
        ("a", "duplicate"),
        ("a", "over_k"),
        ("a", "incorrect"),
        ("a", "mixed_language"),
        ("b", "code_in_reasoning"),
        ("b", "no_format"),
        ("b", "no_format"),
        ("b", "incorrect"),
        ("b", "accepted"),
    ]
    assert [r["accepted"] for r in rows] == [r["reason"] == "accepted" for r in rows]
    first = rows[0]
    assert first["source"] == "reasoning" and first["prompt"] == "12+30=?"
    assert first["reference"] == "42" and first["correct"] is True
    assert rows[4]["correct"] is None  # rejected before correctness was checked
    ((prompts, params),) = s.policy.calls
    assert params.n == 5 and params.temperature == s.rs.temperature
    assert prompts[0].endswith("<|im_start|>assistant\n")


def test_filters_switch_off():
    f = dataclasses.replace(
        sampler().rs.filters, mixed_language=False, code_in_reasoning=False, dedupe=False
    )
    rows = sampler(filters=f, max_per_prompt=5).sample_reasoning(EXAMPLES)
    assert reasons(rows)[:6] == [
        ("a", "accepted"),
        ("a", "accepted"),  # no dedupe
        ("a", "accepted"),
        ("a", "incorrect"),
        ("a", "accepted"),  # mixed language allowed
        ("b", "accepted"),  # code allowed
    ]


def test_long_paragraphs_rejected_and_counted():
    # "2+0=2\n1+3=4" is a paragraph of 5 + 1 + 5 = 11 characters: at the limit
    f = dataclasses.replace(sampler().rs.filters, max_paragraph_chars=11)
    rows = sampler(filters=f).sample_reasoning(EXAMPLES)
    assert reasons(rows) == [
        ("a", "accepted"),
        ("a", "duplicate"),
        ("a", "long_paragraph"),  # "2+0=2, 1+3=4": 12 characters
        ("a", "incorrect"),
        ("a", "long_paragraph"),  # 18 characters, checked before the mixed language
        ("b", "long_paragraph"),  # the fenced print: 3 + 1 + 12 + 1 + 3 = 20, before the code
        ("b", "no_format"),
        ("b", "no_format"),
        ("b", "incorrect"),
        ("b", "accepted"),
    ]
    assert rows[2]["correct"] is None  # rejected before correctness was checked
    stats = acceptance_stats(rows)
    assert stats["rejected/long_paragraph"] == 3 and stats["accepted_reasoning"] == 2


def test_judge_verification():
    # the judge reads the summary: "<answer>42</answer>" and "<answer>20</answer>" are right
    judge = ScriptedJudge(lambda p: "Verdict: correct" if "52" not in p else "hmm")
    rows = sampler(judge=judge, verify="judge").sample_reasoning(EXAMPLES)
    assert reasons(rows)[3] == ("a", "judge_unknown")  # 52: the judge said nothing usable
    assert reasons(rows)[8:] == [("b", "accepted"), ("b", "over_k")]  # "twenty" judged right
    assert rows[8]["judge"] == "Verdict: correct" and rows[8]["correct"] is True
    assert len(judge.prompts) == 6  # only readable samples are judged
    assert "Reference answer: 20" in judge.prompts[-1]


def test_rule_then_judge_asks_only_about_rule_rejections():
    judge = ScriptedJudge(lambda p: "correct" if "twenty" in p else "incorrect")
    rows = sampler(judge=judge, verify="rule_then_judge").sample_reasoning(EXAMPLES)
    assert len(judge.prompts) == 2  # the 52 and the "twenty"
    assert reasons(rows)[3] == ("a", "incorrect") and rows[3]["judge"] == "incorrect"
    assert reasons(rows)[8] == ("b", "accepted")


def test_a_judge_that_never_answers_is_an_error():
    judge = ScriptedJudge(lambda p: None)
    with pytest.raises(UserError, match="every judge request failed"):
        sampler(judge=judge, verify="judge").sample_reasoning(EXAMPLES)


GENERAL = [
    GeneralExample("general-hi", "Say hello.", "Hello!"),
    GeneralExample("general-sky", "Why is the sky blue?", "Scattering.", complex=True),
]


def test_general_mix_without_chains_of_thought():
    rows = sampler(general_mix=2.0, min_general=0).general_rows(GENERAL, n_accepted=3)
    assert len(rows) == 6  # 2 per accepted reasoning sample; the file repeats
    assert all(
        r["accepted"] and r["reason"] == "accepted" and r["source"] == "general" for r in rows
    )
    hi = next(r for r in rows if r["prompt_id"] == "general-hi")
    assert hi["completion"] == "<think>\n</think>\nHello!" and hi["cot"] is False
    assert sampler(general_mix=0.0, min_general=1).general_rows(GENERAL, 50)[0]["accepted"]
    assert sampler().general_rows([], 50) == []


def test_chains_of_thought_for_complex_queries_only():
    s = sampler(general_mix=1.0, cot_for_complex=True)
    rows = s.general_rows(GENERAL, n_accepted=2)
    by_id = {r["prompt_id"]: r for r in rows}
    assert by_id["general-sky"]["completion"] == (
        "<think>\nIt depends on the light.\n</think>\nScattering."
    )
    assert by_id["general-sky"]["cot"] is True
    assert by_id["general-hi"]["completion"] == "<think>\n</think>\nHello!"
    ((prompts, params),) = s.policy.calls  # one call, for the complex query only
    assert len(prompts) == 1 and "Why is the sky blue?" in prompts[0] and params.n == 1

    judge = ScriptedJudge(lambda p: "Light scatters off air molecules.")
    s = sampler(judge=judge, general_mix=1.0, cot_for_complex=True, cot_generator="judge")
    sky = next(r for r in s.general_rows(GENERAL, 2) if r["complex"])
    assert sky["completion"].startswith("<think>\nLight scatters off air molecules.\n</think>")
    assert "Answer: Scattering." in judge.prompts[0]
    # an unreadable chain of thought is dropped, the example stays
    judge = ScriptedJudge(lambda p: "```\nprint('blue')\n```")
    s = sampler(judge=judge, general_mix=1.0, cot_for_complex=True, cot_generator="judge")
    sky = next(r for r in s.general_rows(GENERAL, 2) if r["complex"])
    assert sky["cot"] is False and sky["completion"] == "<think>\n</think>\nScattering."


def test_general_chain_of_thought_with_a_long_paragraph_is_dropped():
    # the policy's chain of thought "It depends on the light." is 24 characters
    def sky(limit):
        f = dataclasses.replace(sampler().rs.filters, max_paragraph_chars=limit)
        s = sampler(filters=f, general_mix=1.0, cot_for_complex=True)
        return next(r for r in s.general_rows(GENERAL, 2) if r["complex"])

    assert sky(24)["cot"] is True
    assert sky(23)["cot"] is False and sky(23)["completion"] == "<think>\n</think>\nScattering."


def test_sft_examples_give_general_rows_no_task_instruction():
    cfg, _ = compose(["conf=smoke"])
    task = dataclasses.replace(cfg.task, instruction=" Put the answer in tags.")
    rows = sampler().sample_reasoning(EXAMPLES) + sampler(
        general_mix=1.0, min_general=0
    ).general_rows(GENERAL, 2)
    examples = sft_examples(rows)

    def prompt_fn(e, tok):
        return example_prompt(e, task, tok)

    assert len(examples) == 2 + 2
    tok = build_char_tokenizer()
    reasoning = next(e for e in examples if e.question == "12+30=?")
    general = next(e for e in examples if e.question == "Say hello.")
    assert "Put the answer" in prompt_fn(reasoning, tok)
    assert "Put the answer" not in prompt_fn(general, tok)
    assert general.response == "<think>\n</think>\nHello!"


def test_choose_prompts_is_a_seeded_subset_in_train_order():
    train = [Example(str(i), f"q{i}", "0") for i in range(10)]
    picked = choose_prompts(train, 4, seed=1)
    assert len(picked) == 4 and picked == sorted(picked, key=lambda e: int(e.id))
    assert picked == choose_prompts(train, 4, seed=1) != choose_prompts(train, 4, seed=2)
    assert choose_prompts(train, 0, 1) == train == choose_prompts(train, 99, 1)
