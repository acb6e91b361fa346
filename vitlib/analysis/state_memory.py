"""Memory of parameters and optimizer state, from shapes alone (``jax.eval_shape``: nothing is
allocated, so ViT-G/14 is counted on a laptop).

Optimizer state is that of the whole ``make_optimizer`` chain. Expected for big ViTs relative to
fp32 parameter bytes: ``adam`` 2.0x, ``adam_hp`` 1.5x (bf16 first moment), ``adafactor_bv``
~0.5x (bf16 momentum + factored statistics), stock ``adafactor`` ~0x (no momentum).
"""
from __future__ import annotations

from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from vitlib.models import ViT, vit_config
from vitlib.optim.chain import make_optimizer

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
