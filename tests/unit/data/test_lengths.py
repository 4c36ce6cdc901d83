"""Prompt length against the model's context (issue 12): counted before training, skipped or
refused, and a megabyte prompt costs a ``len``, not a tokenization."""

import time
from types import SimpleNamespace

import pytest

from r1pipe.config import compose
from r1pipe.config.schema import ConfigError, TaskConfig
from r1pipe.data.lengths import (
    check_prompt_lengths,
    max_token_chars,
    model_context,
    prompt_token_budget,
)
from r1pipe.data.templates import build_prompt
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.models import build_char_tokenizer

TOK = build_char_tokenizer()
TASK = TaskConfig()
# The chat template around a question: '<|im_start|>', 'user', '\n', ..., '<|im_start|>',
# 'assistant', '\n' (each tag one token, each character one).
OVERHEAD = len(TOK(build_prompt("", TASK, TOK), add_special_tokens=False)["input_ids"])


def _prompt(e: Example) -> str:
    return build_prompt(e.question, TASK, TOK)


def _examples(*lengths: int) -> list[Example]:
    return [Example(id=f"e{i}", question="x" * n, reference="1") for i, n in enumerate(lengths)]


def test_overhead_worked_by_hand():
    # <|im_start|> u s e r \n ... <|im_end|> \n <|im_start|> a s s i s t a n t \n
    assert OVERHEAD == 1 + 4 + 1 + 1 + 1 + 1 + 9 + 1


def test_prompts_that_fit_are_kept_in_order():
    rows = _examples(3, 10, 0)
    kept, skipped = check_prompt_lengths(
        rows, _prompt, TOK, OVERHEAD + 10, policy="refuse", where="task.train_file=t.jsonl"
    )
    assert kept == rows and skipped == 0


def test_skip_counts_and_says_so():
    rows = _examples(3, 11, 10, 50)
    said = []
    kept, skipped = check_prompt_lengths(
        rows, _prompt, TOK, OVERHEAD + 10, policy="skip", where="W", log=said.append
    )
    assert [e.id for e in kept] == ["e0", "e2"] and skipped == 2
    assert said == [
        f"W: 2 of 4 prompts are over the {OVERHEAD + 10}-token limit (the first: id 'e1', "
        f"{OVERHEAD + 11} tokens): skipped (task.overlong_prompts=skip)"
    ]


def test_refuse_names_the_first_and_the_setting():
    with pytest.raises(UserError) as e:
        check_prompt_lengths(
            _examples(1, 30), _prompt, TOK, OVERHEAD + 10, policy="refuse", where="W"
        )
    assert str(e.value) == (
        f"W: 1 of 2 prompts are over the {OVERHEAD + 10}-token limit (the first: id 'e1', "
        f"{OVERHEAD + 30} tokens); shorten them, or set task.overlong_prompts=skip to leave "
        "them out"
    )


def test_nothing_left_is_an_error_even_when_skipping():
    with pytest.raises(UserError, match="W: 2 of 2 prompts .*: none is left$"):
        check_prompt_lengths(_examples(20, 30), _prompt, TOK, 5, policy="skip", where="W")


def test_a_megabyte_prompt_is_refused_by_its_length_without_tokenizing():
    calls = []

    class Counting:
        """The tiny tokenizer, recording what it is asked to tokenize."""

        def get_vocab(self):
            return TOK.get_vocab()

        def __call__(self, texts, **kw):
            calls.append(sum(len(t) for t in texts))
            return TOK(texts, **kw)

    rows = _examples(5, 1 << 20, 7)
    t0 = time.perf_counter()
    kept, skipped = check_prompt_lengths(
        rows, _prompt, Counting(), 256, policy="skip", where="W", log=lambda _: None
    )
    assert time.perf_counter() - t0 < 1.0
    assert [e.id for e in kept] == ["e0", "e2"] and skipped == 1
    assert calls == [len(_prompt(rows[0])) + len(_prompt(rows[2]))]  # only the short two
    with pytest.raises(UserError, match=r"the first: id 'e1', 1048\d\d\d characters\)"):
        check_prompt_lengths(rows, _prompt, Counting(), 256, policy="refuse", where="W")


def test_max_token_chars_of_the_tiny_tokenizer_is_its_longest_tag():
    # one character per token, but the tags (<|im_start|>, </think>, ...) are single tokens
    assert max_token_chars(TOK) == max(len(t) for t in TOK.get_vocab())
    assert max_token_chars(TOK) >= len("<|im_start|>")


def test_model_context_and_budget():
    cfg = SimpleNamespace(max_position_embeddings=256)
    assert model_context(cfg, TOK) == 256  # the char tokenizer says 4096
    assert model_context(SimpleNamespace(n_positions=1024), None) == 1024
    assert model_context(SimpleNamespace(), SimpleNamespace(model_max_length=int(1e30))) is None
    assert prompt_token_budget(256, 40) == 216
    assert prompt_token_budget(256, 40, max_prompt_tokens=100) == 100
    assert prompt_token_budget(None, 40, max_prompt_tokens=100) == 100
    with pytest.raises(ConfigError, match="leave no room for a prompt"):
        prompt_token_budget(256, 256)
    with pytest.raises(ConfigError, match="task.max_prompt_tokens"):
        prompt_token_budget(None, 40)


def test_config_fields():
    cfg, _ = compose(["conf=smoke"])
    assert cfg.task.max_prompt_tokens == 0 and cfg.task.overlong_prompts == "skip"
    cfg, _ = compose(["conf=smoke", "task.max_prompt_tokens=64", "task.overlong_prompts=refuse"])
    assert cfg.task.max_prompt_tokens == 64 and cfg.task.overlong_prompts == "refuse"
    for bad, key in [
        ("task.overlong_prompts=truncate", "task.overlong_prompts"),
        ("task.max_prompt_tokens=-1", "task.max_prompt_tokens"),
    ]:
        with pytest.raises(UserError, match=f"config error: {key}: "):
            compose(["conf=smoke", bad])
