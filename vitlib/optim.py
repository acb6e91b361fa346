"""The paper's optimizers as optax GradientTransformations, and the whole update chain.

- ``adafactor_bv``: the paper's modified Adafactor (factored fp32 second moment, decay capped at
  0.999, no parameter-scale step, bf16 first momentum on the RMS-normalised update).
- ``adam_hp``: Adam with its first moment stored in bfloat16, second moment in fp32.
- ``adam`` (fp32 Adam), ``adafactor`` (optax's stock Adafactor) and ``sgd`` (momentum) as
  baselines.
- ``make_optimizer(config)``: clip -> optimizer -> decoupled weight decay -> lr schedule ->
  descent, see its docstring.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vitlib.schedules import make_schedule

# Leaves that get no weight decay unless the config says otherwise (matched with re.search on
# '/'-joined parameter paths such as 'Transformer/encoderblock_0/LayerNorm_0/scale').
DEFAULT_NO_DECAY = (r"(^|/)bias$", r"LayerNorm[^/]*/scale$", r"encoder_norm/scale$",
                    r"(^|/)pos_embedding$", r"(^|/)cls$", r"(^|/)probe$")


# ---------------------------------------------------------------- transformations

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


# ---------------------------------------------------------------- weight decay

def param_path(path) -> str:
    """'/'-joined keys of a pytree path: 'Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel'."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _compile(field: str, patterns):
    try:
        return [re.compile(p) for p in patterns]
    except (re.error, TypeError) as err:
        raise ValueError(f"{field}: {patterns!r} holds an invalid regular expression: {err}") \
            from None


def weight_decay_tree(params, rules: Sequence[tuple[str, float]],
                      no_decay: Sequence[str] = DEFAULT_NO_DECAY):
    """Per-leaf decay rates: 0 for ``no_decay`` matches, else the first matching rule, else 0."""
    compiled_rules = list(zip(_compile("weight_decay", [r for r, _ in rules]),
                              [float(v) for _, v in rules]))
    skip = _compile("no_decay", no_decay)

    def rate(path, _):
        name = param_path(path)
        if any(s.search(name) for s in skip):
            return 0.0
        return next((v for r, v in compiled_rules if r.search(name)), 0.0)
    return jax.tree_util.tree_map_with_path(rate, params)


def decoupled_weight_decay(rules: Sequence[tuple[str, float]],
                           no_decay: Sequence[str] = DEFAULT_NO_DECAY
                           ) -> optax.GradientTransformation:
    """Adds ``wd * param`` per leaf (rates by ``weight_decay_tree``) to the update direction."""
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("decoupled_weight_decay needs params in update()")
        rates = weight_decay_tree(params, rules, no_decay)
        updates = jax.tree_util.tree_map(
            lambda u, p, wd: u + wd * p.astype(u.dtype) if wd else u, updates, params, rates)
        return updates, state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# ---------------------------------------------------------------- the whole chain

OPTIMIZER_CONFIG_KEYS = {
    "optimizer": "name: " + " | ".join(OPTIMIZERS),
    "optimizer_kwargs": "keyword options of that optimizer (e.g. beta1, momentum_dtype)",
    "lr": "peak learning rate",
    "schedule": "dict(kind, warmup_steps, cooldown_steps, timescale, end_value)",
    "total_steps": "length of the run in steps",
    "grad_clip_norm": "global-norm clipping threshold (None or 0: off)",
    "weight_decay": "ordered (regex, rate) rules over parameter paths; first match wins",
    "no_decay": "regexes of parameters that never decay (default: DEFAULT_NO_DECAY)",
}


def paper_recipe(total_steps: int, cooldown_steps: int = 50_000) -> dict:
    """The paper's large-model recipe as one optimizer config for ``make_optimizer``."""
    return dict(
        optimizer="adafactor_bv",
        optimizer_kwargs=dict(beta1=0.9, momentum_dtype="bfloat16", beta2_cap=0.999),
        lr=8e-4,
        schedule=dict(kind="rsqrt", warmup_steps=10_000, timescale=10_000,
                      cooldown_steps=cooldown_steps),
        total_steps=total_steps,
        grad_clip_norm=1.0,
        weight_decay=[(r"^head/", 3.0), (r".*", 0.03)],  # 3.0 on the head, 0.03 on the body
    )


def _as_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def lr_schedule(config):
    """The learning-rate schedule of an optimizer config (see ``make_optimizer``)."""
    config = _as_dict(config)
    schedule = dict(config.get("schedule") or {})
    return make_schedule(config.get("lr", 1e-3), config.get("total_steps"), **schedule)


