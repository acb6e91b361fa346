"""Micro-batched training and feature steps against the unsplit computation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitlib.models import ViT, vit_config
from vitlib.optim.chain import make_optimizer
from vitlib.train.steps import (init_state, loss_value, make_eval_step, make_feature_fn,
                                make_train_step, merge_micro_batches, micro_batches_for,
                                split_micro_batches)

OPTIM = dict(optimizer="adam", lr=1e-3, total_steps=10, grad_clip_norm=1.0,
             schedule=dict(kind="constant", warmup_steps=0), weight_decay=[(".*", 1e-4)])


def _setup(batch=16):
    model = ViT(vit_config("Pico/7", image_size=28, num_classes=10))
    tx = make_optimizer(OPTIM)
    rng = np.random.default_rng(0)
    data = {"image": jnp.asarray(rng.normal(size=(batch, 28, 28, 1)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, batch), jnp.int32)}
    return model, tx, init_state(model, tx, (28, 28, 1), 0), data


def test_split_is_strided_and_merge_inverts_it():
    x = jnp.arange(24).reshape(12, 2)
    parts = split_micro_batches(x, 4)
    assert parts.shape == (4, 3, 2)
    for j in range(4):
        np.testing.assert_array_equal(parts[j], x[j::4])
    np.testing.assert_array_equal(merge_micro_batches(parts), x)


@pytest.mark.parametrize("k", [2, 4])
def test_micro_batched_step_equals_whole_batch_step(k):
    model, tx, state, data = _setup()
    # Reference: plain jax.grad of the mean loss over the whole batch, then one update.
    whole = jax.jit(make_train_step(model, tx, "softmax"))
    split = jax.jit(make_train_step(model, tx, "softmax", micro_batches=k))
    s1, m1 = whole(state, data)
    s2, m2 = split(state, data)
    for key in ("loss", "grad_norm", "param_norm"):
        np.testing.assert_allclose(m2[key], m1[key], rtol=2e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s1.opt_state), jax.tree.leaves(s2.opt_state)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-8)


def test_micro_batched_features_equal_whole_batch_features():
    model, _, state, data = _setup(batch=12)
    whole = make_feature_fn(model)(state.params, data["image"])
    split = jax.jit(make_feature_fn(model, micro_batches=3))(state.params, data["image"])
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)


def test_micro_batched_eval_counts_what_a_numpy_argmax_counts():
    model, _, state, data = _setup(batch=12)
    # A random head instead of the zero one, so predictions differ between examples.
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: jax.random.normal(jax.random.PRNGKey(1), p.shape)
        if "head" in jax.tree_util.keystr(path) else p, state.params)
    logits, _ = model.apply({"params": params}, data["image"])
    mask = np.arange(12) < 10  # the last two are padding
    expected = int(np.sum((np.argmax(np.asarray(logits), -1) == data["label"]) & mask))
    batch = {**data, "mask": mask}
    assert len(set(np.argmax(np.asarray(logits), -1)[:10].tolist())) > 1
    for k in (1, 3):
        assert int(jax.jit(make_eval_step(model, micro_batches=k))(params, batch)) == expected


def test_micro_batches_for():
    assert micro_batches_for(256, 0, 1, platform="cpu") == 8  # 32 examples each
    assert micro_batches_for(256, 0, 2, platform="cpu") == 4  # 32 per device
    assert micro_batches_for(1000, 0, 1, platform="cpu", per_device=250) == 4
    assert micro_batches_for(500, 0, 1, platform="cpu") == 10  # largest divisor <= 15
    assert micro_batches_for(48, 0, 1, platform="cpu") == 1
    assert micro_batches_for(256, 0, 1, platform="gpu") == 1
    assert micro_batches_for(256, 64, 1, platform="gpu") == 4  # explicit wins everywhere
    assert micro_batches_for(256, 256, 1) == 1


@pytest.mark.parametrize("size, devices, match", [
    (-1, 1, "micro_batch_size: -1 is not allowed"),
    (48, 1, "micro_batch_size: 48 is not allowed with batch size 256"),
    (36, 8, "multiple of the device count"),
    (True, 1, "micro_batch_size: True"),
])
def test_micro_batch_size_errors_name_the_field(size, devices, match):
    with pytest.raises(ValueError, match=match):
        micro_batches_for(256 if size != 36 else 288, size, devices)


def test_micro_batches_must_divide_the_batch():
    model, tx, state, data = _setup(batch=16)
    with pytest.raises(ValueError, match="micro_batches: 3 does not divide the batch size 16"):
        make_train_step(model, tx, "softmax", micro_batches=3)(state, data)
    with pytest.raises(ValueError, match="micro_batches: 0 is not allowed"):
        make_train_step(model, tx, "softmax", micro_batches=0)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_label_smoothing_matches_a_numpy_reference(kind):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 6)
    alpha = 0.2
    targets = np.eye(5)[labels] * (1 - alpha) + alpha / 5
    if kind == "softmax":
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        expected = -(targets * log_p).sum(-1).mean()
    else:
        log_sig = -np.log1p(np.exp(-logits))
        log_not = -np.log1p(np.exp(logits))
        expected = -(targets * log_sig + (1 - targets) * log_not).sum(-1).mean()
    got = loss_value(kind, jnp.asarray(logits), jnp.asarray(labels), alpha)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    unsmoothed = loss_value(kind, jnp.asarray(logits), jnp.asarray(labels))
    assert abs(float(unsmoothed) - expected) > 1e-3  # the smoothing changes the loss


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.1", True])
def test_label_smoothing_errors_name_the_field(value):
    with pytest.raises(ValueError, match="label_smoothing"):
        loss_value("softmax", jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), value)
