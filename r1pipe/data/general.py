"""Non-reasoning SFT data (writing, factual QA, chat) mixed into rejection-sft, as the R1
paper mixed ~200k such samples with its ~600k reasoning ones.

A general file is JSON lines with ``prompt`` and ``response``, optional ``id`` and ``complex``
(a query that deserves a chain of thought; simple ones, like "hello", get none). A small sample
ships in ``r1pipe/data/assets/general_chat.jsonl`` (ASCII, short, so that the tiny
character-level model can learn it too).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from r1pipe.config.inputs import check_file
from r1pipe.config.schema import TaskConfig
from r1pipe.data.jsonl import drop_duplicate_ids, read_jsonl, row_id, text_field
from r1pipe.data.templates import build_prompt
from r1pipe.data.types import Example
from r1pipe.errors import UserError

if TYPE_CHECKING:  # transformers is a 1.5 s import: a config error should not wait for it
    from transformers import PreTrainedTokenizerBase

ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass
class GeneralExample:
    """One non-reasoning prompt with its reference response."""

    id: str
    prompt: str
    response: str
    complex: bool = False


def resolve_general_file(name: str, key: str) -> Path:
    """``name`` as a path, or else a file shipped in ``r1pipe/data/assets/``."""
    path = Path(name).expanduser()
    if path.exists():
        return check_file(name, key)  # a directory or an empty file is named as such
    shipped = ASSETS / name
    if not path.is_absolute() and shipped.is_file():
        return shipped
    available = ", ".join(sorted(p.name for p in ASSETS.glob("*.jsonl")))
    raise UserError(f"{key}={name}: no such file (shipped files: {available})")


def load_general(name: str, key: str) -> list[GeneralExample]:
    """Read a general SFT file; a bad line or a repeated id raises one UserError naming the
    file and line."""
    path = resolve_general_file(name, key)
    out: list[GeneralExample] = []
    ids: list[str] = []  # as in the file; the examples' ids are prefixed
    wheres: list[str] = []
    for lineno, row in read_jsonl(path, key):
        where = f"{path}:{lineno}"
        prompt = text_field(row, "prompt", where, key)
        response = text_field(row, "response", where, key)
        ids.append(row_id(row, ("id",), str(lineno), where))
        complex_ = row.get("complex", False)
        if not isinstance(complex_, bool):
            raise UserError(f"{where}: field 'complex' ({key}) must be true or false")
        out.append(
            GeneralExample(
                id=f"general-{ids[-1]}",
                prompt=prompt,
                response=response.strip(),
                complex=complex_,
            )
        )
        wheres.append(where)
    # Ids key the chains of thought written for complex rows: one id, one prompt.
    drop_duplicate_ids(ids, wheres, "refuse", key, None)
    return out


def mix_general(examples: list[GeneralExample], n: int, seed: int) -> list[GeneralExample]:
    """``n`` rows in a seeded order; a file with fewer rows is repeated (whole passes first).

    >>> rows = [GeneralExample(str(i), "p", "r") for i in range(3)]
    >>> ids = [e.id for e in mix_general(rows, 7, 0)]
    >>> sorted(ids.count(i) for i in "012")
    [2, 2, 3]
    """
    rng = random.Random(seed)
    out: list[GeneralExample] = []
    while len(out) < n:
        order = list(examples)
        rng.shuffle(order)
        out.extend(order[: n - len(out)])
    return out


def general_prompt(question: str, task: TaskConfig, tokenizer: PreTrainedTokenizerBase) -> str:
    """The prompt of a general query: the task's template without its instruction (a "put the
    answer in \\boxed{}" has no place in "write a haiku")."""
    return build_prompt(question, replace(task, instruction=""), tokenizer)


def example_prompt(example: Example, task: TaskConfig, tokenizer: PreTrainedTokenizerBase) -> str:
    """An example's prompt text by its source: a reasoning problem gets the task's template
    and instruction, a general query the template alone (:func:`general_prompt`)."""
    if example.source == "general":
        return general_prompt(example.question, task, tokenizer)
    return build_prompt(example.question, task, tokenizer)


def general_response(response: str, cot: str | None = None) -> str:
    """The R1-format target: a think block (empty for a simple query), then the response.

    >>> general_response("Hello!")
    '<think>\\n</think>\\nHello!'
    >>> general_response("Paris.", "France's capital is Paris.")
    "<think>\\nFrance's capital is Paris.\\n</think>\\nParis."
    """
    return f"<think>\n{cot}\n</think>\n{response}" if cot else f"<think>\n</think>\n{response}"
