"""Where results go: the results and runs folders of a profile, and figures saved atomically.

Results of the ``cpu`` profile live in ``results/`` and are committed. Only ``make reproduce``
(``vitlib.study.reproduce``, which sets ``VITLIB_COMMITTED_RESULTS=1``) writes there; a cpu run
of a notebook from Jupyter or papermill writes to ``results/interactive/`` instead, so pressing
Run All on a modified tree cannot overwrite committed numbers. Other profiles write to
``results/<profile>/`` (``smoke``, ``full``). ``VITLIB_RESULTS_DIR`` overrides the location.
Nothing here is committed except ``results/`` itself.
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


COMMITTED_ENV = "VITLIB_COMMITTED_RESULTS"  # "1": cpu results go to the committed results/


def committed_results_dir() -> Path:
    return repo_root() / "results"


def writes_committed_results() -> bool:
    return os.environ.get(COMMITTED_ENV) == "1"


def results_dir(profile: Optional[str] = None) -> Path:
    """The results root of ``profile``, with figures/, tables/ and notebooks/ inside."""
    profile = resolve_profile(profile)
    override = os.environ.get("VITLIB_RESULTS_DIR")
    if override:
        return Path(override)
    root = committed_results_dir()
    if profile != "cpu":
        return root / profile
    return root if writes_committed_results() else root / "interactive"


def results_note(profile: Optional[str] = None) -> str:
    """One line for a notebook's first output: where its results go, and why."""
    profile = resolve_profile(profile)
    where = results_dir(profile)
    if os.environ.get("VITLIB_RESULTS_DIR"):
        return f"profile {profile}: results go to {where} (VITLIB_RESULTS_DIR)"
    if profile != "cpu":
        return f"profile {profile}: results go to {where} (results/ holds the committed cpu results)"
    if writes_committed_results():
        return f"profile cpu: results go to the committed {where} (make reproduce)"
    return (f"profile cpu: results go to {where}; only `make reproduce` writes the committed "
            f"results/, so this run cannot overwrite them")


def findings_output(results: Path) -> Path:
    """Where FINDINGS.md of ``results`` goes: the repository root for the committed results,
    else inside the results folder itself."""
    results = Path(results)
    committed = results.resolve() == committed_results_dir().resolve()
    return repo_root() / "FINDINGS.md" if committed else results / "FINDINGS.md"


def runs_dir(profile: Optional[str] = None) -> Path:
    """Where notebooks keep their cached training runs (checkpoints; not committed):
    ``runs/<profile>/``, or ``$VITLIB_RUNS_DIR/<profile>/`` (a test's runs never mix with
    real ones)."""
    root = os.environ.get("VITLIB_RUNS_DIR")
    return (Path(root) if root else repo_root() / "runs") / resolve_profile(profile)


def save_figure(fig, path: Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format follows the suffix."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi,
                bbox_inches="tight")
    return write_bytes_atomic(path, buffer.getvalue())
