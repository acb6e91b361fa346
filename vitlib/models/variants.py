"""ViT shapes by name, and the validated config every model is built from.

A variant string is ``NAME/PATCH``: ``NAME`` fixes width, depth, MLP width and heads (paper
Table 2 plus a few small CPU-sized names), ``PATCH`` the square patch size. Names are
case-sensitive because the paper's ``s`` and ``S`` are different models.
"""
from __future__ import annotations

import dataclasses
import math
import re
import warnings
from typing import Optional

# name -> (width, depth, mlp_dim, num_heads). Table 2 of the paper, then CPU-sized names.
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "s": (256, 6, 1024, 8),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    # Small shapes for 28x28 images on a laptop CPU (patch 4 gives 49 tokens).
    "Atto": (16, 2, 64, 1),
    "Femto": (32, 2, 128, 2),
    "Pico": (64, 4, 256, 2),
    "Nano": (128, 4, 512, 4),
    "Micro": (192, 6, 768, 3),
}
CPU_SHAPES = ("Atto", "Femto", "Pico", "Nano", "Micro")

POSEMB_TYPES = ("learn", "sincos2d")
POOL_TYPES = ("tok", "gap", "map")
REMAT_POLICIES = (
    "none",  # no rematerialisation
    "nothing_saveable",  # recompute everything in the backward pass
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
    "everything_saveable",
)
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_KERNELS = ("xla", "cudnn")  # vitlib.models.attention

_VARIANT_RE = re.compile(r"^([A-Za-z]+)/([0-9]+)$")


