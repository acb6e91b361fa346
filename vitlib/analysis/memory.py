"""Memory of parameters and optimizer state, from shapes alone (``jax.eval_shape``: nothing is
allocated, so ViT-G/14 is planned on a laptop), and of the whole compiled training step.

    python -m vitlib.analysis.memory --variant G/14 --optimizer adafactor_bv [--json]
    python -m vitlib.analysis.memory --variant G/14 --optimizer adafactor_bv --batch-per-device 32 \
        --devices 8 --fsdp --remat --compiled --json

Optimizer state is that of the whole ``make_optimizer`` chain. Expected for big ViTs relative to
fp32 parameter bytes: ``adam`` 2.0x, ``adam_hp`` 1.5x (bf16 first moment), ``adafactor_bv``
~0.5x (bf16 momentum + factored statistics), stock ``adafactor`` ~0x (no momentum).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from vitlib.models import ViT, vit_config
from vitlib.optim.chain import make_optimizer, make_sweepable_optimizer
from vitlib.train.sharding import batch_sharding, make_mesh, replicated, state_shardings
from vitlib.train.steps import init_state, loss_value, make_train_step

OPTIMIZER_NAMES = ("adam", "adam_hp", "adafactor_bv", "adafactor")


def bytes_by_dtype(tree) -> dict[str, int]:
    """Bytes of every array (or ShapeDtypeStruct) leaf of ``tree``, summed per dtype name."""
    totals: dict[str, int] = defaultdict(int)
    for leaf in jax.tree_util.tree_leaves(tree):
        dtype = jnp.dtype(leaf.dtype)
        totals[dtype.name] += int(np.prod(leaf.shape, dtype=np.int64)) * dtype.itemsize
    return dict(sorted(totals.items()))


def param_shapes(variant: str, image_size: int = 224, num_classes: int = 0, channels: int = 3,
                 **model_overrides):
    """Abstract parameter tree of a variant (ShapeDtypeStruct leaves; nothing allocated)."""
    cfg = vit_config(variant, image_size=image_size, num_classes=num_classes, **model_overrides)
    images = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
    return jax.eval_shape(lambda x: ViT(cfg).init(jax.random.PRNGKey(0), x), images)["params"]


def optimizer_memory(variant: str, optimizer: str, image_size: int = 224, num_classes: int = 0,
                     **model_overrides) -> dict:
    """Parameter and optimizer-state bytes (total and per dtype) of ``variant``/``optimizer``."""
    if optimizer not in OPTIMIZER_NAMES:
        raise ValueError(f"optimizer: {optimizer!r} is not allowed; choose one of "
                         f"{list(OPTIMIZER_NAMES)}")
    params = param_shapes(variant, image_size, num_classes, **model_overrides)
    tx = make_optimizer(dict(optimizer=optimizer, lr=1e-3, total_steps=1))
    state = jax.eval_shape(tx.init, params)
    param_by_dtype, state_by_dtype = bytes_by_dtype(params), bytes_by_dtype(state)
    param_bytes, state_bytes = sum(param_by_dtype.values()), sum(state_by_dtype.values())
    return {
        "variant": variant,
        "optimizer": optimizer,
        "num_params": sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params)),
        "param_bytes": param_bytes,
        "param_bytes_by_dtype": param_by_dtype,
        "opt_state_bytes": state_bytes,
        "opt_state_bytes_by_dtype": state_by_dtype,
        "opt_state_over_params": state_bytes / param_bytes,
    }


# A plan is compiled but never run: skipping LLVM's code optimisation halves the compile time,
# while XLA's HLO passes and buffer assignment, which decide memory, stay the same (tested).
PLAN_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def _train_step(variant, optimizer, devices, fsdp, remat, image_size, num_classes, dtype,
                scan, remat_policy, model_overrides=None):
    """fit's step for a variant: (jitted step, state factory, state shardings, mesh, hyper),
    ``hyper`` being the step's lr and weight-decay inputs (as ``fit`` passes them)."""
    if optimizer not in OPTIMIZER_NAMES:
        raise ValueError(f"optimizer: {optimizer!r} is not allowed; choose one of "
                         f"{list(OPTIMIZER_NAMES)}")
    if len(jax.devices()) < devices:
        raise ValueError(f"devices: {devices} requested but JAX has {len(jax.devices())}; set "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before "
                         f"JAX starts, or use plan_in_subprocess()")
    cfg = vit_config(variant, image_size=image_size, num_classes=num_classes, dtype=dtype,
                     scan=scan, remat_policy=remat_policy if remat else "none",
                     **(model_overrides or {}))
    model = ViT(cfg)
    optimizer = make_sweepable_optimizer(dict(
        optimizer=optimizer, lr=1e-3, total_steps=10, grad_clip_norm=1.0,
        weight_decay=[(r"^head/", 3.0), (r".*", 0.03)]))
    tx = optimizer.tx
    mesh = make_mesh(jax.devices()[:devices])
    make_state = lambda: init_state(model, tx, (image_size, image_size, 3), 0)  # noqa: E731
    shardings = state_shardings(jax.eval_shape(make_state), mesh, fsdp=fsdp)
    step = jax.jit(make_train_step(model, tx, "sigmoid"), in_shardings=(shardings, None, None),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    hyper = {"lr": np.float32(1e-3), "weight_decay": optimizer.weight_decay_rates(
        jax.eval_shape(make_state).params)}
    return step, make_state, shardings, mesh, hyper


def _batch(batch: int, image_size: int, mesh, concrete: bool):
    make = (lambda shape, dtype: jax.device_put(jnp.zeros(shape, dtype), batch_sharding(mesh))) \
        if concrete else (lambda shape, dtype: jax.ShapeDtypeStruct(
            shape, dtype, sharding=batch_sharding(mesh)))
    return {"image": make((batch, image_size, image_size, 3), jnp.float32),
            "label": make((batch,), jnp.int32)}


def compiled_plan(variant: str, optimizer: str, batch_per_device: int, devices: int,
                  fsdp: bool = False, remat: bool = False, image_size: int = 224,
                  num_classes: int = 1000, dtype: str = "float32", scan: bool = True,
                  remat_policy: str = "nothing_saveable", model: Optional[dict] = None) -> dict:
    """Per-device memory of the real training step, from XLA's analysis of its compiled program.

    The step is ``fit``'s (model, optimizer chain, shardings, remat/scan), lowered for abstract
    inputs on ``devices`` virtual devices and compiled; nothing is allocated. Total =
    arguments + outputs - aliased (donated state) + temporaries. Needs ``jax.devices()`` to
    hold at least ``devices`` devices (``plan_in_subprocess`` arranges that). ``model``
    overrides fields of the variant's ``ViTConfig`` (or gives a whole shape with ``variant``
    None): ``{"width": 1408, "depth": 40, "mlp_dim": 6144, "num_heads": 16, "patch_size": 14,
    "pool_type": "tok", "pad_tokens_to": 128}``.
    """
    step, make_state, shardings, mesh, hyper = _train_step(
        variant, optimizer, devices, fsdp, remat, image_size, num_classes, dtype, scan,
        remat_policy, model)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        jax.eval_shape(make_state), shardings)
    batch = _batch(devices * batch_per_device, image_size, mesh, concrete=False)
    stats = step.lower(abstract, batch, hyper).compile(PLAN_COMPILER_OPTIONS).memory_analysis()
    args, outs = stats.argument_size_in_bytes, stats.output_size_in_bytes
    alias, temp = stats.alias_size_in_bytes, stats.temp_size_in_bytes
    return {"variant": variant, "optimizer": optimizer, "batch_per_device": batch_per_device,
            "devices": devices, "fsdp": fsdp, "remat": remat, "dtype": dtype,
            "image_size": image_size, "model": dict(model or {}),
            "argument_bytes": args, "output_bytes": outs,
            "alias_bytes": alias, "temp_bytes": temp, "total_bytes": args + outs - alias + temp}


