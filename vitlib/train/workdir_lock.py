"""One writer per workdir: ``hold(workdir)`` keeps an exclusive lock on ``WORKDIR/writer.lock``
for as long as a run trains there.

The lock is an ``flock`` on that file, which the kernel drops when its process ends however it
ends, and the file records the owner (host, process id, start time, command) for the messages:

- held by a running process (its ``flock`` is taken): ``WorkdirBusy``, one line naming the
  holder, and nothing is written; ``wait_until_free`` waits for it (what sweeps do);
- left by a process of this host that no longer runs (the file is there, its ``flock`` is
  not): taken over, with a one-line notice;
- recorded from another host, without a ``flock`` seen here: whether it still runs cannot be
  told from here, so it is refused (``WorkdirLocked``) unless ``break_lock``, which says whose
  lock it breaks.

Leaving the block (errors and Ctrl-C included) deletes the file; with ``release_on_sigterm`` a
SIGTERM that ends the process by its default action deletes it first. Within one process the
lock is re-entrant (a sweep holds it around ``fit``, which takes it again).
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from vitlib.files import WriteFailed

LOCK_FILE = "writer.lock"
_held: dict[str, list] = {}  # lock path -> [file descriptor, depth, folder created by hold]


class WorkdirLocked(ValueError):
    """The workdir has another writer; ``.owner``: its record ({} when not yet readable)."""

    def __init__(self, message: str, owner: dict):
        super().__init__(message)
        self.owner = owner


class WorkdirBusy(WorkdirLocked):
    """The workdir's writer is a process that runs now."""


def describe(owner: dict) -> str:
    if not owner.get("pid"):
        return "a process that has not yet recorded itself"
    command = " ".join(str(owner.get("command")).split())
    command = command if len(command) <= 120 else command[:119] + "…"
    return f"pid {owner['pid']} on host {owner.get('host')} (since {owner.get('started')}: {command})"


def _this_process() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(getattr(sys, "orig_argv", sys.argv))}


def _read_owner(fd: int) -> dict:
    try:
        owner = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _is_file_at(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (its holder may delete it as we open it)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _acquire(workdir: Path, break_lock: bool) -> int:
    path = workdir / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise WriteFailed(err.errno, err.strerror, str(path)) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise WorkdirBusy(f"workdir {workdir} is being written by {describe(owner)}; wait "
                              f"for it to finish, or use another --workdir", owner) from None
        if _is_file_at(fd, path):
            break
        os.close(fd)  # its holder deleted it on release: lock the file now there
    owner, me = _read_owner(fd), _this_process()
    if owner.get("pid") and owner.get("host") != me["host"]:
        if not break_lock:
            os.close(fd)
            raise WorkdirLocked(
                f"workdir {workdir} is locked by {describe(owner)}, another host, which may "
                f"still be training it; wait for it, use another --workdir, or if it no longer "
                f"runs, run again with --break-lock (fit(..., break_lock=True))", owner)
        print(f"--break-lock: broke the lock of {describe(owner)} on workdir {workdir}",
              flush=True)
    elif owner.get("pid"):
        print(f"workdir {workdir}: took over the lock left by {describe(owner)}, which no "
              f"longer runs", flush=True)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
    except OSError as err:
        os.close(fd)
        raise WriteFailed(err.errno, err.strerror, str(path)) from err
    return fd


def _release(key: str) -> None:
    fd, depth, created = _held[key]
    if depth > 1:
        _held[key][1] -= 1
        return
    del _held[key]
    path = Path(key)
    try:
        if _is_file_at(fd, path):  # delete it while still holding it
            path.unlink()
    finally:
        os.close(fd)
    if created:
        with contextlib.suppress(OSError):  # nothing trained: leave no empty folder behind
            path.parent.rmdir()


def _release_and_die(signum, frame) -> None:
    """SIGTERM outside the training loop: release every lock, then die of the signal."""
    for key in list(_held):
        _held[key][1] = 1
        _release(key)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def hold(workdir, break_lock: bool = False, release_on_sigterm: bool = True):
    """Within the block this process is the workdir's only writer (see the module's text);
    creates the workdir if missing (and removes it again if the block leaves it empty)."""
    workdir = Path(workdir)
    key = str((workdir / LOCK_FILE).absolute())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _release(key)
        return
    created = not workdir.exists()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteFailed(err.errno, err.strerror, str(workdir)) from err
    try:
        _held[key] = [_acquire(workdir, break_lock), 1, created]
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                workdir.rmdir()
        raise
    on_sigterm = (release_on_sigterm and threading.current_thread() is threading.main_thread()
                  and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    if on_sigterm:
        signal.signal(signal.SIGTERM, _release_and_die)
    try:
        yield
    finally:
        if on_sigterm and signal.getsignal(signal.SIGTERM) == _release_and_die:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _release(key)


def wait_until_free(workdir) -> None:
    """Return once no running process holds the workdir's lock (at once if none does)."""
    try:
        fd = os.open(Path(workdir) / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # blocks while a writer holds it exclusively
    finally:
        os.close(fd)
