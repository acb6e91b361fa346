"""Sweeps of training runs with a result cache: what the notebooks call.

Each run lives in ``ROOT/<name>-<hash of its config>``; a finished run (result.json whose config
equals the requested one) is read back instead of retrained, and an interrupted one resumes
from its last checkpoint, so a long sweep never loses finished work.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import ml_collections
from tqdm import tqdm

from vitlib.configs import load_config, set_fields
from vitlib.train import fit


def config_hash(config: ml_collections.ConfigDict) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def make_config(base: str, overrides: dict) -> ml_collections.ConfigDict:
    return set_fields(load_config(base), overrides)


def run_cached(config: ml_collections.ConfigDict, root, name: str = "run") -> dict:
    """``fit``'s result for ``config``, trained only if no finished run of it is cached."""
    workdir = Path(root) / f"{name}-{config_hash(config)}"
    result_file = workdir / "result.json"
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        if result["config"] == json.loads(json.dumps(config.to_dict(), default=str)):
            return {**result, "workdir": str(workdir), "cached": True}
    return {**fit(config, workdir, progress=False), "workdir": str(workdir), "cached": False}


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
