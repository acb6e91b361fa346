"""How much of a sweep's wall time goes to training: a small reference sweep through
``vitlib.study.experiments`` against the pure time of its compiled train step. ``make bench``
runs it.

Reference sweep (shaped like notebook 04's when the goal of <= 10% was set; fewer runs): Pico/7
on Fashion-MNIST, batch 256, STEPS steps per run, evaluation every 50 steps on test + minival,
checkpoint at the end; the runs differ in learning rate, weight decay and seed (what sweeps
vary). Two modes run side by side, each from an empty run cache:

- ``sweep``: as vitlib runs sweeps now: one compilation per process for the whole sweep (lr and
  weight decay are step inputs), JAX's persistent compilation cache (a fresh, empty folder here,
  so the first run still compiles), intermediate evaluations on a fixed 1,000-example subset.
- ``per_run_compile_full_evals``: the same runs with every program compiled anew per run (no
  in-process or disk cache) and every evaluation on the whole splits: the costs the sweep avoids.

Pure step time: the same compiled step on a batch already on the device, timed in a tight loop
with at most ``STEPS_IN_FLIGHT`` steps dispatched ahead, as fit runs it. This machine's speed
drifts by tens of percent over minutes (other tenants), so a run's wall time and one pure-step
timing taken at another moment can differ by more than the overhead itself. The headline
therefore uses only ratios of nearby timings: within each run, the share of its wall time spent
in the train loop (the rest is setup, evaluations and checkpoints, timed directly); and the
loop's pace, fit's train loop on short runs against the pure step timed one right after the
other, over rounds (``loop_pace``). Overhead of a run = 1 - train loop / wall time / pace
(the median of the rounds), with the band that the pace's mean +- two standard errors gives.
Beside it: each run against the mean of the pure step timed just before and just after it
(overhead = 1 - steps x step time / wall time), and against one timing after both sweeps (how
earlier versions measured it). Results: results/benchmarks/cpu_sweep.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

# An empty persistent cache, so the first run's compilation is counted honestly.
os.environ["VITLIB_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="vitlib-bench-jax-")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vitlib.data import datasets  # noqa: E402
from vitlib.data.batches import train_batch  # noqa: E402
from vitlib.files import write_json  # noqa: E402
from vitlib.study import experiments  # noqa: E402
from vitlib.train import build, programs as compiled  # noqa: E402
from vitlib.train.loop import STEPS_IN_FLIGHT  # noqa: E402
from vitlib.train.sharding import replicated, shard_batch  # noqa: E402

BASE = {"dataset": "fashion_mnist", "model.variant": "Pico/7", "batch_size": 256,
        "eval_every": 50, "log_every": 50, "augment.flip": False, "fewshot.dataset": "",
        "train_split": "train", "eval_splits": ("test", "minival"),
        "optim.schedule": {"kind": "cosine", "warmup_steps": 20}}
VARIED = [{"optim.lr": 1e-3, "optim.weight_decay": [(".*", 0.05)], "seed": 0},
          {"optim.lr": 2e-3, "optim.weight_decay": [(".*", 0.05)], "seed": 0},
          {"optim.lr": 4e-3, "optim.weight_decay": [(".*", 0.1)], "seed": 1},
          {"optim.lr": 2e-3, "optim.weight_decay": [(".*", 0.1)], "seed": 2}]


def run_sweep(mode: str, steps: int, root: Path,
              after_run: Optional[Callable[[dict], None]] = None) -> list[dict]:
    """The reference sweep's runs in ``mode``; ``after_run(config)`` is called after each."""
    per_run_compile = mode == "per_run_compile_full_evals"
    jax.config.update("jax_enable_compilation_cache", not per_run_compile)
    runs = []
    for i, varied in enumerate(VARIED):
        config = experiments.make_config("quickstart", {
            **BASE, **varied, "total_steps": steps, "checkpoint_every": steps,
            "eval_subset": 0 if per_run_compile else 1000})
        if per_run_compile:
            compiled._PROGRAMS.clear()
            jax.clear_caches()
        start = time.perf_counter()
        result = experiments.run_cached(config, root, f"{mode}-{i}")
        wall = time.perf_counter() - start
        runs.append({"wall_s": wall, "train_time_s": result["train_time_s"],
                     "setup_time_s": result["setup_time_s"],
                     "eval_time_s": result["eval_time_s"],
                     "checkpoint_time_s": result["checkpoint_time_s"],
                     "minival_accuracy": result["minival_accuracy"], "config": config})
        print(f"{mode} run {i}: {wall:.1f} s wall, setup {result['setup_time_s']:.1f} s, "
              f"train loop {result['train_time_s']:.1f} s, evals {result['eval_time_s']:.1f} s, "
              f"checkpoints {result['checkpoint_time_s']:.1f} s", flush=True)
        if after_run is not None:
            after_run(config)
    return runs


