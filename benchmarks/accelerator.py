"""The device check: throughput, MFU and memory of the paper's training step on whatever JAX
backend is present, and the step's losses on it against the CPU's. ``make bench-accelerator``.

Per configuration (ViT with the MAP head, bf16 compute with fp32 parameters, sigmoid loss,
``adam_hp`` = Adam with a bf16 first moment, or ``adafactor_bv`` = the modified Adafactor;
the step ``fit`` runs, with its optimizer chain, clipping and decoupled decay):
- the batch per device: the largest power of two (up to ``max_batch``) whose whole compiled step
  the memory planner (``vitlib.analysis.step_memory.compiled_plan``, compiled on the CPU) puts
  within ``MEMORY_FRACTION`` of the device's memory;
- img/s per device and step time: synthetic batches already on the device, the compile excluded,
  each timed step ended by ``block_until_ready``, the median of the timed steps;
- MFU by hand: training FLOPs per image (3 x the zoo's forward FLOPs,
  ``vitlib.analysis.scaling.training_flops``; remat's recomputation not counted) x img/s / the
  device's dense bf16 peak (``vitlib.analysis.accelerators``); XLA's cost analysis of the step
  as a cross-check (a scanned step's loop body is counted once, so scanned rows take the count
  of ``step_memory.step_flops``, which compiles the step unrolled at depth 1 and 2);
- peak memory from ``device.memory_stats()`` (None on CPU, which has no such statistics) beside
  the planner's prediction, and img/s over NVIDIA JAX-Toolbox's ViT-B/16 anchor where it applies.

Rows: B/16, L/16 and g/14 (when the planner fits it) x both optimizers with remat and scan on
(the full profile's setting), and an A/B group of B/16 / ``adam_hp`` at one common batch (the
largest that every setting fits): remat on/off x scan on/off, and from remat and scan on, one
change each: cuDNN's fused attention (``model.attention='cudnn'``; planned as XLA's attention,
an upper bound) and XLA's Triton GEMM off (``--xla_gpu_enable_triton_gemm=false``); the two are
recorded as skipped, with the reason, off NVIDIA GPUs. The fastest setting is reported. On an accelerator each row
runs in a process of its own, so that the peak memory is its own and an out-of-memory error
costs only that row.

The input side: images per second the grain pipeline (decode, inception crop, flip at the
rows' resolution) makes with one worker process per host core, on synthetic ImageNet-like JPEGs
held in memory, against what each measured step consumes on the host's devices.

Correctness: a small model trained ``correctness_steps`` steps from one seed on the default
backend and, in a subprocess, on the CPU backend; the losses must agree within ``LOSS_RTOL``,
fixed here before any run: bf16 tolerance when the default backend is an accelerator, float
noise when both are the CPU. Kill and resume (``resume_check.py``): ``fit`` killed mid-run with
SIGKILL and resumed ends with the straight run's parameters, bit for bit.

``--tiny`` (automatic on CPU unless ``--full``) runs the same code at tiny sizes (a width-64,
depth-2 ViT at 32 px, 3 timed steps) in seconds; ``make test`` runs it.

    python benchmarks/accelerator.py              # full sizes on a GPU/TPU, tiny on CPU
    python benchmarks/accelerator.py --tiny --out /tmp/bench
Results: results/benchmarks/accelerator_<device>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

# On a GPU the rows run in processes of their own while this one holds the device: no process
# may take 75% of its memory up front (XLA's default), each allocates what it uses.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/input_pipeline's synthetic JPEGs

from input_pipeline import JpegsInMemory, jpegs  # noqa: E402
import resume_check  # noqa: E402
from vitlib.analysis.accelerators import ACCELERATORS, GIB  # noqa: E402
from vitlib.analysis.scaling import training_flops  # noqa: E402
from vitlib.analysis.step_memory import compiled_plan, plans_in_subprocess, step_flops  # noqa: E402
from vitlib.data.grain_pipeline import GrainInput, Preprocess  # noqa: E402
from vitlib.files import write_bytes_atomic, write_json  # noqa: E402
from vitlib.models import ViT, vit_config  # noqa: E402
from vitlib.optim.chain import make_sweepable_optimizer  # noqa: E402
from vitlib.train.sharding import make_mesh, replicated, state_shardings  # noqa: E402
from vitlib.train.steps import init_state, make_train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = ("adam_hp", "adafactor_bv")
MEMORY_FRACTION = 0.9  # of the device's usable memory the planned step may take
# Losses of the correctness run, default backend vs CPU, max relative difference over the steps;
# fixed before any run. bf16 compute on two backends rounds differently (bf16 has 8 bits of
# mantissa, ~4e-3 relative); 2e-2 leaves room for that drift to grow over the steps.
LOSS_RTOL = {"accelerator vs cpu (bf16)": 2e-2, "cpu vs cpu": 1e-6}
# NVIDIA JAX-Toolbox (ViT-B/16, 224 px, bf16, batch 512 per GPU): 11,669.52 img/s on 8 x H100
# and 7,200.38 img/s on 8 x A100, per GPU:
ANCHOR_B16 = {"h100": 11_669.52 / 8, "a100": 7_200.38 / 8}
ANCHOR_BATCH = 512
SIZES = {
    "full": dict(variants={"B/16": {}, "L/16": {}, "g/14": {}}, image_size=224,
                 num_classes=1000, warmup_steps=2, timed_steps=10, max_batch=1024,
                 fit_batches=(8, 16), ab_variant="B/16", correctness_steps=50,
                 input=dict(images=512, shapes=((375, 500), (500, 375), (350, 400)), batch=256,
                            warmup_batches=2, timed_batches=12, workers=None)),
    "tiny": dict(variants={"tiny": dict(width=64, depth=2, num_heads=2, mlp_dim=256,
                                        patch_size=8)},
                 image_size=32, num_classes=10, warmup_steps=1, timed_steps=3, max_batch=16,
                 fit_batches=(2, 4), ab_variant="tiny", correctness_steps=10,
                 input=dict(images=16, shapes=((48, 64), (64, 48)), batch=8, warmup_batches=1,
                            timed_batches=3, workers=0)),
}
# The correctness model: the tiny shape in both modes (what matters is the two backends).
CORRECTNESS = dict(model=SIZES["tiny"]["variants"]["tiny"], image_size=32, num_classes=10,
                   batch=16, optimizer="adam_hp", seed=0)


# ---------------------------------------------------------------- the device

def accelerator_name(platform_name: str, kind: str):
    """The ``vitlib.analysis.accelerators`` key of a JAX device, or None when not in the table
    (H100 PCIe/NVL, H200 and other kinds have other peaks or memory)."""
    k = kind.lower()
    if platform_name == "gpu":
        if "h100" in k and not any(s in k for s in ("pcie", "nvl")):
            return "h100"
        if "a100" in k:  # 312 TFLOP/s dense bf16 in every A100 form
            return "a100"
    if platform_name == "tpu":
        if "v5 lite" in k or "v5e" in k:
            return "tpuv5e"
        if "v4" in k:
            return "tpuv4"
        if "v3" in k:  # JAX sees each TPU v3 TensorCore as one device
            return "tpuv3-core"
    return None


def matmul_peak(dtype, n: int, reps: int = 5) -> float:
    """Measured FLOP/s of an n x n x n matmul in ``dtype`` on the default device (best of
    ``reps``): the peak where no vendor peak is known."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = 0.0
    for _ in range(reps):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
    return best


