"""What every checkpoint format shares: flat <-> nested trees, the vitlib config read off a
parameter tree and checked against the one the user names, position-embedding resampling.

Every converter first turns its file into vitlib's *unrolled* parameter tree (numpy arrays,
``encoderblock_N``); ``fit_params`` then checks that tree, leaf by leaf, against the shapes the
named config's ``ViT`` would initialise, resamples the position embedding to the config's
resolution and stacks the blocks when the config scans.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Optional

import jax
import ml_dtypes
import numpy as np

from vitlib.models.params import unrolled_to_scanned
from vitlib.models.variants import SHAPES, ViTConfig, vit_config
from vitlib.models.vit import ViT

_BLOCK = re.compile(r"^encoderblock_(\d+)$")
_SHOWN = 25  # problems listed in one error

class CheckpointError(ValueError):
    """A checkpoint that does not fit: names the key, the shape found and the shape expected."""


def flatten(tree: dict, sep: str = "/", prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, sep, name))
        else:
            out[name] = value
    return out


def unflatten(flat: dict, sep: str = "/") -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node, parts = tree, key.split(sep)
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"{key}: {part!r} is both an array and a folder of arrays")
        node[parts[-1]] = value
    return tree


def to_numpy(value) -> np.ndarray:
    """An array as numpy; bfloat16 stored as 2-byte void views (how ``np.savez`` keeps
    ml_dtypes' bfloat16, and what big_vision writes) comes back as bfloat16."""
    array = np.asarray(value)
    if array.dtype.kind == "V" and array.dtype.itemsize == 2:
        array = array.view(ml_dtypes.bfloat16)
    return array


def unroll(params: dict) -> dict:
    """A scanned ``Transformer/encoderblock`` stack (leading depth axis) as ``encoderblock_N``."""
    encoder = params.get("Transformer", {})
    if "encoderblock" not in encoder:
        return params
    encoder = dict(encoder)
    stacked = flatten(encoder.pop("encoderblock"))
    depths = {name: a.shape[0] if a.ndim else None for name, a in stacked.items()}
    if len(set(depths.values())) != 1 or None in depths.values():
        raise CheckpointError(
            f"Transformer/encoderblock: a scanned stack needs one leading depth axis on every "
            f"array, found leading sizes {depths}")
    for layer in range(next(iter(depths.values()))):
        encoder[f"encoderblock_{layer}"] = unflatten({k: a[layer] for k, a in stacked.items()})
    return {**params, "Transformer": encoder}


def split_class_slot(pos: np.ndarray, cls: Optional[np.ndarray], key: str):
    """An old-style position embedding with a class slot (``g*g + 1`` tokens, added after the
    class token is prepended) as vitlib's pair: the slot folded into ``cls`` (``cls + pos[0]``,
    what the old model fed the encoder) and the ``g*g`` grid embedding."""
    tokens = pos.shape[1]
    if math.isqrt(tokens) ** 2 == tokens:
        return pos, cls
    if math.isqrt(tokens - 1) ** 2 != tokens - 1:
        raise CheckpointError(
            f"{key}: shape {pos.shape} found; expected (1, g*g, width) or, with a class slot, "
            f"(1, g*g + 1, width) for a square g x g patch grid")
    if cls is None:
        raise CheckpointError(
            f"{key}: shape {pos.shape} has a class-token slot ({tokens} = {tokens - 1} + 1) but "
            f"the checkpoint has no class token")
    return pos[:, 1:], (cls.astype(np.float32) + pos[:, :1].astype(np.float32)).astype(cls.dtype)


def infer_fields(params: dict) -> dict:
    """The ViTConfig fields an unrolled vitlib parameter tree determines."""
    def get(path):
        node = params
        for part in path.split("/"):
            if not isinstance(node, dict) or part not in node:
                raise CheckpointError(f"{path}: missing from the checkpoint (found top-level keys "
                                      f"{sorted(params)})")
            node = node[part]
        return node

    kernel = get("embedding/kernel")
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
        raise CheckpointError(f"embedding/kernel: shape {kernel.shape} found; expected "
                              f"(patch, patch, channels, width)")
    width, patch = int(kernel.shape[3]), int(kernel.shape[0])
    channels = int(kernel.shape[2])
    blocks = sorted(int(m.group(1)) for k in get("Transformer") if (m := _BLOCK.match(k)))
    if not blocks:
        raise CheckpointError(f"Transformer: no encoder blocks (encoderblock_N or a scanned "
                              f"encoderblock) found; keys {sorted(get('Transformer'))}")
    if blocks != list(range(len(blocks))):
        raise CheckpointError(f"Transformer: encoder blocks {blocks} found; expected "
                              f"encoderblock_0 .. encoderblock_{len(blocks) - 1}")
    block = "Transformer/encoderblock_0"
    mlp = get(f"{block}/MlpBlock_0/Dense_0/kernel")
    query = get(f"{block}/MultiHeadDotProductAttention_0/query/kernel")
    if query.ndim != 3:
        raise CheckpointError(f"{block}/MultiHeadDotProductAttention_0/query/kernel: shape "
                              f"{query.shape} found; expected (width, heads, head_dim)")
    fields = dict(width=width, depth=len(blocks), mlp_dim=int(mlp.shape[1]),
                  num_heads=int(query.shape[1]), patch_size=patch, in_channels=channels)
    fields["pool_type"] = ("map" if "MAPHead_0" in params else
                           "tok" if "cls" in params else "gap")
    if "pos_embedding" in params:
        fields["posemb"] = "learn"
        tokens = params["pos_embedding"].shape[1]
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise CheckpointError(f"pos_embedding: shape {params['pos_embedding'].shape} found; "
                                  f"expected (1, g*g, {width}) for a square patch grid")
        fields["image_size"] = grid * patch
    else:
        fields["posemb"] = "sincos2d"
    fields["representation_size"] = (int(params["pre_logits"]["kernel"].shape[1])
                                     if "pre_logits" in params else None)
    fields["num_classes"] = int(params["head"]["kernel"].shape[1]) if "head" in params else 0
    return fields


def shape_name(fields: dict) -> Optional[str]:
    """``NAME/PATCH`` when the shape is one of vitlib's named variants."""
    for name, shape in SHAPES.items():
        if shape == (fields["width"], fields["depth"], fields["mlp_dim"], fields["num_heads"]):
            return f"{name}/{fields['patch_size']}"
    return None


def resolve_config(fields: dict, variant: Optional[str] = None, **overrides) -> ViTConfig:
    """The config to load into: what the user names (variant, overrides) wins; the rest comes
    from the checkpoint. Disagreements surface in ``fit_params`` as shape errors."""
    inferred = dict(fields)
    if variant is not None:  # the variant fixes the shape; keep the checkpoint's other fields
        for key in ("width", "depth", "mlp_dim", "num_heads", "patch_size"):
            inferred.pop(key, None)
    inferred.update({k: v for k, v in overrides.items() if v is not None})
    if "image_size" not in inferred:  # sincos2d checkpoints do not store their resolution
        inferred["image_size"] = None
    config = vit_config(variant, **inferred)
    if config.variant is None and (name := shape_name(dataclasses.asdict(config))):
        config = config.replace(variant=name)
    return config


def expected_shapes(config: ViTConfig, channels: int) -> dict:
    """{flat key: shape} of the unrolled parameters ``ViT(config)`` initialises."""
    unrolled = config.replace(scan=False, remat_policy="none")
    size = config.image_size or 8 * config.patch_size
    images = jax.ShapeDtypeStruct((1, size, size, channels), np.float32)
    abstract = jax.eval_shape(lambda x: ViT(unrolled).init(jax.random.PRNGKey(0), x), images)
    return {k: tuple(v.shape) for k, v in flatten(abstract["params"]).items()}


def resample_posemb(posemb: np.ndarray, new_tokens: int) -> np.ndarray:
    """(1, g*g, D) -> (1, new_tokens, D), bilinear over the square grid (half-pixel centres, as
    ``jax.image.resize``); loading a checkpoint and fine-tuning at a new resolution share it."""
    _, n, d = posemb.shape
    old, new = math.isqrt(n), math.isqrt(new_tokens)
    if old * old != n or new * new != new_tokens:
        raise CheckpointError(f"pos_embedding: can only resample square grids, got {n} -> "
                              f"{new_tokens} tokens")
    grid = np.asarray(posemb, np.float32).reshape(old, old, d)
    out = jax.image.resize(grid, (new, new, d), "bilinear")
    return np.asarray(out).reshape(1, new * new, d).astype(posemb.dtype)


def fit_params(params: dict, config: ViTConfig, source: str = "checkpoint") -> dict:
    """``params`` (unrolled, numpy) checked against ``config``: every missing or unexpected key
    and every shape that does not fit is reported at once; the position embedding is resampled
    to the config's grid; cast to ``param_dtype``; stacked when ``config.scan``."""
    flat = flatten(params)
    channels = int(flat["embedding/kernel"].shape[2]) if "embedding/kernel" in flat else (
        config.in_channels or 3)
    expected = expected_shapes(config, channels)
    problems = []  # shapes first (they say most), then missing, then unexpected keys
    if config.in_channels not in (None, channels):
        problems.append(f"embedding/kernel: {channels} input channels found, in_channels="
                        f"{config.in_channels} expected")
    dtype = np.dtype(config.param_dtype)
    out = {}
    for key in sorted(set(flat) & set(expected), key=lambda k: (k.count("/"), k)):
        value, want = to_numpy(flat[key]), expected[key]
        if key == "pos_embedding" and value.shape != want and value.ndim == 3 and \
                value.shape[2] == want[2] and value.shape[0] == 1:
            value = resample_posemb(value, want[1])
        if tuple(value.shape) != want:
            problems.append(f"{key}: shape {tuple(value.shape)} found, {want} expected")
            continue
        out[key] = value.astype(dtype)
    for key in sorted(set(expected) - set(flat)):
        problems.append(f"{key}: missing (expected shape {expected[key]})")
    for key in sorted(set(flat) - set(expected)):
        problems.append(f"{key}: unexpected (found shape {tuple(flat[key].shape)}; the config "
                        f"has no such parameter)")
    if problems:
        raise CheckpointError(
            f"{source} does not fit the config (width={config.width}, depth={config.depth}, "
            f"mlp_dim={config.mlp_dim}, num_heads={config.num_heads}, "
            f"patch_size={config.patch_size}, pool_type={config.pool_type!r}, "
            f"posemb={config.posemb!r}, representation_size={config.representation_size}, "
            f"num_classes={config.num_classes}); {len(problems)} problem(s):\n  "
            + "\n  ".join(problems[:_SHOWN])
            + (f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""))
    tree = unflatten(out)
    return unrolled_to_scanned(tree) if config.scan else tree


def unrolled_numpy(params: dict) -> dict:
    """vitlib params (scanned or not, jax or numpy) as an unrolled tree of numpy arrays."""
    params = jax.tree_util.tree_map(np.asarray, params)
    return unroll(params)


def check_free_fields(overrides: dict) -> None:
    allowed = set(ViTConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"config: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
