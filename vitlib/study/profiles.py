"""Run profiles: ``smoke`` (every cell, tiny sizes), ``cpu`` (default, real runs on a laptop
CPU), ``full`` (larger models/data/steps for accelerators).

Notebooks read their default profile from ``VITLIB_PROFILE`` so nbval can run them as ``smoke``.
"""
from __future__ import annotations

import os
from typing import Optional, TypeVar

PROFILES = ("smoke", "cpu", "full")
DEFAULT_PROFILE = "cpu"
T = TypeVar("T")

# Minutes each notebook may take on a 2-core CPU from an empty run cache (DESIGN.md section 4):
# each at most 40, all at most CPU_TOTAL_BUDGET_MINUTES; set from times measured one at a time.
CPU_BUDGET_MINUTES = {"01": 2, "02": 35, "03": 30, "04": 15, "05": 28, "06": 40}
CPU_TOTAL_BUDGET_MINUTES = 150


def resolve_profile(profile: Optional[str] = None) -> str:
    """The given profile, else ``$VITLIB_PROFILE``, else ``cpu``; validated."""
    if profile is None:
        profile = os.environ.get("VITLIB_PROFILE") or DEFAULT_PROFILE
    if profile not in PROFILES:
        raise ValueError(f"profile: {profile!r} is not allowed; choose one of {list(PROFILES)} "
                         f"(argument or VITLIB_PROFILE)")
    return profile


def by_profile(profile: str, *, smoke: T, cpu: T, full: T) -> T:
    """Pick the setting of ``profile``: ``steps = by_profile(p, smoke=2, cpu=2000, full=1e5)``."""
    return {"smoke": smoke, "cpu": cpu, "full": full}[resolve_profile(profile)]
