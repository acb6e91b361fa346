"""Offline datasets (real Fashion-MNIST and digits), their integrity checks, and the input
pipeline's determinism."""
import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from vitlib.data import datasets
from vitlib.data.augment import Augment, preprocess
from vitlib.data.batches import Prefetcher, batch_indices, eval_batches, train_batch

FMNIST = Path(datasets.DEFAULT_FASHION_MNIST_DIR)
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST package missing: `make test` installs it (dataset-fashion-mnist)")


def _rows_digest(images):
    """Order-free digest of a set of images."""
    rows = sorted(hashlib.sha256(x.tobytes()).digest() for x in images)
    return hashlib.sha256(b"".join(rows)).hexdigest()


@needs_fmnist
def test_fashion_mnist_splits_partition_the_original_files():
    raw_train = datasets.read_idx(FMNIST / "train-images-idx3-ubyte.gz")
    raw_test = datasets.read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    train, train_y = datasets.load_split("fashion_mnist", "train")
    minival, minival_y = datasets.load_split("fashion_mnist", "minival")
    test, test_y = datasets.load_split("fashion_mnist", "test")
    assert train.shape == (54000, 28, 28, 1) and minival.shape == (6000, 28, 28, 1)
    assert test.shape == (10000, 28, 28, 1) and train.dtype == np.uint8
    np.testing.assert_array_equal(test[..., 0], raw_test)  # test kept in file order
    assert _rows_digest(np.concatenate([train, minival])[..., 0]) == _rows_digest(raw_train)
    assert set(np.unique(train_y)) == set(range(10)) and datasets.num_classes("fashion_mnist") == 10
    assert 500 <= np.bincount(minival_y).min()  # every class held out in minival


def test_digits_are_upsampled_and_split_without_overlap():
    from sklearn.datasets import load_digits
    splits = {s: datasets.load_split("digits", s) for s in datasets.SPLITS}
    assert sum(len(x) for x, _ in splits.values()) == 1797
    x, y = splits["test"]
    assert x.shape[1:] == (28, 28, 1) and x.dtype == np.uint8
    # Zoomed back to 8x8, every test image is nearest to an sklearn original of its own label.
    from scipy.ndimage import zoom
    originals = load_digits().images / 16.0
    small = np.stack([zoom(img[..., 0] / 255.0, 8 / 28, order=1) for img in x])
    errors = np.abs(small[:, None] - originals[None]).mean(axis=(2, 3))
    assert errors.min(axis=1).max() < 0.05
    assert np.all(load_digits().target[errors.argmin(axis=1)] == y)


def _copy_fmnist(tmp_path):
    folder = tmp_path / "fmnist"
    shutil.copytree(FMNIST, folder)
    return folder


@needs_fmnist
def test_truncated_file_is_a_clear_error(tmp_path):
    folder = _copy_fmnist(tmp_path)
    target = folder / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:2000])
    with pytest.raises(datasets.DataError, match="train-labels.*truncated or corrupt"):
        datasets.fashion_mnist_arrays(folder)


