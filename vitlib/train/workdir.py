"""What a run's workdir holds, and whom it belongs to.

- ``config.json``: the config the workdir's checkpoints were trained with, written before the
  first step. Resuming under a config that would change the run is refused (``WorkdirMismatch``)
  with the keys that differ; ``restart=True`` (``--restart``) clears the run instead.
- ``progress.json``: the run's totals (steps trained, times, last loss) at each checkpoint, so
  the times and rates of a resumed run cover the whole run, not only its last part.
- ``checkpoints/``, ``branch_points/``, ``metrics.jsonl`` and, once finished, ``result.json``.
- ``writer.lock`` while a process trains it (``workdir_lock``).

A file that cannot be written stops the run (``WorkdirWriteFailed``); what was written before
it stays whole, so the same command resumes once there is space.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Optional

from vitlib.configs import from_record, run_identity
from vitlib.files import write_json
from vitlib.train.build import make_tx

RUN_FILES = ("checkpoints", "branch_points", "metrics.jsonl", "result.json", "config.json",
             "progress.json")
# Keys that change what is measured, logged or kept, not the parameters a run ends with.
EVAL_ONLY_KEYS = ("log_every", "eval_every", "eval_subset", "eval_batch_size", "eval_splits",
                  "fewshot", "checkpoint_every", "checkpoint_steps", "data_dir")


class WorkdirMismatch(ValueError):
    """The workdir holds a run of another config."""


class WorkdirWriteFailed(ValueError):
    """A file of the run could not be written; the run stopped, keeping what it had written."""


def stopped_by_failed_write(workdir: Path, err: OSError) -> WorkdirWriteFailed:
    """The one-line error of a run stopped by ``err`` (a ``vitlib.files.WriteFailed``)."""
    steps = saved_steps(workdir / "checkpoints")
    kept = (f"its checkpoint at step {steps[-1]} and the records up to it are kept"
            if steps else "it had saved no checkpoint yet")
    return WorkdirWriteFailed(
        f"could not write {err.filename}: {err.strerror}; the run stopped and {kept}. Free "
        f"some space (or make the folder writable) and run the same command again to resume.")


def plain(config) -> dict:
    """The config as plain JSON data (tuples become lists), as result.json stores it: the run's
    identity, without later-added keys at their defaults (``vitlib.configs.LATER_KEYS``)."""
    return run_identity(json.loads(json.dumps(config.to_dict(), default=str)))


def prepare_workdir(workdir) -> tuple[Path, bool]:
    """(the workdir, whether this call created it)."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"workdir: {workdir} is a file; allowed: a folder (created if missing)")
    created = not workdir.exists()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"workdir: {workdir} cannot be created ({err.strerror}); allowed: a "
                         f"folder you can write to") from None
    return workdir, created


def saved_steps(folder: Path) -> list[int]:
    """Steps of the finished checkpoints in ``folder`` (orbax names each by its step)."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def clear_run(workdir: Path) -> list[str]:
    """Delete the run's files from ``workdir`` (nothing else in it); the names removed."""
    removed = []
    for name in RUN_FILES:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def finished_result(workdir: Path, config, numerics_version: int) -> Optional[dict]:
    """The result.json of a finished run of exactly ``config`` (and numerics), else None."""
    result = _read_json(workdir / "result.json")
    if (result is None or result.get("config") != plain(config)
            or result.get("numerics_version") != numerics_version):
        return None
    return result


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def run_differences(recorded: dict, requested: dict) -> dict:
    """{dotted key: (recorded, requested)} of the keys that change the run."""
    old, new = _flat(recorded), _flat(requested)
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)
            and not any(key == k or key.startswith(k + ".") for k in EVAL_ONLY_KEYS)}


