"""A training workdir's checkpoint as ``(config, params)``: what ``convert --from WORKDIR`` reads.

A workdir (``python -m vitlib.train --workdir DIR``) holds ``checkpoints/STEP/default``, the
orbax train state (``params``, ``opt_state``, ``step``), and ``config.json``, the config it was
trained under. The ViT config is read off the parameters, as for any checkpoint, with the
variant name and (for a ``sincos2d`` position embedding, which does not store it) the image
size taken from ``config.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from vitlib.models.interop.common import (CheckpointError, check_free_fields, fit_params, infer_fields,
                                          resolve_config, unrolled_numpy)
from vitlib.models.variants import ViTConfig


def is_workdir(path) -> bool:
    return Path(path).is_dir() and (Path(path) / "checkpoints").is_dir()


def checkpoint_steps(workdir) -> list[int]:
    """The steps with a complete checkpoint (orbax renames a folder to its step when done)."""
    folder = Path(workdir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir()
                  if p.name.isdigit() and (p / "default").is_dir())


def load_workdir(workdir, step: Optional[int] = None, variant: Optional[str] = None,
                 **overrides) -> tuple[ViTConfig, dict]:
    """``(config, params)`` of the checkpoint at ``step`` (default: the last) of a training
    workdir; ``overrides`` are checked against it as in ``interop.load``."""
    import orbax.checkpoint as ocp

    workdir = Path(workdir)
    steps = checkpoint_steps(workdir)
    if not steps:
        raise CheckpointError(f"from: {workdir} holds no checkpoint (looked for "
                              f"{workdir / 'checkpoints' / 'STEP' / 'default'})")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise CheckpointError(f"step: {workdir} has no checkpoint at step {step}; saved steps: "
                              f"{steps}")
    try:
        recorded = json.loads((workdir / "config.json").read_text())
    except (OSError, ValueError):
        recorded = {}
    state = ocp.StandardCheckpointer().restore((workdir / "checkpoints" / str(step) /
                                                "default").absolute())
    if not isinstance(state, dict) or "params" not in state:
        raise CheckpointError(f"from: {workdir}/checkpoints/{step} holds no 'params' (found "
                              f"{sorted(state) if isinstance(state, dict) else type(state)})")
    tree = unrolled_numpy(state["params"])
    fields = infer_fields(tree)
    model = recorded.get("model") or {}
    check_free_fields(overrides)
    if variant is None and not any(model.get(k) for k in ("width", "depth", "mlp_dim",
                                                           "num_heads")):
        variant = model.get("variant")
    if fields["posemb"] == "sincos2d" and recorded.get("image_size"):
        fields["image_size"] = int(recorded["image_size"])
    try:
        config = resolve_config(fields, variant, **overrides)
    except ValueError:  # a recorded variant that no longer parses: the shape still loads
        config = resolve_config(fields, None, **overrides)
    return config, fit_params(tree, config, source=f"{workdir} step {step}")
