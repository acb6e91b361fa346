"""The ViT forward pass: shapes, heads, pooling, dtypes; scan and remat compute the same thing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitlib.models import ViT, posemb_sincos2d, scanned_to_unrolled, unrolled_to_scanned, vit_config

KEY = jax.random.PRNGKey(0)
IMAGES = jax.random.normal(jax.random.PRNGKey(1), (3, 28, 28, 1))
LABELS = jnp.array([1, 4, 7])


def _init(cfg, images=IMAGES):
    return ViT(cfg).init(KEY, images)["params"]


def _loss_fn(cfg):
    def loss(params, images):
        logits, _ = ViT(cfg).apply({"params": params}, images)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(logp, LABELS[:, None], axis=1))
    return loss


def _random_params(params, seed=3):
    """Non-zero everywhere (the zero-init head would hide differences)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [0.1 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])


@pytest.mark.parametrize("pool", ["gap", "tok", "map"])
def test_output_shapes_and_zero_init_head(pool):
    cfg = vit_config("Pico/4", image_size=28, num_classes=10, pool_type=pool)
    params = _init(cfg)
    logits, aux = ViT(cfg).apply({"params": params}, IMAGES)
    assert logits.shape == (3, 10)
    np.testing.assert_array_equal(logits, 0.0)  # zero-initialised classifier
    tokens = 49 + (pool == "tok")
    assert aux["encoded"].shape == (3, tokens, 64) and aux["pre_logits"].shape == (3, 64)
    assert ("MAPHead_0" in params) == (pool == "map") and ("cls" in params) == (pool == "tok")


def test_gap_pooling_is_the_mean_of_encoded_tokens():
    cfg = vit_config("Pico/4", image_size=28, num_classes=0, pool_type="gap")
    out, aux = ViT(cfg).apply({"params": _init(cfg)}, IMAGES)
    np.testing.assert_allclose(out, np.asarray(aux["encoded"]).mean(axis=1), rtol=1e-5,
                               atol=1e-6)


def test_no_head_returns_pre_logits_and_representation_layer_uses_tanh():
    cfg = vit_config("Pico/4", image_size=28, num_classes=0, representation_size=16)
    out, aux = ViT(cfg).apply({"params": _init(cfg)}, IMAGES)
    assert out.shape == (3, 16) and "head" not in _init(cfg)
    np.testing.assert_array_equal(out, aux["pre_logits"])
    assert np.all(np.abs(out) <= 1.0)


def test_sincos2d_matches_formula_and_has_no_parameter():
    h, w, width = 3, 5, 16
    pe = posemb_sincos2d(h, w, width)[0]
    omega = 1.0 / 10_000 ** (np.arange(4) / 3)
    for row in range(h):
        for col in range(w):
            expected = np.concatenate([np.sin(col * omega), np.cos(col * omega),
                                       np.sin(row * omega), np.cos(row * omega)])
            np.testing.assert_allclose(pe[row * w + col], expected, rtol=1e-6, atol=1e-7)
    cfg = vit_config("Pico/4", image_size=28, posemb="sincos2d")
    assert "pos_embedding" not in _init(cfg)


@pytest.mark.parametrize("pool", ["gap", "map"])
def test_scanned_and_unrolled_encoders_compute_the_same_function(pool):
    base = vit_config("Pico/4", image_size=28, num_classes=10, pool_type=pool)
    scanned_cfg = base.replace(scan=True)
    params = _random_params(_init(scanned_cfg))
    unrolled = scanned_to_unrolled(params)
    assert "encoderblock_3" in unrolled["Transformer"]
    out_s, _ = ViT(scanned_cfg).apply({"params": params}, IMAGES)
    out_u, _ = ViT(base).apply({"params": unrolled}, IMAGES)
    np.testing.assert_allclose(out_s, out_u, rtol=1e-5, atol=1e-6)
    g_s = jax.grad(_loss_fn(scanned_cfg))(params, IMAGES)
    g_u = jax.grad(_loss_fn(base))(unrolled, IMAGES)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                           scanned_to_unrolled(g_s), g_u)
    # The conversion is a bijection.
    back = unrolled_to_scanned(unrolled)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("policy", ["nothing_saveable", "dots_saveable"])
def test_remat_changes_neither_outputs_nor_gradients(scan, policy):
    plain = vit_config("Pico/4", image_size=28, num_classes=10, scan=scan)
    remat = plain.replace(remat_policy=policy)
    params = _random_params(_init(plain))
    loss_p, grad_p = jax.jit(jax.value_and_grad(_loss_fn(plain)))(params, IMAGES)
    loss_r, grad_r = jax.jit(jax.value_and_grad(_loss_fn(remat)))(params, IMAGES)
    np.testing.assert_allclose(loss_p, loss_r, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           grad_p, grad_r)