def recorded_config(workdir: Path) -> Optional[dict]:
    """The config the workdir belongs to: config.json, or for a workdir written before it
    existed, its result.json's config (None when neither says)."""
    recorded = _read_json(workdir / "config.json")
    if recorded is None:
        recorded = (_read_json(workdir / "result.json") or {}).get("config")
    return recorded


def _trained_lrs(config: dict, steps: int) -> list:
    return list(make_tx(from_record(config)).lr_table(steps))


def check_belongs(workdir: Path, config) -> None:
    """Refuse to resume ``workdir`` under ``config`` when its run was trained under a config
    that differs in a key that changes the run. A longer ``total_steps`` alone is allowed when
    the learning rates of the steps already trained are the same under both configs (a
    length-free schedule: rsqrt or constant, with no cooldown in the trained steps)."""
    steps = saved_steps(workdir / "checkpoints")
    if not steps:
        return
    recorded, requested = recorded_config(workdir), plain(config)
    if recorded is None:
        print(f"workdir {workdir} does not record its config (written by an older vitlib); "
              f"resuming it as a run of this config", flush=True)
        return
    differences = run_differences(recorded, requested)
    trained = steps[-1]
    if set(differences) == {"total_steps"}:
        old_steps, new_steps = differences["total_steps"]
        if new_steps < trained:
            raise WorkdirMismatch(
                f"workdir {workdir}: its run is at step {trained}, past the requested "
                f"total_steps {new_steps}. Use another --workdir, or --restart to train this "
                f"one afresh.")
        if _trained_lrs(recorded, trained) == _trained_lrs(requested, trained):
            print(f"workdir {workdir}: total_steps {old_steps} -> {new_steps}; the "
                  f"{trained} steps trained so far had the same learning rates under both "
                  f"lengths, so the run continues as a {new_steps}-step run", flush=True)
            return
        raise WorkdirMismatch(
            f"workdir {workdir}: total_steps {old_steps} -> {new_steps} changes the learning "
            f"rates of the {trained} steps already trained (the {recorded['optim']['schedule']['kind']} "
            f"schedule or its cooldown depends on the length); a run can be extended only "
            f"where the schedule does not depend on its length (rsqrt or constant, no cooldown "
            f"yet). Use another --workdir, or --restart to train this one afresh.")
    if differences:
        lines = "\n".join(f"  {key}: {old!r} (workdir) -> {new!r} (requested)"
                          for key, (old, new) in differences.items())
        raise WorkdirMismatch(
            f"workdir {workdir} holds a run of another config (trained to step {trained}); "
            f"keys that differ:\n{lines}\nUse another --workdir for this config, or --restart "
            f"(fit(..., restart=True)) to delete this workdir's run and train afresh.")


def record_config(workdir: Path, config) -> None:
    write_json(workdir / "config.json", plain(config))


@dataclasses.dataclass
class Progress:
    """Totals of a run so far, over every call that trained it (kept beside each checkpoint)."""
    steps_trained: int = 0
    setup_time_s: float = 0.0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    checkpoint_time_s: float = 0.0
    wall_time_s: float = 0.0
    last_loss: Optional[float] = None  # mean loss of the last logged steps


def read_progress(workdir: Path, step: int) -> Progress:
    """The totals saved with the checkpoint at ``step`` (the latest entry at or before it;
    zeros for a run that starts there or a workdir written before progress was kept)."""
    saved = _read_json(workdir / "progress.json") or {}
    at = [int(s) for s in saved if int(s) <= step]
    if not step or not at:
        return Progress()
    fields = {f.name for f in dataclasses.fields(Progress)}
    return Progress(**{k: v for k, v in saved[str(max(at))].items() if k in fields})


def write_progress(workdir: Path, step: int, progress: Progress, kept_steps) -> None:
    saved = _read_json(workdir / "progress.json") or {}
    saved = {s: v for s, v in saved.items() if int(s) in set(kept_steps)}
    saved[str(step)] = dataclasses.asdict(progress)
    write_json(workdir / "progress.json", saved)
