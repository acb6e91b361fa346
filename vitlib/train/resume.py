"""Where a run starts: its own last checkpoint (resume), another run's saved state (a cooldown
branch), or fresh parameters (optionally replaced, as fine-tuning does)."""
from __future__ import annotations

import contextlib
import gc
import logging
import sys
from pathlib import Path
from typing import Callable, Optional

import jax

from vitlib.train.build import Run
from vitlib.train.checkpoints import Checkpointer


def starting_state(run: Run, init_params: Optional[Callable] = None,
                   start_from: Optional[tuple] = None):
    """(state, step, the input pipeline's state or None) the run continues from; see ``fit``
    for ``init_params`` and ``start_from``. A checkpoint of the run itself always wins; a branch
    or a fresh run starts its input at its first step."""
    saved = run.checkpointer.all_steps()
    points = run.branch_points.all_steps() if run.branch_points is not None else []
    later = [p for p in points if p > max(saved, default=0)]
    if later:  # stopped after a branch point and before its next checkpoint: the state is there
        try:
            state, start = restore_latest_intact(run.branch_points, later, run.abstract_state,
                                                 run.workdir / "branch_points")
        except CheckpointError:
            pass  # none readable: the run trains past them again and saves them anew
        else:
            print(f"resumed from step {start} (a branch point) in {run.workdir}", flush=True)
            return state, start, run.branch_points.restore_data_state(start)
    if saved:
        state, start = restore_latest_intact(run.checkpointer, saved, run.abstract_state,
                                             run.workdir / "checkpoints")
        print(f"resumed from step {start} in {run.workdir}", flush=True)
        return state, start, run.checkpointer.restore_data_state(start)
    if start_from is not None:
        state, start = restore_branch_point(start_from, run.abstract_state,
                                            run.config.total_steps)
        print(f"started from step {start} of {start_from[0]}", flush=True)
    else:
        state, start = run.programs.init(run.config.seed), 0
        if init_params is not None:
            state = state.replace(params=jax.device_put(init_params(state.params),
                                                        run.programs.shardings.params))
    return state, start, None


class CheckpointError(ValueError):
    """No checkpoint of the run can be read."""


def _reason(err: Exception) -> str:
    first = str(err).strip().splitlines()[0].split(" See full")[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first[:160].rstrip('.')}"


@contextlib.contextmanager
def _quiet_failed_reads():
    """A failed orbax restore leaves its other reads unfinished; when they are collected, Python
    and asyncio print a traceback for each (thousands of lines). Collect them here, quietly."""
    hook, logger = sys.unraisablehook, logging.getLogger("asyncio")
    level = logger.level
    sys.unraisablehook, logger.level = (lambda unraisable: None), logging.CRITICAL
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook, logger.level = hook, level


def restore_latest_intact(checkpointer: Checkpointer, steps: list[int], abstract, folder: Path):
    """(state, step) of the newest checkpoint that reads back whole. An unreadable newer one
    (truncated, partly deleted) is named in one line and removed, so the run saves that step
    again; none readable is a ``CheckpointError``."""
    skipped = []
    for step in sorted(steps, reverse=True):
        try:
            with _quiet_failed_reads():
                state = checkpointer.restore(step, abstract)
        except Exception as err:  # orbax / tensorstore raise many kinds for a damaged file
            skipped.append((step, _reason(err)))
            continue
        for bad, reason in skipped:
            print(f"checkpoint at step {bad} in {folder} is unreadable ({reason}); removed it "
                  f"and resumed from step {step}", flush=True)
            checkpointer.delete(bad)
        return state, step
    raise CheckpointError(
        f"checkpoints: none of the checkpoints in {folder} (steps {sorted(steps)}) can be read; "
        f"the newest failed with {skipped[0][1]}. Use --restart (fit(..., restart=True)) to "
        f"train afresh, or another --workdir.")


def restore_branch_point(start_from: tuple, abstract, total_steps: int):
    """(state, step) saved at ``step`` in ``folder`` (a run's ``branch_points``); clear errors
    for a missing folder, a step without a checkpoint, or a step at or past ``total_steps``."""
    folder, step = Path(start_from[0]), start_from[1]
    if not isinstance(step, int) or not 0 < step < total_steps:
        raise ValueError(f"start_from step: {step!r} is not allowed; use 0 < step < "
                         f"total_steps ({total_steps})")
    if not folder.is_dir():
        raise ValueError(f"start_from: {folder} does not exist")
    source = Checkpointer(folder, max_to_keep=None)
    try:
        saved = source.all_steps()
        if step not in saved:
            raise ValueError(f"start_from: no checkpoint at step {step} in {folder}; saved "
                             f"steps: {saved}")
        return source.restore(step, abstract), step
    finally:
        source.close()
