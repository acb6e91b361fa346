"""Decoupled weight decay: per-parameter rates from ordered (regex, rate) rules over parameter
paths, and the transformation that adds ``wd * param`` to the update direction."""
from __future__ import annotations

import re
from typing import Sequence

import jax
import optax

# Leaves that get no weight decay unless the config says otherwise (matched with re.search on
# '/'-joined parameter paths such as 'Transformer/encoderblock_0/LayerNorm_0/scale').
DEFAULT_NO_DECAY = (r"(^|/)bias$", r"LayerNorm[^/]*/scale$", r"encoder_norm/scale$",
                    r"(^|/)pos_embedding$", r"(^|/)cls$", r"(^|/)probe$")


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
