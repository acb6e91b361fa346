"""The cpu profile's plan beside its measured times: the runs a notebook trained (its run cache,
``runs/cpu/<notebook>/*/result.json``) priced as ``--plan`` prices the full profile's (the zoo's
training FLOPs), estimated on this CPU from ``make bench``'s measured rate
(``cpu_estimate.compare_with_measured``), next to the training time each run recorded.

    python -m vitlib.study.reproduce --profile cpu --plan [--only 05]

Runs of one shape, batch, length and optimizer form one row. The FLOPs count RGB patch
embeddings (the zoo's convention); the 1-channel Fashion-MNIST embedding is a few percent of a
small model's FLOPs less.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from vitlib.analysis.compute_plan import RunSpec, plan
from vitlib.analysis.cpu_estimate import CPU_BENCHMARK, compare_with_measured

_SHAPE = ("width", "depth", "mlp_dim", "num_heads")


def _image_size(config: dict) -> int:
    if config.get("image_size"):
        return int(config["image_size"])
    from vitlib.data.datasets import load_split

    return int(load_split(config["dataset"], config["train_split"],
                          config.get("data_dir") or None)[0].shape[1])


def _num_classes(config: dict) -> int:
    from vitlib.data.datasets import num_classes

    return int(num_classes(config["dataset"], config.get("data_dir") or None))


def cached_runs(folder: Path) -> list[dict]:
    """{config, steps, seconds} of every finished run in ``folder`` (a notebook's run cache)."""
    runs = []
    for path in sorted(Path(folder).glob("*/result.json")):
        result = json.loads(path.read_text())
        runs.append({"config": result["config"], "steps": int(result["steps_this_run"]),
                     "seconds": float(result["train_time_s"])})
    return runs


def measured_specs(runs: list[dict]) -> tuple[list[RunSpec], dict]:
    """Run specs (one per shape, batch, image size, length and optimizer, ``count`` runs) and
    the summed measured training seconds of each."""
    groups, seconds = defaultdict(int), defaultdict(float)
    sizes, classes = {}, {}
    for run in runs:
        c = run["config"]
        data = (c["dataset"], c["train_split"])
        if data not in sizes:
            sizes[data], classes[data] = _image_size(c), _num_classes(c)
        model = tuple((k, c["model"][k]) for k in _SHAPE if c["model"].get(k))
        key = (c["model"]["variant"], model, sizes[data], classes[data], c["batch_size"],
               run["steps"], c["optim"]["optimizer"], c["model"]["pool_type"])
        groups[key] += 1
        seconds[key] += run["seconds"]
    specs, measured = [], {}
    for key, count in sorted(groups.items(), key=lambda kv: str(kv[0])):
        variant, model, size, n_classes, batch, steps, optimizer, pool = key
        shape = "".join(f" {k[0]}{v}" for k, v in model)
        name = f"{variant}{shape} {size}px b{batch} {steps} steps {optimizer} {pool}"
        specs.append(RunSpec(name=name, variant=variant, batch_size=batch, steps=steps,
                             image_size=size, optimizer=optimizer, pool_type=pool,
                             dtype="float32", count=count, num_classes=n_classes,
                             model=dict(model)))
        measured[name] = seconds[key]
    return specs, measured


def cpu_plan(folder: Path, benchmark: Path | str = CPU_BENCHMARK) -> dict:
    """The cached runs of ``folder`` priced and estimated on this CPU (``benchmark``: ``make
    bench``'s train throughput JSON) beside their measured training seconds
    (``compare_with_measured``'s answer, with ``runs`` and the totals)."""
    runs = cached_runs(folder)
    if not runs:
        raise ValueError(f"runs: {folder} holds no finished runs; train them first "
                         f"(make reproduce PROFILE=cpu), then plan")
    specs, measured = measured_specs(runs)
    comparison = compare_with_measured(plan(specs, "h100", 1, memory=False), measured,
                                       benchmark=benchmark)
    est = sum(r["estimated_seconds"] for r in comparison["rows"])
    got = sum(r["measured_seconds"] for r in comparison["rows"])
    return {**comparison, "runs": len(runs), "estimated_total_s": est, "measured_total_s": got}
