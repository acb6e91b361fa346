"""Vision Transformer (Flax linen), as trained in the paper.

Patch embedding (non-overlapping VALID conv) -> position embedding (``learn`` or ``sincos2d``)
-> [class token] -> pre-LN encoder blocks (MHA + GELU MLP), optionally scanned and rematerialised
-> final LayerNorm -> pooling (``tok`` | ``gap`` | ``map``) -> [pre-logits Dense+tanh] ->
zero-initialised classifier (absent when ``num_classes == 0``).

``ViT(config)(images)`` returns ``(out, aux)``: ``out`` is the logits, or the pre-logits when the
model has no head; ``aux`` holds ``encoded`` (tokens after the final norm) and ``pre_logits``.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitlib.models.attention import attention_function
from vitlib.models.variants import ViTConfig, check_image_size, padded_length


def posemb_sincos2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding of shape (1, h*w, width)."""
    y, x = np.mgrid[:h, :w]
    omega = np.arange(width // 4) / (width // 4 - 1)
    omega = 1.0 / (temperature ** omega)
    y = np.einsum("m,d->md", y.flatten(), omega)
    x = np.einsum("m,d->md", x.flatten(), omega)
    pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    return pe[None].astype(np.float32)


class PatchEmbedding(nn.Module):
    """The VALID, stride-``patch`` convolution of the paper, with ``nn.Conv``'s parameters
    (kernel ``(p, p, channels, width)``, bias), computed as one matmul over flattened patches:
    a strided convolution's weight gradient is several times slower on XLA:CPU than a matmul's."""

    width: int
    patch: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images, gh: int, gw: int):
        n, _, _, c = images.shape
        p = self.patch
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, c, self.width),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.width,), self.param_dtype)
        patches = (images[:, :gh * p, :gw * p]  # VALID: remainder pixels are dropped
                   .reshape(n, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
                   .reshape(n, gh * gw, p * p * c))
        return (jnp.dot(patches, kernel.reshape(p * p * c, self.width).astype(self.dtype))
                + bias.astype(self.dtype))


class MlpBlock(nn.Module):
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dense = lambda features, name: nn.Dense(  # noqa: E731
            features, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6))
        width = x.shape[-1]
        x = nn.gelu(dense(self.mlp_dim, "Dense_0")(x))
        return dense(width, "Dense_1")(x)


class EncoderBlock(nn.Module):
    """Pre-LN block. Takes ``(x, mask)`` (``mask``: which keys attention may see, None = all)
    and returns ``(x, None)`` so it can be the body of ``nn.scan``."""

    mlp_dim: int
    num_heads: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention: str = "xla"

    @nn.compact
    def __call__(self, x, mask=None):
        norm = lambda name: nn.LayerNorm(  # noqa: E731
            dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        y = norm("LayerNorm_0")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=nn.initializers.xavier_uniform(), name="MultiHeadDotProductAttention_0",
            attention_fn=attention_function(self.attention),
        )(y, y, mask=mask)
        x = x + y
        y = norm("LayerNorm_1")(x)
        y = MlpBlock(self.mlp_dim, self.dtype, self.param_dtype, name="MlpBlock_0")(y)
        return x + y, None


class Encoder(nn.Module):
    depth: int
    mlp_dim: int
    num_heads: int
    scan: bool = False
    remat_policy: str = "none"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention: str = "xla"

    @nn.compact
    def __call__(self, x, mask=None):
        block_cls = EncoderBlock
        if self.remat_policy != "none":
            block_cls = nn.remat(
                EncoderBlock,
                # Inside scan, CSE cannot merge the recomputation away, so skip the barrier.
                prevent_cse=not self.scan,
                policy=getattr(jax.checkpoint_policies, self.remat_policy))
        kwargs = dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads, dtype=self.dtype,
                      param_dtype=self.param_dtype, attention=self.attention)
        if self.scan:
            scanned = nn.scan(block_cls, variable_axes={"params": 0},
                              split_rngs={"params": True}, in_axes=nn.broadcast,
                              length=self.depth)
            x, _ = scanned(name="encoderblock", **kwargs)(x, mask)
        else:
            for layer in range(self.depth):
                x, _ = block_cls(name=f"encoderblock_{layer}", **kwargs)(x, mask)
        return nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype,
                            name="encoder_norm")(x)


