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
