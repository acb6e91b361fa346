"""Atomic writes of bytes, JSON and CSV (temp file + rename: never half-written), and appends
of whole lines.

Every layer writes through here, so no reader ever sees a half-written result, record or table.
Files get the permissions of an ordinary new file (``0666`` less the umask), not the private
``0600`` of a temporary file; JSON is strict (NaN and infinities are refused: use None). A write
that fails (no space left, a read-only folder) raises ``WriteFailed`` naming the file and the
cause, and leaves the file as it was.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class WriteFailed(OSError):
    """A file could not be written (``.filename``: which; ``.strerror``: why); the file is as it
    was before the write."""


def _failed(err: OSError, path) -> WriteFailed:
    return WriteFailed(err.errno or errno.EIO, err.strerror or str(err), str(path))


def _write_all(fd: int, data: bytes, path: Path) -> None:
    """Write all of ``data`` to ``fd`` (``path``: the file it writes, for messages)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, _new_file_mode())
            _write_all(fd, data, path)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteFailed):
            raise _failed(err, path) from err
        raise
    return path


def append_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline to ``path`` whole or not at all: a write that fails part
    way is cut back to the file's previous end before ``WriteFailed`` is raised."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _new_file_mode())
    except OSError as err:
        raise _failed(err, path) from err
    try:
        end = os.fstat(fd).st_size
        try:
            _write_all(fd, (line + "\n").encode(), path)
        except OSError as err:
            try:
                os.ftruncate(fd, end)
            except OSError:
                pass  # the reader drops a partial last line
            raise _failed(err, path) from err
    finally:
        os.close(fd)


def non_finite_key(obj, where: str = "") -> Optional[str]:
    """The first key path (``a.b[2]``) in ``obj`` holding a NaN or infinite float, else None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "<value>")
    if isinstance(obj, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    return next((found for key, value in items
                 if (found := non_finite_key(value, key)) is not None), None)


def write_json(path: Path, obj) -> Path:
    """``obj`` as indented JSON with sorted keys; a NaN or infinity is an error naming its key
    (JSON has no such values, and other readers reject them)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError:
        raise ValueError(f"{path}: {non_finite_key(obj)} is not a finite number; JSON allows "
                         f"finite numbers or null") from None
    return write_bytes_atomic(path, (text + "\n").encode())


def write_csv(path: Path, rows: Iterable[dict]) -> Path:
    rows = list(rows)
    if not rows:
        raise ValueError(f"rows: nothing to write to {path}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_bytes_atomic(path, buffer.getvalue().encode())
