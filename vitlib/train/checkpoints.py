"""Checkpoints of the training state with orbax: written to a temporary folder and renamed when
complete, so a run killed at any moment leaves only whole checkpoints behind."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: Path, max_to_keep: Optional[int] = 2):
        """``max_to_keep=None`` keeps every checkpoint (a run's branch points)."""
        self._manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False))

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, abstract_state):
        """``abstract_state``: the state's structure with ShapeDtypeStruct leaves (shardings
        included), so the restored arrays land where the step expects them."""
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def delete(self, step: int) -> None:
        self._manager.delete(step)

    def close(self) -> None:
        self._manager.close()
