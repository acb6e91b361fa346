"""Sweeps of training runs with a result cache: what the notebooks call.

Each run lives in ``ROOT/<name>-<hash of its config and the numerics version>``; a finished run
(result.json whose config and numerics version equal the requested ones) is read back instead of
retrained, and an interrupted one resumes from its last checkpoint, so a long sweep never loses
finished work. ``branch`` makes cooldown branches: many training lengths from one run.

Sweeps share the runs folder safely: a run that another process is training (a second sweep, a
notebook) is waited for, with a line saying which, and then read back, never trained twice.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

import ml_collections
from tqdm import tqdm

from vitlib.configs import from_record, load_config, set_fields
from vitlib.files import write_json
from vitlib.optim.schedules import LENGTH_FREE_KINDS
from vitlib.train import workdir_lock
from vitlib.train.loop import NUMERICS_VERSION, fit
from vitlib.train.workdir import finished_result, plain


def config_hash(config: ml_collections.ConfigDict, **extra) -> str:
    """Key of a run: its config, ``extra`` (a branch's parent and step) and the numerics
    version, so a change in what the code computes retrains instead of reading old results."""
    text = json.dumps({"config": plain(config), "numerics_version": NUMERICS_VERSION, **extra},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def make_config(base: str, overrides: dict) -> ml_collections.ConfigDict:
    return set_fields(load_config(base), overrides)


def _read_cached(workdir: Path, config, record: dict) -> Optional[dict]:
    result = finished_result(workdir, config, NUMERICS_VERSION)
    same = result is not None and all(_same_record_value(k, result.get(k), v)
                                      for k, v in record.items())
    return {**result, "workdir": str(workdir), "cached": True} if same else None


def _same_record_value(key: str, stored, wanted) -> bool:
    # A parent is the run in the folder of that name (its name holds its config's hash): the
    # runs root may have moved since (another checkout, a copied or linked runs/ folder).
    if key == "parent_workdir":
        return stored is not None and Path(stored).name == Path(wanted).name
    return stored == wanted


def _once(workdir: Path, read_cached: Callable[[], Optional[dict]],
          train: Callable[[], dict]) -> dict:
    """The cached result of the run in ``workdir``, else ``train()`` as its one writer; while
    another process trains it, wait (saying so), then read it back (or resume it, if that
    process stopped before the end)."""
    while True:
        cached = read_cached()
        if cached is not None:
            return cached
        try:
            with workdir_lock.hold(workdir):
                cached = read_cached()  # finished by the writer waited for
                return cached if cached is not None else train()
        except workdir_lock.WorkdirBusy as busy:
            print(f"waiting for run {workdir.name}: {workdir_lock.describe(busy.owner)} is "
                  f"training it", flush=True)
            workdir_lock.wait_until_free(workdir)


def run_cached(config: ml_collections.ConfigDict, root, name: str = "run") -> dict:
    """``fit``'s result for ``config``, trained only if no finished run of it is cached."""
    workdir = Path(root) / f"{name}-{config_hash(config)}"
    return _once(workdir, lambda: _read_cached(workdir, config, {}), lambda: {
        **fit(config, workdir, progress=False), "workdir": str(workdir), "cached": False})


def branch_config(parent_config: ml_collections.ConfigDict, at_step: int,
                  cooldown_steps: int) -> ml_collections.ConfigDict:
    """The config of a run that follows ``parent_config`` to ``at_step`` and then cools the
    learning rate down linearly to zero over ``cooldown_steps``: the parent's config with
    ``total_steps = at_step + cooldown_steps`` and that cooldown (``cooldown_branch``).

    Trained from scratch, this config gives the same parameters as the branch.
    """
    schedule = parent_config.optim.schedule
    for field, value in (("at_step", at_step), ("cooldown_steps", cooldown_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field}: must be a positive integer, got {value!r}")
    if schedule.kind not in LENGTH_FREE_KINDS:
        raise ValueError(f"parent optim.schedule.kind: {schedule.kind!r} depends on the run "
                         f"length, so a branch would not follow its parent; allowed: "
                         f"{list(LENGTH_FREE_KINDS)}")
    cooldown, warmup = schedule.get("cooldown_steps", 0), schedule.get("warmup_steps", 0)
    main_phase_end = parent_config.total_steps - cooldown
    if at_step > main_phase_end:
        raise ValueError(f"at_step: {at_step} is past the parent's main phase (it trains "
                         f"{parent_config.total_steps} steps with a cooldown of {cooldown}); "
                         f"allowed: at most {main_phase_end}")
    if at_step < warmup:
        raise ValueError(f"at_step: {at_step} is inside the parent's warmup ({warmup} steps); "
                         f"allowed: at least that")
    if at_step not in tuple(parent_config.checkpoint_steps):
        raise ValueError(f"at_step: the parent keeps no checkpoint at step {at_step}; its "
                         f"checkpoint_steps are {tuple(parent_config.checkpoint_steps)}; add the "
                         f"step there (the parent then trains again, with it)")
    config = ml_collections.ConfigDict(parent_config.to_dict())
    config.total_steps = at_step + cooldown_steps
    config.optim.schedule.cooldown_steps = cooldown_steps
    config.checkpoint_steps = ()
    config.lock()
    return config


def branch(parent: dict, at_step: int, cooldown_steps: int, root=None,
           name: str = "branch") -> dict:
    """A cooldown branch of the finished run ``parent`` (a result of ``run_cached``/``sweep``):
    continues from the parent's checkpoint at ``at_step`` in its own workdir and trains only
    the ``cooldown_steps`` of the cooldown; cached like any run (in ``root``, default the
    parent's folder). The result records the parent, the branch step, the images seen in all
    (``images_seen``) and those trained by the branch itself (``images_trained_here``)."""
    parent_config = from_record(parent["config"])
    config = branch_config(parent_config, at_step, cooldown_steps)
    parent_workdir = Path(parent["workdir"])
    record = {"parent_workdir": str(parent_workdir), "branch_step": at_step,
              "cooldown_steps": cooldown_steps,
              "images_trained_here": cooldown_steps * config.batch_size}
    workdir = Path(root or parent_workdir.parent) / (
        f"{name}-{config_hash(config, parent=parent_workdir.name, at_step=at_step)}")

    def train() -> dict:
        result = {**fit(config, workdir, progress=False,
                        start_from=(parent_workdir / "branch_points", at_step)), **record}
        write_json(workdir / "result.json", result)
        return {**result, "workdir": str(workdir), "cached": False}
    return _once(workdir, lambda: _read_cached(workdir, config, record), train)


def cooldown_lengths(lengths, cooldown_fraction: float) -> list[tuple[int, int]]:
    """(branch step, cooldown steps) for each total length: the last ``cooldown_fraction`` of
    the length (at least one step) is the cooldown, as the paper's 10k/50k of longer runs."""
    if not 0 < cooldown_fraction < 1:
        raise ValueError(f"cooldown_fraction: must be in (0, 1), got {cooldown_fraction!r}")
    out = []
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, int) or length < 2:
            raise ValueError(f"lengths: each must be an integer >= 2, got {length!r}")
        cooldown = max(1, round(cooldown_fraction * length))
        out.append((length - cooldown, cooldown))
    return out


def runs_of_many_lengths(base: str, overrides: dict, lengths, cooldown_fraction: float, root,
                         name: str = "main") -> list[dict]:
    """Models of every total length in ``lengths`` from one main run: the main run (its
    schedule length-free, e.g. warmup + rsqrt, without cooldown) trains to the last branch
    point and keeps checkpoints there; each length is a cooldown branch of it. Costs the
    main run plus the cooldowns instead of ``sum(lengths)`` steps. Results in length order,
    each with ``length`` and the branch's ``images_seen``."""
    points = cooldown_lengths(sorted(lengths), cooldown_fraction)
    at_steps = tuple(sorted({s for s, _ in points}))
    parent = run_cached(make_config(base, {**overrides, "total_steps": at_steps[-1],
                                           "checkpoint_steps": at_steps}), root, name)
    return [{**branch(parent, s, c, root, f"{name}-branch"), "length": s + c}
            for s, c in points]


def result_of(workdir) -> dict:
    """The result.json of a finished run, with its ``workdir`` (e.g. a branch's parent)."""
    path = Path(workdir) / "result.json"
    if not path.is_file():
        raise ValueError(f"workdir: {workdir} holds no finished run (no result.json)")
    return {**json.loads(path.read_text()), "workdir": str(workdir)}


def metrics(workdir) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def sweep(base: str, runs: list[dict], root, name: str = "run") -> list[dict]:
    """Run (or read back) ``base`` config with each override dict; results in order."""
    results = []
    for overrides in tqdm(runs, desc=f"sweep {name}", unit="run"):
        result = run_cached(make_config(base, overrides), root, name)
        results.append({**overrides, **result})
    return results


def best_setting(results: list[dict], group: str, setting: str, score: str) -> dict:
    """For each value of ``group``, the ``setting`` whose run has the highest ``score``."""
    best = {}
    for r in results:
        g = r[group]
        if g not in best or r[score] > best[g][score]:
            best[g] = r
    return {g: r[setting] for g, r in best.items()}


def curves_over_seeds(workdirs: list[str], metric: str) -> tuple[list, list, list]:
    """(steps, mean, std) of ``metric`` across runs that log it at the same steps."""
    import numpy as np

    series = []
    for workdir in workdirs:
        records = [r for r in metrics(workdir) if metric in r]
        series.append({r["step"]: r[metric] for r in records})
    steps = sorted(set.intersection(*(set(s) for s in series)))
    values = np.array([[s[step] for step in steps] for s in series])
    return steps, values.mean(axis=0).tolist(), values.std(axis=0).tolist()
