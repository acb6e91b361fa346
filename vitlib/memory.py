"""Memory of parameters and optimizer state, from shapes alone (``jax.eval_shape``: nothing is
allocated, so ViT-G/14 is planned on a laptop).

    python -m vitlib.memory --variant G/14 --optimizer adafactor_bv [--json]

Optimizer state is that of the whole ``make_optimizer`` chain. Expected for big ViTs relative to
fp32 parameter bytes: ``adam`` 2.0x, ``adam_hp`` 1.5x (bf16 first moment), ``adafactor_bv``
~0.5x (bf16 momentum + factored statistics), stock ``adafactor`` ~0x (no momentum).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from vitlib.models import ViT, vit_config
from vitlib.optim import make_optimizer

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


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.memory",
        description="Bytes of parameters and optimizer state of a ViT, from shapes only.")
    parser.add_argument("--variant", required=True, help="NAME/PATCH, e.g. G/14")
    parser.add_argument("--optimizer", required=True, choices=OPTIMIZER_NAMES)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=0,
                        help="classifier size (default 0: no head, as in paper Table 2)")
    parser.add_argument("--scan", action="store_true",
                        help="stacked (scanned) encoder parameters; changes Adafactor factoring")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        report = optimizer_memory(args.variant, args.optimizer, args.image_size,
                                  args.num_classes, scan=args.scan)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['variant']} with {report['optimizer']}: "
          f"{report['num_params']:,} parameters")
    print(f"  parameters       {_gib(report['param_bytes']):>12}  "
          f"{report['param_bytes_by_dtype']}")
    print(f"  optimizer state  {_gib(report['opt_state_bytes']):>12}  "
          f"{report['opt_state_bytes_by_dtype']}")
    print(f"  state / params   {report['opt_state_over_params']:>8.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