def describe_device(tiny: bool) -> dict:
    device = jax.devices()[0]
    name = accelerator_name(device.platform, device.device_kind)
    stats = device.memory_stats()
    info = {"platform": device.platform, "device_kind": device.device_kind,
            "devices": jax.device_count(), "accelerator": name,
            "memory_stats": "available" if stats else
            "none: the backend keeps no memory statistics (CPU); peak memory is None"}
    if name is not None:
        acc = ACCELERATORS[name]
        info.update(peak_flops=acc.peak_flops,
                    peak_source=f"vitlib.analysis.accelerators[{name!r}]: {acc.source}")
    else:
        if device.platform == "cpu":
            peak = max(matmul_peak(jnp.float32, 1024), matmul_peak(jnp.bfloat16, 1024))
            source = "measured: the faster of an f32 and a bf16 1024^3 matmul (no vendor peak)"
        else:
            peak = matmul_peak(jnp.bfloat16, 8192)
            source = ("measured: a bf16 8192^3 matmul; device kind not in "
                      "vitlib.analysis.accelerators, so MFU is against this, not a vendor peak")
        info.update(peak_flops=peak, peak_source=source)
    if stats and stats.get("bytes_limit"):
        info.update(memory_bytes=int(stats["bytes_limit"]),
                    memory_source="device.memory_stats()['bytes_limit'] (what XLA may allocate)")
    elif name is not None:
        info.update(memory_bytes=int(ACCELERATORS[name].memory_bytes),
                    memory_source=f"vitlib.analysis.accelerators[{name!r}]")
    else:
        info.update(memory_bytes=int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")),
                    memory_source="host RAM (the CPU has no device memory)"
                    + ("; --tiny caps the batch at max_batch" if tiny else ""))
    slug = name or re.sub(r"[^a-z0-9]+", "-", device.device_kind.lower()).strip("-") or "device"
    info["slug"] = slug + ("-tiny" if tiny else "")
    return info