class MAPHead(nn.Module):
    """Multihead attention pooling: one learned probe attends over all tokens."""

    mlp_dim: int
    num_heads: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention: str = "xla"

    @nn.compact
    def __call__(self, x):
        n, _, d = x.shape
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d),
                           self.param_dtype)
        probe = jnp.tile(probe, [n, 1, 1]).astype(self.dtype)
        x = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            attention_fn=attention_function(self.attention))(probe, x)
        y = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(x)
        x = x + MlpBlock(self.mlp_dim, self.dtype, self.param_dtype)(y)
        return x[:, 0]


class ViT(nn.Module):
    config: ViTConfig

    @nn.compact
    def __call__(self, images):
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        if images.ndim != 4:
            raise ValueError(f"images: expected shape (batch, height, width, channels), got "
                             f"{images.shape}")
        gh = check_image_size(images.shape[1], cfg.patch_size)
        gw = check_image_size(images.shape[2], cfg.patch_size)

        x = PatchEmbedding(cfg.width, cfg.patch_size, dtype=dtype, param_dtype=param_dtype,
                           name="embedding")(images.astype(dtype), gh, gw)
        n, _, c = x.shape

        if cfg.posemb == "learn":
            pos = self.param("pos_embedding",
                             nn.initializers.normal(stddev=1 / np.sqrt(cfg.width)),
                             (1, gh * gw, cfg.width), param_dtype)
        else:
            pos = posemb_sincos2d(gh, gw, cfg.width)
        x = x + jnp.asarray(pos, dtype)

        if cfg.pool_type == "tok":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c), param_dtype)
            x = jnp.concatenate([jnp.tile(cls.astype(dtype), [n, 1, 1]), x], axis=1)

        tokens, mask = x.shape[1], None
        if cfg.pad_tokens_to and padded_length(tokens, cfg.pad_tokens_to) > tokens:
            # What an accelerator that tiles the sequence does: zero tokens up to a multiple,
            # invisible to attention and dropped after the encoder (outputs unchanged).
            x = jnp.pad(x, ((0, 0), (0, padded_length(tokens, cfg.pad_tokens_to) - tokens),
                            (0, 0)))
            mask = (jnp.arange(x.shape[1]) < tokens)[None, None, None, :]
        x = Encoder(depth=cfg.depth, mlp_dim=cfg.mlp_dim, num_heads=cfg.num_heads,
                    scan=cfg.scan, remat_policy=cfg.remat_policy, dtype=dtype,
                    param_dtype=param_dtype, attention=cfg.attention,
                    name="Transformer")(x, mask)[:, :tokens]
        aux = {"encoded": x}

        if cfg.pool_type == "map":
            x = MAPHead(mlp_dim=cfg.mlp_dim, num_heads=cfg.num_heads, dtype=dtype,
                        param_dtype=param_dtype, attention=cfg.attention, name="MAPHead_0")(x)
        elif cfg.pool_type == "gap":
            x = jnp.mean(x, axis=1)
        else:  # tok
            x = x[:, 0]

        if cfg.representation_size is not None:
            x = nn.tanh(nn.Dense(cfg.representation_size, dtype=dtype, param_dtype=param_dtype,
                                 name="pre_logits")(x))
        aux["pre_logits"] = x

        if cfg.num_classes:
            kernel_init = (nn.initializers.zeros if cfg.head_zeroinit
                           else nn.initializers.lecun_normal())
            x = nn.Dense(cfg.num_classes, dtype=dtype, param_dtype=param_dtype,
                         kernel_init=kernel_init,
                         bias_init=nn.initializers.constant(cfg.head_bias_init), name="head")(x)
        return x, aux
