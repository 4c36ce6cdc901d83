"""JSON-lines files read row by row, so that a bad row is reported by its file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from r1pipe.errors import UserError


def read_jsonl(path: Path, key: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-empty line of ``path``.

    Args:
        path: The file.
        key: The config key or argument that named it, for the error messages.

    Raises:
        UserError: No such file, no rows, a line that is not JSON or not an object.
    """
    if not path.is_file():
        raise UserError(f"{key}={path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object per line")
            rows.append((lineno, row))
    if not rows:
        raise UserError(f"{key}={path}: the file has no rows")
    return rows
