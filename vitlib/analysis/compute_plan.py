"""The compute plan of a set of training runs, printed before anything trains: per run spec its
training FLOPs, device-hours and wall-clock hours on a named accelerator at an assumed MFU, and
the per-device memory of its compiled train step.

    python -m vitlib.analysis.compute_plan --variant B/16 --steps 90000 --batch 4096 \
        --accelerator h100 --devices 8 [--count 3] [--no-memory] [--json]

- FLOPs are the zoo's: 3 x forward FLOPs per image (paper Table 2 convention, ``count_flops``)
  x images seen (batch x steps), through ``scaling.training_flops``; an optional
  ``eval_overhead`` fraction adds few-shot / evaluation work on top.
- Time is ``accelerators.device_seconds``: FLOPs / (peak dense bf16 FLOP/s x MFU x devices),
  MFU being an assumption (``accelerators.DEFAULT_MFU`` unless given). Runs of a plan are taken
  to run one after another, each on all ``devices`` devices of the host.
- Memory is ``step_memory.compiled_plan``: XLA's memory analysis of ``fit``'s train step,
  compiled for abstract inputs on a virtual mesh of ``devices`` CPU devices in a subprocess, once
  per distinct step (variant / shape, optimizer, batch per device, image size, dtype, pooling,
  classes, fsdp, remat). That XLA:CPU's buffer assignment approximates the accelerator's is an
  assumption, stated in the output.

``vitlib.analysis.cpu_estimate`` puts a plan's estimate for the cpu profile beside measured
times.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Any, Mapping, Optional, Sequence

from vitlib.analysis.accelerators import DEFAULT_MFU, GIB, Accelerator, device_seconds
from vitlib.analysis.accelerators import accelerator as find_accelerator
from vitlib.analysis.scaling import training_flops
from vitlib.analysis.state_memory import OPTIMIZER_NAMES
from vitlib.files import non_finite_key
from vitlib.models.counting import count_flops
from vitlib.models.variants import DTYPES, POOL_TYPES, ViTConfig, vit_config

# ViTConfig fields a RunSpec sets itself: ``model`` may not override them.
_SPEC_FIELDS = ("image_size", "num_classes", "pool_type", "dtype", "remat_policy", "scan",
                "variant")
MEMORY_ASSUMPTION = ("memory: XLA:CPU's memory analysis of the compiled train step (arguments + "
                     "outputs - donated + temporaries per device) on a virtual mesh of {devices} "
                     "CPU devices, assumed to approximate the accelerator's buffer assignment "
                     "(fusion, layouts and collectives differ there); fits = at most one "
                     "device's memory, with no headroom kept for the runtime")


def _positive_int(field: str, value, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}{field}: must be an integer >= 1, got {value!r}")


def _choice(field: str, value, allowed, where: str) -> None:
    if value not in allowed:
        raise ValueError(f"{where}{field}: {value!r} is not allowed; choose one of "
                         f"{list(allowed)}")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """``count`` training runs of one shape and recipe (e.g. seeds x grid points).

    ``variant`` is a zoo name ("B/16"); ``model`` overrides fields of its ``ViTConfig`` or, with
    ``variant=None``, gives a whole shape (``{"width": 1408, "depth": 40, "mlp_dim": 6144,
    "num_heads": 16, "patch_size": 14}``). ``batch_size`` is the global batch; ``dtype`` the
    compute dtype (bfloat16 on accelerators); ``eval_overhead`` the few-shot / evaluation work
    as a fraction of the training FLOPs (0.05 = 5% more).
    """

    name: str
    variant: Optional[str]
    batch_size: int
    steps: int
    image_size: int = 224
    optimizer: str = "adam"
    pool_type: str = "gap"
    dtype: str = "bfloat16"
    count: int = 1
    eval_overhead: float = 0.0
    num_classes: int = 1000
    fsdp: bool = False
    remat: bool = False
    model: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name: must be a non-empty string, got {self.name!r}")
        where = f"run {self.name!r}: "
        if self.variant is not None and not isinstance(self.variant, str):
            raise ValueError(f"{where}variant: must be a zoo name like 'B/16' or None (with a "
                             f"whole shape in model), got {self.variant!r}")
        for field in ("batch_size", "steps", "image_size", "count", "num_classes"):
            _positive_int(field, getattr(self, field), where)
        _choice("optimizer", self.optimizer, OPTIMIZER_NAMES, where)
        _choice("pool_type", self.pool_type, POOL_TYPES, where)
        _choice("dtype", self.dtype, DTYPES, where)
        for field in ("fsdp", "remat"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{where}{field}: must be True or False, got "
                                 f"{getattr(self, field)!r}")
        overhead = self.eval_overhead
        if (isinstance(overhead, bool) or not isinstance(overhead, (int, float))
                or not math.isfinite(overhead) or overhead < 0):
            raise ValueError(f"{where}eval_overhead: must be a finite fraction >= 0 of the "
                             f"training FLOPs (0.05 = 5% more), got {overhead!r}")
        if not isinstance(self.model, Mapping):
            raise ValueError(f"{where}model: must be a mapping of ViTConfig fields, got "
                             f"{self.model!r}")
        clash = sorted(set(self.model) & set(_SPEC_FIELDS))
        if clash:
            raise ValueError(f"{where}model: {clash} are set by the run spec's own fields "
                             f"(image_size, num_classes, pool_type, dtype, remat, variant); "
                             f"allowed in model: the other ViTConfig fields")
        try:
            self.config()
        except ValueError as err:
            raise ValueError(f"{where}{err}") from None

    def config(self) -> ViTConfig:
        """The ViTConfig the run trains (head included)."""
        return vit_config(self.variant, image_size=self.image_size, num_classes=self.num_classes,
                          pool_type=self.pool_type, dtype=self.dtype, **dict(self.model))

    @property
    def label(self) -> str:
        """The variant, ``variant*`` when ``model`` changes its shape (the table's footnote
        says so), or the custom shape as width x depth / patch."""
        if self.variant is not None and not self.model:
            return self.variant
        cfg = self.config()
        shape = f"w{cfg.width}d{cfg.depth}m{cfg.mlp_dim}h{cfg.num_heads}/{cfg.patch_size}"
        return f"{self.variant}*" if self.variant is not None else shape

    @property
    def images(self) -> int:
        """Images seen by one run: batch x steps."""
        return self.batch_size * self.steps

    def step_key(self, devices: int) -> tuple:
        """What makes two specs' compiled steps the same (steps, count and overhead do not)."""
        return (self.variant, tuple(sorted(self.model.items())), self.optimizer,
                self.batch_size // devices, self.image_size, self.dtype, self.pool_type,
                self.num_classes, self.fsdp, self.remat)

    def planner_arguments(self, devices: int) -> dict:
        """``step_memory.compiled_plan``'s keyword arguments (less ``devices``) for this step."""
        return dict(variant=self.variant, optimizer=self.optimizer,
                    batch_per_device=self.batch_size // devices, fsdp=self.fsdp,
                    remat=self.remat, image_size=self.image_size,
                    num_classes=self.num_classes, dtype=self.dtype,
                    model={**dict(self.model), "pool_type": self.pool_type})


