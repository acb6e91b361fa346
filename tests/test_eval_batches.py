"""Evaluation never pads a split beyond itself: a split smaller than ``eval_batch_size`` runs as
one batch of its own size, with the accuracy of the padded batch; larger splits are unchanged."""
import jax
import numpy as np
import pytest

from vitlib.data.batches import eval_batches
from vitlib.models import ViT, vit_config
from vitlib.train.evaluation import accuracy, eval_batch_size_for
from vitlib.train.sharding import make_mesh, shard_batch
from vitlib.train.steps import make_eval_step

CONFIG = vit_config(width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=7, image_size=28,
                    num_classes=3)


@pytest.fixture(scope="module")
def setup():
    model = ViT(CONFIG)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1), np.float32))["params"]
    params = jax.tree_util.tree_map(  # random head: predictions that differ between images
        lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(1), a.shape), params)
    step = jax.jit(make_eval_step(model, micro_batches=4))
    seen = []

    def recording_step(p, batch):
        seen.append(batch["image"].shape[0])
        return step(p, batch)
    return params, step, recording_step, seen


def _data(n):
    rng = np.random.RandomState(n)
    return rng.randint(0, 256, (n, 28, 28, 1)).astype(np.uint8), rng.randint(0, 3, n)


def _padded_accuracy(step, params, images, labels, batch_size, mesh):
    """The previous behaviour: every batch, the last one too, of ``batch_size``."""
    correct = sum(int(step(params, shard_batch(b, mesh)))
                  for b in eval_batches(images, labels, batch_size))
    return correct / len(images)


@pytest.mark.parametrize("n", [12, 13])
def test_a_split_smaller_than_the_eval_batch_is_not_padded(setup, n):
    params, step, recording_step, seen = setup
    mesh = make_mesh()
    images, labels = _data(n)
    seen.clear()
    got = accuracy(recording_step, params, images, labels, 1000, mesh)
    assert seen == [n]  # one batch, the split's own size (not 1,000)
    assert got == _padded_accuracy(step, params, images, labels, 1000, mesh)


def test_splits_larger_than_a_batch_keep_the_batch_and_the_result(setup):
    params, step, recording_step, seen = setup
    mesh = make_mesh()
    images, labels = _data(30)
    seen.clear()
    got = accuracy(recording_step, params, images, labels, 8, mesh)
    assert seen == [8, 8, 8, 8]
    assert got == _padded_accuracy(step, params, images, labels, 8, mesh)


def test_the_batch_rounds_up_to_the_devices_only():
    assert eval_batch_size_for(12, 1000, 1) == 12
    assert eval_batch_size_for(12, 1000, 8) == 16
    assert eval_batch_size_for(5000, 1000, 8) == 1000
    assert eval_batch_size_for(0, 1000, 1) == 1


def test_a_small_split_gets_the_numbers_of_a_full_padded_batch():
    """With micro-batched eval programs (slices of 250 of a 1,000 batch, as on CPU), a 599-image
    split runs in slices of the same 250 (a batch of 750), so each example's features are
    bit-identical to the padded batch's; slices of another shape would round differently."""
    from vitlib.evals import fewshot
    from vitlib.train.steps import make_feature_fn

    model = ViT(CONFIG)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1), np.float32))["params"]
    images, _ = _data(599)
    features = jax.jit(make_feature_fn(model, 4, slice_size=250))
    padded = fewshot.extract_features(lambda b: features(params, b), images, 1000,
                                      lambda b: b.astype(np.float32) / 255)
    batch = eval_batch_size_for(599, 1000, 1, slice_size=250)
    assert batch == 750
    small = fewshot.extract_features(lambda b: features(params, b), images, batch,
                                     lambda b: b.astype(np.float32) / 255)
    np.testing.assert_array_equal(small, padded)