# ---------------------------------------------------------------- one configuration

def model_config(spec: dict):
    return vit_config(spec["variant"] if spec["variant"] != "tiny" else None,
                      image_size=spec["image_size"], num_classes=spec["num_classes"],
                      pool_type="map", dtype="bfloat16", param_dtype="float32",
                      scan=spec["scan"], remat_policy="nothing_saveable" if spec["remat"]
                      else "none", attention=spec.get("attention", "xla"), **spec["model"])


def build_step(spec: dict):
    """fit's step (as ``vitlib.train.programs`` builds it) on the first device: (jitted step,
    state, hyper-parameter inputs, mesh)."""
    model = ViT(model_config(spec))
    optimizer = make_sweepable_optimizer(dict(
        optimizer=spec["optimizer"], lr=1e-3, total_steps=1000, grad_clip_norm=1.0,
        weight_decay=[(r"^head/", 3.0), (r".*", 0.03)]))
    mesh = make_mesh(jax.devices()[:1])
    size = spec["image_size"]
    seed = spec.get("seed", 0)
    make_state = lambda: init_state(model, optimizer.tx, (size, size, 3), seed)  # noqa: E731
    shardings = state_shardings(jax.eval_shape(make_state), mesh)
    state = jax.jit(make_state, out_shardings=shardings)()
    step = jax.jit(make_train_step(model, optimizer.tx, "sigmoid"),
                   in_shardings=(shardings, None, None),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    hyper = {"lr": np.float32(1e-3), "weight_decay": optimizer.weight_decay_rates(state.params)}
    return step, state, hyper, mesh


def synthetic_batch(spec: dict, batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    size = spec["image_size"]
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    # Learnable labels (the brightness band of the image), so losses move in the correctness run.
    labels = np.clip(((images.mean((1, 2, 3)) + 0.02) * spec["num_classes"] / 0.04)
                     .astype(np.int32), 0, spec["num_classes"] - 1)
    return {"image": images, "label": labels}


def measure(spec: dict) -> dict:
    """Compile the step (timed apart), run warm-up steps, time ``timed_steps`` steps."""
    step, state, hyper, mesh = build_step(spec)
    batch = jax.device_put(synthetic_batch(spec, spec["batch"]), jax.devices()[0])
    start = time.perf_counter()
    compiled = step.lower(state, batch, hyper).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    for _ in range(spec["warmup_steps"]):
        state, metrics = compiled(state, batch, hyper)
    jax.block_until_ready((state, metrics))
    times = []
    for _ in range(spec["timed_steps"]):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, hyper)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
        raise FloatingPointError(f"loss {loss} after {spec['warmup_steps'] + len(times)} steps")
    stats = jax.devices()[0].memory_stats()
    return {"step_times_s": times, "compile_s": compile_s, "final_loss": loss,
            "xla_step_flops": float(cost["flops"]) if cost and "flops" in cost else None,
            "peak_bytes": int(stats["peak_bytes_in_use"]) if stats else None}


def train_losses(spec: dict) -> list[float]:
    """The loss of each of ``steps`` steps from ``seed`` on the default backend."""
    step, state, hyper, _ = build_step(spec)
    losses = []
    for i in range(spec["steps"]):
        batch = synthetic_batch(spec, spec["batch"], seed=1000 + i)
        state, metrics = step(state, batch, hyper)
        losses.append(float(metrics["loss"]))
    return losses


WORKERS = {"measure": measure, "train_losses": train_losses}


def in_subprocess(task: str, spec: dict, env: dict | None = None, timeout: int = 1200) -> dict:
    """``WORKERS[task](spec)`` in a fresh process; {"error": ...} when it fails."""
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", task],
                             input=json.dumps(spec), capture_output=True, text=True,
                             timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        return {"error": f"exit {out.returncode}: {out.stderr.strip()[-600:]}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------- the memory planner

_PLANS: dict = {}  # each plan once per process: the A/B group repeats plans of the main rows


def plans_for(specs_batches) -> list[dict]:
    """``compiled_plan`` of each (spec, batch per device), compiled on the CPU (in this process
    when the backend is the CPU, else in a CPU subprocess)."""
    plans = [dict(variant=None if s["variant"] == "tiny" else s["variant"],
                  optimizer=s["optimizer"], batch_per_device=b, remat=s["remat"], scan=s["scan"],
                  image_size=s["image_size"], num_classes=s["num_classes"], dtype="bfloat16",
                  model={"pool_type": "map", **s["model"]}) for s, b in specs_batches]
    keys = [json.dumps(p, sort_keys=True) for p in plans]
    todo = list({k: p for k, p in zip(keys, plans) if k not in _PLANS}.items())
    if todo and jax.default_backend() == "cpu":
        done = [compiled_plan(**p, devices=1) for _, p in todo]
    elif todo:
        done = plans_in_subprocess([p for _, p in todo], devices=1, timeout=3600)
    _PLANS.update(zip([k for k, _ in todo], done if todo else []))
    return [_PLANS[k] for k in keys]


def plan_batches(specs: list[dict], memory_bytes: int, max_batch: int, fit_batches) -> list:
    """Each spec's plan (``compiled_plan``) at the largest power-of-two batch <= ``max_batch``
    that fits ``MEMORY_FRACTION`` x ``memory_bytes``; None where not even batch 1 fits. The
    step's memory is affine in the batch: two small plans give the line, the chosen batch is
    planned again (and halved while it does not fit)."""
    budget = MEMORY_FRACTION * memory_bytes
    plan = plans_for
    top = plan([(s, max_batch) for s in specs])
    chosen = [max_batch if p["total_bytes"] <= budget else None for p in top]
    todo = [i for i, c in enumerate(chosen) if c is None]
    if todo:
        small = plan([(specs[i], b) for i in todo for b in fit_batches])
        for n, i in enumerate(todo):
            (b1, b2), (p1, p2) = fit_batches, small[2 * n: 2 * n + 2]
            slope = (p2["total_bytes"] - p1["total_bytes"]) / (b2 - b1)
            fits = (budget - p1["total_bytes"]) / max(slope, 1.0) + b1
            chosen[i] = 2 ** int(np.floor(np.log2(fits))) if fits >= 1 else 0
    result = list(top)
    while True:  # verify the extrapolated batches; halve those that do not fit
        check = [i for i, c in enumerate(chosen) if c and c != result[i]["batch_per_device"]]
        if not check:
            break
        for i, p in zip(check, plan([(specs[i], chosen[i]) for i in check])):
            result[i] = p
            if p["total_bytes"] > budget:
                chosen[i] //= 2
    return [p if c else None for p, c in zip(result, chosen)]


# ---------------------------------------------------------------- the run

# XLA flag of the Triton GEMM A/B: XLA:GPU's GEMM fusions through Triton (on by default) or
# cuBLAS for every matmul.
TRITON_GEMM_OFF = "--xla_gpu_enable_triton_gemm=false"


def configurations(size: dict) -> list[dict]:
    """The main rows (each model x optimizer, remat and scan on, XLA attention, XLA's default
    flags) and the A/B group on ``ab_variant`` / ``adam_hp``: remat x scan, then from remat and
    scan on one change at a time: cuDNN's fused attention, Triton's GEMM off."""
    base = dict(image_size=size["image_size"], num_classes=size["num_classes"],
                warmup_steps=size["warmup_steps"], timed_steps=size["timed_steps"],
                attention="xla", xla_flags="")
    rows = [dict(base, group="main", variant=v, model=m, optimizer=o, remat=True, scan=True)
            for v, m in size["variants"].items() for o in OPTIMIZERS]
    ab = dict(base, group="A/B", variant=size["ab_variant"],
              model=size["variants"][size["ab_variant"]], optimizer="adam_hp")
    rows += [dict(ab, remat=r, scan=s) for r in (True, False) for s in (True, False)]
    rows += [dict(ab, remat=True, scan=True, attention="cudnn"),
             dict(ab, remat=True, scan=True, xla_flags=TRITON_GEMM_OFF)]
    return rows


def not_on_this_device(spec: dict, device: dict, isolate: bool):
    """Why a row cannot run here, or None."""
    if spec["attention"] == "cudnn" and device["platform"] != "gpu":
        return "cuDNN attention needs an NVIDIA GPU"
    if spec["xla_flags"] and device["platform"] != "gpu":
        return f"{spec['xla_flags']} is an XLA:GPU flag"
    if spec["xla_flags"] and not isolate:
        return "XLA flags need a process of their own"
    return None


def setting(row: dict) -> str:
    """A row's A/B setting in words."""
    return (f"remat {'on' if row['remat'] else 'off'}, scan {'on' if row['scan'] else 'off'}, "
            f"{row['attention']} attention"
            f"{', ' + row['xla_flags'] if row['xla_flags'] else ''}")


def best_setting(rows: list[dict]):
    """The A/B row with the most img/s (the setting the full profile should use), or None."""
    done = [r for r in rows if r["group"] == "A/B" and "img_per_s_per_device" in r]
    if not done:
        return None
    best = max(done, key=lambda r: r["img_per_s_per_device"])
    return {"setting": setting(best), "img_per_s_per_device": best["img_per_s_per_device"],
            "over_each": {setting(r): best["img_per_s_per_device"] / r["img_per_s_per_device"]
                          for r in done if r is not best}}


def run_rows(specs: list[dict], device: dict, size: dict, isolate: bool) -> list[dict]:
    plans = plan_batches(specs, device["memory_bytes"], size["max_batch"], size["fit_batches"])
    ab = [i for i, s in enumerate(specs) if s["group"] == "A/B"]
    if ab and all(plans[i] for i in ab):  # the A/B group at one batch: the smallest planned
        batch = min(plans[i]["batch_per_device"] for i in ab)
        for i, p in zip(ab, plans_for([(specs[i], batch) for i in ab])):
            plans[i] = p
    measured: dict = {}  # a configuration measured once (the A/B group repeats a main row)
    rows = []
    for spec, plan in zip(specs, plans):
        cfg = model_config(spec)
        row = {key: spec[key] for key in ("group", "variant", "optimizer", "remat", "scan",
                                          "attention", "xla_flags", "image_size",
                                          "num_classes")}
        row.update(model={k: getattr(cfg, k) for k in ("width", "depth", "mlp_dim",
                                                       "num_heads", "patch_size")},
                   pool_type="map", dtype="bfloat16", param_dtype="float32")
        skipped = not_on_this_device(spec, device, isolate)
        if plan is None or skipped:
            rows.append({**row, "skipped": skipped or f"the planner fits no batch in "
                         f"{MEMORY_FRACTION} x {device['memory_bytes'] / GIB:.1f} GiB"})
            continue
        spec = {**spec, "batch": plan["batch_per_device"]}
        key = tuple(spec[k] for k in ("variant", "optimizer", "remat", "scan", "attention",
                                      "xla_flags", "batch"))
        if key in measured:
            result = {**measured[key], "same_measurement_as": "main"}
        elif isolate:
            flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), spec["xla_flags"]) if f)
            result = in_subprocess("measure", spec, env={"XLA_FLAGS": flags} if flags else None)
        else:
            try:
                result = measure(spec)
            except Exception as err:  # noqa: BLE001 - the row records it, the rest still run
                result = {"error": f"{type(err).__name__}: {err}"}
        measured.setdefault(key, result)
        row.update(batch_per_device=spec["batch"], planned_bytes=int(plan["total_bytes"]))
        if "error" in result:
            rows.append({**row, **result})
            print(f"{spec['variant']:6s} {spec['optimizer']:12s} failed: {result['error'][-200:]}",
                  flush=True)
            continue
        step_s = statistics.median(result["step_times_s"])
        images_per_s = spec["batch"] / step_s
        flops_per_image = float(training_flops(cfg, spec["image_size"], 1))
        anchor = ANCHOR_B16.get(device["accelerator"]) if spec["variant"] == "B/16" else None
        peak = result["peak_bytes"]
        row.update(
            img_per_s_per_device=images_per_s, step_time_s=step_s,
            step_times_s=result["step_times_s"], compile_s=result["compile_s"],
            final_loss=result["final_loss"], train_flops_per_image=flops_per_image,
            peak_flops=device["peak_flops"],
            mfu=flops_per_image * images_per_s / device["peak_flops"],
            xla_step_flops=result["xla_step_flops"],
            peak_bytes=peak, peak_over_planned=peak / plan["total_bytes"] if peak else None,
            same_measurement_as=result.get("same_measurement_as"), anchor_img_per_s=anchor,
            over_anchor=images_per_s / anchor if anchor else None,
            anchor_note=(f"JAX-Toolbox's batch is {ANCHOR_BATCH} per GPU"
                         if anchor and spec["batch"] != ANCHOR_BATCH else None))
        rows.append(row)
        print(f"{spec['group']:4s} {spec['variant']:6s} {spec['optimizer']:12s} "
              f"remat={spec['remat']!s:5s} scan={spec['scan']!s:5s} {spec['attention']:5s} "
              f"{spec['xla_flags'] or '':36s} batch {spec['batch']:5d}: "
              f"{images_per_s:10.1f} img/s, {step_s * 1e3:8.2f} ms/step, MFU {row['mfu']:.3f}",
              flush=True)
    cross_check_flops(rows)
    return rows


