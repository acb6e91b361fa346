"""Which ViT shapes fit one accelerator core, and how fast each would train (paper Section 3.6,
Figure 8), planned on a CPU with ``vitlib.analysis.step_memory``'s compiled-step planner.

The paper compiled many ViTs (patch 14, 224 px, 32 images per TPUv3 core of 16 GiB) under three
settings, each adding a saving: the original ViT (class token, Adam); the class token removed
and Adam's first moment in bfloat16; the modified Adafactor. Here every (shape, setting, remat)
is one compiled-step plan (per-device memory from XLA's buffer assignment, nothing allocated)
and every (shape without its depth, setting, remat) one FLOP count (``step_memory.step_flops``).

Plans run in worker processes (JAX fixes its devices when it starts), several per process,
``workers`` processes at a time, and each finished plan is cached as one JSON file: an
interrupted grid resumes, and a re-run reads everything back.

    rows = plan_fit_map(shape_grid([8, 16, 32], [768, 1024]) + paper_shapes(), cache_dir)
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

import jax
from tqdm import tqdm

from vitlib.files import write_json
from vitlib.models.variants import SHAPES

GIB = 2 ** 30
# Figure 8's settings, in order: each adds one saving to the one before.
SETTINGS = {
    "class token, Adam": {"pool_type": "tok", "optimizer": "adam"},
    "no class token, bf16 momentum": {"pool_type": "map", "optimizer": "adam_hp"},
    "modified Adafactor": {"pool_type": "map", "optimizer": "adafactor_bv"},
}
PAPER_SHAPES = ("B/14", "L/14", "g/14", "G/14")
# Bump when what a cached plan means changes (the step, the planner, the FLOP count).
PLANNER_VERSION = 1


def shape(width: int, depth: int, head_dim: int = 64, mlp_ratio: float = 4.0,
          patch_size: int = 14, name: Optional[str] = None) -> dict:
    """A ViT shape by the grid's rule: ``width / head_dim`` heads, MLP ``mlp_ratio x width``."""
    for field, value in (("width", width), ("depth", depth), ("head_dim", head_dim),
                         ("patch_size", patch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field}: must be a positive integer, got {value!r}")
    if width % head_dim:
        raise ValueError(f"width: {width} is not a multiple of head_dim {head_dim}; allowed: "
                         f"multiples of {head_dim}")
    if not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio: must be > 0, got {mlp_ratio!r}")
    return {"name": name or f"w{width} d{depth}", "width": width, "depth": depth,
            "mlp_dim": int(round(mlp_ratio * width)), "num_heads": width // head_dim,
            "patch_size": patch_size}


def shape_grid(depths: Iterable[int], widths: Iterable[int], **rule) -> list[dict]:
    """Every (depth, width) of the grid, shaped by ``shape``'s rule."""
    return [shape(w, d, **rule) for d in depths for w in widths]


def paper_shapes(names: Iterable[str] = PAPER_SHAPES) -> list[dict]:
    """The paper's own rows (Table 2's shapes: their heads and MLP widths, not the rule's)."""
    rows = []
    for name in names:
        letter, _, patch = name.partition("/")
        if letter not in SHAPES or not patch.isdigit():
            raise ValueError(f"names: {name!r} is not a variant like 'G/14'; known shapes: "
                             f"{sorted(SHAPES)}")
        width, depth, mlp_dim, heads = SHAPES[letter]
        rows.append({"name": name, "width": width, "depth": depth, "mlp_dim": mlp_dim,
                     "num_heads": heads, "patch_size": int(patch)})
    return rows


def _model(shape_row: dict, pool_type: str, pad_tokens_to: int) -> dict:
    return {**{k: shape_row[k] for k in ("width", "depth", "mlp_dim", "num_heads",
                                         "patch_size")},
            "pool_type": pool_type, "pad_tokens_to": pad_tokens_to}


def run_spec(spec: dict) -> dict:
    """One plan (``kind`` memory: ``compiled_plan`` on one device) or FLOP count (``kind``
    flops: ``step_flops``); what the worker processes call."""
    from vitlib.analysis.step_memory import compiled_plan, step_flops

    args = {k: v for k, v in spec.items() if k != "kind"}
    if spec["kind"] == "memory":
        return compiled_plan(None, devices=1, **args)
    if spec["kind"] == "flops":
        return step_flops(None, **args)
    raise ValueError(f"kind: {spec['kind']!r} is not allowed; choose 'memory' or 'flops'")


def _key(spec: dict) -> str:
    text = json.dumps({"spec": spec, "planner": PLANNER_VERSION, "jax": jax.__version__},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_in_process(specs: list[dict], timeout: int) -> list[dict]:
    code = ("import json, sys; from vitlib.analysis.fit_map import run_spec; "
            "print(json.dumps([run_spec(s) for s in json.loads(sys.stdin.read())]))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(specs),
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if out.returncode:
        raise RuntimeError(f"plan failed for {specs}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cached_specs(specs: list[dict], cache_dir, workers: int = 2, per_process: int = 6,
                     timeout: int = 1800, progress: bool = True) -> list[dict]:
    """``run_spec`` of every spec, read from ``cache_dir`` when planned before; the rest in
    ``workers`` parallel processes of up to ``per_process`` specs each, cached as they end."""
    for field, value in (("workers", workers), ("per_process", per_process)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field}: must be a positive integer, got {value!r}")
    cache_dir = Path(cache_dir)
    keys = [_key(spec) for spec in specs]
    results, missing = {}, {}
    for key, spec in zip(keys, specs):
        path = cache_dir / f"{key}.json"
        if path.is_file():
            results[key] = json.loads(path.read_text())["result"]
        else:
            missing.setdefault(key, spec)  # a spec asked for twice is planned once
    missing = list(missing.values())
    chunks = [missing[i:i + per_process] for i in range(0, len(missing), per_process)]
    bar = tqdm(total=len(missing), desc="compiling plans", unit="plan", disable=not progress)

    def plan_chunk(chunk):
        for spec, result in zip(chunk, _run_in_process(chunk, timeout)):
            write_json(cache_dir / f"{_key(spec)}.json", {"spec": spec, "result": result})
            results[_key(spec)] = result
        bar.update(len(chunk))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(plan_chunk, chunks))
    bar.close()
    return [results[key] for key in keys]


def plan_fit_map(shapes: list[dict], cache_dir, settings: Optional[dict] = None,
                 batch_per_device: int = 32, remat: Iterable[bool] = (False, True),
                 image_size: int = 224, num_classes: int = 1000, pad_tokens_to: int = 128,
                 core_gib: float = 16.0, workers: int = 2, per_process: int = 6,
                 progress: bool = True) -> list[dict]:
    """One row per (shape, setting, remat): the compiled step's memory on one device, whether
    it fits ``core_gib``, and the step's FLOPs per image (for relative speed; counted with
    the setting's pooling and token padding, the optimizer's element-wise work left out).

    ``pad_tokens_to`` is the accelerator's tiling of the token axis (TPUs: 128), so a class
    token makes 257 tokens cost 384; 0 plans the exact length. ``workers`` processes plan
    ``per_process`` plans each at a time (see ``run_cached_specs``).
    """
    settings = SETTINGS if settings is None else settings
    if not shapes:
        raise ValueError("shapes: at least one shape is needed")
    if isinstance(batch_per_device, bool) or not isinstance(batch_per_device, int) \
            or batch_per_device < 1:
        raise ValueError(f"batch_per_device: must be a positive integer, got "
                         f"{batch_per_device!r}")
    if not core_gib > 0:
        raise ValueError(f"core_gib: must be > 0, got {core_gib!r}")
    for name, setting in settings.items():
        if set(setting) != {"pool_type", "optimizer"}:
            raise ValueError(f"settings[{name!r}]: needs exactly pool_type and optimizer, got "
                             f"{sorted(setting)}")
    common = {"batch_per_device": batch_per_device, "image_size": image_size,
              "num_classes": num_classes}
    cells = [(s, name, setting, r) for s in shapes for name, setting in settings.items()
             for r in remat]
    memory = [{"kind": "memory", "optimizer": setting["optimizer"], "remat": r, **common,
               "model": _model(s, setting["pool_type"], pad_tokens_to)}
              for s, name, setting, r in cells]
    # FLOPs do not need the depth (extrapolated from depths 1 and 2) nor the optimizer (its
    # element-wise work is negligible; adafactor_bv for all): one count per pooling and remat.
    flops = [{"kind": "flops", "optimizer": "adafactor_bv", "remat": r, **common,
              "model": _model({**s, "depth": 1}, setting["pool_type"], pad_tokens_to)}
             for s, name, setting, r in cells]
    results = run_cached_specs(memory + flops, cache_dir, workers, per_process,
                               progress=progress)
    rows = []
    for (s, name, setting, r), plan, count in zip(cells, results[:len(cells)],
                                                  results[len(cells):]):
        step = count["step_flops"] + (s["depth"] - 1) * count["flops_per_block"]
        rows.append({**s, "setting": name, "optimizer": setting["optimizer"],
                     "pool_type": setting["pool_type"], "remat": r,
                     "argument_gib": plan["argument_bytes"] / GIB,
                     "temp_gib": plan["temp_bytes"] / GIB, "total_gib": plan["total_bytes"] / GIB,
                     "fits": plan["total_bytes"] <= core_gib * GIB,
                     "train_flops_per_image": step / batch_per_device})
    return rows


def first_fitting_setting(rows: list[dict], settings: Iterable[str], remat: bool) -> dict:
    """{shape name: index of the first setting (in ``settings`` order) in which it fits, or
    None} for the rows planned with ``remat``."""
    order = list(settings)
    first = {}
    for row in rows:
        if row["remat"] != remat:
            continue
        best = first.setdefault(row["name"], None)
        if row["fits"] and (best is None or order.index(row["setting"]) < best):
            first[row["name"]] = order.index(row["setting"])
    return first


def fits_per_setting(rows: list[dict], settings: Iterable[str], remat: bool, core_gib: float,
                     lower_bounds: Optional[dict] = None) -> dict:
    """How many shapes fit under each setting on its own (not cumulatively: a setting that
    planned more memory than a weaker one could lower the count), over the shapes whose every
    fit verdict the planner decides.

    A plan decides its verdict when it fits as planned (``total_gib <= core_gib``) or cannot fit
    even without the step's gradient tree and optimizer intermediates: its lower bound (the
    arguments, parameters and optimizer state, or ``lower_bounds[(name, setting)]`` where a
    tighter one was measured) exceeds the core. Between the two the verdict turns on XLA:CPU's
    buffer assignment, so a shape with any such plan is left out (``undecided``).

    Returns ``{"counts": {setting: n}, "undecided": [names], "decided": [names],
    "fits": {setting: [names]}}``."""
    order = list(settings)
    lower_bounds = lower_bounds or {}
    by_shape: dict = {}
    for row in rows:
        if row["remat"] == remat and row["setting"] in order:
            by_shape.setdefault(row["name"], {})[row["setting"]] = row
    missing = sorted(n for n, plans in by_shape.items() if set(plans) != set(order))
    if missing:
        raise ValueError(f"rows: shapes {missing} lack a plan for some of the settings {order}")
    undecided, decided = [], []
    for name, plans in sorted(by_shape.items()):
        lows = {s: float(lower_bounds.get((name, s), plans[s]["argument_gib"])) for s in order}
        if all(plans[s]["total_gib"] <= core_gib or lows[s] > core_gib for s in order):
            decided.append(name)
        else:
            undecided.append(name)
    fits = {s: [n for n in decided if by_shape[n][s]["total_gib"] <= core_gib] for s in order}
    return {"counts": {s: len(fits[s]) for s in order}, "fits": fits, "undecided": undecided,
            "decided": decided}


def saving_reversals(rows: list[dict], settings: Iterable[str]) -> list[dict]:
    """The plans where a stronger saving (later in ``settings``) plans more memory in total than
    the setting before it, for the same shape and remat, with the arguments and temporaries of
    both, so that a reader sees where the excess comes from."""
    order = list(settings)
    plans = {(r["name"], r["remat"], r["setting"]): r for r in rows}
    reversals = []
    for (name, remat, setting), stronger in sorted(plans.items(), key=lambda kv: str(kv[0])):
        i = order.index(setting) if setting in order else -1
        weaker = plans.get((name, remat, order[i - 1])) if i >= 1 else None
        if weaker is not None and stronger["total_gib"] > weaker["total_gib"]:
            reversals.append({
                "name": name, "remat": remat, "weaker": weaker["setting"], "stronger": setting,
                "total_gib": (weaker["total_gib"], stronger["total_gib"]),
                "argument_gib": (weaker["argument_gib"], stronger["argument_gib"]),
                "temp_gib": (weaker["temp_gib"], stronger["temp_gib"])})
    return reversals
