"""Which code produced a result: the git commit and whether the source tree differed from it.

Every findings JSON and executed notebook records ``source_state()``, so a committed result can
be traced to the code that made it. Outputs (``results/``, ``FINDINGS.md``, the README whose
results block ``reproduce`` regenerates, ``runs/``) do not count as changes: a notebook that
writes results must not mark the next one as dirty.
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

# README.md only for its generated results block, which every cpu run of reproduce rewrites.
OUTPUT_PATHS = ("results", "FINDINGS.md", "README.md", "runs")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_state() -> dict:
    """Which machine ran a result: its CPU model and core count (a time is only comparable
    on the same machine; numbers can round differently on another CPU)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count()}


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def source_state(root: Optional[Path] = None) -> dict:
    """{"commit": sha or None, "dirty": bool or None}; None where git cannot tell (no checkout).

    ``dirty`` is True when tracked or untracked files outside the output folders differ from
    the commit.
    """
    if root is None:
        from vitlib.study.results import repo_root
        try:
            root = repo_root(Path(__file__).parent)
        except FileNotFoundError:
            return {"commit": None, "dirty": None}
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    excludes = [f":(exclude){p}" for p in OUTPUT_PATHS]
    status = _git(root, "status", "--porcelain", "--", ".", *excludes)
    return {"commit": commit, "dirty": None if status is None else bool(status)}
