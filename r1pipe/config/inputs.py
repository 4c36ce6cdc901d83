"""The files a config names, checked before any stage runs.

:func:`r1pipe.preflight.validate_inputs` (``r1pipe stage``, ``run-all``, ``distill``) and
:func:`validate_eval_inputs` (``r1pipe eval``) run in the CLI right after composition, so a
missing or bad file is one line before any model is built or any run directory touched.

Every reader of a user's file goes through :func:`check_file` and :func:`decode_text`, so
a missing file, a directory, an empty file, a file that is not UTF-8 or one that cannot be
read give the same one-line :class:`~r1pipe.errors.UserError` wherever they are found, and a
UTF-8 byte order mark is accepted everywhere.
"""

from __future__ import annotations

import codecs
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from r1pipe.errors import UserError

if TYPE_CHECKING:
    from r1pipe.config.schema import R1Config


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


def writable_dir(path: str | Path, key: str) -> Path:
    """``path`` as a :class:`Path` when it is a directory r1pipe can write in, or can create.

    Nothing is created: a probe file is made and removed in ``path``, or in its nearest
    existing ancestor when ``path`` does not exist yet.

    Raises:
        UserError: ``KEY=PATH: exists and is not a directory`` / ``cannot write in DIR
            (Read-only file system)``.
    """
    p = Path(path).expanduser().absolute()
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        what = "exists and is not a directory" if probe == p else f"{probe} is not a directory"
        raise UserError(f"{key}={path}: {what}")
    try:
        fd, name = tempfile.mkstemp(prefix=".r1pipe-write-probe-", dir=probe)
    except OSError as e:
        raise UserError(f"{key}={path}: cannot write in {probe} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(name)
    return p


def model_dir(path: str, key: str) -> None:
    """A model named by a local path is a Hugging Face model directory; a hub id (``org/name``,
    not on disk) is left to the loader, which alone can reach the hub.

    Raises:
        UserError: ``KEY=PATH: no such directory`` / ``is a file, not a model directory`` /
            ``not a Hugging Face model directory (no config.json)``.
    """
    p = Path(path).expanduser()
    if not (path.startswith((".", "/", "~")) or p.exists()):
        return
    if not p.exists():
        raise UserError(f"{key}={path}: no such directory")
    if not p.is_dir():
        raise UserError(f"{key}={path}: is a file, not a model directory")
    if not (p / "config.json").is_file():
        raise UserError(f"{key}={path}: not a Hugging Face model directory (no config.json)")


def validate_eval_inputs(cfg: R1Config) -> None:
    """What ``r1pipe eval`` reads and writes, before a model is loaded: ``predictions=`` (a
    readable file), ``checkpoint=`` (a model directory when a path), and ``out=`` (a directory
    it can write in; by default the run directory).

    Raises:
        UserError: One line naming the key (``bench.out (out=)``) and the path.
    """
    b = cfg.bench
    if b.predictions:
        check_file(b.predictions, "predictions")
    if b.checkpoint:
        model_dir(b.checkpoint, "checkpoint")
    if b.out:
        writable_dir(b.out, "out")
    else:
        writable_dir(cfg.run.dir, "run.dir")
