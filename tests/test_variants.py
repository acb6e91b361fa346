"""Variant names, config validation and the errors users see for bad input."""
import warnings

import jax
import pytest

from vitlib.models import ViTConfig, create_vit, parse_variant, vit_config


@pytest.mark.parametrize("variant, expected", [
    ("s/28", (256, 6, 1024, 8, 28)),
    ("Ti/16", (192, 12, 768, 3, 16)),
    ("S/32", (384, 12, 1536, 6, 32)),
    ("B/16", (768, 12, 3072, 12, 16)),
    ("L/16", (1024, 24, 4096, 16, 16)),
    ("g/14", (1408, 40, 6144, 16, 14)),
    ("G/14", (1664, 48, 8192, 16, 14)),
    ("B/8", (768, 12, 3072, 12, 8)),  # any NAME/P of a known width
    ("Pico/4", (64, 4, 256, 2, 4)),
    ("Micro/4", (192, 6, 768, 3, 4)),
])
def test_parse_variant_gives_paper_shapes(variant, expected):
    p = parse_variant(variant)
    assert (p["width"], p["depth"], p["mlp_dim"], p["num_heads"], p["patch_size"]) == expected


@pytest.mark.parametrize("bad, words", [
    ("X/16", ["variant", "'X'", "allowed"]),
    ("b/16", ["variant", "'b'"]),  # names are case-sensitive: s and S differ
    ("B16", ["variant", "malformed", "NAME/PATCH"]),
    ("B/", ["variant", "malformed"]),
    ("B/0", ["variant", ">= 1"]),
    ("", ["variant", "malformed"]),
])
def test_bad_variant_names_field_value_and_allowed(bad, words):
    with pytest.raises(ValueError) as err:
        vit_config(bad)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("overrides, words", [
    (dict(patch_size=32, image_size=28), ["patch_size", "32", "28"]),
    (dict(num_heads=5), ["num_heads", "5", "divisor"]),
    (dict(posemb="sincos2d", width=66, num_heads=2), ["width", "66", "sincos2d"]),
    (dict(pool_type="cls"), ["pool_type", "'cls'", "gap"]),
    (dict(posemb="fourier"), ["posemb", "'fourier'", "learn"]),
    (dict(remat_policy="everything"), ["remat_policy", "'everything'", "nothing_saveable"]),
    (dict(dtype="float8"), ["dtype", "'float8'", "bfloat16"]),
    (dict(depth=0), ["depth", "0"]),
    (dict(num_classes=-1), ["num_classes", "-1"]),
    (dict(colour="red"), ["colour", "allowed"]),
])
def test_bad_fields_raise_before_anything_is_traced(overrides, words, monkeypatch):
    traced = []
    monkeypatch.setattr(jax, "jit", lambda *a, **k: traced.append(a))
    with pytest.raises(ValueError) as err:
        create_vit("Pico/4", **{"image_size": 28, **overrides})
    for word in words:
        assert word in str(err.value)
    assert not traced


def test_custom_config_needs_all_shape_fields():
    with pytest.raises(ValueError, match="required"):
        vit_config(width=64, depth=2)
    cfg = vit_config(width=96, depth=3, mlp_dim=384, num_heads=3, patch_size=4, image_size=28)
    assert isinstance(cfg, ViTConfig) and cfg.head_dim == 32


def test_non_dividing_patch_warns_and_drops_remainder():
    with pytest.warns(UserWarning, match="drops the last 6 pixel"):
        vit_config("g/14", image_size=384)
    # The model itself: 30px with patch 4 -> floor(30/4)^2 = 49 tokens.
    model = create_vit("Pico/4", image_size=None)
    images = jax.ShapeDtypeStruct((1, 30, 30, 1), "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)
        _, aux = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
    assert any("VALID patchify" in str(w.message) for w in caught)
    assert variables["params"]["pos_embedding"].shape == (1, 49, 64)
    assert aux["encoded"].shape == (1, 49, 64)


def test_patch_larger_than_input_image_raises_at_call():
    model = create_vit("Pico/32", image_size=None)
    with pytest.raises(ValueError, match="patch_size: 32 is larger than the image"):
        model.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, 28, 28, 1)))
