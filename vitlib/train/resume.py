"""Where a run starts: its own last checkpoint (resume), another run's saved state (a cooldown
branch), or fresh parameters (optionally replaced, as fine-tuning does)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import jax

from vitlib.train.build import Run
from vitlib.train.checkpoints import Checkpointer


def starting_state(run: Run, init_params: Optional[Callable] = None,
                   start_from: Optional[tuple] = None):
    """(state, step) the run continues from; see ``fit`` for ``init_params`` and
    ``start_from``. A checkpoint of the run itself always wins."""
    start = run.checkpointer.latest_step() or 0
    if start:
        state = run.checkpointer.restore(start, run.abstract_state)
        print(f"resumed from step {start} in {run.workdir}", flush=True)
    elif start_from is not None:
        state, start = restore_branch_point(start_from, run.abstract_state,
                                            run.config.total_steps)
        print(f"started from step {start} of {start_from[0]}", flush=True)
    else:
        state = run.programs.init(run.config.seed)
        if init_params is not None:
            state = state.replace(params=jax.device_put(init_params(state.params),
                                                        run.programs.shardings.params))
    return state, start


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