def step_flops(variant: Optional[str], optimizer: str, batch_per_device: int,
               remat: bool = False, image_size: int = 224, num_classes: int = 1000,
               dtype: str = "float32", model: Optional[dict] = None) -> dict:
    """FLOPs of one training step on one device, from XLA's cost analysis.

    XLA counts a loop body once whatever its trip count, so the scanned step's analysis misses
    all layers but one. The step is therefore compiled unrolled at depth 1 and 2 (identical
    blocks): FLOPs(depth) = F(1) + (depth - 1) * (F(2) - F(1)), exact for a stack of equal
    blocks and cheap whatever the depth.
    """
    cfg = vit_config(variant, image_size=image_size, **(model or {}))
    counts = {}
    for depth in (1, 2):
        step, make_state, shardings, mesh, hyper = _train_step(
            variant, optimizer, 1, False, remat, image_size, num_classes, dtype, False,
            "nothing_saveable", {**(model or {}), "depth": depth})
        abstract = jax.eval_shape(make_state)
        batch = _batch(batch_per_device, image_size, mesh, concrete=False)
        cost = step.lower(abstract, batch, hyper).compile(PLAN_COMPILER_OPTIONS).cost_analysis()
        counts[depth] = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
    per_block = counts[2] - counts[1]
    return {"depth": cfg.depth, "flops_per_block": per_block,
            "step_flops": counts[1] + (cfg.depth - 1) * per_block}


