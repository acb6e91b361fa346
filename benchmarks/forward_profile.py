"""Where the small model's forward pass spends its time, part by part, in vitlib (XLA:CPU) and
in the PyTorch eager reference of the same shapes. ``make bench`` runs it.

The forward pass is the feature function evaluations and few-shot probes run (C1 of
``train_throughput.py``: width 64, depth 4, 49 tokens, batch 256): vitlib's as ``fit`` runs it
(micro-batched in slices of 32 on CPU) and unsplit, PyTorch's ``TorchViT.features``. First
their throughput, alternated in one process (median images/s); then one profiled run of each:

- vitlib: a ``jax.profiler`` Perfetto trace; every XLA op's time is given to a part of the model
  through the ``op_name`` metadata the compiled HLO keeps (Flax's module scopes);
- PyTorch: ``torch.profiler`` over the same parts, marked with ``record_function`` scopes
  (``TorchViT(scoped=True)``).

Parts: patch embedding, LayerNorm, attention projections (q, k, v, out), attention scores
(q.k, softmax, weights.v, head reshapes), MLP (both matmuls and GELU), other (position
embedding, pooling, the micro-batch loop, copies). Results: results/benchmarks/
cpu_forward_profile.json and .md.

    python benchmarks/forward_profile.py [--rounds 5] [--steps 10] [--no-torch]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vitlib.files import write_bytes_atomic, write_json
from vitlib.models import ViT, vit_config
from vitlib.train.steps import make_feature_fn, micro_batches_for

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import BATCH, CLASSES, CONFIGS, IMAGE, PATCH  # noqa: E402

PARTS = ("patch embedding", "LayerNorm", "attention projections", "attention scores", "MLP",
         "other")
_CONTROL = re.compile(r"^(while|call|conditional|tuple|get-tuple-element|parameter|constant)")


def part_of_scope(op_name: str) -> str:
    """The model part an XLA op belongs to, from its ``op_name`` (Flax's module path)."""
    if "/embedding/" in op_name:
        return "patch embedding"
    if "LayerNorm" in op_name or "encoder_norm" in op_name:
        return "LayerNorm"
    if "MultiHeadDotProductAttention" in op_name:
        projection = re.search(r"MultiHeadDotProductAttention_\d+/(query|key|value|out)/", op_name)
        return "attention projections" if projection else "attention scores"
    if "MlpBlock" in op_name:
        return "MLP"
    return "other"


def hlo_parts(hlo_text: str) -> dict:
    """{instruction name: model part} for every instruction of a compiled HLO module that
    carries an ``op_name`` (control flow, which encloses other ops, left out)."""
    parts = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*op_name=\"([^\"]+)\"", line)
        if match and not _CONTROL.match(match.group(1)):
            parts[match.group(1)] = part_of_scope(match.group(2))
    return parts


def trace_times(trace_dir: Path, parts: dict) -> dict:
    """Microseconds per model part: every complete event of the Perfetto trace whose name is
    an instruction of ``parts``."""
    traces = sorted(Path(trace_dir).rglob("perfetto_trace.json.gz"))
    if not traces:
        raise FileNotFoundError(f"trace_dir: no perfetto_trace.json.gz under {trace_dir}")
    events = json.loads(gzip.decompress(traces[-1].read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals = defaultdict(float)
    for event in events:
        if event.get("ph") == "X" and event.get("name") in parts:
            totals[parts[event["name"]]] += float(event.get("dur", 0.0))
    return {part: totals.get(part, 0.0) for part in PARTS}


def vitlib_forward(shape: dict, micro_batches: int, rng: np.random.Generator):
    """(run(steps), profile(steps) -> microseconds per part): the feature function on one
    batch, compiled for ``micro_batches`` slices."""
    cfg = vit_config(**shape, patch_size=PATCH, image_size=IMAGE, num_classes=CLASSES)
    model = ViT(cfg)
    images = jnp.asarray(rng.uniform(-1, 1, (BATCH, IMAGE, IMAGE, 1)), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), images[:2])["params"]
    compiled = jax.jit(make_feature_fn(model, micro_batches)).lower(params, images).compile()
    parts = hlo_parts(compiled.as_text())

    def run(steps):
        for _ in range(steps):
            out = compiled(params, images)
        jax.block_until_ready(out)

    def profile(steps):
        run(1)
        with tempfile.TemporaryDirectory() as folder:
            with jax.profiler.trace(folder, create_perfetto_trace=True):
                run(steps)
            return trace_times(Path(folder), parts)
    return run, profile


def torch_forward(shape: dict, rng: np.random.Generator):
    import torch
    from torch_vit import TorchViT

    model = TorchViT(shape["width"], shape["depth"], shape["num_heads"], shape["mlp_dim"],
                     PATCH, IMAGE, 1, CLASSES).eval()
    scoped = TorchViT(shape["width"], shape["depth"], shape["num_heads"], shape["mlp_dim"],
                      PATCH, IMAGE, 1, CLASSES, scoped=True).eval()
    images = torch.tensor(rng.uniform(-1, 1, (BATCH, 1, IMAGE, IMAGE)), dtype=torch.float32)

    def run(steps, net=model):
        with torch.no_grad():
            for _ in range(steps):
                net.features(images)

    def profile(steps):
        run(1, scoped)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run(steps, scoped)
        totals = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key in PARTS}
        whole = sum(e.self_cpu_time_total for e in prof.key_averages())
        totals["other"] = max(0.0, whole - sum(totals.values()))
        return {part: float(totals.get(part, 0.0)) for part in PARTS}
    return run, profile


