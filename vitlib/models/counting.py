"""Closed-form parameter, FLOP and token counts of a ViT config.

FLOPs follow the paper's Table 2 convention: forward pass, 2 x multiply-adds of every matmul
(patch embedding, QKV/out projections, attention scores and weighted values, MLP, MAP head,
pre-logits, classifier); element-wise work (norms, softmax, GELU) is not counted.
"""
from __future__ import annotations

from typing import Optional

from vitlib.models.variants import ViTConfig, check_image_size, padded_length


def num_patches(image_size: int, patch_size: int) -> int:
    """Tokens from VALID patchify of a square image: floor(size/patch)^2."""
    return check_image_size(image_size, patch_size) ** 2


def sequence_length(image_size: int, patch_size: int, class_token: bool) -> int:
    return num_patches(image_size, patch_size) + int(class_token)


def _mha_params(width: int) -> int:
    return 4 * (width * width + width)


def _mlp_params(width: int, mlp_dim: int) -> int:
    return width * mlp_dim + mlp_dim + mlp_dim * width + width


def count_params(cfg: ViTConfig, image_size: Optional[int] = None,
                 in_channels: int = 3) -> int:
    """Number of parameters of ``ViT(cfg)`` on square images with ``in_channels`` channels."""
    image_size = image_size or cfg.image_size
    w, p = cfg.width, cfg.patch_size
    total = p * p * in_channels * w + w  # patch embedding
    if cfg.posemb == "learn":
        total += num_patches(image_size, p) * w
    if cfg.pool_type == "tok":
        total += w
    block = 2 * 2 * w + _mha_params(w) + _mlp_params(w, cfg.mlp_dim)
    total += cfg.depth * block + 2 * w  # blocks + final norm
    if cfg.pool_type == "map":
        total += w + _mha_params(w) + 2 * w + _mlp_params(w, cfg.mlp_dim)
    features = w
    if cfg.representation_size is not None:
        total += w * cfg.representation_size + cfg.representation_size
        features = cfg.representation_size
    if cfg.num_classes:
        total += features * cfg.num_classes + cfg.num_classes
    return total


def count_flops(cfg: ViTConfig, image_size: Optional[int] = None, in_channels: int = 3) -> int:
    """Forward-pass FLOPs (2 x multiply-adds) for one image."""
    image_size = image_size or cfg.image_size
    w, p, m = cfg.width, cfg.patch_size, cfg.mlp_dim
    patches = num_patches(image_size, p)
    tokens = patches + int(cfg.pool_type == "tok")
    # Padding tokens are computed on too.
    encoder_tokens = padded_length(tokens, cfg.pad_tokens_to) if cfg.pad_tokens_to else tokens
    flops = 2 * patches * (p * p * in_channels) * w  # patch embedding
    per_block = (2 * encoder_tokens * 4 * w * w  # q, k, v and output projections
                 + 2 * 2 * encoder_tokens * encoder_tokens * w  # scores and weighted values
                 + 2 * 2 * encoder_tokens * w * m)  # MLP
    flops += cfg.depth * per_block
    if cfg.pool_type == "map":
        flops += (2 * w * w  # probe query projection
                  + 2 * 2 * tokens * w * w  # keys and values of all tokens
                  + 2 * 2 * tokens * w  # one query against all tokens
                  + 2 * w * w  # output projection
                  + 2 * 2 * w * m)  # MLP
    features = w
    if cfg.representation_size is not None:
        flops += 2 * w * cfg.representation_size
        features = cfg.representation_size
    if cfg.num_classes:
        flops += 2 * features * cfg.num_classes
    return flops


def xla_forward_flops(cfg: ViTConfig, image_size: Optional[int] = None,
                      in_channels: int = 3) -> float:
    """FLOPs of one image's forward pass as XLA's cost analysis counts them, from shapes only.

    An independent check of ``count_flops``: XLA also counts element-wise work, so it reads a
    little higher. Nothing is allocated; the forward pass is compiled for abstract inputs.
    """
    import jax
    import jax.numpy as jnp

    from vitlib.models.vit import ViT

    image_size = image_size or cfg.image_size
    model = ViT(cfg)
    images = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
    params = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)
    forward = jax.jit(lambda variables, x: model.apply(variables, x)[0])
    cost = forward.lower(params, images).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returns one dict per device
        cost = cost[0]
    return float(cost["flops"])