def temporaries_breakdown(variant: str, optimizer: str, batch_per_device: int,
                          remat: bool = True, image_size: int = 224, num_classes: int = 1000,
                          **model) -> dict:
    """What the temporaries of the compiled training step (one device) are, by compiling the
    step's parts on their own: the loss alone (forward activations), loss + gradients (the
    gradients as outputs: backward working set as temporaries), a plain SGD step with the
    state donated (gradients become temporaries), the full step (optimizer intermediates on
    top), and the full step with bfloat16 parameters (so gradients and updates in bfloat16).

    ``rows``: one per program with its argument/output/temporary GiB; ``accounted`` is whether
    the SGD step's temporaries equal the backward working set plus one gradient tree (5%).
    """
    cfg = vit_config(variant, image_size=image_size, num_classes=num_classes, scan=True,
                     remat_policy="nothing_saveable" if remat else "none", **model)
    vit = ViT(cfg)
    images = jax.ShapeDtypeStruct((batch_per_device, image_size, image_size, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch_per_device,), jnp.int32)
    params = jax.eval_shape(lambda x: vit.init(jax.random.PRNGKey(0), x),
                            jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
                            )["params"]
    param_bytes = sum(bytes_by_dtype(params).values())

    def loss(p, x, y):
        return loss_value("sigmoid", vit.apply({"params": p}, x)[0], y)

    def sgd(p, x, y):
        grads = jax.grad(loss)(p, x, y)
        return jax.tree_util.tree_map(lambda a, g: a - 1e-3 * g, p, grads)

    def analysed(fn, donate=()):
        stats = jax.jit(fn, donate_argnums=donate).lower(params, images, labels).compile(
            PLAN_COMPILER_OPTIONS).memory_analysis()
        return {"argument_gib": stats.argument_size_in_bytes / 2 ** 30,
                "output_gib": stats.output_size_in_bytes / 2 ** 30,
                "temp_gib": stats.temp_size_in_bytes / 2 ** 30, "total_gib": None}

    rows = [{"program": "loss (forward)", **analysed(loss)},
            {"program": "loss and gradients", **analysed(jax.value_and_grad(loss))},
            {"program": "SGD step, state donated", **analysed(sgd, donate=(0,))}]
    for label, overrides in (("train step", model),
                             ("train step, bfloat16 params", {**model, "param_dtype": "bfloat16"})):
        plan = compiled_plan(variant, optimizer, batch_per_device, 1, remat=remat,
                             image_size=image_size, num_classes=num_classes, model=overrides)
        rows.append({"program": f"{label} ({optimizer})",
                     "argument_gib": plan["argument_bytes"] / 2 ** 30,
                     "output_gib": plan["output_bytes"] / 2 ** 30,
                     "temp_gib": plan["temp_bytes"] / 2 ** 30,
                     "total_gib": plan["total_bytes"] / 2 ** 30})
    by = {r["program"].split(" (")[0]: r for r in rows}
    gradients_gib = param_bytes / 2 ** 30
    backward = by["loss and gradients"]["temp_gib"]
    sgd_temp = by["SGD step, state donated"]["temp_gib"]
    step = by["train step"]
    optimizer_gib = step["temp_gib"] - sgd_temp
    half = by["train step, bfloat16 params"]
    explanation = (
        f"{variant}, {batch_per_device} images, remat={remat}: the step's "
        f"{step['temp_gib']:.2f} GiB of temporaries are the fp32 gradient tree "
        f"({gradients_gib:.2f} GiB: every gradient exists before the global-norm clip and the "
        f"update read them), the backward pass's working set ({backward:.2f} GiB; the forward "
        f"alone needs {by['loss']['temp_gib']:.2f} GiB) and the optimizer's "
        f"intermediates ({optimizer_gib:.2f} GiB). None of them grows with the batch. With "
        f"bfloat16 parameters the arguments shrink to {half['argument_gib']:.2f} GiB but the "
        f"temporaries stay {half['temp_gib']:.2f} GiB (the optimizer computes in float32): "
        f"{half['total_gib']:.2f} GiB in all instead of {step['total_gib']:.2f} GiB.")
    return {"rows": rows, "param_gib": gradients_gib, "backward_gib": backward,
            "optimizer_intermediates_gib": optimizer_gib, "explanation": explanation,
            "accounted": bool(abs(sgd_temp - (backward + gradients_gib))
                              <= 0.05 * sgd_temp)}