def cross_check_flops(rows: list[dict]) -> None:
    """XLA's FLOPs per image beside the zoo's. XLA counts a loop body once, so a scanned row
    takes the count of its unscanned twin (same model, optimizer, remat) when one was run, else
    ``step_memory.step_flops`` (the step compiled unrolled at depth 1 and 2)."""
    done = [r for r in rows if "img_per_s_per_device" in r]
    unscanned = {(r["variant"], r["optimizer"], r["remat"]): r["xla_step_flops"] / r[
        "batch_per_device"] for r in done if not r["scan"] and r["xla_step_flops"]}
    for r in done:
        key = (r["variant"], r["optimizer"], r["remat"])
        if not r["scan"]:
            xla, source = unscanned.get(key), "the row's program"
        elif key in unscanned:
            xla, source = unscanned[key], "the unscanned row of the same model and remat"
        else:
            xla = step_flops(
                None if r["variant"] == "tiny" else r["variant"], r["optimizer"],
                r["batch_per_device"], remat=r["remat"], image_size=r["image_size"],
                num_classes=r["num_classes"], dtype="bfloat16",
                model={"pool_type": "map", **r["model"]})["step_flops"] / r["batch_per_device"]
            source = "step_memory.step_flops (unrolled at depth 1 and 2)"
            unscanned[key] = xla
        r.update(xla_flops_per_image=xla, xla_flops_source=source,
                 xla_over_zoo=xla / r["train_flops_per_image"] if xla else None)


