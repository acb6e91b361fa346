"""A plan's time estimate on this CPU beside measured times (the cpu profile): a CPU has no
vendor bf16 peak, so its peak FLOP/s and the fraction of it a train step reaches in the zoo's
FLOPs come from ``make bench``'s measurement (``results/benchmarks/cpu_train.json``)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Optional

from vitlib.analysis.compute_plan import Plan

# The measured CPU numbers ``compare_with_measured`` reads by default (``make bench``).
CPU_BENCHMARK = Path(__file__).resolve().parents[2] / "results" / "benchmarks" / "cpu_train.json"


def cpu_benchmark(path: Path | str = CPU_BENCHMARK) -> dict:
    """The CPU's measured rates from ``benchmarks/train_throughput.py``'s JSON.

    ``peak_flops``: its float32 2048^3 matmul rate (``matmul_peak_gflops`` x 1e9), the CPU's
    "peak". Per benchmark config, the train step's rate in the zoo's FLOPs (3 x
    ``model_fwd_gflop_per_image`` x median images/s; the file's own ``vitlib_train_gflops``
    counts XLA's FLOPs, element-wise work included, so it is not used) and its fraction of the
    peak; ``mfu``: the mean of those fractions, the CPU's measured MFU.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        peak = float(data["matmul_peak_gflops"]) * 1e9
        configs = {name: 3.0 * float(c["model_fwd_gflop_per_image"]) * 1e9
                   * float(c["median_img_s"]["vitlib_train"])
                   for name, c in data["configs"].items()}
    except FileNotFoundError:
        raise ValueError(f"benchmark: {path} does not exist; run `make bench` (benchmarks/"
                         f"train_throughput.py) or pass peak_flops and mfu") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"benchmark: {path} is not train_throughput.py's JSON (needs "
                         f"matmul_peak_gflops and configs.*.model_fwd_gflop_per_image / "
                         f"median_img_s.vitlib_train): {err!r}") from None
    if not configs or not math.isfinite(peak) or peak <= 0:
        raise ValueError(f"benchmark: {path} has no configs or no positive matmul peak")
    fractions = {name: rate / peak for name, rate in configs.items()}
    return {"path": str(path), "peak_flops": peak, "train_flops_per_second": configs,
            "mfu_by_config": fractions, "mfu": sum(fractions.values()) / len(fractions)}


def compare_with_measured(plan: Plan, measured_seconds: Mapping[str, float],
                          peak_flops: Optional[float] = None, mfu: Optional[float] = None,
                          benchmark: Path | str = CPU_BENCHMARK) -> dict:
    """A plan's time estimate on this CPU beside measured times (the cpu profile).

    ``measured_seconds`` maps run-spec names to the measured wall seconds of all ``count`` runs
    of that spec in one process. The estimate is the spec's FLOPs / (``peak_flops`` x ``mfu``):
    ``peak_flops`` defaults to the benchmark's matmul rate and ``mfu`` to the benchmark's
    measured fraction of it (``cpu_benchmark``), or 1.0 (``peak_flops`` taken as the rate a
    step sustains) when ``peak_flops`` is given and the benchmark file is absent. Each row has
    ``ratio`` = measured / estimated and ``implied_mfu`` = FLOPs / (measured x peak): the MFU the
    run actually reached. Strict JSON.
    """
    if not isinstance(plan, Plan):
        raise ValueError(f"plan: must be a Plan from plan(), got {type(plan).__name__}")
    if not isinstance(measured_seconds, Mapping) or not measured_seconds:
        raise ValueError(f"measured_seconds: must be a non-empty mapping of run name -> seconds, "
                         f"got {measured_seconds!r}")
    rows = {r["name"]: r for r in plan.rows}
    unknown = sorted(set(measured_seconds) - set(rows))
    if unknown:
        raise ValueError(f"measured_seconds: runs {unknown} are not in the plan; allowed: "
                         f"{list(rows)}")
    for name, seconds in measured_seconds.items():
        if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                or not math.isfinite(seconds) or seconds <= 0):
            raise ValueError(f"measured_seconds[{name!r}]: must be a finite number of seconds "
                             f"> 0, got {seconds!r}")
    bench = None
    if peak_flops is None or mfu is None:
        try:
            bench = cpu_benchmark(benchmark)
        except ValueError:
            if peak_flops is None:
                raise
    source = []
    if peak_flops is None:
        peak_flops = bench["peak_flops"]
        source.append(f"peak_flops: float32 matmul rate measured in {bench['path']}")
    elif (isinstance(peak_flops, bool) or not isinstance(peak_flops, (int, float))
          or not math.isfinite(peak_flops) or peak_flops <= 0):
        raise ValueError(f"peak_flops: must be a finite FLOP/s > 0, got {peak_flops!r}")
    else:
        source.append("peak_flops: given by the caller")
    if mfu is None:
        if bench is not None:
            mfu = bench["mfu"]
            source.append(f"mfu: mean measured fraction of the matmul rate that the train step "
                          f"reaches in the zoo's FLOPs ({bench['path']}: "
                          + ", ".join(f"{k} {v:.2f}" for k, v in bench["mfu_by_config"].items())
                          + ")")
        else:
            mfu = 1.0
            source.append("mfu: 1.0 (no benchmark file: peak_flops taken as the sustained rate)")
    elif (isinstance(mfu, bool) or not isinstance(mfu, (int, float)) or not 0 < mfu <= 1):
        raise ValueError(f"mfu: must be a fraction in (0, 1] of peak_flops, got {mfu!r}")
    else:
        source.append("mfu: given by the caller")
    rate = float(peak_flops) * float(mfu)
    out_rows = []
    for name, measured in measured_seconds.items():
        flops = rows[name]["flops_total"]
        estimated = flops / rate
        out_rows.append({"name": name, "flops": flops, "estimated_seconds": estimated,
                         "measured_seconds": float(measured), "ratio": measured / estimated,
                         "implied_mfu": flops / (measured * float(peak_flops))})
    return {"peak_flops": float(peak_flops), "mfu": float(mfu), "source": source,
            "rows": out_rows}


def comparison_table(comparison: dict) -> str:
    """``compare_with_measured``'s answer as text."""
    width = max([20, *(len(r["name"]) for r in comparison["rows"])])
    lines = [f"CPU estimate at {comparison['peak_flops'] / 1e9:.1f} GFLOP/s peak x MFU "
             f"{comparison['mfu']:.2f} beside measured times",
             f"{'run':{width}s} {'FLOPs':>10s} {'estimated s':>12s} {'measured s':>11s} "
             f"{'measured/est':>12s} {'implied MFU':>11s}"]
    for r in comparison["rows"]:
        lines.append(f"{r['name']:{width}s} {r['flops']:10.3g} {r['estimated_seconds']:12.1f} "
                     f"{r['measured_seconds']:11.1f} {r['ratio']:12.2f} {r['implied_mfu']:11.3f}")
    return "\n".join(lines + [f"- {s}" for s in comparison["source"]])