def parse_variant(variant: str) -> dict:
    """``"B/16"`` -> ``dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=16)``."""
    if not isinstance(variant, str):
        raise ValueError(f"variant: expected a string like 'B/16', got {variant!r}")
    match = _VARIANT_RE.match(variant.strip())
    if not match:
        raise ValueError(
            f"variant: {variant!r} is malformed; expected NAME/PATCH such as 'B/16' with NAME in "
            f"{sorted(SHAPES)} and PATCH a positive integer")
    name, patch = match.group(1), int(match.group(2))
    if name not in SHAPES:
        raise ValueError(
            f"variant: unknown name {name!r} in {variant!r}; allowed names (case-sensitive): "
            f"{sorted(SHAPES)}")
    if patch < 1:
        raise ValueError(f"variant: patch size in {variant!r} must be >= 1, got {patch}")
    width, depth, mlp_dim, num_heads = SHAPES[name]
    return dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads, patch_size=patch)


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Everything that defines a ViT. Validated on construction, before anything is traced."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int
    image_size: Optional[int] = 224  # used for up-front checks and FLOP counting; None = any
    num_classes: int = 0  # 0: no classifier head, the model outputs pre-logits
    posemb: str = "learn"
    pool_type: str = "gap"
    representation_size: Optional[int] = None  # optional pre-logits Dense+tanh
    head_zeroinit: bool = True
    # The classifier's initial bias: 0, or negative for a sigmoid loss over many classes, so the
    # first steps do not push every logit down (big_vision: -10 for JFT / ImageNet-21k, -6.9
    # for ImageNet-1k, about log(1/num_classes)).
    head_bias_init: float = 0.0
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    scan: bool = False  # lax.scan over encoder blocks (stacked params)
    remat_policy: str = "none"
    # Pad the encoder's token axis with masked zero tokens to a multiple of this (0 = off), as
    # accelerators that tile the sequence do (257 tokens -> 384 at 128): memory planning.
    pad_tokens_to: int = 0
    variant: Optional[str] = None  # the name it was built from, for display only
    attention: str = "xla"  # the attention kernel (vitlib.models.attention)
    # Image channels (1: grey-scale), when known: read off a checkpoint's patch kernel, carried
    # to timm's ``in_chans`` on export. None = any (the model takes what it is given).
    in_channels: Optional[int] = None

    def __post_init__(self):
        for field in ("width", "depth", "mlp_dim", "num_heads", "patch_size"):
            _check_positive_int(field, getattr(self, field))
        if self.image_size is not None:
            _check_positive_int("image_size", self.image_size)
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(f"num_classes: must be an integer >= 0, got {self.num_classes!r}")
        if isinstance(self.head_bias_init, bool) or not isinstance(self.head_bias_init,
                                                                   (int, float)):
            raise ValueError(f"head_bias_init: must be a number, got {self.head_bias_init!r}")
        if self.representation_size is not None:
            _check_positive_int("representation_size", self.representation_size)
        if self.in_channels is not None:
            _check_positive_int("in_channels", self.in_channels)
        if (isinstance(self.pad_tokens_to, bool) or not isinstance(self.pad_tokens_to, int)
                or self.pad_tokens_to < 0):
            raise ValueError(f"pad_tokens_to: must be an integer >= 0 (0 = no padding), got "
                             f"{self.pad_tokens_to!r}")
        _check_choice("posemb", self.posemb, POSEMB_TYPES)
        _check_choice("pool_type", self.pool_type, POOL_TYPES)
        _check_choice("remat_policy", self.remat_policy, REMAT_POLICIES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("param_dtype", self.param_dtype, DTYPES)
        _check_choice("attention", self.attention, ATTENTION_KERNELS)
        if self.width % self.num_heads:
            raise ValueError(
                f"num_heads: width {self.width} is not divisible by num_heads {self.num_heads}; "
                f"allowed: a divisor of the width")
        if self.posemb == "sincos2d" and (self.width % 4 or self.width < 8):
            raise ValueError(
                f"width: posemb 'sincos2d' needs a width divisible by 4 and >= 8, got "
                f"{self.width}; use posemb='learn' or another width")
        if self.image_size is not None:
            check_image_size(self.image_size, self.patch_size)

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def replace(self, **changes) -> "ViTConfig":
        return dataclasses.replace(self, **changes)


def untiled_pixels(image_size: int, patch_size: int) -> Optional[str]:
    """What VALID patchify drops when ``patch_size`` does not tile ``image_size``, else None."""
    remainder = image_size % patch_size
    if not remainder or patch_size > image_size:
        return None
    grid = image_size // patch_size
    return (f"patch {patch_size} does not tile {image_size} px images: VALID patchify drops "
            f"the last {remainder} pixel rows and columns (tokens = floor({image_size}/"
            f"{patch_size})^2 = {grid ** 2})")


def check_image_size(image_size: int, patch_size: int) -> int:
    """Returns the patches per side; warns when VALID patchify drops remainder pixels (training
    refuses that unless asked: ``vitlib.train.build``)."""
    if patch_size > image_size:
        raise ValueError(
            f"patch_size: {patch_size} is larger than the image ({image_size}px); allowed: "
            f"1..{image_size}")
    dropped = untiled_pixels(image_size, patch_size)
    if dropped:
        # Warned from this one line, so Python's default filter shows each message once
        # (the model and the FLOP count both check).
        warnings.warn(f"{dropped}, as big_vision's strided conv does", stacklevel=1)
    return image_size // patch_size


def vit_config(variant: Optional[str] = None, **overrides) -> ViTConfig:
    """A ViTConfig from a variant name and/or explicit fields; explicit fields win.

    ``vit_config("B/16", num_classes=1000, pool_type="map")`` or fully custom
    ``vit_config(width=96, depth=3, mlp_dim=384, num_heads=3, patch_size=4, image_size=28)``.
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ViTConfig)}
    if unknown:
        raise ValueError(
            f"vit_config: unknown field(s) {sorted(unknown)}; allowed: "
            f"{[f.name for f in dataclasses.fields(ViTConfig)]}")
    fields = parse_variant(variant) if variant is not None else {}
    if variant is not None:
        fields["variant"] = variant.strip()
    fields.update(overrides)
    missing = [f for f in ("width", "depth", "mlp_dim", "num_heads", "patch_size")
               if f not in fields]
    if missing:
        raise ValueError(f"vit_config: without a variant, these fields are required: {missing}")
    return ViTConfig(**fields)


def table2_variants() -> list[str]:
    """The rows of paper Table 2, in the paper's order (by GFLOPs)."""
    return ["s/28", "s/16", "S/32", "Ti/16", "B/32", "S/16", "B/28", "B/16", "L/16", "g/14",
            "G/14"]


def _check_positive_int(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field}: must be a positive integer, got {value!r}")


def _check_choice(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{field}: {value!r} is not allowed; choose one of {list(allowed)}")


def padded_length(length: int, multiple: int = 128) -> int:
    """The length hardware that tiles sequences by ``multiple`` actually pays for."""
    if multiple < 1:
        raise ValueError(f"multiple: must be >= 1, got {multiple}")
    return multiple * math.ceil(length / multiple)
