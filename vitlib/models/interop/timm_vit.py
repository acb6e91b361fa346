"""timm ``VisionTransformer`` state dicts (PyTorch files or safetensors) <-> vitlib parameters.

The mapping (``D`` width, ``H`` heads, ``d = D / H``; torch ``Linear`` weights are ``(out, in)``):

- ``patch_embed.proj.weight`` ``(D, C, p, p)`` -> ``embedding/kernel`` ``(p, p, C, D)``
- ``cls_token`` (+ ``pos_embed[:, 0]`` unless ``no_embed_class``) -> ``cls``;
  ``pos_embed`` (its grid part) -> ``pos_embedding``
- ``blocks.i.attn.qkv`` ``(3D, D)`` -> ``MultiHeadDotProductAttention_0/{query,key,value}``
  ``(D, H, d)``; ``blocks.i.attn.proj`` -> ``.../out`` ``(H, d, D)``
- ``blocks.i.{norm1, norm2, mlp.fc1, mlp.fc2}`` -> ``LayerNorm_0``, ``LayerNorm_1``,
  ``MlpBlock_0/Dense_0``, ``MlpBlock_0/Dense_1``; ``norm`` -> ``Transformer/encoder_norm``
- ``attn_pool.{latent, q, kv, proj, norm, mlp}`` -> ``MAPHead_0/{probe, query, key + value,
  out, LayerNorm_0, MlpBlock_0}``; ``head`` -> ``head``

Conventions where vitlib (like big_vision) and timm's defaults differ, and the timm arguments
that make timm compute vitlib's function (``timm_kwargs`` returns them):

- GELU: vitlib uses the tanh approximation (``flax.linen.gelu``), timm exact ``nn.GELU``:
  ``act_layer='gelu_tanh'``. A timm checkpoint trained with exact GELU loads (the weights are
  the same), but vitlib then computes a slightly different function.
- Position embedding: vitlib adds it to the patch tokens *before* prepending the class token
  (``no_embed_class=True``). timm's default adds it after, with a class slot; on load that slot
  is folded into the class token (``cls + pos_embed[:, 0]``), which is exact.
- GAP: vitlib applies the final LayerNorm before pooling (``fc_norm=False``); timm's default for
  ``global_pool='avg'`` normalises after pooling (``fc_norm``), which vitlib cannot express:
  such a checkpoint is refused.
- LayerNorm eps 1e-6 in both; no representation layer (``pre_logits``) in timm, so a vitlib
  model with ``representation_size`` cannot be exported.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Optional

import ml_dtypes
import numpy as np

from vitlib.files import write_bytes_atomic
from vitlib.models.interop.common import CheckpointError, split_class_slot, to_numpy, unrolled_numpy
from vitlib.models.variants import SHAPES, ViTConfig

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
              "F64": np.float64, "I64": np.int64, "I32": np.int32}
_POOL_TO_TIMM = {"tok": "token", "gap": "avg", "map": "map"}


# ---- files -------------------------------------------------------------------------------------

def read_safetensors(path) -> dict:
    """``{name: numpy array}`` from a .safetensors file (8-byte header size, JSON header, data)."""
    data = Path(path).read_bytes()
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + size])
    except (struct.error, ValueError) as err:
        raise CheckpointError(f"from: {path} is not a safetensors file ({err})") from None
    header.pop("__metadata__", None)
    out, base = {}, 8 + size
    for name, info in header.items():
        if info["dtype"] not in _ST_DTYPES:
            raise CheckpointError(f"{name}: safetensors dtype {info['dtype']} is not supported; "
                                  f"allowed: {sorted(_ST_DTYPES)}")
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(data[base + start:base + end], _ST_DTYPES[info["dtype"]]
                                  ).reshape(info["shape"]).copy()
    return out


def write_safetensors(state: dict, path) -> Path:
    names = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for name in sorted(state):
        array = np.ascontiguousarray(state[name])
        raw = array.tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return write_bytes_atomic(Path(path), struct.pack("<Q", len(blob)) + blob + b"".join(chunks))


def read_torch(path) -> dict:
    """A ``torch.save``d state dict (``.pth``/``.pt``/``.bin``) as numpy; needs torch."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"from: reading {path} needs PyTorch (pip install torch), or save "
                              f"the state dict as .safetensors, which needs nothing") from None
    try:  # weights only: a checkpoint's pickled code is never run
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's messages run to many lines; one names the problem
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise CheckpointError(f"from: {path} is not a readable PyTorch state dict "
                              f"({first.strip()[:200]})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise CheckpointError(f"from: {path} holds a {type(state).__name__}, not a state dict")
    def numpy(v):
        if not hasattr(v, "numpy"):
            return np.asarray(v)
        if v.dtype == torch.bfloat16:  # numpy has no bfloat16: keep the bits
            return v.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return v.numpy()
    return {k: numpy(v) for k, v in state.items()}


def load_state_dict(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"from: {path} does not exist")
    return read_safetensors(path) if path.suffix == ".safetensors" else read_torch(path)


# ---- timm -> vitlib ----------------------------------------------------------------------------

class _Reader:
    """Pops keys off a state dict, so that whatever is left over can be reported."""

    def __init__(self, state: dict):
        self.state = {k.removeprefix("module."): to_numpy(v) for k, v in state.items()}

    def take(self, key: str, shape: Optional[tuple] = None) -> np.ndarray:
        if key not in self.state:
            raise CheckpointError(f"{key}: missing from the timm state dict"
                                  + (f" (expected shape {shape})" if shape else ""))
        value = self.state.pop(key)
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"{key}: shape {tuple(value.shape)} found, {tuple(shape)} "
                                  f"expected")
        return value

    def has(self, prefix: str) -> bool:
        return any(k == prefix or k.startswith(prefix + ".") for k in self.state)


