"""Stopping a run at a step boundary with a checkpoint.

- Ctrl-C (SIGINT: a terminal, Jupyter's interrupt): the first asks the loop to stop at the next
  step boundary, where it saves a checkpoint; a second one interrupts at once (the last
  checkpoint is kept either way).
- Preemption (SIGTERM: what preemptible TPU / GPU VMs and schedulers send before they kill a
  job): the loop saves a checkpoint at the next step boundary and exits with a message. With
  several processes (``jax.distributed``), JAX's own preemption service receives the signal and
  ``reached_preemption_sync_point`` makes every process stop at the same step.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

import jax


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on request at a step boundary, with a checkpoint saved there."""

    def __init__(self, step: int, workdir, reason: str = "interrupted"):
        super().__init__(f"{reason} at step {step}: checkpoint saved in {workdir}; run the "
                         f"same command again to resume from it")
        self.step, self.reason = step, reason


class StopRequest:
    """``requested``: a signal asked to stop; ``reason``: which, in words."""
    requested = False
    reason = "interrupted"

    def preempted_at(self, step: int) -> bool:
        """Whether to stop after ``step``: a local request, or (several processes) JAX's
        preemption sync point, which every process reaches at the same step."""
        if self.requested:
            return True
        if jax.process_count() > 1 and _preemption_sync_point(step):
            self.requested, self.reason = True, "preempted (SIGTERM)"
        return self.requested


def _preemption_sync_point(step: int) -> bool:
    from jax.experimental import multihost_utils
    try:
        return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # jax.distributed started without its preemption service
        return False


@contextlib.contextmanager
def stop_on_interrupt():
    """Within the block, SIGINT and SIGTERM set ``.requested`` of the yielded object instead of
    ending the process. Outside the main thread (where signals cannot be caught) nothing
    changes; with several processes SIGTERM is left to JAX's preemption service and SIGINT
    keeps its default (a stop on one host alone would leave the others waiting)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_sigint(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested, stop.reason = True, "interrupted"
        print("\nstopping at the end of this step (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def on_sigterm(signum, frame):
        if not stop.requested:
            stop.requested, stop.reason = True, "preempted (SIGTERM)"
            print("\nSIGTERM: saving a checkpoint at the end of this step, then exiting",
                  file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():  # None: set outside Python; restore the default
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, handler if handler is not None else default)