def correctness(steps: int) -> dict:
    spec = dict(CORRECTNESS, variant="tiny", remat=False, scan=False, steps=steps)
    both_cpu = jax.default_backend() == "cpu"
    label = "cpu vs cpu" if both_cpu else "accelerator vs cpu (bf16)"
    device = train_losses(spec)
    cpu = in_subprocess("train_losses", spec, env={"JAX_PLATFORMS": "cpu"})
    if isinstance(cpu, dict):
        return {"error": cpu["error"], "tolerance_kind": label, "rtol": LOSS_RTOL[label]}
    rel = [abs(a - b) / abs(b) for a, b in zip(device, cpu)]
    return {"model": spec["model"], "image_size": spec["image_size"], "batch": spec["batch"],
            "optimizer": spec["optimizer"], "dtype": "bfloat16", "seed": spec["seed"],
            "steps": steps, "backend": jax.default_backend(), "losses_default": device,
            "losses_cpu": cpu, "max_rel_diff": max(rel), "tolerance_kind": label,
            "rtol": LOSS_RTOL[label], "agree": bool(max(rel) <= LOSS_RTOL[label])}


def input_side(spec: dict, image_size: int) -> dict:
    """Images per second the grain pipeline makes on this host (decode, inception crop, flip at
    ``image_size``; synthetic ImageNet-like JPEGs in memory, so no disk): one worker process per
    core (``workers=None``), each making whole batches; 0 workers: threads in this process."""
    cores = os.cpu_count() or 1
    workers = cores if spec["workers"] is None else spec["workers"]
    source = JpegsInMemory(jpegs(spec["images"], seed=0, shapes=spec["shapes"]))
    pipeline = GrainInput(source, spec["batch"], seed=0, preprocess=Preprocess(image_size),
                          workers=workers, threads=1 if workers else cores)
    stream = pipeline.stream(0, spec["warmup_batches"] + spec["timed_batches"])
    try:
        for _ in range(spec["warmup_batches"]):  # worker start-up and first decodes
            next(stream)
        start = time.perf_counter()
        for _ in range(spec["timed_batches"]):
            _, batch, _ = next(stream)
        seconds = time.perf_counter() - start
    finally:
        stream.close()
    assert batch["image"].shape == (spec["batch"], image_size, image_size, 3)
    return {"img_per_s": spec["batch"] * spec["timed_batches"] / seconds, "cores": cores,
            "workers": workers, "threads_per_process": 1 if workers else cores,
            "batch": spec["batch"], "timed_batches": spec["timed_batches"],
            "image_size": image_size, "decoder": Preprocess(image_size).decoder,
            "jpeg_shapes": [list(s) for s in spec["shapes"]]}


