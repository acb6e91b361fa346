"""big_vision and google-research/vision_transformer ``.npz`` checkpoints.

Both are flat ``np.savez`` archives whose keys are Linen paths joined with ``/``. Read here:

- big_vision (today's layout, the one vitlib's names follow): optional ``params/`` (optax
  train state) or ``opt/target/`` (old Flax optimizer) prefix; ``pos_embedding`` at the top
  level with no class slot; ``Transformer/encoderblock`` as one scanned stack (leading depth
  axis) or unrolled ``encoderblock_N``; ``MAPHead_0`` (or its inlined ``probe`` variant);
  bfloat16 arrays stored as 2-byte void views.
- vision_transformer (the original ViT / AugReg releases): pre-Linen names
  (``MultiHeadDotProductAttention_1``, ``LayerNorm_2``, ``MlpBlock_3``),
  ``Transformer/posembed_input/pos_embedding`` (or ``Transformer/pos_embedding``) with a class
  slot that is added after the class token is prepended (folded into ``cls`` here: exact),
  ``pre_logits`` (Dense + tanh, vitlib's ``representation_size``).

Written: the big_vision layout, unrolled by default, no prefix (as big_vision's released
checkpoints), optionally with bfloat16 stored as big_vision stores it.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Optional

import ml_dtypes
import numpy as np

from vitlib.files import write_bytes_atomic
from vitlib.models.interop.common import (CheckpointError, flatten, split_class_slot, to_numpy,
                                          unflatten, unroll, unrolled_numpy)
from vitlib.models.params import unrolled_to_scanned

# Pre-Linen (vision_transformer) -> Linen (big_vision, vitlib) names inside an encoder block.
_OLD_BLOCK_NAMES = {"LayerNorm_0": "LayerNorm_0", "MultiHeadDotProductAttention_1":
                    "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1",
                    "MlpBlock_3": "MlpBlock_0"}
_PREFIXES = ("params/", "opt/target/")


def read_npz(path, prefix: Optional[str] = None) -> dict:
    """The flat ``{key: array}`` of an ``.npz`` with its prefix removed. ``prefix`` picks a
    sub-model (``"params/img/"`` for a SigLIP image tower); by default ``params/`` or
    ``opt/target/`` is stripped when every key has it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"from: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            flat = {k: to_numpy(archive[k]) for k in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        # numpy's own message for pickled object arrays suggests loading them unsafely: a
        # checkpoint's pickles are never loaded here, so say so instead.
        why = ("it holds pickled Python objects, which vitlib never loads from a checkpoint"
               if "pickle" in str(err) else str(err).splitlines()[0] if str(err) else
               type(err).__name__)
        raise CheckpointError(f"from: {path} is not a readable .npz archive of arrays ({why})"
                              ) from None
    if not flat:
        raise CheckpointError(f"from: {path} holds no arrays")
    if prefix:
        picked = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        if not picked:
            raise CheckpointError(f"prefix: no key of {path} starts with {prefix!r}; keys start "
                                  f"with {sorted({k.split('/')[0] for k in flat})}")
        return picked
    for p in _PREFIXES:  # a train state (params next to optimizer state) or bare params
        if all(k.startswith(p) for k in flat) or f"{p}embedding/kernel" in flat:
            return {k[len(p):]: v for k, v in flat.items() if k.startswith(p)}
    return flat


def layout_of(flat: dict) -> str:
    """``big_vision`` | ``vision_transformer``; anything else is an error naming what was found."""
    if "embedding/kernel" not in flat or not any(k.startswith("Transformer/") for k in flat):
        raise CheckpointError(
            f"layout: not a ViT checkpoint of big_vision or vision_transformer (no "
            f"'embedding/kernel' and 'Transformer/...' keys); top-level keys found: "
            f"{sorted({k.split('/')[0] for k in flat})[:20]}")
    old = any("/MultiHeadDotProductAttention_1/" in k or k.startswith("Transformer/posembed_input")
              for k in flat)
    return "vision_transformer" if old else "big_vision"


def from_npz_tree(flat: dict) -> dict:
    """A flat big_vision / vision_transformer tree as vitlib's unrolled parameter tree."""
    layout = layout_of(flat)
    params = unroll(unflatten(flat))
    encoder = dict(params["Transformer"])
    if layout == "vision_transformer":
        for name in [k for k in encoder if k.startswith("encoderblock_")]:
            block = encoder[name]
            unknown = sorted(set(block) - set(_OLD_BLOCK_NAMES))
            if unknown:
                raise CheckpointError(f"Transformer/{name}: unknown module(s) {unknown} in a "
                                      f"vision_transformer block; expected "
                                      f"{sorted(_OLD_BLOCK_NAMES)}")
            encoder[name] = {_OLD_BLOCK_NAMES[k]: v for k, v in block.items()}
    pos_key = None
    if "posembed_input" in encoder:  # the original ViT: a module of its own
        posemb = encoder.pop("posembed_input")
        if set(posemb) != {"pos_embedding"}:
            raise CheckpointError(f"Transformer/posembed_input: expected only 'pos_embedding', "
                                  f"found {sorted(posemb)}")
        params["pos_embedding"], pos_key = posemb["pos_embedding"], \
            "Transformer/posembed_input/pos_embedding"
    elif "pos_embedding" in encoder:  # widely used before 2022: inside the encoder
        params["pos_embedding"], pos_key = encoder.pop("pos_embedding"), \
            "Transformer/pos_embedding"
    params["Transformer"] = encoder
    if "pos_embedding" in params:
        pos, cls = split_class_slot(params["pos_embedding"], params.get("cls"),
                                    pos_key or "pos_embedding")
        params["pos_embedding"] = pos
        if cls is not None:
            params["cls"] = cls
    if "probe" in params:  # MAP head inlined at the top (ViT-G development checkpoints)
        params["MAPHead_0"] = {k: params.pop(k) for k in
                               ["probe", "MlpBlock_0", "MultiHeadDotProductAttention_0",
                                "LayerNorm_0"] if k in params}
    return params


def load_npz(path, prefix: Optional[str] = None) -> dict:
    """vitlib's unrolled parameter tree (numpy) from a big_vision or vision_transformer .npz."""
    return from_npz_tree(read_npz(path, prefix))


def to_npz_tree(params: dict, scan: bool = False, dtype: Optional[str] = None,
                prefix: str = "") -> dict:
    """vitlib params as the flat big_vision key -> array mapping that ``save_npz`` writes;
    ``dtype="bfloat16"`` stores 2-byte void views as big_vision does."""
    tree = unrolled_numpy(params)
    if scan:
        tree = unrolled_to_scanned(tree)
    flat = {}
    for key, value in flatten(tree).items():
        value = np.asarray(value)
        if dtype is not None:
            value = value.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype))
        if value.dtype == ml_dtypes.bfloat16:
            value = value.view(np.dtype("V2"))
        flat[prefix + key] = value
    return flat


def save_npz(params: dict, path, scan: bool = False, dtype: Optional[str] = None,
             prefix: str = "") -> Path:
    """Writes vitlib params as a big_vision ``.npz`` (atomically: temp file + rename)."""
    if dtype not in (None, "float32", "bfloat16", "float16"):
        raise ValueError(f"dtype: {dtype!r} is not allowed; choose None (keep), 'float32', "
                         f"'bfloat16' or 'float16'")
    buffer = io.BytesIO()
    np.savez(buffer, **to_npz_tree(params, scan=scan, dtype=dtype, prefix=prefix))
    return write_bytes_atomic(Path(path), buffer.getvalue())
