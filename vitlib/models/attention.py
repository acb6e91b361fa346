"""The attention kernel of a ViT (``ViTConfig.attention``).

``xla``: Flax's ``nn.dot_product_attention`` (einsums and a softmax, which XLA fuses on any
backend); every run so far used it. ``cudnn``: ``jax.nn.dot_product_attention`` with
``implementation='cudnn'``, cuDNN's fused flash attention on NVIDIA GPUs (bf16/fp16). The only
mask a ViT makes is the padding of ``pad_tokens_to`` (real tokens first), which reaches cuDNN as
key lengths, its supported form of padding.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitlib.models.variants import ATTENTION_KERNELS


def fused_attention(implementation: str):
    """An ``attention_fn`` for ``nn.MultiHeadDotProductAttention`` that calls
    ``jax.nn.dot_product_attention(implementation=...)``; a boolean key mask (real tokens first)
    becomes ``key_value_seq_lengths``."""

    def attention(query, key, value, bias=None, mask=None, dtype=None):
        lengths = None
        if mask is not None:
            # (batch or 1, 1, 1, keys) -> the number of real keys per example.
            lengths = jnp.broadcast_to(jnp.sum(mask, axis=-1, dtype=jnp.int32).reshape(-1)[:1],
                                       (query.shape[0],))
        out = jax.nn.dot_product_attention(query, key, value, bias=bias,
                                           key_value_seq_lengths=lengths,
                                           implementation=implementation)
        return out.astype(dtype) if dtype is not None else out

    return attention


def attention_function(kernel: str):
    """The ``attention_fn`` of ``ViTConfig.attention``."""
    if kernel == "xla":
        return nn.dot_product_attention
    if kernel == "cudnn":
        return fused_attention("cudnn")
    raise ValueError(f"attention: {kernel!r} is not allowed; choose one of {list(ATTENTION_KERNELS)}")


def check_attention_backend(kernel: str, backend: str | None = None) -> None:
    """Refuses ``cudnn`` where no CUDA GPU runs the step (it would fail inside XLA's compile)."""
    backend = backend or jax.default_backend()
    if kernel == "cudnn" and backend != "gpu":
        raise ValueError(f"model.attention: 'cudnn' needs an NVIDIA GPU backend, this one is "
                         f"{backend!r}; allowed here: 'xla'")
