"""Checkpoints of the training state with orbax: written to a temporary folder and renamed when
complete, so a run killed at any moment leaves only whole checkpoints behind. A save that cannot
write (no space left, a read-only folder) raises ``vitlib.files.WriteFailed`` naming the step's
folder; the checkpoints saved before stay whole.

Each step holds two items: ``default``, the train state (the name a single-item checkpoint
has, so checkpoints written before the second item existed still restore), and
``data_iterator``, the input pipeline's state as JSON (grain's iterator state), so a resumed
run continues its data stream where it stopped."""
from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path
from typing import Optional

import orbax.checkpoint as ocp

from vitlib.files import WriteFailed

STATE, DATA = "default", "data_iterator"


class Checkpointer:
    def __init__(self, directory: Path, max_to_keep: Optional[int] = 2):
        """``max_to_keep=None`` keeps every checkpoint (a run's branch points)."""
        self._manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False),
            item_names=(STATE, DATA))  # two named items, whatever the folder already holds

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, data_state: Optional[dict] = None) -> None:
        """Saves ``step``, replacing a checkpoint already there (a resumed run passing a step
        it saved before it stopped: the state is this run's, step for step the same)."""
        absl = logging.getLogger("absl")
        absl.addFilter(_QUIET_FAILED_WRITERS)
        try:
            if step in self._manager.all_steps():
                self._manager.delete(step)
            self._manager.save(step, args=ocp.args.Composite(**{
                STATE: ocp.args.StandardSave(state),
                DATA: ocp.args.JsonSave(data_state or {})}), force=True)
            self._manager.wait_until_finished()
        except Exception as err:
            cause = _write_error(err)
            if cause is None:
                absl.removeFilter(_QUIET_FAILED_WRITERS)
                raise
            _let_writers_end()  # the filter stays: they may fail too
            raise WriteFailed(cause.errno, cause.strerror,
                              str(Path(self._manager.directory) / str(step))) from err
        absl.removeFilter(_QUIET_FAILED_WRITERS)

    def restore(self, step: int, abstract_state):
        """``abstract_state``: the state's structure with ShapeDtypeStruct leaves (shardings
        included), so the restored arrays land where the step expects them."""
        return self._manager.restore(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(abstract_state)}))[STATE]

    def restore_data_state(self, step: int) -> Optional[dict]:
        """The data iterator state saved at ``step`` (None: none saved, or an empty one)."""
        folder = Path(self._manager.directory) / str(step) / DATA
        if not folder.is_dir():
            return None
        saved = self._manager.restore(step, args=ocp.args.Composite(**{
            DATA: ocp.args.JsonRestore()}))[DATA]
        return saved or None

    def delete(self, step: int) -> None:
        self._manager.delete(step)

    def close(self) -> None:
        self._manager.close()


class _QuietFailedWriters(logging.Filter):
    """orbax logs each failed writer thread of a save with its traceback (dozens of lines);
    the save raises the error itself, named in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "_SignalingThread.run() raised" not in record.getMessage()


_QUIET_FAILED_WRITERS = _QuietFailedWriters()


def _let_writers_end(timeout_s: float = 60.0) -> None:
    """After one item of a save failed, let its other writer threads end (in the save's
    temporary folder) instead of being cut off as the process exits."""
    for thread in threading.enumerate():
        if type(thread).__name__ == "_SignalingThread":  # orbax's writer threads
            threading.Thread.join(thread, timeout_s)


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                 errno.EIO)


def _write_error(err: BaseException):
    """The OSError behind a failed save (orbax and tensorstore wrap it, or only keep its
    message), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
            return err
        for code in _WRITE_ERRNOS:
            if os.strerror(code) in str(err):
                return OSError(code, os.strerror(code))
        err = err.__cause__ or err.__context__
    return None
