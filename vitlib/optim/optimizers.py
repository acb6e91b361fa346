"""The paper's optimizers as optax GradientTransformations giving the update direction (no lr,
no weight decay; ``chain.make_optimizer`` adds those).

- ``adafactor_bv``: the paper's modified Adafactor (factored fp32 second moment, decay capped at
  0.999, no parameter-scale step, bf16 first momentum on the RMS-normalised update).
- ``adam_hp``: Adam with its first moment stored in bfloat16, second moment in fp32.
- ``adam`` (fp32 Adam), ``adafactor`` (optax's stock Adafactor) and ``sgd`` (momentum) as
  baselines; ``optimizer_by_name`` picks one.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


def factored_dims(shape: Sequence[int], min_dim_size_to_factor: int) -> Optional[tuple[int, int]]:
    """(second-largest axis, largest axis) when both are >= the threshold, else None."""
    if len(shape) < 2:
        return None
    order = np.argsort(shape, kind="stable")
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


class AdafactorBVState(NamedTuple):
    count: jax.Array
    v_row: Any  # fp32 statistics with the largest axis removed (factored leaves), else ()
    v_col: Any  # fp32 statistics with the second-largest axis removed, else ()
    v: Any  # full fp32 second moment for unfactored leaves, else ()
    mu: Any  # first momentum in momentum_dtype, or () when beta1 is None


def adafactor_bv(beta1: Optional[float] = 0.9, decay_rate: float = 0.8,
                 beta2_cap: float = 0.999, eps: float = 1e-30,
                 min_dim_size_to_factor: int = 32, clipping_threshold: Optional[float] = None,
                 momentum_dtype: Any = jnp.bfloat16) -> optax.GradientTransformation:
    """The paper's modified Adafactor; returns the update direction (the lr comes later).

    Per leaf: ``g2 = g**2 + eps``; decay ``b2_t = min(beta2_cap, 1 - (t+1)**-decay_rate)`` with
    ``t`` the 0-based step. A leaf whose two largest dims are >= ``min_dim_size_to_factor``
    keeps row/column means of ``g2`` (fp32) and normalises by ``row * col / mean(row)``; other
    leaves keep the full ``g2`` average. ``u = g / sqrt(v_hat)``, optionally divided by
    ``max(1, rms(u) / clipping_threshold)``; then ``m = beta1 * m + (1 - beta1) * u`` (no
    debiasing) is the update and is stored in ``momentum_dtype``. No relative-step scaling.
    """
    momentum_dtype = jnp.dtype(momentum_dtype)

    def init_fn(params):
        def stats(p):
            dims = factored_dims(p.shape, min_dim_size_to_factor)
            if dims is None:
                return (), (), jnp.zeros(p.shape, jnp.float32)
            d1, d0 = dims
            row = jnp.zeros(tuple(s for i, s in enumerate(p.shape) if i != d0), jnp.float32)
            col = jnp.zeros(tuple(s for i, s in enumerate(p.shape) if i != d1), jnp.float32)
            return row, col, ()
        per_leaf = [stats(p) for p in jax.tree_util.tree_leaves(params)]
        tree = jax.tree_util.tree_structure(params)
        unflatten = lambda i: jax.tree_util.tree_unflatten(tree, [s[i] for s in per_leaf])  # noqa
        mu = (jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, momentum_dtype), params)
              if beta1 is not None else ())
        return AdafactorBVState(jnp.zeros([], jnp.int32), unflatten(0), unflatten(1),
                                unflatten(2), mu)

    def update_fn(updates, state, params=None):
        del params
        t = state.count.astype(jnp.float32) + 1.0
        b2 = jnp.minimum(beta2_cap, 1.0 - t ** (-decay_rate))
        grads, tree = jax.tree_util.tree_flatten(updates)
        rows = tree.flatten_up_to(state.v_row)
        cols = tree.flatten_up_to(state.v_col)
        fulls = tree.flatten_up_to(state.v)
        new_u, new_rows, new_cols, new_fulls = [], [], [], []
        for g, row, col, full in zip(grads, rows, cols, fulls):
            g = g.astype(jnp.float32)
            g2 = g * g + eps
            dims = factored_dims(g.shape, min_dim_size_to_factor)
            if dims is None:
                full = b2 * full + (1 - b2) * g2
                u = g * jax.lax.rsqrt(full)
            else:
                d1, d0 = dims
                row = b2 * row + (1 - b2) * jnp.mean(g2, axis=d0)
                col = b2 * col + (1 - b2) * jnp.mean(g2, axis=d1)
                row_mean = jnp.mean(row, axis=d1 - 1 if d1 > d0 else d1, keepdims=True)
                u = (g * jnp.expand_dims(jax.lax.rsqrt(row / row_mean), d0)
                     * jnp.expand_dims(jax.lax.rsqrt(col), d1))
            if clipping_threshold is not None:
                rms = jnp.sqrt(jnp.mean(u * u))
                u = u / jnp.maximum(1.0, rms / clipping_threshold)
            new_u.append(u)
            new_rows.append(row)
            new_cols.append(col)
            new_fulls.append(full)
        u = jax.tree_util.tree_unflatten(tree, new_u)
        mu = state.mu
        if beta1 is not None:
            u = jax.tree_util.tree_map(lambda m, x: beta1 * m.astype(jnp.float32)
                                       + (1 - beta1) * x, mu, u)
            mu = jax.tree_util.tree_map(lambda m: m.astype(momentum_dtype), u)
        unflatten = lambda leaves: jax.tree_util.tree_unflatten(tree, leaves)  # noqa: E731
        new_state = AdafactorBVState(optax.safe_increment(state.count), unflatten(new_rows),
                                     unflatten(new_cols), unflatten(new_fulls), mu)
        return u, new_state

    return optax.GradientTransformation(init_fn, update_fn)


class AdamHPState(NamedTuple):
    count: jax.Array
    mu: Any  # first moment, momentum_dtype
    nu: Any  # second moment, fp32


def adam_hp(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
            momentum_dtype: Any = jnp.bfloat16) -> optax.GradientTransformation:
    """Adam (bias-corrected) whose first moment is stored in ``momentum_dtype``, second in fp32.

    The step uses the fp32 value of the new first moment; only what is stored is rounded.
    """
    momentum_dtype = jnp.dtype(momentum_dtype)

    def init_fn(params):
        zeros = lambda dtype: jax.tree_util.tree_map(  # noqa: E731
            lambda p: jnp.zeros(p.shape, dtype), params)
        return AdamHPState(jnp.zeros([], jnp.int32), zeros(momentum_dtype), zeros(jnp.float32))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.float32)
        g = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), updates)
        mu = jax.tree_util.tree_map(lambda m, x: b1 * m.astype(jnp.float32) + (1 - b1) * x,
                                    state.mu, g)
        nu = jax.tree_util.tree_map(lambda v, x: b2 * v + (1 - b2) * x * x, state.nu, g)
        out = jax.tree_util.tree_map(
            lambda m, v: (m / (1 - b1 ** t)) / (jnp.sqrt(v / (1 - b2 ** t)) + eps), mu, nu)
        mu = jax.tree_util.tree_map(lambda m: m.astype(momentum_dtype), mu)
        return out, AdamHPState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def _adam(b1=0.9, b2=0.999, eps=1e-8):
    return optax.scale_by_adam(b1=b1, b2=b2, eps=eps)


def _stock_adafactor(**kwargs):
    # optax.adafactor ends with scale(-1) (it is a full optimizer); the chain here expects the
    # direction and negates once itself, so undo that sign.
    return optax.chain(optax.adafactor(learning_rate=None, **kwargs), optax.scale(-1.0))


def _sgd(momentum=0.9, nesterov=False):
    return optax.trace(decay=momentum, nesterov=nesterov) if momentum else optax.identity()


OPTIMIZERS = {"adafactor_bv": adafactor_bv, "adam_hp": adam_hp, "adam": _adam,
              "adafactor": _stock_adafactor, "sgd": _sgd}


def optimizer_by_name(name: str, **kwargs) -> optax.GradientTransformation:
    """The update direction of ``name`` (no lr, no decay), with its keyword options."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer: {name!r} is not allowed; choose one of {list(OPTIMIZERS)}")
    for key in ("momentum_dtype",):
        if key in kwargs and isinstance(kwargs[key], str):
            kwargs[key] = jnp.dtype(kwargs[key])
    try:
        return OPTIMIZERS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"optimizer_kwargs: {kwargs} not accepted by {name!r}: {err}") from None