class PureStep:
    """The compiled train step of ``config``'s structure on a batch already placed, timed in a
    tight loop. Built from the programs the sweep compiled (``programs_for`` returns them), so
    timing it compiles nothing."""

    def __init__(self, config):
        x, y = datasets.load_split(config.dataset, config.train_split)
        model = build.build_model(config, x.shape[1], datasets.num_classes(config.dataset))
        optimizer = build.make_tx(config)
        self.programs = compiled.programs_for(config, model, optimizer.tx,
                                              (x.shape[1], x.shape[2], 1))
        self.state = self.programs.init(config.seed)
        self.batch = shard_batch(train_batch(x, y, 0, config.batch_size, config.seed),
                                 self.programs.mesh)
        self.hyper = {"lr": np.float32(1e-3), "weight_decay": jax.device_put(
            optimizer.weight_decay_rates(self.state.params), replicated(self.programs.mesh))}

    def _steps(self, n: int):
        # As fit dispatches them: at most STEPS_IN_FLIGHT ahead. Unbounded, the same steps ran
        # ~4% slower on 2 cores (alternated rounds), which flattered every overhead.
        pending = []
        for _ in range(n):
            self.state, metrics = self.programs.step(self.state, self.batch, self.hyper)
            pending.append(metrics)
            if len(pending) > STEPS_IN_FLIGHT:
                jax.block_until_ready(pending.pop(0))
        jax.block_until_ready(metrics)

    def seconds(self, rounds: int = 5, steps: int = 30) -> float:
        """Median seconds per step over ``rounds`` rounds of ``steps`` steps."""
        self._steps(1)
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            self._steps(steps)
            samples.append((time.perf_counter() - start) / steps)
        return statistics.median(samples)


def loop_pace(config, root: Path, rounds: int = 12, steps: int = 100) -> list[float]:
    """Per round, fit's train loop against the pure step, timed one right after the other (in
    alternating order): seconds per step of a short run's train loop (``train_time_s``: steps,
    input, metric flushes every 50 steps; no evaluation or checkpoint) / the pure step's. The
    ratio of two timings a few seconds apart is what the machine's drift leaves alone."""
    ratios = []
    for k in range(rounds):
        short = experiments.make_config("quickstart", {
            **BASE, **VARIED[k % len(VARIED)], "total_steps": steps, "checkpoint_every": steps,
            "eval_every": 0, "eval_splits": ("minival",)})

        def loop_step_s():
            return experiments.run_cached(short, root, f"pace-{k}")["train_time_s"] / steps
        pure = PureStep(config)
        if k % 2:
            loop_s, pure_s = loop_step_s(), pure.seconds(rounds=1, steps=steps)
        else:
            pure_s, loop_s = pure.seconds(rounds=1, steps=steps), loop_step_s()
        ratios.append(loop_s / pure_s)
        print(f"loop pace round {k}: train loop {1000 * loop_s:.1f} ms/step, pure step "
              f"{1000 * pure_s:.1f} ms: x{ratios[-1]:.3f}", flush=True)
    return ratios


def pace_band(ratios: list[float]) -> tuple[float, float]:
    """The loop's pace within two standard errors of the rounds' mean: (low, high)."""
    half = 2 * statistics.stdev(ratios) / len(ratios) ** 0.5
    mean = statistics.fmean(ratios)
    return mean - half, mean + half


def overheads_from_pace(runs: list[dict], pace: float) -> list[float]:
    """Each run's overhead from ratios inside the run and the loop's pace (``loop_pace``'s
    median): the train loop's share of the run's wall time, of which 1 / pace was the pure
    step: overhead = 1 - train loop / wall / pace, in %."""
    return [100 * (1 - r["train_time_s"] / r["wall_s"] / pace) for r in runs]


def pace_summary(results: dict, ratios: list[float]) -> dict:
    """The overheads of each mode's runs at the loop's pace (the rounds' median), and the
    median run's overhead at either end of the pace's band (a slower loop, a higher pace: more
    overhead)."""
    pace = statistics.median(ratios)
    low, high = pace_band(ratios)

    def median_at(runs, at):
        return statistics.median(overheads_from_pace(runs, at))
    return {"ratios": ratios, "median": pace, "two_standard_errors": [low, high],
            "overhead_per_run_pct": {m: overheads_from_pace(r, pace) for m, r in results.items()},
            "median_overhead_pct": {m: median_at(r, pace) for m, r in results.items()},
            "median_overhead_pct_band": {m: [median_at(r, low), median_at(r, high)]
                                         for m, r in results.items()}}


