"""Task builders: the synthetic task from a seed, or local JSONL files through ``datasets``.

``load_task(cfg.task)`` returns ``(train, held_out)`` lists of
:class:`~r1pipe.data.types.Example`. A bad file or row raises one
:class:`~r1pipe.errors.UserError` naming the file, the line and the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from r1pipe.config.schema import TaskConfig
from r1pipe.data.code import load_code_examples
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


def _read_rows(path: Path, key: str) -> list[dict]:
    """Rows of a JSON-lines file via ``datasets``; on a parse error, find the bad line."""
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    try:
        ds = load_dataset("json", data_files=str(path), split="train")
    except Exception as e:  # datasets wraps parse errors in several types
        with path.open() as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as je:
                        raise UserError(f"{path}:{lineno}: not valid JSON ({je.msg})") from None
                    if not isinstance(row, dict):
                        raise UserError(
                            f"{path}:{lineno}: expected a JSON object per line"
                        ) from None
        raise UserError(f"{key}={path}: cannot be read as JSON lines ({e})") from None
    return ds.to_list()


def load_jsonl_examples(file: str, cfg: TaskConfig, *, key: str) -> list[Example]:
    """Examples from a GSM8K- or MATH-style JSONL file with the field mapping in ``cfg``."""
    path = Path(file).expanduser()
    if not path.is_file():
        raise UserError(f"{key}={file}: no such file")
    rows = _read_rows(path, key)
    if not rows:
        raise UserError(f"{key}={file}: the file has no rows")
    examples = []
    for i, row in enumerate(rows):
        where = f"{path}:{i + 1}"  # one JSON object per line, so row i is line i + 1
        question = _field(row, cfg.prompt_field, where, "task.prompt_field")
        raw_answer = _field(row, cfg.answer_field, where, "task.answer_field")
        reference = _reference(raw_answer, cfg.reference, where)
        response = None
        if cfg.solution_field:
            solution = _field(row, cfg.solution_field, where, "task.solution_field")
            response = r1_response(solution, reference, cfg)
        examples.append(
            Example(
                id=str(row.get("id", row.get("unique_id", i))),
                question=question,
                reference=reference,
                response=response,
            )
        )
    return examples


def _field(row: dict, name: str, where: str, key: str) -> str:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(
            f"{where}: row has no field '{name}' ({key}); "
            f"fields present: {sorted(k for k, v in row.items() if v is not None)}"
        )
    return str(value)


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