def test_remat_actually_rematerialises():
    """With nothing_saveable the backward pass recomputes the block: more dots in the HLO."""
    plain = vit_config("Pico/4", image_size=28, num_classes=10)
    remat = plain.replace(remat_policy="nothing_saveable")
    params = _init(plain)

    def dots(cfg):
        hlo = jax.jit(jax.grad(_loss_fn(cfg))).lower(params, IMAGES).as_text()
        return hlo.count("dot_general")
    assert dots(remat) > dots(plain)


def test_bf16_compute_with_fp32_params():
    cfg32 = vit_config("Pico/4", image_size=28, num_classes=10, head_zeroinit=False)
    cfg16 = cfg32.replace(dtype="bfloat16")
    params = _init(cfg16)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(params))
    out16, aux16 = ViT(cfg16).apply({"params": params}, IMAGES)
    out32, _ = ViT(cfg32).apply({"params": params}, IMAGES)
    assert out16.dtype == jnp.bfloat16 and aux16["encoded"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out16, np.float32), out32, rtol=0.1, atol=0.05)


def test_bf16_params():
    cfg = vit_config("Pico/4", image_size=28, param_dtype="bfloat16", dtype="bfloat16")
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree_util.tree_leaves(_init(cfg)))


def test_same_seed_same_parameters():
    cfg = vit_config("Pico/4", image_size=28, num_classes=10)
    jax.tree_util.tree_map(np.testing.assert_array_equal, _init(cfg), _init(cfg))


@pytest.mark.parametrize("size, patch, channels", [(28, 4, 1), (30, 4, 3), (32, 16, 3)])
def test_patch_embedding_is_flax_valid_conv(size, patch, channels):
    """Reference: Flax's strided VALID nn.Conv, the paper's patchify (incl. dropped remainder)."""
    import flax.linen as nn

    from vitlib.models.vit import PatchEmbedding

    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, size, size, channels)), jnp.float32)
    conv = nn.Conv(32, (patch, patch), strides=(patch, patch), padding="VALID")
    ref_params = conv.init(jax.random.PRNGKey(0), x)
    grid = size // patch
    ours = PatchEmbedding(32, patch)
    params = ours.init(jax.random.PRNGKey(0), x, grid, grid)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), ref_params, params))

    def loss(module_out):
        return jnp.sum(jnp.sin(module_out))

    ref_fn = lambda p: loss(conv.apply(p, x).reshape(3, grid * grid, 32))  # noqa: E731
    our_fn = lambda p: loss(ours.apply(p, x, grid, grid))  # noqa: E731
    np.testing.assert_allclose(our_fn(params), ref_fn(params), rtol=1e-5)
    g_ref, g_ours = jax.grad(ref_fn)(params), jax.grad(our_fn)(params)
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_ours)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


# Pooling happens after the padding is dropped, so tok and gap cover the heads' two paths.
@pytest.mark.parametrize("pool, scan, remat", [("tok", True, "nothing_saveable"),
                                               ("gap", False, "none")])
def test_padded_tokens_are_invisible_outputs_and_gradients_unchanged(pool, scan, remat):
    """pad_tokens_to adds masked zero tokens (17 -> 32 here): same parameters, outputs and
    gradients as the unpadded model, and the encoder really runs on the padded length."""
    plain = vit_config("Pico/7", image_size=28, num_classes=10, pool_type=pool, scan=scan,
                       remat_policy=remat)
    padded = plain.replace(pad_tokens_to=32)
    params = _random_params(_init(plain))
    assert (jax.tree_util.tree_structure(params)
            == jax.tree_util.tree_structure(_init(padded)))
    out_p, aux_p = ViT(plain).apply({"params": params}, IMAGES)
    out_q, aux_q = ViT(padded).apply({"params": params}, IMAGES)
    np.testing.assert_allclose(out_p, out_q, rtol=1e-5, atol=1e-6)
    assert aux_q["encoded"].shape == aux_p["encoded"].shape
    g_p = jax.grad(_loss_fn(plain))(params, IMAGES)
    g_q = jax.grad(_loss_fn(padded))(params, IMAGES)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                           g_p, g_q)
    hlo = jax.jit(lambda x: ViT(padded).apply({"params": params}, x)).lower(IMAGES).as_text()
    assert "x32x" in hlo.replace("[", "x").replace(",", "x")  # a (batch, 32, width) tensor


def test_pad_tokens_to_is_validated_and_counted_in_flops():
    from vitlib.models import count_flops

    with pytest.raises(ValueError, match="pad_tokens_to"):
        vit_config("B/16", pad_tokens_to=-1)
    # FLOPs: the encoder's cost grows as counted by hand for 384 instead of 257 tokens.
    plain = vit_config("B/14", pool_type="tok")
    w, m, depth = 768, 3072, 12
    block = lambda t: 2 * t * 4 * w * w + 2 * 2 * t * t * w + 2 * 2 * t * w * m  # noqa: E731
    assert (count_flops(plain.replace(pad_tokens_to=128)) - count_flops(plain)
            == depth * (block(384) - block(257)))
