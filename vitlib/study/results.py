"""Where results go: the results and runs folders of a profile, and figures saved atomically.

Results of the ``cpu`` profile live in ``results/`` and are committed; other profiles write to
``results/<profile>/`` (``smoke`` is git-ignored) so a smoke run never overwrites real results.
``VITLIB_RESULTS_DIR`` overrides the location.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional

from vitlib.files import write_bytes_atomic
from vitlib.study.profiles import resolve_profile


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


def save_figure(fig, path: Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format follows the suffix."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi,
                bbox_inches="tight")
    return write_bytes_atomic(path, buffer.getvalue())
