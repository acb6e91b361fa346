"""The jitted pieces of training: state, losses, the train step, evaluation and features.

``make_train_step`` is the one step ``fit`` runs (and what the benchmarks and the memory planner
measure): forward, loss, gradients, the optax chain, parameter update, all in one XLA program
with the input state donated.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vitlib.train import compile_cache

compile_cache.enable()  # before anything compiles: see vitlib.train.compile_cache

LOSSES = ("softmax", "sigmoid")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def init_state(model, tx, image_shape, seed: int) -> TrainState:
    """Parameters from ``seed`` and the optimizer state; ``image_shape`` is (H, W, C)."""
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, *image_shape)))["params"]
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params))


def loss_value(kind: str, logits: jax.Array, labels: jax.Array,
               label_smoothing: float = 0.0) -> jax.Array:
    """Mean over the batch: softmax cross-entropy, or sigmoid cross-entropy summed over classes
    (the paper's loss on multi-label upstream data) against one-hot targets, optionally smoothed
    towards the uniform distribution by ``label_smoothing``. ``labels`` are class ids [B], or
    multi-hot targets [B, classes] (multi-label data; softmax then spreads each example's
    target evenly over its labels)."""
    check_loss(kind, label_smoothing)
    logits = logits.astype(jnp.float32)
    if labels.ndim == logits.ndim:
        targets = labels.astype(jnp.float32)
        if kind == "softmax":
            targets = targets / jnp.maximum(targets.sum(-1, keepdims=True), 1.0)
    elif kind == "softmax" and not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    else:
        targets = jax.nn.one_hot(labels, logits.shape[-1])
    targets = optax.smooth_labels(targets, label_smoothing)
    if kind == "softmax":
        return optax.softmax_cross_entropy(logits, targets).mean()
    return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1).mean()


def check_loss(kind: str, label_smoothing: float = 0.0) -> None:
    """Raises ValueError naming the field when the loss or its smoothing is not allowed."""
    if kind not in LOSSES:
        raise ValueError(f"loss: {kind!r} is not allowed; choose one of {list(LOSSES)}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing: {label_smoothing!r} is not allowed; use a number in "
                         f"[0, 1)")


def resize(images: jax.Array, size: int) -> jax.Array:
    """Bilinear resize of square NHWC images to ``size`` (a no-op at the native size)."""
    n, h, _, c = images.shape
    if h == size:
        return images
    return jax.image.resize(images, (n, size, size, c), "bilinear")


def _check_micro_batches(micro_batches) -> None:
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
        raise ValueError(f"micro_batches: {micro_batches!r} is not allowed; use an integer >= 1")


CPU_MICRO_BATCH = 32  # examples per device; measured best on 2 cores (benchmarks/NOTES.md)
# Forward-only passes (evaluation, features) keep no activations for a backward pass, so larger
# slices fit the caches: ~250 examples measured fastest for Pico/7 on 2 cores (2x one slice).
CPU_EVAL_MICRO_BATCH = 250


def micro_batches_for(batch_size: int, micro_batch_size: int, devices: int,
                      platform: str | None = None, per_device: int = CPU_MICRO_BATCH) -> int:
    """How many micro-batches a step of ``batch_size`` examples runs in.

    ``micro_batch_size > 0`` asks for exactly that size (it must divide the batch, and the
    devices must divide it). ``0`` is automatic: on CPU the largest split whose micro-batches
    still hold ``CPU_MICRO_BATCH`` examples per device; on accelerators the whole batch, where
    one large step is fastest. ``per_device`` replaces ``CPU_MICRO_BATCH`` (e.g.
    ``CPU_EVAL_MICRO_BATCH`` for forward-only passes).
    """
    if isinstance(micro_batch_size, bool) or not isinstance(micro_batch_size, int) \
            or micro_batch_size < 0:
        raise ValueError(f"micro_batch_size: {micro_batch_size!r} is not allowed; use 0 "
                         f"(automatic) or a positive divisor of the batch size")
    if micro_batch_size:
        if batch_size % micro_batch_size or micro_batch_size % devices:
            raise ValueError(
                f"micro_batch_size: {micro_batch_size} is not allowed with batch size "
                f"{batch_size} on {devices} device(s); it must divide the batch size and be a "
                f"multiple of the device count")
        return batch_size // micro_batch_size
    if (platform or jax.default_backend()) != "cpu":
        return 1
    for k in range(batch_size // (per_device * devices), 1, -1):
        if batch_size % k == 0 and (batch_size // k) % devices == 0:
            return k
    return 1


def split_micro_batches(x: jax.Array, k: int) -> jax.Array:
    """(B, ...) -> (k, B/k, ...), micro-batch j holding examples j, j+k, j+2k, ...: strided, so a
    batch sharded over devices along B stays sharded along B/k inside every micro-batch."""
    size = x.shape[0]
    if size % k:
        raise ValueError(f"micro_batches: {k} does not divide the batch size {size}")
    return jnp.swapaxes(x.reshape(size // k, k, *x.shape[1:]), 0, 1)


def merge_micro_batches(x: jax.Array) -> jax.Array:
    """The inverse of ``split_micro_batches``."""
    k, m = x.shape[:2]
    return jnp.swapaxes(x, 0, 1).reshape(k * m, *x.shape[2:])


def make_train_step(model, tx: optax.GradientTransformation, loss: str,
                    micro_batches: int = 1, label_smoothing: float = 0.0) -> Callable:
    """``step(state, batch, hyperparams=None) -> (state, metrics)``; metrics: loss, grad_norm,
    param_norm. ``hyperparams`` go to ``tx.update`` as keyword arguments (the ``lr`` and
    ``weight_decay`` inputs of ``vitlib.optim.make_sweepable_optimizer``).

    With ``micro_batches = k > 1`` the batch is split into k equal slices whose gradients are
    averaged in a loop before one optimizer update: the same mean-loss gradient (up to float
    summation order), with k times smaller activations, which stay in CPU caches.
    """
    check_loss(loss, label_smoothing)
    _check_micro_batches(micro_batches)

    def loss_and_grads(params, batch):
        def compute_loss(params):
            images = resize(batch["image"], model.config.image_size)
            logits, _ = model.apply({"params": params}, images)
            return loss_value(loss, logits, batch["label"], label_smoothing)
        return jax.value_and_grad(compute_loss)(params)

    def step(state: TrainState, batch: dict, hyperparams: dict | None = None):
        if micro_batches == 1:
            value, grads = loss_and_grads(state.params, batch)
        else:
            slices = jax.tree.map(lambda x: split_micro_batches(x, micro_batches), batch)

            def accumulate(carry, micro):
                value, grads = loss_and_grads(state.params, micro)
                return jax.tree.map(jnp.add, carry, (value, grads)), None

            zeros = jax.tree.map(jnp.zeros_like, (jnp.zeros([], jnp.float32), state.params))
            total, _ = jax.lax.scan(accumulate, zeros, slices, unroll=2)
            value, grads = jax.tree.map(lambda x: x / micro_batches, total)
        updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                       **(hyperparams or {}))
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": value, "grad_norm": optax.tree.norm(grads),
                   "param_norm": optax.tree.norm(params)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def make_eval_step(model, micro_batches: int = 1, slice_size: int | None = None) -> Callable:
    """``eval(params, batch) -> number of correct predictions among unmasked examples``, the
    forward pass run in ``micro_batches`` equal slices one after another (see
    ``make_train_step``): the same predictions, faster on CPU. With multi-hot labels a
    prediction is correct when the top class is one of the example's labels (precision@1)."""
    _check_micro_batches(micro_batches)

    def correct(params, images, labels, mask):
        logits, _ = model.apply({"params": params}, resize(images, model.config.image_size))
        top = jnp.argmax(logits, -1)
        if labels.ndim == 2:
            hit = jnp.take_along_axis(labels, top[:, None], axis=1)[:, 0] > 0
        else:
            hit = top == labels
        return jnp.sum(hit * mask)

    def evaluate(params, batch):
        # A batch smaller than the compiled one (a split smaller than the eval batch) runs in
        # the most slices, up to ``micro_batches``, that divide it.
        k = _slices(micro_batches, batch["image"].shape[0], slice_size)
        if k == 1:
            return correct(params, batch["image"], batch["label"], batch["mask"])
        slices = [split_micro_batches(batch[n], k) for n in ("image", "label", "mask")]
        return jnp.sum(jax.lax.map(lambda s: correct(params, *s), tuple(slices)))
    return evaluate


def make_feature_fn(model, micro_batches: int = 1, slice_size: int | None = None) -> Callable:
    """``features(params, images) -> pre-logits`` (the frozen representation), computed in
    ``micro_batches`` equal slices one after another (see ``make_train_step``)."""
    _check_micro_batches(micro_batches)

    def features(params, images):
        def chunk(images):
            _, aux = model.apply({"params": params}, resize(images, model.config.image_size))
            return aux["pre_logits"].astype(jnp.float32)
        k = _slices(micro_batches, images.shape[0], slice_size)
        if k == 1:
            return chunk(images)
        out = jax.lax.map(chunk, split_micro_batches(images, k))
        return merge_micro_batches(out)
    return features


def _slices(micro_batches: int, size: int, slice_size: int | None = None) -> int:
    """How many slices a forward pass of ``size`` examples runs in: slices of the compiled
    ``slice_size`` when they tile it (a small split then computes each example exactly as in a
    full batch: the same slice shape, so the same numbers), else the largest k <=
    ``micro_batches`` that divides ``size``."""
    if slice_size and size % slice_size == 0:
        return size // slice_size
    return next(k for k in range(min(micro_batches, size), 0, -1) if size % k == 0)


def params_sha256(params) -> str:
    """SHA-256 over every parameter's path, dtype, shape and bytes, in sorted path order."""
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.asarray(jax.device_get(leaf))
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
