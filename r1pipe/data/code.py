"""Code tasks (``task.verifier=code``): problems with tests, from local JSON-lines files.

Each line is an object with the problem (``task.prompt_field``), its tests
(``task.answer_field``) and optionally a reference program (``task.solution_field``), e.g.::

    {"question": "Write square(x) ...", "tests": ["assert square(3) == 9"], "solution": "..."}
    {"question": "Read n, print n*n.", "tests": [{"input": "3\\n", "output": "9\\n"}]}

Tests take any form :func:`r1pipe.rewards.code.parse_tests` accepts (an assert string, a list
of assert strings, a list of stdin/stdout pairs, APPS' ``{"inputs", "outputs"}``), also as JSON
text inside a string. The reference of each :class:`Example` is the JSON test spec with the
task's sandbox settings (``task.code``), what the code verifier reads.

Rows are read with the standard library rather than ``datasets``: the tests column mixes
strings and lists across datasets, which a column schema cannot hold.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from r1pipe.config.schema import CodeConfig, TaskConfig
from r1pipe.data.jsonl import drop_duplicate_ids, read_jsonl, row_id, text_field
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.rewards.code import parse_reference, parse_tests
from r1pipe.rewards.sandbox import run_python

__all__ = ["check_sandbox", "code_reference", "code_response", "load_code_examples"]


def code_reference(tests: Any, code: CodeConfig) -> str:
    """The reference text of a code problem: its tests plus the task's sandbox settings."""
    return json.dumps({"tests": tests, **dataclasses.asdict(code)}, ensure_ascii=False)


def code_response(solution: str) -> str:
    """A cold-start target from a reference program: the program as the answer.

    A solution already in the R1 format (with ``</think>``) is used as it is. Code datasets
    usually hold only the program, with no reasoning to put in the think block, so it then
    gets one plain sentence: the SFT teaches the output format, not reasoning.
    """
    if "</think>" in solution:
        return solution
    program = solution.strip("\n")
    return (
        "<think>\nI write a Python program that solves the task.\n</think>\n"
        f"<answer>\n```python\n{program}\n```\n</answer>"
    )


def _tests_value(value: Any) -> Any:
    # JSON inside a string (APPS stores input_output that way); anything else that is a string
    # is Python assert code.
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(decoded, list | dict):
            return decoded
    return value


def load_code_examples(file: str, cfg: TaskConfig, *, key: str) -> list[Example]:
    """Examples of a code task from a JSONL file with the field mapping in ``cfg``.

    Raises:
        UserError: A missing file or field, tests that are not valid (file:line named), or a
            repeated id under ``task.duplicates=refuse``.
    """
    path = Path(file).expanduser()
    examples, wheres = [], []
    for lineno, row in read_jsonl(path, key):
        where = f"{path}:{lineno}"
        question = text_field(row, cfg.prompt_field, where, "task.prompt_field")
        if row.get(cfg.answer_field) is None:
            raise UserError(
                f"{where}: row has no field '{cfg.answer_field}' (task.answer_field, the "
                f"tests); fields present: {sorted(row)}"
            )
        tests = _tests_value(row[cfg.answer_field])
        try:
            parse_tests(tests)
        except ValueError as e:
            raise UserError(f"{where}: bad tests in '{cfg.answer_field}': {e}") from None
        response = None
        if cfg.solution_field:
            solution = text_field(row, cfg.solution_field, where, "task.solution_field")
            response = code_response(solution)
        examples.append(
            Example(
                id=row_id(row, ("id", "task_id"), str(lineno - 1), where),
                question=question,
                reference=code_reference(tests, cfg.code),
                response=response,
            )
        )
        wheres.append(where)
    keep = drop_duplicate_ids(
        [e.id for e in examples], wheres, cfg.duplicates, key, "task.duplicates"
    )
    examples = [examples[i] for i in keep]
    check_sandbox(examples[0].reference)
    return examples


def check_sandbox(reference: str) -> None:
    """Run a trivial program with the sandbox settings of ``reference``, so that a sandbox
    that cannot work fails once, now, rather than scoring every completion 0 later.

    Raises:
        UserError: With the sandbox's reason and the setting to change.
    """
    _, _, sandbox = parse_reference(reference)
    # A generous limit: this checks that programs start at all, on a possibly loaded machine.
    probe = dataclasses.replace(sandbox, timeout_s=max(sandbox.timeout_s, 30.0))
    result = run_python("print('ok')", config=probe)
    if result.status == "passed" and result.stdout.strip() == "ok":
        return
    reason = result.error or f"status {result.status}: {result.stderr.strip()[-300:]}"
    hint = ""
    if result.status == "error" and probe.python is None:
        hint = "; set task.code.python to an interpreter that user can run (e.g. /usr/bin/python3)"
    raise UserError(f"task.code: the sandbox cannot run Python ({reason}){hint}")
