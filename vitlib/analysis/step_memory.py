"""Memory and FLOPs of the whole compiled training step per device: the step ``fit`` runs,
AOT-compiled for abstract inputs on virtual CPU devices (XLA's memory analysis: arguments +
outputs - aliased + temporaries), its temporaries split by cause, the encoder's activation memory,
and the same step run for real to check the plan against the process's peak memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from vitlib.analysis.state_memory import OPTIMIZER_NAMES, bytes_by_dtype
from vitlib.models import ViT, vit_config
from vitlib.optim.chain import make_sweepable_optimizer
from vitlib.train.sharding import batch_sharding, make_mesh, replicated, state_shardings
from vitlib.train.steps import init_state, loss_value, make_train_step

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
    code = ("import json, sys; from vitlib.analysis.step_memory import compiled_plan; "
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
