"""Ctrl-C during training: the first SIGINT (a terminal's Ctrl-C, Jupyter's interrupt) asks the
loop to stop at the next step boundary, where it saves a checkpoint; a second one interrupts at
once (the last checkpoint is kept either way)."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on request at a step boundary, with a checkpoint saved there."""

    def __init__(self, step: int, workdir):
        super().__init__(f"interrupted at step {step}: checkpoint saved in {workdir}; run the "
                         f"same command again to resume from it")
        self.step = step


class StopRequest:
    requested = False


@contextlib.contextmanager
def stop_on_interrupt():
    """Within the block, SIGINT sets ``.requested`` of the yielded object instead of raising.
    Outside the main thread (where signals cannot be caught) nothing changes."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        print("\nstopping at the end of this step (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None
                      else signal.default_int_handler)