def _validated_parts(config) -> dict:
    """The pieces of an optimizer config, each checked (see ``make_optimizer``)."""
    config = _as_dict(config)
    unknown = sorted(set(config) - set(OPTIMIZER_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"optimizer config: unknown key(s) {unknown}; valid keys: "
                         f"{sorted(OPTIMIZER_CONFIG_KEYS)}")
    for key in ("optimizer", "lr", "total_steps"):
        if key not in config:
            raise ValueError(f"optimizer config: {key!r} is required "
                             f"({OPTIMIZER_CONFIG_KEYS[key]})")
    schedule = lr_schedule(config)
    direction = optimizer_by_name(config["optimizer"], **dict(config.get("optimizer_kwargs") or {}))

    clip = config.get("grad_clip_norm")
    if clip is not None and (not isinstance(clip, (int, float)) or clip < 0):
        raise ValueError(f"grad_clip_norm: must be a number >= 0 or None, got {clip!r}")
    rules = config.get("weight_decay") or []
    if isinstance(rules, (int, float)):
        rules = [(".*", float(rules))]
    rules = [tuple(rule) for rule in rules]
    for rule in rules:
        if len(rule) != 2 or not isinstance(rule[1], (int, float)) or rule[1] < 0:
            raise ValueError(f"weight_decay: each rule must be (regex, rate >= 0), got {rule!r}")
    no_decay = tuple(config.get("no_decay", DEFAULT_NO_DECAY))
    weight_decay_tree({"probe": 0.0}, rules, no_decay)  # compiles the regexes: fail early
    return dict(schedule=schedule, direction=direction,
                clip=optax.clip_by_global_norm(clip) if clip else optax.identity(),
                rules=rules, no_decay=no_decay)


def make_optimizer(config) -> optax.GradientTransformation:
    """The full update chain of an optimizer config (a dict or ml_collections.ConfigDict).

    Order: ``clip_by_global_norm(grad_clip_norm)`` -> the optimizer's direction ``u`` ->
    ``u + wd * param`` with per-parameter ``wd`` -> ``* -lr_t``. Each step therefore moves a
    parameter by ``-lr_t * u - lr_t * wd * param``: decoupled, AdamW-style weight decay that
    follows the schedule (the paper's 0.03 body / 3.0 head is ``lr_t * 0.03 * param`` per step).

    ``weight_decay`` is a list of ``(regex, rate)`` searched in order over '/'-joined parameter
    paths (``head/kernel``, ``Transformer/encoderblock_3/MlpBlock_0/Dense_0/kernel``); the first
    match gives the rate, no match means 0. Paths matching any ``no_decay`` regex never decay;
    by default biases, LayerNorm scales, position embeddings, the class token and the MAP probe.
    A plain number ``wd`` means ``[(".*", wd)]``.

    Keys: see ``OPTIMIZER_CONFIG_KEYS``; ``paper_recipe(total_steps)`` is the paper's config.
    ``make_sweepable_optimizer`` is the same chain with lr_t and wd given at each update.
    """
    parts = _validated_parts(config)
    return optax.chain(
        parts["clip"],
        parts["direction"],
        decoupled_weight_decay(parts["rules"], parts["no_decay"]) if parts["rules"]
        else optax.identity(),
        optax.scale_by_learning_rate(parts["schedule"]),
    )


# ---------------------------------------------------------------- hyper-parameters as inputs

def decay_and_scale_by_inputs() -> optax.GradientTransformationExtraArgs:
    """``u -> -lr * (u + weight_decay * param)`` with ``lr`` (a scalar) and ``weight_decay`` (a
    tree of per-leaf rates, like ``weight_decay_tree``) passed to ``update`` as arguments:
    traced inputs, not constants, so one compiled step serves every value of them."""
    def update_fn(updates, state, params=None, *, lr, weight_decay, **unused):
        if params is None:
            raise ValueError("decay_and_scale_by_inputs needs params in update()")
        updates = jax.tree_util.tree_map(lambda u, p, wd: u + wd * p.astype(u.dtype),
                                         updates, params, weight_decay)
        step_size = -jnp.asarray(lr, jnp.float32)
        return jax.tree_util.tree_map(lambda u: u * step_size.astype(u.dtype), updates), state
    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)


class SweepableOptimizer(NamedTuple):
    """``tx.update(grads, state, params, **hyperparams(step))`` equals one update of
    ``make_optimizer`` at ``step`` (to float rounding); only ``tx``'s structure is compiled."""
    tx: optax.GradientTransformationExtraArgs
    schedule: Any  # step -> lr, as in make_optimizer
    rules: tuple
    no_decay: tuple

    def lr_table(self, total_steps: int) -> np.ndarray:
        """float32 lr of every step 0 .. total_steps - 1 (the schedule evaluated by XLA once)."""
        return np.asarray(jax.jit(jax.vmap(self.schedule))(jnp.arange(total_steps)))

    def weight_decay_rates(self, params):
        """Per-leaf float32 decay rates (0 for ``no_decay`` leaves), as update() takes them."""
        return jax.tree_util.tree_map(lambda r: np.float32(r),
                                      weight_decay_tree(params, self.rules, self.no_decay))


def make_sweepable_optimizer(config) -> SweepableOptimizer:
    """``make_optimizer``'s chain with the learning rate and the weight-decay rates as update
    arguments: a sweep over lr, schedule values or weight decay compiles the step once.

    The compiled part depends only on ``optimizer``, ``optimizer_kwargs`` and ``grad_clip_norm``.
    """
    parts = _validated_parts(config)
    tx = optax.chain(parts["clip"], parts["direction"], decay_and_scale_by_inputs())
    return SweepableOptimizer(tx, parts["schedule"], tuple(parts["rules"]), parts["no_decay"])


def compiled_part(config) -> str:
    """The config fields a sweepable optimizer compiles in (a cache key for its step)."""
    config = _as_dict(config)
    return repr((config.get("optimizer"), sorted(dict(config.get("optimizer_kwargs") or {})
                                                 .items()), config.get("grad_clip_norm")))
