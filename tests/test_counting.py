"""Parameter and FLOP counts against paper Table 2, the real model and XLA's cost analysis."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitlib.models import ViT, count_flops, count_params, padded_length, sequence_length, vit_config
from vitlib.models.counting import xla_forward_flops

# Paper Table 2 as printed (params in M, GFLOPs at 224px); this copy is the test's own.
TABLE2 = [("s/28", "5.4", "0.7"), ("s/16", "5.0", "2.2"), ("S/32", "22", "2.3"),
          ("Ti/16", "5.5", "2.5"), ("B/32", "87", "8.7"), ("S/16", "22", "9.2"),
          ("B/28", "87", "11.3"), ("B/16", "86", "35.1"), ("L/16", "303", "122.9"),
          ("g/14", "1011", "533.1"), ("G/14", "1843", "965.3")]


def _tolerance(printed, rel):
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return rel * float(printed) + 0.5 * 10 ** -decimals


@pytest.mark.parametrize("variant, params_m, gflops", TABLE2)
def test_counts_match_paper_table2(variant, params_m, gflops):
    cfg = vit_config(variant, image_size=224, pool_type="gap", num_classes=0)
    assert abs(count_params(cfg) / 1e6 - float(params_m)) <= _tolerance(params_m, 0.01)
    assert abs(count_flops(cfg) / 1e9 - float(gflops)) <= _tolerance(gflops, 0.02)


def _real_param_count(cfg, image_size, channels):
    images = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
    shapes = jax.eval_shape(lambda x: ViT(cfg).init(jax.random.PRNGKey(0), x), images)
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes))


@pytest.mark.parametrize("variant", [row[0] for row in TABLE2])
def test_param_formula_equals_the_models_own_parameters(variant):
    cfg = vit_config(variant, scan=True)  # scan keeps tracing of deep models quick
    assert count_params(cfg) == _real_param_count(cfg, 224, 3)


@pytest.mark.parametrize("overrides", [
    dict(pool_type="map", num_classes=10),
    dict(pool_type="tok", num_classes=10, representation_size=32),
    dict(posemb="sincos2d", pool_type="gap", num_classes=3),
])
def test_param_formula_covers_heads_and_pooling(overrides):
    cfg = vit_config("Pico/4", image_size=28, **overrides)
    assert count_params(cfg, in_channels=1) == _real_param_count(cfg, 28, 1)


@pytest.mark.parametrize("variant", ["s/28", "Ti/16"])
def test_flop_formula_against_xla_cost_analysis(variant):
    cfg = vit_config(variant, image_size=224)
    xla, formula = xla_forward_flops(cfg), count_flops(cfg)
    # XLA adds element-wise work (norms, softmax, GELU) that the paper's convention leaves out.
    assert formula <= xla <= 1.03 * formula


def test_flop_formula_against_xla_with_map_head_and_class_token():
    for pool in ("map", "tok"):
        cfg = vit_config("Nano/4", image_size=28, pool_type=pool, num_classes=10)
        xla, formula = xla_forward_flops(cfg, in_channels=1), count_flops(cfg, in_channels=1)
        assert formula <= xla <= 1.08 * formula, pool


def test_sequence_lengths_and_padding():
    assert sequence_length(224, 14, class_token=False) == 256
    assert sequence_length(224, 14, class_token=True) == 257
    assert padded_length(256) == 256 and padded_length(257) == 384
    assert sequence_length(224, 16, class_token=True) == 197
    with pytest.warns(UserWarning, match="VALID patchify"):
        assert sequence_length(384, 14, class_token=False) == 27 * 27
