"""model.attention: the fused kernel's wiring (jax.nn.dot_product_attention) against Flax's
attention and a numpy softmax(QK^T / sqrt(d)) V; 'cudnn' itself needs an NVIDIA GPU
(benchmarks/accelerator.py measures it there)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitlib.models import attention, vit
from vitlib.models.variants import vit_config


def _numpy_attention(q, k, v, lengths=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if lengths is not None:
        keys = np.arange(k.shape[1])[None, None, None, :] < np.asarray(lengths)[:, None, None, None]
        logits = np.where(keys, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


def test_the_fused_path_is_softmax_attention_with_padding_as_key_lengths():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 9, 3, 8)), jnp.float32) for _ in range(3))
    fn = attention.fused_attention("xla")  # the 'cudnn' code path, on an XLA kernel
    np.testing.assert_allclose(fn(q, k, v), _numpy_attention(q, k, v), rtol=1e-5, atol=1e-6)
    mask = (jnp.arange(9) < 6)[None, None, None, :]  # the ViT's padding mask: 6 real tokens
    np.testing.assert_allclose(fn(q, k, v, mask=mask), _numpy_attention(q, k, v, [6, 6]),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool, pad", [("map", 0), ("tok", 32)])
def test_a_vit_on_the_fused_path_equals_todays_attention(monkeypatch, pool, pad):
    """ViT(attention='cudnn') with the kernel swapped for XLA (no cuDNN on a CPU): same
    parameter tree, outputs and gradients as attention='xla' within float32 tolerance."""
    real, fused_calls = attention.attention_function, []

    def swapped(kernel):
        if kernel != "cudnn":
            return real(kernel)
        fn = attention.fused_attention("xla")

        def counted(query, key, value, bias=None, mask=None, dtype=None):
            # Flax passes only the keyword arguments an attention_fn's signature names.
            fused_calls.append(1)
            return fn(query, key, value, bias=bias, mask=mask, dtype=dtype)

        return counted

    monkeypatch.setattr(vit, "attention_function", swapped)
    base = vit_config(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=7, image_size=28,
                      num_classes=10, pool_type=pool, pad_tokens_to=pad)
    images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 28, 28, 1)), jnp.float32)
    ours, flax_attention = vit.ViT(base.replace(attention="cudnn")), vit.ViT(base)
    shapes = jax.eval_shape(flax_attention.init, jax.random.PRNGKey(0), images)
    assert (jax.tree_util.tree_structure(jax.eval_shape(ours.init, jax.random.PRNGKey(0), images))
            == jax.tree_util.tree_structure(shapes))
    rng = np.random.default_rng(2)  # random parameters (a non-zero head reaches attention)
    params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype), shapes)

    def value_and_grad(model):
        return jax.jit(jax.value_and_grad(lambda p: jnp.sum(jnp.sin(model.apply(p, images)[0]))))

    (value, grads), (ref_value, ref_grads) = value_and_grad(ours)(params), value_and_grad(
        flax_attention)(params)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    fused_calls.clear()
    jax.eval_shape(ours.apply, params, images)
    assert len(fused_calls) == base.depth + (pool == "map")  # every block (and the MAP head)


def test_attention_choices_are_checked():
    with pytest.raises(ValueError, match="attention"):
        vit_config("Pico/7", image_size=28, attention="flash")
    with pytest.raises(ValueError, match="'cudnn' needs an NVIDIA GPU backend"):
        attention.check_attention_backend("cudnn", "cpu")
    attention.check_attention_backend("cudnn", "gpu")
    attention.check_attention_backend("xla", "cpu")