def encoder_activation_bytes(variant: str, tokens: int, batch: int, remat: bool = False,
                             dtype: str = "float32") -> int:
    """Temporary bytes XLA allocates for forward + backward of the encoder alone on a
    (batch, tokens, width) input: the activation memory that the sequence length drives."""
    from vitlib.models.vit import Encoder

    cfg = vit_config(variant, image_size=None)
    encoder = Encoder(depth=cfg.depth, mlp_dim=cfg.mlp_dim, num_heads=cfg.num_heads, scan=True,
                      remat_policy="nothing_saveable" if remat else "none",
                      dtype=jnp.dtype(dtype))
    x = jax.ShapeDtypeStruct((batch, tokens, cfg.width), jnp.float32)
    params = jax.eval_shape(lambda x: encoder.init(jax.random.PRNGKey(0), x), x)
    loss = lambda p, x: jnp.sum(encoder.apply(p, x).astype(jnp.float32))  # noqa: E731
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile(
        PLAN_COMPILER_OPTIONS)
    return int(compiled.memory_analysis().temp_size_in_bytes)


def _rss(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measured_step_growth(variant: str, optimizer: str, batch_size: int,
                         image_size: int = 224, remat: bool = False) -> dict:
    """Run the planned step once for real on one device and measure it (Linux only).

    Peak RSS growth during the step (VmHWM reset through /proc/self/clear_refs after the
    state and batch are allocated), next to the plan's prediction of what the step adds:
    temporaries + outputs - aliased buffers.
    """
    plan = compiled_plan(variant, optimizer, batch_size, 1, remat=remat, image_size=image_size)
    step, make_state, shardings, mesh, hyper = _train_step(
        variant, optimizer, 1, False, remat, image_size, 1000, "float32", True,
        "nothing_saveable")
    state = jax.jit(make_state, out_shardings=shardings)()
    batch = _batch(batch_size, image_size, mesh, concrete=True)
    compiled = step.lower(state, batch, hyper).compile()
    jax.block_until_ready((state, batch))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark to the current RSS
    base = _rss("VmRSS")
    state, metrics = compiled(state, batch, hyper)
    jax.block_until_ready((state, metrics))
    predicted = plan["temp_bytes"] + plan["output_bytes"] - plan["alias_bytes"]
    measured = _rss("VmHWM") - base
    return {**plan, "predicted_step_bytes": predicted, "measured_step_bytes": measured,
            "relative_error": measured / predicted - 1}


def plans_in_subprocess(plans: list[dict], devices: int, timeout: int = 1800) -> list[dict]:
    """``compiled_plan(**plan, devices=devices)`` for each plan, in one fresh process with
    ``devices`` virtual CPU devices (JAX fixes its device count when it starts)."""
    code = ("import json, sys; from vitlib.analysis.memory import compiled_plan; "
            "plans = json.loads(sys.stdin.read()); "
            f"print(json.dumps([compiled_plan(**p, devices={devices}) for p in plans]))")
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(plans),
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags.strip()})
    if out.returncode:
        raise RuntimeError(f"memory plan failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plan_in_subprocess(variant: str, optimizer: str, batch_per_device: int, devices: int,
                       **options) -> dict:
    """One ``compiled_plan`` in a fresh process with ``devices`` virtual CPU devices."""
    return plans_in_subprocess([dict(variant=variant, optimizer=optimizer,
                                     batch_per_device=batch_per_device, **options)], devices)[0]


