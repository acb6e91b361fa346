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


def loss_value(kind: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over the batch: softmax cross-entropy, or sigmoid cross-entropy summed over classes
    (the paper's loss on multi-label upstream data) against one-hot targets."""
    logits = logits.astype(jnp.float32)
    if kind == "softmax":
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    if kind == "sigmoid":
        targets = jax.nn.one_hot(labels, logits.shape[-1])
        return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1).mean()
    raise ValueError(f"loss: {kind!r} is not allowed; choose one of {list(LOSSES)}")


def resize(images: jax.Array, size: int) -> jax.Array:
    """Bilinear resize of square NHWC images to ``size`` (a no-op at the native size)."""
    n, h, _, c = images.shape
    if h == size:
        return images
    return jax.image.resize(images, (n, size, size, c), "bilinear")


def make_train_step(model, tx: optax.GradientTransformation, loss: str) -> Callable:
    """``step(state, batch) -> (state, metrics)``; metrics: loss, grad_norm, param_norm."""
    if loss not in LOSSES:
        raise ValueError(f"loss: {loss!r} is not allowed; choose one of {list(LOSSES)}")

    def step(state: TrainState, batch: dict):
        def compute_loss(params):
            images = resize(batch["image"], model.config.image_size)
            logits, _ = model.apply({"params": params}, images)
            return loss_value(loss, logits, batch["label"])

        value, grads = jax.value_and_grad(compute_loss)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": value, "grad_norm": optax.tree.norm(grads),
                   "param_norm": optax.tree.norm(params)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def make_eval_step(model) -> Callable:
    """``eval(params, batch) -> number of correct predictions among unmasked examples``."""
    def evaluate(params, batch):
        logits, _ = model.apply({"params": params}, resize(batch["image"],
                                                           model.config.image_size))
        correct = jnp.argmax(logits, -1) == batch["label"]
        return jnp.sum(correct * batch["mask"])
    return evaluate


def make_feature_fn(model) -> Callable:
    """``features(params, images) -> pre-logits`` (the frozen representation)."""
    def features(params, images):
        _, aux = model.apply({"params": params}, resize(images, model.config.image_size))
        return aux["pre_logits"].astype(jnp.float32)
    return features


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