def plans_in_subprocess(plans: list[dict], devices: int) -> list[dict]:
    """``step_memory.plans_in_subprocess``, imported late: JAX loads only for memory plans."""
    from vitlib.analysis import step_memory

    return step_memory.plans_in_subprocess(plans, devices)


@dataclasses.dataclass(frozen=True)
class Plan:
    """``plan``'s answer: one row per run spec, the distinct compiled steps, the assumptions."""

    accelerator: Accelerator
    devices: int
    mfu: float
    mfu_assumed: bool  # True when mfu is accelerators.DEFAULT_MFU, not the caller's
    memory: bool
    rows: tuple  # of dicts, one per RunSpec, in order
    steps: tuple  # of dicts: the distinct compiled steps' memory plans (empty without memory)
    assumptions: tuple  # of str

    @property
    def totals(self) -> dict:
        """Sums over every run of every spec; memory: the largest step and whether all fit."""
        memories = [s["total_bytes"] for s in self.steps]
        return {"runs": sum(r["count"] for r in self.rows),
                "images": sum(r["images_total"] for r in self.rows),
                "train_flops": sum(r["train_flops_total"] for r in self.rows),
                "flops": sum(r["flops_total"] for r in self.rows),
                "device_hours": sum(r["device_hours_total"] for r in self.rows),
                "wall_hours": sum(r["wall_hours_total"] for r in self.rows),
                "distinct_steps": len({r["step"] for r in self.rows}),
                "max_memory_bytes": max(memories) if memories else None,
                "all_fit": all(s["fits"] for s in self.steps) if self.memory else None}

    def to_dict(self) -> dict:
        """The plan as strict JSON (finite numbers or null only)."""
        acc = self.accelerator
        out = {"accelerator": {"name": acc.name, "label": acc.label,
                               "description": acc.description, "peak_flops": acc.peak_flops,
                               "memory_bytes": acc.memory_bytes, "source": acc.source},
               "devices": self.devices, "mfu": self.mfu, "mfu_assumed": self.mfu_assumed,
               "memory": self.memory, "runs": [dict(r) for r in self.rows],
               "steps": [dict(s) for s in self.steps], "totals": self.totals,
               "assumptions": list(self.assumptions)}
        bad = non_finite_key(out)
        if bad is not None:
            raise ValueError(f"plan: {bad} is not a finite number; JSON allows finite numbers "
                             f"or null")
        return out

    def table(self, assumptions: bool = True) -> str:
        """A text table: one row per run spec and a total, then (``assumptions``) the
        assumptions."""
        acc = self.accelerator
        runs = self.totals["runs"]
        head = (f"Compute plan: {len(self.rows)} run spec(s), {runs} run(s) on {self.devices} x "
                f"{acc.label} ({acc.description}; {acc.peak_flops / 1e12:,.0f} TFLOP/s dense "
                f"bf16 peak and {acc.memory_bytes / GIB:.1f} GiB memory each) at MFU {self.mfu:.2f}"
                f"{' (assumed)' if self.mfu_assumed else ''}")
        columns = ["run", "variant", "image", "batch", "steps", "GFLOP/img", "FLOPs/run",
                   "wall-h/run", "runs", "FLOPs", "device-h", "wall-h", "mem/device", "fits"]
        body = []
        for r in self.rows:
            step = self.steps[r["step"]] if self.memory else None
            body.append([r["name"], r["label"], str(r["image_size"]), f"{r['batch_size']:,}",
                         f"{r['steps']:,}", _num(r['forward_flops_per_image'] / 1e9),
                         f"{r['flops_per_run']:.3g}", _num(r['wall_hours_per_run']),
                         str(r["count"]), f"{r['flops_total']:.3g}",
                         _num(r['device_hours_total'], 1), _num(r['wall_hours_total']),
                         _bytes(step["total_bytes"]) if step else "-",
                         ("yes" if step["fits"] else "NO") if step else "-"])
        t = self.totals
        body.append(["total", "", "", "", "", "", "", "", str(t["runs"]), f"{t['flops']:.3g}",
                     _num(t['device_hours'], 1), _num(t['wall_hours']),
                     _bytes(t["max_memory_bytes"]) + " max" if self.memory else "-",
                     ("yes" if t["all_fit"] else "NO") if self.memory else "-"])
        widths = [max(len(row[i]) for row in [columns] + body) for i in range(len(columns))]
        line = lambda row: "  ".join(  # noqa: E731
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        rule = "-" * len(line(columns))
        lines = [head, "", line(columns), rule] + [line(b) for b in body[:-1]] + [rule,
                                                                                 line(body[-1])]
        if any(r["label"].endswith("*") for r in self.rows):
            lines += ["", "* the named variant with a changed shape (width, depth, MLP or "
                          "heads, as the run's name says); GFLOP/img is the changed model's"]
        if self.memory:
            lines += ["", f"{len(self.steps)} distinct compiled step(s), planned once each:"]
            for i, s in enumerate(self.steps):
                lines.append(f"  [{i}] {s['label']} {s['optimizer']}, {s['batch_per_device']} "
                             f"img/device at {s['image_size']}px, {s['dtype']}, fsdp={s['fsdp']}, "
                             f"remat={s['remat']}: {_bytes(s['total_bytes'])} per device "
                             f"({100 * s['memory_fraction']:.0f}% of {acc.label}'s "
                             f"{acc.memory_bytes / GIB:.1f} GiB) -> "
                             f"{'fits' if s['fits'] else 'DOES NOT FIT'}")
        if assumptions:
            lines += ["", "Assumptions:"] + [f"- {a}" for a in self.assumptions]
        return "\n".join(lines)


def _num(x: float, digits: int = 2) -> str:
    """Fixed point with thousands separators; small values in scientific notation."""
    return f"{x:,.{digits}f}" if x == 0 or abs(x) >= 10 ** -digits else f"{x:.1e}"


def _bytes(n: Optional[float]) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def plan(runs: Sequence[RunSpec], accelerator: str = "h100", devices: int = 8,
         mfu: Optional[float] = None, memory: bool = True) -> Plan:
    """The compute plan of ``runs`` on ``devices`` devices ``accelerator`` at ``mfu``.

    Per spec: training FLOPs per run (``scaling.training_flops``: 3 x the zoo's forward FLOPs x
    batch x steps), times ``1 + eval_overhead``; device-hours and wall-clock hours on
    ``devices`` devices at ``mfu`` (``accelerators.device_seconds``; default
    ``DEFAULT_MFU``, stated as assumed); with ``memory``, the per-device bytes of each distinct
    compiled step (planned once each, all in one subprocess with ``devices`` virtual CPU
    devices) and whether it fits one device's memory. The global batch must split evenly over
    the devices.
    """
    acc = find_accelerator(accelerator)
    _positive_int("devices", devices, "")
    acc.flops_per_second(mfu)  # validates mfu
    mfu_used = DEFAULT_MFU if mfu is None else float(mfu)
    if not isinstance(memory, bool):
        raise ValueError(f"memory: must be True or False, got {memory!r}")
    runs = list(runs) if not isinstance(runs, RunSpec) else [runs]
    if not runs:
        raise ValueError("runs: no run spec given; pass a list of RunSpec")
    for i, run in enumerate(runs):
        if not isinstance(run, RunSpec):
            raise ValueError(f"runs[{i}]: must be a RunSpec, got {type(run).__name__}")
    names = [r.name for r in runs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"runs: names {repeated} are used more than once; each run spec "
                         f"needs its own name")
    for run in runs:
        if run.batch_size % devices:
            raise ValueError(f"run {run.name!r}: batch_size: {run.batch_size} does not split "
                             f"evenly over devices={devices}; allowed: a multiple of {devices}")

    keys: dict[tuple, int] = {}
    rows = []
    for run in runs:
        cfg = run.config()
        step = keys.setdefault(run.step_key(devices), len(keys))
        train = float(training_flops(cfg, run.image_size, run.images))
        flops = train * (1.0 + run.eval_overhead)
        wall = device_seconds(flops, acc.name, devices, mfu) / 3600.0
        rows.append({
            "name": run.name, "variant": run.variant, "label": run.label,
            "model": dict(run.model), "image_size": run.image_size,
            "batch_size": run.batch_size, "batch_per_device": run.batch_size // devices,
            "steps": run.steps, "count": run.count, "optimizer": run.optimizer,
            "pool_type": run.pool_type, "dtype": run.dtype, "num_classes": run.num_classes,
            "fsdp": run.fsdp, "remat": run.remat, "eval_overhead": float(run.eval_overhead),
            "forward_flops_per_image": float(count_flops(cfg, run.image_size)),
            "images_per_run": run.images, "images_total": run.images * run.count,
            "train_flops_per_run": train, "flops_per_run": flops,
            "train_flops_total": train * run.count, "flops_total": flops * run.count,
            "device_hours_per_run": wall * devices, "wall_hours_per_run": wall,
            "device_hours_total": wall * devices * run.count,
            "wall_hours_total": wall * run.count, "step": step})

    steps = []
    if memory:
        firsts = {}
        for run in runs:
            firsts.setdefault(run.step_key(devices), run)
        distinct = list(firsts.values())  # in the order of keys' indices
        planned = plans_in_subprocess([r.planner_arguments(devices) for r in distinct], devices)
        for run, p in zip(distinct, planned):
            total = int(p["total_bytes"])
            steps.append({"label": run.label, "variant": run.variant, "model": dict(run.model),
                          "optimizer": run.optimizer, "batch_per_device": p["batch_per_device"],
                          "image_size": run.image_size, "dtype": run.dtype,
                          "pool_type": run.pool_type, "num_classes": run.num_classes,
                          "fsdp": run.fsdp, "remat": run.remat, "devices": devices,
                          **{k: int(p[k]) for k in ("argument_bytes", "output_bytes",
                                                    "alias_bytes", "temp_bytes")},
                          "total_bytes": total,
                          "memory_fraction": total / acc.memory_bytes,
                          "fits": total <= acc.memory_bytes})
        for row in rows:
            row["memory_bytes_per_device"] = steps[row["step"]]["total_bytes"]
            row["fits"] = steps[row["step"]]["fits"]
    else:
        for row in rows:
            row["memory_bytes_per_device"] = row["fits"] = None

    assumptions = [
        "FLOPs: the zoo's count (paper Table 2 convention: 2 x multiply-adds of every matmul, "
        "head included), training = 3 x forward FLOPs per image x batch x steps, times "
        "(1 + eval_overhead)",
        f"time: FLOPs / ({acc.label} dense bf16 peak {acc.peak_flops:.4g} FLOP/s x MFU "
        f"{mfu_used:.2f}{' (assumed: accelerators.DEFAULT_MFU)' if mfu is None else ''} x "
        f"devices), MFU in model FLOPs (remat's recomputation is not counted: it lowers the MFU a "
        f"run reaches); the work splits evenly over the {devices} devices; runs go one after "
        f"another, each on all {devices}; device-hours = wall-hours x {devices}",
        MEMORY_ASSUMPTION.format(devices=devices) if memory else
        "memory: not planned (memory=False / --no-memory)",
    ]
    return Plan(acc, devices, mfu_used, mfu is None, memory, tuple(rows), tuple(steps),
                tuple(assumptions))


# ---------------------------------------------------------------- the cpu profile: measured

# ---------------------------------------------------------------- CLI

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.analysis.compute_plan",
        description="FLOPs, device-hours, wall-clock hours and per-device memory of one run "
                    "spec on a named accelerator, before anything trains.")
    parser.add_argument("--variant", required=True, help="zoo name NAME/PATCH, e.g. B/16")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True, help="global batch size")
    parser.add_argument("--accelerator", default="h100")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--count", type=int, default=1, help="how many such runs (seeds, grid)")
    parser.add_argument("--mfu", type=float, default=None,
                        help=f"model FLOPs utilisation (default {DEFAULT_MFU}, assumed)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--optimizer", default="adam", help=f"one of {list(OPTIMIZER_NAMES)}")
    parser.add_argument("--pool-type", default="gap", help=f"one of {list(POOL_TYPES)}")
    parser.add_argument("--dtype", default="bfloat16", help=f"compute dtype, {list(DTYPES)}")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--eval-overhead", type=float, default=0.0,
                        help="few-shot / eval FLOPs as a fraction of training (0.05 = 5%%)")
    parser.add_argument("--fsdp", action="store_true", help="shard params/state over devices")
    parser.add_argument("--remat", action="store_true", help="rematerialise encoder blocks")
    parser.add_argument("--name", default=None, help="the run spec's name (default: variant)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the compiled step's memory plan (no JAX compile)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        spec = RunSpec(name=args.name or args.variant, variant=args.variant,
                       batch_size=args.batch, steps=args.steps, image_size=args.image_size,
                       optimizer=args.optimizer, pool_type=args.pool_type, dtype=args.dtype,
                       count=args.count, eval_overhead=args.eval_overhead,
                       num_classes=args.num_classes, fsdp=args.fsdp, remat=args.remat)
        result = plan([spec], args.accelerator, args.devices, args.mfu, not args.no_memory)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(result.to_dict(), indent=1, allow_nan=False) if args.json
              else result.table())
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