def bracketing_step_times(after_each_run: list[float]) -> list[float]:
    """Each run's pure step time: the mean of the timings just before and just after it, from
    the timings taken after every run (the first run has only the one after it)."""
    before = after_each_run[:1] + after_each_run[:-1]
    return [(a + b) / 2 for a, b in zip(before, after_each_run)]


def summarize(runs: list[dict], steps: int, step_s: Sequence[float]) -> dict:
    """Overheads of ``runs``, each against its own pure step time ``step_s[i]``."""
    overheads = [1 - steps * s / r["wall_s"] for r, s in zip(runs, step_s)]
    total_wall = sum(r["wall_s"] for r in runs)
    return {"runs": [{k: v for k, v in r.items() if k != "config"} for r in runs],
            "pure_step_s_per_run": list(step_s),
            "overhead_per_run_pct": [100 * o for o in overheads],
            "median_overhead_pct": 100 * statistics.median(overheads),
            "first_run_overhead_pct": 100 * overheads[0],
            "sweep_wall_s": total_wall,
            "sweep_overhead_pct": 100 * (1 - steps * sum(step_s) / total_wall)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400,
                        help="training steps per run of the reference sweep")
    parser.add_argument("--out", default="results/benchmarks/cpu_sweep.json")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="vitlib-bench-sweep-"))
    after_each_run: list[float] = []  # pure step timings, in the order of the runs

    def time_pure_step(config) -> None:  # the programs the run just used: nothing compiles
        after_each_run.append(PureStep(config).seconds())
        print(f"pure train step after the run: {1000 * after_each_run[-1]:.1f} ms", flush=True)
    results = {}
    for mode in ("sweep", "per_run_compile_full_evals"):
        results[mode] = run_sweep(mode, args.steps, root, after_run=time_pure_step)
    jax.config.update("jax_enable_compilation_cache", True)
    pace_ratios = loop_pace(results["sweep"][0]["config"], root)
    bracketing = bracketing_step_times(after_each_run)
    after_sweeps = after_each_run[-1]  # where earlier versions took their one timing
    step_s = statistics.median(after_each_run)
    n = len(VARIED)
    report = {"steps_per_run": args.steps, "batch_size": BASE["batch_size"],
              "pure_step_s": step_s, "pure_images_per_s": BASE["batch_size"] / step_s,
              "pure_step_s_after_each_run": after_each_run,
              "devices": jax.device_count(), "cpu_count": os.cpu_count(),
              "modes": {m: summarize(r, args.steps, bracketing[i * n:(i + 1) * n])
                        for i, (m, r) in enumerate(results.items())},
              "loop_pace": pace_summary(results, pace_ratios),
              "against_one_timing_after_both_sweeps": {
                  m: summarize(r, args.steps, [after_sweeps] * n) for m, r in results.items()}}
    pace = report["loop_pace"]
    low, high = pace["two_standard_errors"]
    for mode, s in pace["overhead_per_run_pct"].items():
        band = pace["median_overhead_pct_band"][mode]
        print(f"{mode}: overhead per run from the loop's pace (x{pace['median']:.3f}, within two "
              f"standard errors x{low:.3f}-x{high:.3f}): {', '.join(f'{o:.1f}' for o in s)}%; "
              f"median {pace['median_overhead_pct'][mode]:.1f}% "
              f"({band[0]:.1f}-{band[1]:.1f}% across the pace's band)", flush=True)
    print("against the pure step timed around each run:")
    for mode, s in report["modes"].items():
        print(f"{mode}: median overhead per run {s['median_overhead_pct']:.1f}% (first run "
              f"{s['first_run_overhead_pct']:.1f}%), whole sweep {s['sweep_wall_s']:.0f} s, "
              f"{s['sweep_overhead_pct']:.1f}% outside the train step", flush=True)
    print(f"pure train step: {1000 * step_s:.1f} ms = {report['pure_images_per_s']:.0f} img/s "
          f"(median of the timings after each run: "
          f"{', '.join(f'{1000 * t:.1f}' for t in after_each_run)} ms)")
    old = report["against_one_timing_after_both_sweeps"]["sweep"]
    print(f"against one timing after both sweeps ({1000 * after_sweeps:.1f} ms), as earlier "
          f"versions measured: sweep median overhead per run {old['median_overhead_pct']:.1f}%")
    write_json(Path(args.out), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
