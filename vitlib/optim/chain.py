"""The whole update chain of an optimizer config: clip -> optimizer -> decoupled weight decay ->
lr schedule -> descent (``make_optimizer``), the same chain with lr and decay as step inputs
(``make_sweepable_optimizer``), and the paper's recipe as a config.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vitlib.optim.optimizers import OPTIMIZERS, optimizer_by_name
from vitlib.optim.schedules import make_schedule
from vitlib.optim.weight_decay import DEFAULT_NO_DECAY, decoupled_weight_decay, weight_decay_tree

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
