"""Convert encoder parameters between the scanned (stacked) and unrolled layouts.

A scanned encoder stores one ``encoderblock`` subtree whose leaves have a leading depth axis; an
unrolled one stores ``encoderblock_0 .. encoderblock_{depth-1}``. Both compute the same function,
so checkpoints can move between them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def scanned_to_unrolled(params: dict) -> dict:
    encoder = dict(params["Transformer"])
    stacked = encoder.pop("encoderblock")
    depth = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    for layer in range(depth):
        encoder[f"encoderblock_{layer}"] = jax.tree_util.tree_map(lambda a: a[layer], stacked)
    return {**params, "Transformer": encoder}


def unrolled_to_scanned(params: dict) -> dict:
    encoder = dict(params["Transformer"])
    names = sorted((k for k in encoder if k.startswith("encoderblock_")),
                   key=lambda k: int(k.rsplit("_", 1)[1]))
    if not names:
        raise ValueError("params: no 'encoderblock_N' entries under 'Transformer' to stack")
    blocks = [encoder.pop(name) for name in names]
    encoder["encoderblock"] = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *blocks)
    return {**params, "Transformer": encoder}