def _gib(n: int) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.analysis.memory",
        description="Bytes of parameters and optimizer state of a ViT, from shapes only.")
    parser.add_argument("--variant", required=True, help="NAME/PATCH, e.g. G/14")
    parser.add_argument("--optimizer", required=True, choices=OPTIMIZER_NAMES)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=0,
                        help="classifier size (default 0: no head, as in paper Table 2)")
    parser.add_argument("--scan", action="store_true",
                        help="stacked (scanned) encoder parameters; changes Adafactor factoring")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    compiled = parser.add_argument_group("compiled training step (--compiled)")
    compiled.add_argument("--compiled", action="store_true",
                          help="plan the whole compiled train step per device")
    compiled.add_argument("--batch-per-device", type=int, default=32)
    compiled.add_argument("--devices", type=int, default=1, help="virtual CPU devices (mesh)")
    compiled.add_argument("--fsdp", action="store_true", help="shard params/state over devices")
    compiled.add_argument("--remat", action="store_true", help="rematerialise encoder blocks")
    compiled.add_argument("--dtype", default="float32", help="compute dtype (bfloat16, ...)")
    args = parser.parse_args(argv)
    unused = [f"--{name.replace('_', '-')}" for name in ("fsdp", "remat") if getattr(args, name)]
    unused += [f"--{name.replace('_', '-')}" for name, default in
               (("batch_per_device", 32), ("devices", 1), ("dtype", "float32"))
               if getattr(args, name) != default]
    if unused and not args.compiled:
        print(f"error: {', '.join(unused)}: only used with --compiled (the compiled step's "
              f"plan); add --compiled, or drop them for the optimizer-state report",
              file=sys.stderr)
        return 2
    if not args.compiled:
        return _report(lambda: optimizer_memory(args.variant, args.optimizer, args.image_size,
                                                args.num_classes, scan=args.scan),
                       args.json, _render_state)
    for field in ("batch_per_device", "devices"):
        if getattr(args, field) < 1:
            print(f"error: --{field.replace('_', '-')}: must be >= 1, got "
                  f"{getattr(args, field)}", file=sys.stderr)
            return 2
    # Virtual devices must be requested before JAX's CPU backend starts.
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    return _report(lambda: compiled_plan(args.variant, args.optimizer, args.batch_per_device,
                                         args.devices, args.fsdp, args.remat, args.image_size,
                                         args.num_classes or 1000, args.dtype),
                   args.json, _render_plan)


def _report(compute, as_json: bool, render) -> int:
    try:
        report = compute()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(report, indent=1) if as_json else render(report))
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _render_state(r: dict) -> str:
    return "\n".join([
        f"{r['variant']} with {r['optimizer']}: {r['num_params']:,} parameters",
        f"  parameters       {_gib(r['param_bytes']):>12}  {r['param_bytes_by_dtype']}",
        f"  optimizer state  {_gib(r['opt_state_bytes']):>12}  {r['opt_state_bytes_by_dtype']}",
        f"  state / params   {r['opt_state_over_params']:>8.3f}x"])


def _render_plan(p: dict) -> str:
    lines = [f"{p['variant']} / {p['optimizer']}: {p['devices']} devices x "
             f"{p['batch_per_device']} images, fsdp={p['fsdp']}, remat={p['remat']}"]
    for key in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "total_bytes"):
        lines.append(f"  {key:15s} {_gib(p[key]):>12} per device")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
