"""Checkpoints in and out: big_vision / vision_transformer ``.npz`` and timm state dicts.

    config, params = load("B_16-i21k.npz")                    # config inferred
    config, params = load("vit.safetensors", "S/16", image_size=384)  # checked, posemb resampled
    config, params = load_workdir("runs/quickstart")         # a training run's last checkpoint
    params = from_timm_model(timm_model)                      # a timm module (warns on exact GELU)
    save(params, config, "run.npz")                           # big_vision layout
    save(params, config, "run.safetensors")                   # timm; build the model with
    timm_kwargs(config)                                       # VisionTransformer(**these)

- ``common``: flat <-> nested trees, the config read off a checkpoint and checked against the
  one named (every mismatch names the key, the shape found and the shape expected), posemb
  resampling
- ``npz``: big_vision and vision_transformer ``.npz``
- ``timm_vit``: timm ``VisionTransformer`` state dicts (safetensors, torch files)
- ``workdir``: a training workdir's checkpoint (``load_workdir(workdir, step)``)

``python -m vitlib.models.convert`` is the command line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from vitlib.models.interop.common import (CheckpointError, check_free_fields, fit_params,
                                          infer_fields, resample_posemb, resolve_config,
                                          unrolled_numpy)
from vitlib.models.interop.npz import load_npz, read_npz, save_npz, to_npz_tree
from vitlib.models.interop.timm_vit import (from_timm, from_timm_model, load_state_dict,
                                            read_safetensors, save_timm, timm_activation,
                                            timm_kwargs, to_timm, write_safetensors)
from vitlib.models.interop.workdir import checkpoint_steps, is_workdir, load_workdir
from vitlib.models.variants import ViTConfig, parse_variant

FORMATS = ("npz", "timm")
_SUFFIXES = {".npz": "npz", ".safetensors": "timm", ".pth": "timm", ".pt": "timm",
             ".bin": "timm"}


def format_of(path, format: Optional[str] = None) -> str:
    """``npz`` | ``timm``, from ``format`` or the file's suffix."""
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format: {format!r} is not allowed; choose one of {list(FORMATS)}")
        return format
    suffix = Path(path).suffix
    if suffix not in _SUFFIXES:
        raise ValueError(f"format: cannot tell the format of {path} from its suffix {suffix!r}; "
                         f"allowed suffixes: {sorted(_SUFFIXES)} (or pass format=)")
    return _SUFFIXES[suffix]


def read_tree(path, format: Optional[str] = None, num_heads: Optional[int] = None,
              prefix: Optional[str] = None) -> dict:
    """A checkpoint as vitlib's unrolled parameter tree (numpy), unchecked."""
    if format_of(path, format) == "npz":
        return load_npz(path, prefix)
    return from_timm(load_state_dict(path), num_heads)


def load(path, variant: Optional[str] = None, *, format: Optional[str] = None,
         prefix: Optional[str] = None, **overrides) -> tuple[ViTConfig, dict]:
    """``(config, params)`` from a checkpoint. The config is read off the checkpoint; what the
    caller names (``variant``, ViTConfig fields such as ``pool_type``, ``image_size``,
    ``scan``) must agree with it, except ``image_size``, to which a learned position
    embedding is resampled."""
    check_free_fields(overrides)
    heads = overrides.get("num_heads") or (parse_variant(variant)["num_heads"] if variant
                                           else None)
    tree = read_tree(path, format, heads, prefix)
    fields = infer_fields(tree)
    config = resolve_config(fields, variant, **overrides)
    try:
        return config, fit_params(tree, config, source=str(path))
    except CheckpointError as err:
        found = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        raise CheckpointError(f"{err}\n  (the checkpoint reads as {found})") from None


def save(params: dict, config: ViTConfig, path, *, format: Optional[str] = None,
         scan: bool = False, dtype: Optional[str] = None) -> Path:
    """Writes ``params`` (checked against ``config`` first) as big_vision ``.npz`` or a timm
    state dict (``.safetensors`` / ``.pth``)."""
    fit_params(unrolled_numpy(params), config.replace(scan=False), source="params")
    if format_of(path, format) == "npz":
        return save_npz(params, path, scan=scan, dtype=dtype)
    return save_timm(params, config, path)


__all__ = [
    "FORMATS", "CheckpointError", "checkpoint_steps", "fit_params", "format_of", "from_timm",
    "from_timm_model", "infer_fields", "is_workdir", "load", "load_npz", "load_state_dict",
    "load_workdir", "read_npz", "read_safetensors", "read_tree", "resample_posemb",
    "resolve_config", "save", "save_npz", "save_timm", "timm_activation", "timm_kwargs",
    "to_npz_tree", "to_timm", "write_safetensors",
]
