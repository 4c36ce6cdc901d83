"""General (non-reasoning) SFT data: the shipped sample, file lookup, bad rows, prompt and
response formats."""

import dataclasses

import pytest

from r1pipe.config.schema import TaskConfig
from r1pipe.data.general import (
    general_prompt,
    general_response,
    load_general,
    mix_general,
    resolve_general_file,
)
from r1pipe.errors import UserError
from r1pipe.models import build_char_tokenizer


def test_shipped_sample():
    rows = load_general("general_chat.jsonl", "k")
    assert len(rows) == 100 and len({r.id for r in rows}) == 100
    assert all(r.prompt.isascii() and r.response.isascii() for r in rows)
    assert 10 <= sum(r.complex for r in rows) <= 30  # some queries deserve a chain of thought
    assert all(len(r.response) <= 160 for r in rows)  # short: the tiny model learns them too


def test_a_path_wins_over_the_shipped_name(tmp_path, monkeypatch):
    mine = tmp_path / "general_chat.jsonl"
    mine.write_text('{"prompt": "p", "response": "r", "complex": true, "id": 7}\n\n')
    monkeypatch.chdir(tmp_path)
    (row,) = load_general("general_chat.jsonl", "k")
    assert (row.id, row.prompt, row.response, row.complex) == ("general-7", "p", "r", True)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            '{"prompt": "p", "response": "r"}\n{"prompt": "p"}\n',
            ":2: row has no field 'response'",
        ),
        ('{"prompt": "p", "response": "  "}\n', ":1: field 'response' (KEY) is empty"),
        ('{"prompt": ["p"], "response": "r"}\n', ":1: field 'prompt' (KEY) must be a string"),
        ('{"prompt": "p", "response": "r", "complex": "no"}\n', ":1: field 'complex'"),
        ('{"prompt": "p", "response": "r"}\nnot json\n', ":2: not valid JSON"),
        ("[1, 2]\n", ":1: expected a JSON object per line, got a list"),
        ("\n", "the file has no rows"),
        (
            '{"prompt": "a", "response": "r", "id": 1}\n'
            '{"prompt": "b", "response": "r", "id": 1}\n',
            ":2: id '1' repeats",
        ),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, text, needle):
    f = tmp_path / "g.jsonl"
    f.write_text(text)
    with pytest.raises(UserError, match="g.jsonl") as e:
        load_general(str(f), "KEY")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_file_names_the_key_and_the_shipped_files():
    with pytest.raises(UserError) as e:
        resolve_general_file("nope.jsonl", "stage.rejection_sft.general_file")
    assert "stage.rejection_sft.general_file=nope.jsonl: no such file" in str(e.value)
    assert "general_chat.jsonl" in str(e.value)


def test_a_directory_or_an_empty_file_is_named_as_such(tmp_path):
    with pytest.raises(UserError, match=r"^K=.*: is a directory, not a file$"):
        load_general(str(tmp_path), "K")
    (tmp_path / "g.jsonl").write_bytes(b"")
    with pytest.raises(UserError, match=r"^K=.*g.jsonl: is empty \(0 bytes\)$"):
        load_general(str(tmp_path / "g.jsonl"), "K")


def test_mix_repeats_whole_passes_in_a_seeded_order():
    rows = load_general("general_chat.jsonl", "k")
    mixed = mix_general(rows, 250, seed=3)
    assert len(mixed) == 250 and len({r.id for r in mixed[:100]}) == 100
    assert [r.id for r in mixed] == [r.id for r in mix_general(rows, 250, seed=3)]
    assert mix_general(rows, 0, 3) == []


def test_prompt_has_no_task_instruction_and_response_has_a_think_block():
    task = dataclasses.replace(TaskConfig(), instruction=" Put the answer in \\boxed{}.")
    prompt = general_prompt("Say hello.", task, build_char_tokenizer())
    assert prompt == "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    assert general_response("Hello!") == "<think>\n</think>\nHello!"
    assert general_response("Blue.", "Air scatters blue light.") == (
        "<think>\nAir scatters blue light.\n</think>\nBlue."
    )