def _img_s(fn, steps: int) -> float:
    start = time.perf_counter()
    fn(steps)
    return steps * BATCH / (time.perf_counter() - start)


def run(config: str, rounds: int, steps: int, with_torch: bool, out: Path) -> dict:
    rng = np.random.default_rng(0)
    shape = CONFIGS[config]
    micro = micro_batches_for(BATCH, 0, jax.device_count())  # what fit() evaluates with
    contenders = {f"vitlib, {micro} micro-batches (as fit)": vitlib_forward(shape, micro, rng),
                  "vitlib, unsplit": vitlib_forward(shape, 1, rng)}
    if with_torch:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        contenders["PyTorch eager"] = torch_forward(shape, rng)
    for go, _ in contenders.values():  # warm-up
        go(2)
    samples = {name: [] for name in contenders}
    for _ in range(rounds):  # alternate so that drift hits every contender alike
        for name, (go, _) in contenders.items():
            samples[name].append(_img_s(go, steps))
    medians = {name: statistics.median(v) for name, v in samples.items()}
    profiles = {}
    for name, (_, profile) in contenders.items():
        micros = profile(steps)
        profiles[name] = {part: us / steps / 1e3 for part, us in micros.items()}  # ms per batch
    report = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "jax": jax.__version__, "config": config, **shape, "batch": BATCH,
              "tokens": (IMAGE // PATCH) ** 2, "rounds": rounds, "steps": steps,
              "median_img_s": medians, "samples_img_s": samples,
              "profile_ms_per_batch": profiles}
    if with_torch:
        import torch
        report["torch"] = torch.__version__
        reference = medians["PyTorch eager"]
        report["ratio_to_torch"] = {n: v / reference for n, v in medians.items()}
    write_json(out, report)
    write_bytes_atomic(out.with_suffix(".md"), markdown(report).encode())
    return report


def markdown(report: dict) -> str:
    names = list(report["median_img_s"])
    lines = [f"# Forward pass of {report['config']} (width {report['width']}, depth "
             f"{report['depth']}, {report['tokens']} tokens, batch {report['batch']})", "",
             f"{report['machine']}, {report['cores']} cores, jax {report['jax']}"
             + (f", torch {report['torch']}" if "torch" in report else "") + ". Median of "
             f"{report['rounds']} alternated rounds of {report['steps']} batches.", "",
             "| contender | images/s | vs PyTorch |", "|---|---|---|"]
    ratios = report.get("ratio_to_torch", {})
    for name in names:
        ratio = f"{ratios[name]:.2f}x" if name in ratios else "-"
        lines.append(f"| {name} | {report['median_img_s'][name]:.0f} | {ratio} |")
    lines += ["", "Profiled time per batch (ms) and its share, by part of the model:", "",
              "| part | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    totals = {n: sum(report["profile_ms_per_batch"][n].values()) or 1.0 for n in names}
    for part in PARTS:
        cells = [f"{report['profile_ms_per_batch'][n][part]:.2f} "
                 f"({100 * report['profile_ms_per_batch'][n][part] / totals[n]:.0f}%)"
                 for n in names]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    lines.append("| all | " + " | ".join(f"{totals[n]:.2f}" for n in names) + " |")
    lines += ["", "vitlib's parts sum the XLA ops' own times (both cores' threads together); "
              "PyTorch's sum its profiler's CPU time per scope. The two are read as shares, "
              "side by side; the images/s row is the comparison of speed.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="C1", choices=sorted(CONFIGS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="batches per round and contender")
    parser.add_argument("--no-torch", action="store_true",
                        help="vitlib only (PyTorch is the bench extra; tests run without it)")
    parser.add_argument("--out", default="results/benchmarks/cpu_forward_profile.json")
    args = parser.parse_args(argv)
    for field in ("rounds", "steps"):
        if getattr(args, field) < 1:
            parser.error(f"--{field}: must be >= 1, got {getattr(args, field)}")
    report = run(args.config, args.rounds, args.steps, not args.no_torch, Path(args.out))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