@needs_fmnist
def test_altered_file_fails_the_digest(tmp_path):
    folder = _copy_fmnist(tmp_path)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(target.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    target.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(datasets.DataError, match="t10k-labels.*SHA-256.*altered"):
        datasets.fashion_mnist_arrays(folder)


def test_missing_folder_says_how_to_install(tmp_path):
    with pytest.raises(datasets.DataError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist_arrays(tmp_path / "nowhere")


@needs_fmnist
def test_failed_build_leaves_no_partial_dataset(tmp_path):
    folder = _copy_fmnist(tmp_path)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    data_dir = tmp_path / "tfds"
    with pytest.raises(datasets.DataError):
        datasets.prepare("fashion_mnist", data_dir=str(data_dir), source_dir=str(folder))
    leftovers = [p for p in data_dir.rglob("*") if p.is_file()] if data_dir.exists() else []
    assert not [p for p in leftovers if "vitlib_fashion_mnist" in str(p)]


def test_other_names_are_read_prepared_from_the_data_dir_or_named_in_one_line(tmp_path):
    with pytest.raises(datasets.DataError, match=r"'no_such_dataset_anywhere' is not prepared in"):
        datasets.prepare("no_such_dataset_anywhere", data_dir=str(tmp_path))


def test_bad_split_names_the_allowed_ones():
    with pytest.raises(ValueError, match="split: 'validation'.*minival"):
        datasets.load_split("digits", "validation")
    with pytest.raises(ValueError, match="split: 'train\\+val'.*joined with '\\+'"):
        datasets.load_split("digits", "train+val")


def test_joined_splits_are_the_concatenation_of_their_parts():
    joined, joined_y = datasets.load_split("digits", "train+minival")
    parts = [datasets.load_split("digits", s) for s in ("train", "minival")]
    np.testing.assert_array_equal(joined, np.concatenate([x for x, _ in parts]))
    np.testing.assert_array_equal(joined_y, np.concatenate([y for _, y in parts]))


# ---------------------------------------------------------------- pipeline

def test_batches_are_a_pure_function_of_seed_and_step():
    x, y = datasets.load_split("digits", "train")
    aug = Augment(crop_padding=3, flip=True)
    a = train_batch(x, y, 17, 64, seed=5, augment=aug)
    b = train_batch(x, y, 17, 64, seed=5, augment=aug)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    c = train_batch(x, y, 18, 64, seed=5, augment=aug)
    d = train_batch(x, y, 17, 64, seed=6, augment=aug)
    assert not np.array_equal(a["label"], c["label"]) and not np.array_equal(a["label"], d["label"])
    assert a["image"].dtype == np.float32 and a["image"].min() >= -1 and a["image"].max() <= 1


def test_every_example_once_per_epoch_across_batch_boundaries():
    n, batch = 100, 32  # epochs do not align with batches
    seen = np.concatenate([batch_indices(s, batch, n, seed=0) for s in range(25)])  # 8 epochs
    for epoch in range(8):
        assert sorted(seen[epoch * n:(epoch + 1) * n]) == list(range(n))
    assert not np.array_equal(seen[:n], seen[n:2 * n])  # reshuffled every epoch


def test_crop_shifts_content_and_flip_mirrors():
    images = np.zeros((64, 8, 8, 1), np.uint8)
    images[:, 3, 5] = 255
    labels = np.arange(64)
    shifted = train_batch(images, labels, 0, 64, 0, Augment(crop_padding=2))["image"]
    positions = {tuple(np.argwhere(img[..., 0] > 0)[0]) for img in shifted if img.max() > 0}
    assert len(positions) > 5 and all(abs(r - 3) <= 2 and abs(c - 5) <= 2 for r, c in positions)
    flipped = train_batch(images, labels, 0, 64, 0, Augment(flip=True))["image"]
    cols = {int(np.argwhere(img[..., 0] > 0)[0][1]) for img in flipped}
    assert cols == {5, 2}


def test_eval_batches_cover_the_split_once_with_a_mask():
    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    y = np.arange(10)
    batches = list(eval_batches(x, y, 4))
    assert [b["image"].shape[0] for b in batches] == [4, 4, 4]
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(batches[0]["image"].ravel(), preprocess(x[:4]).ravel())


def test_prefetcher_yields_in_order_and_reraises():
    assert [s for s, _ in Prefetcher(lambda s: {"s": s}, 3, 9)] == list(range(3, 9))

    def broken(step):
        if step == 2:
            raise RuntimeError("disk gone")
        return {}
    with pytest.raises(RuntimeError, match="disk gone"):
        list(Prefetcher(broken, 0, 5))


def test_nested_subsets_lie_inside_each_other_whatever_the_seed():
    from vitlib.data.batches import nested_subset

    images = np.arange(1000, dtype=np.uint8).reshape(1000, 1, 1, 1) % 251
    labels = np.arange(1000)
    small, large = nested_subset(images, labels, 100)[1], nested_subset(images, labels, 400)[1]
    assert len(small) == 100 and len(large) == 400 and set(small) <= set(large)
    assert nested_subset(images, labels, 0)[1] is labels
    for bad in (-1, 1001, 2.5):
        with pytest.raises(ValueError, match=f"train_examples: {bad!r}"):
            nested_subset(images, labels, bad)


def test_processes_preparing_the_same_dataset_at_once_all_succeed(tmp_path):
    """Test workers and notebook kernels prepare data into one empty TFDS folder at the same
    time; each must end with the whole dataset (none may delete another's files)."""
    import subprocess
    import sys

    code = ("import sys; from vitlib.data import datasets; "
            "x, y = datasets.load_split('digits', 'test', sys.argv[1]); print(len(y))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert int(out.split()[-1]) > 500
    assert not list((tmp_path / "vitlib_digits").glob("incomplete*"))