def _linear(r: _Reader, name: str, d_in: int, d_out: Optional[int] = None) -> dict:
    weight = r.take(f"{name}.weight")
    if weight.ndim != 2 or weight.shape[1] != d_in or (d_out and weight.shape[0] != d_out):
        raise CheckpointError(f"{name}.weight: shape {weight.shape} found, "
                              f"({d_out or 'out'}, {d_in}) expected")
    return {"kernel": weight.T, "bias": r.take(f"{name}.bias", (weight.shape[0],))}


def _norm(r: _Reader, name: str, width: int) -> dict:
    return {"scale": r.take(f"{name}.weight", (width,)), "bias": r.take(f"{name}.bias", (width,))}


def _heads(w: np.ndarray, b: np.ndarray, heads: int) -> dict:
    """A (D_in -> H*d) projection (flax kernel layout) as Flax MHA's (D_in, H, d)."""
    d_in, d_out = w.shape
    return {"kernel": w.reshape(d_in, heads, d_out // heads), "bias": b.reshape(heads, -1)}


def _mha(q: dict, k: dict, v: dict, out: dict, heads: int) -> dict:
    width = out["kernel"].shape[1]
    return {"query": _heads(q["kernel"], q["bias"], heads),
            "key": _heads(k["kernel"], k["bias"], heads),
            "value": _heads(v["kernel"], v["bias"], heads),
            "out": {"kernel": out["kernel"].reshape(heads, -1, width), "bias": out["bias"]}}


def _split(lin: dict, parts: int) -> list:
    ks = np.split(lin["kernel"], parts, axis=1)
    bs = np.split(lin["bias"], parts)
    return [{"kernel": k, "bias": b} for k, b in zip(ks, bs)]


def _mlp(r: _Reader, name: str, width: int) -> dict:
    fc1 = _linear(r, f"{name}.fc1", width)
    return {"Dense_0": fc1, "Dense_1": _linear(r, f"{name}.fc2", fc1["kernel"].shape[1], width)}


def infer_num_heads(width: int, depth: int, mlp_dim: int) -> Optional[int]:
    """timm state dicts do not store the head count: take it from a named shape."""
    for w, dep, mlp, heads in SHAPES.values():
        if (w, dep, mlp) == (width, depth, mlp_dim):
            return heads
    return None


def from_timm(state: dict, num_heads: Optional[int] = None) -> dict:
    """vitlib's unrolled parameter tree from a timm ``VisionTransformer`` state dict.

    ``num_heads`` is needed unless (width, depth, mlp_dim) is one of vitlib's named shapes.
    Every key of the state dict must be used; a timm feature vitlib lacks (register tokens,
    layer scale, qk-norm, a pre-norm, ``fc_norm``) is an error naming its key."""
    r = _Reader(state)
    for key, why in (("reg_token", "register tokens"), ("norm_pre", "a norm before the encoder "
                     "(pre_norm=True)"), ("fc_norm", "a LayerNorm after pooling (timm's fc_norm, "
                     "the default for global_pool='avg'; vitlib normalises before pooling: "
                     "fc_norm=False)")):
        if r.has(key):
            found = sorted(k for k in r.state if k.split(".")[0] == key)
            raise CheckpointError(f"{found[0]}: {why} has no vitlib equivalent")
    proj = r.take("patch_embed.proj.weight")
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
        raise CheckpointError(f"patch_embed.proj.weight: shape {proj.shape} found, "
                              f"(width, channels, patch, patch) expected")
    width = proj.shape[0]
    params = {"embedding": {"kernel": proj.transpose(2, 3, 1, 0),
                            "bias": r.take("patch_embed.proj.bias", (width,))}}
    depth = 0
    while r.has(f"blocks.{depth}"):
        depth += 1
    if not depth:
        raise CheckpointError("blocks.0: no transformer blocks in the timm state dict; keys "
                              f"found: {sorted(r.state)[:12]}")
    mlp_dim = r.state["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in \
        r.state else None
    heads = num_heads or (mlp_dim and infer_num_heads(width, depth, mlp_dim))
    if not heads:
        raise CheckpointError(
            f"num_heads: a timm state dict does not store the head count and (width {width}, "
            f"depth {depth}, mlp_dim {mlp_dim}) is not a named vitlib shape; pass num_heads "
            f"(--num-heads) or a variant")
    if width % heads:
        raise CheckpointError(f"num_heads: {heads} does not divide the width {width}")

    cls = r.take("cls_token", (1, 1, width)) if "cls_token" in r.state else None
    if "pos_embed" not in r.state:
        raise CheckpointError("pos_embed: missing; a timm ViT without a position embedding "
                              "(pos_embed='none') has no vitlib equivalent")
    pos, cls = split_class_slot(r.take("pos_embed"), cls, "pos_embed")
    params["pos_embedding"] = pos
    if cls is not None:
        params["cls"] = cls

    encoder = {}
    for i in range(depth):
        b = f"blocks.{i}"
        q, k, v = _split(_linear(r, f"{b}.attn.qkv", width, 3 * width), 3)
        encoder[f"encoderblock_{i}"] = {
            "LayerNorm_0": _norm(r, f"{b}.norm1", width),
            "MultiHeadDotProductAttention_0": _mha(q, k, v, _linear(r, f"{b}.attn.proj", width,
                                                                      width), heads),
            "LayerNorm_1": _norm(r, f"{b}.norm2", width),
            "MlpBlock_0": _mlp(r, f"{b}.mlp", width)}
    encoder["encoder_norm"] = _norm(r, "norm", width)
    params["Transformer"] = encoder

    if r.has("attn_pool"):
        latent = r.take("attn_pool.latent")
        if latent.shape != (1, 1, width):
            raise CheckpointError(f"attn_pool.latent: shape {latent.shape} found, (1, 1, {width})"
                                  f" expected (vitlib's MAP head has one probe)")
        kv = _split(_linear(r, "attn_pool.kv", width, 2 * width), 2)
        params["MAPHead_0"] = {
            "probe": latent,
            "MultiHeadDotProductAttention_0": _mha(_linear(r, "attn_pool.q", width, width), *kv,
                                                   _linear(r, "attn_pool.proj", width, width),
                                                   heads),
            "LayerNorm_0": _norm(r, "attn_pool.norm", width),
            "MlpBlock_0": _mlp(r, "attn_pool.mlp", width)}
    if "head.weight" in r.state:
        params["head"] = _linear(r, "head", width)
    if r.state:
        key = sorted(r.state)[0]
        raise CheckpointError(f"{key}: unexpected key in the timm state dict (shape "
                              f"{tuple(r.state[key].shape)}); vitlib has no such parameter "
                              f"({len(r.state)} left over: {sorted(r.state)[:8]})")
    return params


def timm_activation(model) -> str:
    """``'gelu_tanh'``, ``'gelu'`` (exact) or another name: the MLP activation of a timm
    ``VisionTransformer`` module (a state dict does not record it)."""
    blocks = getattr(model, "blocks", None)
    act = getattr(getattr(blocks[0], "mlp", None), "act", None) if blocks else None
    approximate = getattr(act, "approximate", None)
    if type(act).__name__ == "GELU" and approximate is not None:
        return "gelu_tanh" if approximate == "tanh" else "gelu"
    if type(act).__name__ == "GELUTanh":
        return "gelu_tanh"
    return type(act).__name__


def from_timm_model(model) -> dict:
    """vitlib's unrolled parameter tree from a timm ``VisionTransformer`` module. A model on
    exact GELU (timm's default) converts with a one-line warning: vitlib computes tanh GELU
    (measured difference on logits of size ~1: 1.4e-4); another activation is refused."""
    import warnings

    act = timm_activation(model)
    if act == "gelu":
        warnings.warn("timm model uses exact GELU (timm's default); vitlib computes tanh GELU, "
                      "so the converted model differs slightly (~1e-4 on logits); build it with "
                      "act_layer='gelu_tanh' to match", stacklevel=2)
    elif act != "gelu_tanh":
        raise CheckpointError(f"act_layer: the timm model's MLP activation is {act}; vitlib "
                              f"computes tanh GELU (allowed: 'gelu_tanh', or 'gelu' with a "
                              f"warning)")
    state = {k: v.detach().cpu().contiguous().numpy() if str(v.dtype) != "torch.bfloat16"
             else v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    return from_timm(state, getattr(model.blocks[0].attn, "num_heads", None))


# ---- vitlib -> timm ----------------------------------------------------------------------------

def timm_kwargs(config: ViTConfig, params: Optional[dict] = None) -> dict:
    """``timm.create_model('vit_base_patch16_224', pretrained=False, **timm_kwargs(config))``
    (or ``VisionTransformer(**...)``) builds the timm model that computes vitlib's function.
    ``in_chans`` is ``config.in_channels`` (set by ``interop.load`` and ``load_workdir``), else
    the channels of ``params``' patch kernel when given, else 3."""
    if config.representation_size is not None:
        raise CheckpointError(f"pre_logits: representation_size={config.representation_size} "
                              f"has no timm VisionTransformer equivalent (timm has no "
                              f"pre-logits Dense+tanh)")
    ratio = config.mlp_dim / config.width
    if int(config.width * ratio) != config.mlp_dim:
        ratio = math.nextafter(ratio, math.inf)
    channels = config.in_channels
    if channels is None and params is not None:
        channels = int(unrolled_numpy(params)["embedding"]["kernel"].shape[2])
    return dict(img_size=config.image_size, patch_size=config.patch_size, in_chans=channels or 3,
                num_classes=config.num_classes, global_pool=_POOL_TO_TIMM[config.pool_type],
                embed_dim=config.width, depth=config.depth, num_heads=config.num_heads,
                mlp_ratio=ratio, class_token=config.pool_type == "tok", no_embed_class=True,
                fc_norm=False, act_layer="gelu_tanh")


def to_timm(params: dict, config: ViTConfig) -> dict:
    """vitlib params as a timm state dict (numpy arrays; ``torch.from_numpy`` each to load it
    with ``model.load_state_dict``) for the model ``timm_kwargs(config)`` describes. A
    ``sincos2d`` position embedding is written out as the fixed table vitlib adds."""
    from vitlib.models.vit import posemb_sincos2d

    p = unrolled_numpy(params)
    timm_kwargs(config)  # refuses what timm cannot hold
    width = config.width
    lin = lambda d: {"weight": d["kernel"].T, "bias": d["bias"]}  # noqa: E731
    norm = lambda d: {"weight": d["scale"], "bias": d["bias"]}  # noqa: E731

    def mha_parts(m):
        q, k, v = (m[n]["kernel"].reshape(width, width).T for n in ("query", "key", "value"))
        qb, kb, vb = (m[n]["bias"].reshape(width) for n in ("query", "key", "value"))
        out = {"weight": m["out"]["kernel"].reshape(width, width).T, "bias": m["out"]["bias"]}
        return (q, qb), (k, kb), (v, vb), out

    state = {"patch_embed.proj.weight": p["embedding"]["kernel"].transpose(3, 2, 0, 1),
             "patch_embed.proj.bias": p["embedding"]["bias"]}
    if "cls" in p:
        state["cls_token"] = p["cls"]
    if "pos_embedding" in p:
        state["pos_embed"] = p["pos_embedding"]
    else:
        grid = config.image_size // config.patch_size
        state["pos_embed"] = posemb_sincos2d(grid, grid, width).astype(
            p["embedding"]["kernel"].dtype)

    def put(prefix, tree):
        state.update({f"{prefix}.{k}": v for k, v in tree.items()})

    for i in range(config.depth):
        blk, b = p["Transformer"][f"encoderblock_{i}"], f"blocks.{i}"
        (q, qb), (k, kb), (v, vb), out = mha_parts(blk["MultiHeadDotProductAttention_0"])
        put(f"{b}.norm1", norm(blk["LayerNorm_0"]))
        put(f"{b}.attn.qkv", {"weight": np.concatenate([q, k, v]),
                              "bias": np.concatenate([qb, kb, vb])})
        put(f"{b}.attn.proj", out)
        put(f"{b}.norm2", norm(blk["LayerNorm_1"]))
        put(f"{b}.mlp.fc1", lin(blk["MlpBlock_0"]["Dense_0"]))
        put(f"{b}.mlp.fc2", lin(blk["MlpBlock_0"]["Dense_1"]))
    put("norm", norm(p["Transformer"]["encoder_norm"]))
    if "MAPHead_0" in p:
        m = p["MAPHead_0"]
        (q, qb), (k, kb), (v, vb), out = mha_parts(m["MultiHeadDotProductAttention_0"])
        state["attn_pool.latent"] = m["probe"]
        put("attn_pool.q", {"weight": q, "bias": qb})
        put("attn_pool.kv", {"weight": np.concatenate([k, v]), "bias": np.concatenate([kb, vb])})
        put("attn_pool.proj", out)
        put("attn_pool.norm", norm(m["LayerNorm_0"]))
        put("attn_pool.mlp.fc1", lin(m["MlpBlock_0"]["Dense_0"]))
        put("attn_pool.mlp.fc2", lin(m["MlpBlock_0"]["Dense_1"]))
    if "head" in p:
        put("head", lin(p["head"]))
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def save_timm(params: dict, config: ViTConfig, path) -> Path:
    """Writes a timm state dict: ``.safetensors`` (no torch needed) or ``.pth``/``.bin``."""
    state = to_timm(params, config)
    path = Path(path)
    if path.suffix == ".safetensors":
        return write_safetensors(state, path)
    try:
        import io

        import torch
    except ImportError:
        raise CheckpointError(f"to: writing {path} needs PyTorch; write .safetensors instead "
                              f"(timm reads it with safetensors.torch.load_file)") from None
    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, buffer)
    return write_bytes_atomic(path, buffer.getvalue())
