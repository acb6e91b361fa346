"""Where results go, and writing them atomically (temp file + rename: never half-written).

Results of the ``cpu`` profile live in ``results/`` and are committed; other profiles write to
``results/<profile>/`` (``smoke`` is git-ignored) so a smoke run never overwrites real results.
``VITLIB_RESULTS_DIR`` overrides the location.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from vitlib.profiles import resolve_profile


def repo_root(start: Optional[Path] = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding vitlib's pyproject.toml."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "vitlib"' in pyproject.read_text():
            return folder
    raise FileNotFoundError(
        f"no vitlib checkout at or above {here}; run from inside the repository or set "
        f"VITLIB_RESULTS_DIR")


def results_dir(profile: Optional[str] = None) -> Path:
    """The results root of ``profile``, with figures/, tables/ and notebooks/ inside."""
    profile = resolve_profile(profile)
    override = os.environ.get("VITLIB_RESULTS_DIR")
    if override:
        return Path(override)
    root = repo_root() / "results"
    return root if profile == "cpu" else root / profile


def runs_dir(profile: Optional[str] = None) -> Path:
    """Where notebooks keep their cached training runs (checkpoints; not committed)."""
    return repo_root() / "runs" / resolve_profile(profile)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def write_json(path: Path, obj) -> Path:
    return write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_csv(path: Path, rows: Iterable[dict]) -> Path:
    rows = list(rows)
    if not rows:
        raise ValueError(f"rows: nothing to write to {path}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_bytes_atomic(path, buffer.getvalue().encode())


def save_figure(fig, path: Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format follows the suffix."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi,
                bbox_inches="tight")
    return write_bytes_atomic(path, buffer.getvalue())