def feeding(rows: list[dict], supply: dict, devices: int) -> list[dict]:
    """Per measured row: what the step consumes on this host's ``devices`` against what the
    pipeline makes."""
    out = []
    for r in rows:
        if "img_per_s_per_device" not in r:
            continue
        demand = r["img_per_s_per_device"] * devices
        out.append({"group": r["group"], "variant": r["variant"], "optimizer": r["optimizer"],
                    "setting": setting(r), "demand_img_per_s": demand,
                    "supply_over_demand": supply["img_per_s"] / demand})
    return out


def _cell(text: str) -> str:
    return " ".join(text[-120:].replace("|", "/").split())


def markdown(report: dict) -> str:
    d = report["device"]
    lines = [f"# Device check: {d['device_kind']} ({d['platform']})", "",
             f"`python benchmarks/accelerator.py{' --tiny' if report['tiny'] else ''}`, "
             f"{report['date']}; jax {report['jax']}, jaxlib {report['jaxlib']}, "
             f"XLA_FLAGS `{report['xla_flags'] or '(none)'}`.", "",
             f"- Accelerator: {d['accelerator'] or 'not in vitlib.analysis.accelerators'}; "
             f"peak {d['peak_flops'] / 1e12:.3g} TFLOP/s ({d['peak_source']}).",
             f"- Memory planned against: {d['memory_bytes'] / GIB:.1f} GiB "
             f"({d['memory_source']}) x {MEMORY_FRACTION}.",
             f"- Peak memory: {d['memory_stats']}; scope: {d['peak_bytes_scope']}.",
             f"- ViT with MAP head, bf16 compute, fp32 parameters, sigmoid loss, "
             f"{report['image_size']} px; median of {report['timed_steps']} timed steps after "
             f"the compile and {report['warmup_steps']} warm-up step(s).", "",
             "| group | model | optimizer | remat | scan | attention | XLA flags | batch/device "
             "| img/s/device | ms/step | MFU | XLA / zoo FLOPs | peak GiB | planned GiB | "
             "vs anchor |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in report["rows"]:
        if "img_per_s_per_device" not in r:
            lines.append(f"| {r['group']} | {r['variant']} | {r['optimizer']} | {r['remat']} | "
                         f"{r['scan']} | {r['attention']} | {r['xla_flags'] or '-'} | "
                         f"{r.get('batch_per_device', '-')} | "
                         f"{r.get('skipped') or 'failed: ' + _cell(r.get('error', ''))} "
                         f"| | | | | | |")
            continue
        lines.append(
            f"| {r['group']}{' (= main)' if r['same_measurement_as'] else ''} | {r['variant']} | "
            f"{r['optimizer']} | {r['remat']} | {r['scan']} | {r['attention']} | "
            f"{r['xla_flags'] or '-'} | {r['batch_per_device']} | {r['img_per_s_per_device']:.1f} | "
            f"{r['step_time_s'] * 1e3:.2f} | {r['mfu']:.3f} | {fmt(r['xla_over_zoo'], '.3f')} | "
            f"{fmt(r['peak_bytes'] and r['peak_bytes'] / GIB, '.2f')} | "
            f"{r['planned_bytes'] / GIB:.3f} | {fmt(r['over_anchor'], '.2f')} |")
    best = report.get("best_setting")
    if best:
        lines += ["", f"Fastest A/B setting: {best['setting']}, "
                      f"{best['img_per_s_per_device']:.1f} img/s per device ("
                      + "; ".join(f"{v:.2f}x {k}" for k, v in best["over_each"].items()) + ")."]
    supply = report.get("input_side")
    if supply:
        lines += ["", "## The input side", "",
                  f"The grain pipeline (decode, inception crop, flip at {supply['image_size']} px, "
                  f"`{supply['decoder']}`; synthetic JPEGs in memory) makes "
                  f"{supply['img_per_s']:.0f} img/s with {supply['workers']} worker process(es) "
                  f"on {supply['cores']} cores. Against the step on "
                  f"{report['devices_on_host']} device(s):", "",
                  "| group | model | optimizer | setting | step consumes img/s | supply / demand |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {f['group']} | {f['variant']} | {f['optimizer']} | {f['setting']} | "
                  f"{f['demand_img_per_s']:.0f} | {f['supply_over_demand']:.2f} |"
                  for f in report["feeding"]]
    c = report["correctness"]
    lines += ["", "## Correctness", ""]
    if "error" in c:
        lines.append(f"The CPU reference failed: {c['error'][-300:]}")
    else:
        lines.append(
            f"{c['steps']} steps of a width-{c['model']['width']} depth-{c['model']['depth']} "
            f"ViT ({c['optimizer']}, bf16, batch {c['batch']}, seed {c['seed']}) on "
            f"`{c['backend']}` and on the CPU: max relative loss difference "
            f"{c['max_rel_diff']:.2e}, tolerance ({c['tolerance_kind']}, fixed beforehand) "
            f"{c['rtol']:.0e}: {'agree' if c['agree'] else 'DISAGREE'}.")
    if "resume" in report:
        lines += resume_check.markdown(report["resume"])
    lines += ["", "MFU = training FLOPs per image (3 x the zoo's forward FLOPs) x img/s / peak; "
              "remat's recomputation is not counted. The anchor is NVIDIA JAX-Toolbox's ViT-B/16 "
              f"({', '.join(f'{k}: {v:.0f}' for k, v in ANCHOR_B16.items())} img/s per GPU at "
              f"batch {ANCHOR_BATCH}).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tiny", action="store_true", help="tiny sizes (default on CPU)")
    mode.add_argument("--full", action="store_true", help="full sizes even on CPU")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks",
                        help="folder for accelerator_<device>.{json,md}")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one task of the parent, its spec on stdin, its result on stdout
        print(json.dumps(WORKERS[args.worker](json.loads(sys.stdin.read()))))
        return 0
    started = time.perf_counter()
    tiny = args.tiny or (jax.default_backend() == "cpu" and not args.full)
    size = SIZES["tiny" if tiny else "full"]
    device = describe_device(tiny)
    # A process of its own per row on a GPU; a TPU admits one process at a time, so there (and
    # on the CPU) the rows share this one and the peak memory is the process's so far.
    isolate = device["platform"] == "gpu"
    device["peak_bytes_scope"] = ("the row's own process" if isolate else
                                  "this process since it started (rows share it)")
    print(f"{device['device_kind']} ({device['platform']}): accelerator "
          f"{device['accelerator'] or 'unknown (not in vitlib.analysis.accelerators)'}, peak "
          f"{device['peak_flops'] / 1e12:.3g} TFLOP/s ({device['peak_source']})", flush=True)
    rows = run_rows(configurations(size), device, size, isolate)
    supply = input_side(size["input"], size["image_size"])
    devices = jax.local_device_count()
    print(f"input side: {supply['img_per_s']:.0f} img/s from {supply['workers']} worker(s) on "
          f"{supply['cores']} cores; the step on {devices} device(s) consumes "
          + ", ".join(f"{f['variant']} {f['optimizer']}: {f['demand_img_per_s']:.0f}"
                      for f in feeding(rows, supply, devices) if f["group"] == "main"),
          flush=True)
    check = correctness(size["correctness_steps"])
    print(f"correctness: {check.get('tolerance_kind')}: max relative loss difference "
          f"{check.get('max_rel_diff', float('nan')):.2e} (rtol {check['rtol']:.0e}) -> "
          f"{'agree' if check.get('agree') else 'FAIL'}", flush=True)
    resume = resume_check.kill_and_resume("tiny" if tiny else "full",
                                          gpu=device["platform"] == "gpu")
    print("kill and resume: " + (resume["error"] if "error" in resume else
          f"killed after step {resume['killed_after_step']} of {resume['steps']}, parameters "
          f"{'identical' if resume['same_parameters'] else 'DIFFERENT'}"), flush=True)
    import jaxlib
    report = {"device": device, "tiny": tiny, "jax": jax.__version__,
              "jaxlib": jaxlib.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
              "image_size": size["image_size"], "warmup_steps": size["warmup_steps"],
              "timed_steps": size["timed_steps"], "memory_fraction": MEMORY_FRACTION,
              "rows": rows, "best_setting": best_setting(rows), "input_side": supply,
              "devices_on_host": devices, "feeding": feeding(rows, supply, devices),
              "correctness": check, "resume": resume,
              "wall_s": time.perf_counter() - started}
    stem = args.out / f"accelerator_{device['slug']}"
    write_json(stem.with_suffix(".json"), report)
    write_bytes_atomic(stem.with_suffix(".md"), markdown(report).encode())
    print(f"{time.perf_counter() - started:.1f} s; results: {stem}.json, {stem}.md")
    return 0 if check.get("agree") and resume.get("same_parameters") else 1


if __name__ == "__main__":
    sys.exit(main())
