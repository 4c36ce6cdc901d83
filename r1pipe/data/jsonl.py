"""JSON-lines files read row by row, so that a bad row is reported by its file and line.

:func:`read_jsonl` is the one reader of every JSONL file a user gives r1pipe (task files,
general data, benchmarks, predictions): a UTF-8 byte order mark is accepted everywhere, and a
missing, empty or undecodable file is one :class:`~r1pipe.errors.UserError`. The field
helpers check the type of each value, so a list where text belongs is refused with its
``file:line`` rather than turned into text (``str(['3'])``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1pipe.config.inputs import check_file, decode_text
from r1pipe.errors import UserError

log = logging.getLogger(__name__)


def read_jsonl(path: str | Path, key: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-empty line of ``path``.

    Args:
        path: The file.
        key: The config key or argument that named it, for the error messages.

    Raises:
        UserError: No such file, a directory, an empty file, no rows, a line that is not
            UTF-8, not JSON or not an object.
    """
    file = check_file(path, key)
    rows = []
    with file.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = decode_text(raw, f"{file}:{lineno}", lines=False)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{file}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(
                    f"{file}:{lineno}: expected a JSON object per line, got {_kind(row)}"
                )
            rows.append((lineno, row))
    if not rows:
        raise UserError(f"{key}={path}: the file has no rows (only blank lines)")
    return rows


def _kind(value: Any) -> str:
    """``a list``, ``an int (42)``: what a value is, for messages."""
    name = {list: "list", dict: "object", bool: "boolean", str: "string", float: "number"}.get(
        type(value), type(value).__name__
    )
    shown = "" if isinstance(value, list | dict) else f" ({json.dumps(value)[:40]})"
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}{shown}"


def _missing(row: dict[str, Any], name: str, where: str, key: str) -> UserError:
    present = sorted(k for k, v in row.items() if v is not None)
    return UserError(f"{where}: row has no field '{name}' ({key}); fields present: {present}")


def text_field(row: dict[str, Any], name: str, where: str, key: str) -> str:
    """The non-empty string in ``row[name]``.

    Raises:
        UserError: The field is absent or null, not a string, or only whitespace; the
            message names the file:line (``where``), the field and the config key.
    """
    value = row.get(name)
    if value is None:
        raise _missing(row, name, where, key)
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{name}' ({key}) must be a string, got {_kind(value)}")
    if not value.strip():
        raise UserError(f"{where}: field '{name}' ({key}) is empty")
    return value


def answer_field(row: dict[str, Any], name: str, where: str, key: str) -> str:
    """A reference answer: a non-empty string, or a number written as JSON has it (``27.0``).

    Raises:
        UserError: Absent, empty, or a list, object or boolean (``['3']`` is not an answer).
    """
    value = row.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if value is not None and not isinstance(value, str):
        raise UserError(
            f"{where}: field '{name}' ({key}) must be a string or a number, got {_kind(value)}"
        )
    return text_field(row, name, where, key)


def row_id(row: dict[str, Any], names: Sequence[str], default: str, where: str) -> str:
    """The row's id: the first of ``names`` it has (a string or an integer), else ``default``.

    Raises:
        UserError: The id is a list, object, boolean or fraction.
    """
    for name in names:
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise UserError(
                f"{where}: field '{name}' (the row's id) must be a string or an integer, got "
                f"{_kind(value)}"
            )
        return str(value)
    return default


def drop_duplicate_ids(
    ids: Sequence[str], wheres: Sequence[str], policy: str, key: str, setting: str | None
) -> list[int]:
    """Indices of the rows to keep: all of them, or the first row of each id.

    Args:
        ids: One id per row.
        wheres: One ``file:line`` per row.
        policy: ``refuse`` or ``drop`` (``task.duplicates``).
        key: The config key that named the file (``task.train_file``).
        setting: The config key of ``policy`` (``task.duplicates``), offered in the message;
            None where the policy is fixed.

    Raises:
        UserError: ``refuse`` and an id repeats; the message names the first repeat, the line
            it repeats and how many repeats there are.

    >>> drop_duplicate_ids(["a", "b", "a"], ["f:1", "f:2", "f:3"], "drop", "k", "task.duplicates")
    [0, 1]
    """
    first: dict[str, int] = {}
    keep, repeats = [], []
    for i, id_ in enumerate(ids):
        if id_ in first:
            repeats.append(i)
        else:
            first[id_] = i
            keep.append(i)
    if not repeats:
        return keep
    r = repeats[0]
    what = (
        f"{wheres[r]}: id {ids[r]!r} repeats {wheres[first[ids[r]]]} ({len(repeats)} "
        f"{'rows repeat' if len(repeats) > 1 else 'row repeats'} an earlier id)"
    )
    if policy == "refuse":
        fix = (
            f"set {setting}=drop to keep the first row of each id" if setting else "leave them out"
        )
        raise UserError(f"{what}; make the ids unique, or {fix}")
    log.warning("%s; dropped (%s, %s=drop)", what, key, setting)
    return keep
