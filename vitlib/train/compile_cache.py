"""JAX's persistent compilation cache, on by default for vitlib processes.

A sweep, a test session or a notebook re-run compiles the same programs in many processes;
with the cache on disk each is compiled once per machine. The folder is
``$VITLIB_COMPILATION_CACHE`` (``off`` disables it), else ``~/.cache/vitlib/jax``.
It must be set before the process compiles anything, so ``vitlib.train.steps`` enables it on import.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import jax

ENV = "VITLIB_COMPILATION_CACHE"
DEFAULT_DIR = Path.home() / ".cache" / "vitlib" / "jax"


def cache_dir() -> Optional[Path]:
    """The configured folder, or None when ``$VITLIB_COMPILATION_CACHE`` is ``off``."""
    value = os.environ.get(ENV, "")
    if value.lower() in ("off", "0", "none", "false"):
        return None
    return Path(value).expanduser() if value else DEFAULT_DIR


def enable() -> Optional[Path]:
    """Point JAX at the cache folder (idempotent); a user's own setting is left alone."""
    folder = cache_dir()
    if folder is None or jax.config.jax_compilation_cache_dir:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Small programs too: a sweep's many short compiles are what the cache is for.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
