"""Task builders: the synthetic task from a seed, or local JSON-lines files.

``load_task(cfg.task)`` returns ``(train, held_out)`` lists of
:class:`~r1pipe.data.types.Example`. A bad file or row raises one
:class:`~r1pipe.errors.UserError` naming the file, the line and the field.
"""

from __future__ import annotations

import re
from pathlib import Path

from r1pipe.config.schema import TaskConfig
from r1pipe.data.code import load_code_examples
from r1pipe.data.jsonl import answer_field, drop_duplicate_ids, read_jsonl, row_id, text_field
from r1pipe.data.synthetic import addition_splits
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.rewards.parsing import extract_answer, extract_gsm8k_reference

# GSM8K solutions carry calculator annotations like <<16-3-4=9>>; they are not reasoning.
_CALC = re.compile(r"<<[^>]*>>")


def load_task(cfg: TaskConfig) -> tuple[list[Example], list[Example]]:
    """Build (train, held-out) examples for the task in ``cfg``."""
    if cfg.kind == "addition":
        try:
            return addition_splits(
                num_digits=cfg.num_digits,
                num_operands=cfg.num_operands,
                train_size=cfg.train_size,
                eval_size=cfg.eval_size,
                seed=cfg.split_seed,
                answer_format=cfg.answer_format,
            )
        except ValueError as e:
            raise UserError(f"config error: {e}") from None
    assert cfg.train_file is not None and cfg.eval_file is not None
    # Code problems carry tests instead of an answer (r1pipe/data/code.py).
    load = load_code_examples if cfg.verifier == "code" else load_jsonl_examples
    train = load(cfg.train_file, cfg, key="task.train_file")
    held = load(cfg.eval_file, cfg, key="task.eval_file")[: cfg.eval_size]
    return train, held


def load_jsonl_examples(file: str, cfg: TaskConfig, *, key: str) -> list[Example]:
    """Examples from a GSM8K- or MATH-style JSONL file with the field mapping in ``cfg``.

    Rows are read with the standard library (:func:`~r1pipe.data.jsonl.read_jsonl`) and each
    value's type is checked, so a list answer is refused with its file:line instead of
    becoming the text ``['3']``. Repeated ids follow ``cfg.duplicates``.

    Raises:
        UserError: A missing, empty or unreadable file; a row without a field, with an empty
            one, or with one of the wrong type; a repeated id under ``duplicates=refuse``.
    """
    path = Path(file).expanduser()
    examples, wheres = [], []
    for i, (lineno, row) in enumerate(read_jsonl(path, key)):
        where = f"{path}:{lineno}"
        question = text_field(row, cfg.prompt_field, where, "task.prompt_field")
        raw_answer = answer_field(row, cfg.answer_field, where, "task.answer_field")
        reference = _reference(raw_answer, cfg.reference, where)
        response = None
        if cfg.solution_field:
            solution = text_field(row, cfg.solution_field, where, "task.solution_field")
            response = r1_response(solution, reference, cfg)
        examples.append(
            Example(
                id=row_id(row, ("id", "unique_id"), str(i), where),
                question=question,
                reference=reference,
                response=response,
            )
        )
        wheres.append(where)
    keep = drop_duplicate_ids(
        [e.id for e in examples], wheres, cfg.duplicates, key, "task.duplicates"
    )
    return [examples[i] for i in keep]


def _reference(raw: str, mode: str, where: str) -> str:
    if mode == "gsm8k":
        if "####" not in raw:
            raise UserError(f"{where}: answer has no '#### <number>' (task.reference=gsm8k)")
        return extract_gsm8k_reference(raw)
    if mode == "boxed":
        ans = extract_answer(raw, "boxed")
        if ans is None:
            raise UserError(f"{where}: answer has no \\boxed{{}} (task.reference=boxed)")
        return ans
    # Numbers stored as floats (AMC's 27.0) compare as written.
    return raw.strip()


def r1_response(solution: str, reference: str, cfg: TaskConfig) -> str:
    """Turn a worked solution into the R1 format: the solution as the chain of thought, then
    a short summary with the checkable answer."""
    reasoning = _CALC.sub("", solution.split("####")[0]).strip()
    final = (
        f"<answer>{reference}</answer>"
        if cfg.answer_format == "answer_tag"
        else f"\\boxed{{{reference}}}"
    )
    return f"<think>\n{reasoning}\n</think>\nThe final answer is {final}."
