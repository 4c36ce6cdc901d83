"""The files a config names, checked before any stage runs.

Every reader of a user's file goes through :func:`check_file` and :func:`decode_text`, so
a missing file, a directory, an empty file, a file that is not UTF-8 or one that cannot be
read give the same one-line :class:`~r1pipe.errors.UserError` wherever they are found, and a
UTF-8 byte order mark is accepted everywhere.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from r1pipe.errors import UserError


def check_file(path: str | Path, key: str) -> Path:
    """``path`` as a :class:`Path` when it is a readable, non-empty regular file.

    Args:
        path: The file, as the user wrote it (``~`` is expanded).
        key: The config key or argument that named it (``task.train_file``), for messages.

    Raises:
        UserError: ``KEY=PATH: no such file`` / ``is a directory, not a file`` / ``is empty
            (0 bytes)`` / ``cannot be read (permission denied)``.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{key}={path}: is a directory, not a file")
    if not p.exists():
        raise UserError(f"{key}={path}: no such file")
    if not p.is_file():
        raise UserError(f"{key}={path}: not a regular file")
    try:
        with p.open("rb") as f:
            empty = not f.read(1)
    except OSError as e:
        raise UserError(f"{key}={path}: cannot be read ({e.strerror or e})") from None
    if empty:
        raise UserError(f"{key}={path}: is empty (0 bytes)")
    return p


def decode_text(data: bytes, where: str, *, lines: bool = True) -> str:
    """UTF-8 text, without a leading byte order mark (editors on Windows write one).

    >>> decode_text(b"\\xef\\xbb\\xbfq: 1", "f.yaml")
    'q: 1'

    Args:
        data: The bytes of a file, or of one line (``lines=False``: ``where`` names the line).
        where: The file (``KEY=PATH``) or ``PATH:LINE``, for the message.

    Raises:
        UserError: ``WHERE: not UTF-8 text (byte 0xe9 at line L, column C); save it as UTF-8``.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        at = f"line {line}, column {column}" if lines else f"column {column}"
        raise UserError(
            f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at {at}); save it as UTF-8"
        ) from None


def read_text(path: str | Path, key: str) -> str:
    """The text of a file a config names: :func:`check_file`, then :func:`decode_text`."""
    p = check_file(path, key)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"{key}={path}: cannot be read ({e.strerror or e})") from None
    return decode_text(data, f"{key}={path}")
