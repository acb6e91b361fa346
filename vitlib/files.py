"""Atomic writes of bytes, JSON and CSV (temp file + rename: never half-written).

Every layer writes through here, so no reader ever sees a half-written result, record or table.
Files get the permissions of an ordinary new file (``0666`` less the umask), not the private
``0600`` of a temporary file; JSON is strict (NaN and infinities are refused: use None).
"""
from __future__ import annotations

import csv
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


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _new_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
