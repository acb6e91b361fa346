"""Datasets available offline, as TFDS builders that need no TensorFlow (array_record files).

- ``fashion_mnist``: from the gzipped IDX files of Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist/``), or a folder named by ``source_dir`` /
  ``VITLIB_FASHION_MNIST_DIR``. The decoded arrays are checked against fixed SHA-256 digests.
- ``digits``: scikit-learn's bundled 8x8 digits, upsampled to 28x28, with a fixed split.

Both have splits ``train``, ``minival`` (a fixed 10% held out of the original training set, for
choosing hyper-parameters) and ``test``. Prepared data lives under the TFDS data dir
(``TFDS_DATA_DIR``, default ``~/tensorflow_datasets``). Any other name passes through to TFDS.
"""
from __future__ import annotations

import fcntl
import functools
import gzip
import hashlib
import logging
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MINIVAL_FRACTION = 0.1
SPLIT_SEED = 0
# file -> SHA-256 of the decoded array's bytes (not of the .gz, which packagers recompress).
FASHION_MNIST_FILES = {
    ("train", "images"): ("train-images-idx3-ubyte.gz",
                          "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012"),
    ("train", "labels"): ("train-labels-idx1-ubyte.gz",
                          "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7"),
    ("test", "images"): ("t10k-images-idx3-ubyte.gz",
                         "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte.gz",
                         "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9"),
}
LOCAL_DATASETS = ("fashion_mnist", "digits")
SPLITS = ("train", "minival", "test")
INSTALL_HINT = ("install it with 'sudo apt-get install dataset-fashion-mnist' (or 'make data'), "
                "or set VITLIB_FASHION_MNIST_DIR to a folder holding the four *-ubyte.gz files")


class DataError(ValueError):
    """A data file is missing, truncated or altered."""


def tfds_data_dir(data_dir: Optional[str] = None) -> Path:
    return Path(data_dir or os.environ.get("TFDS_DATA_DIR")
                or Path.home() / "tensorflow_datasets").expanduser()


VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


def prepare_hint(name: str, root: Path) -> str:
    base = name.split(":")[0]
    return (f"prepare it with 'python -m vitlib.data.prepare build {base.split('/')[0]} "
            f"--folder IMAGE_FOLDER --data_dir {root}' (an image folder "
            f"<split>/<class>/*.jpg, or --list SPLIT=FILE), or on a machine with TensorFlow "
            f"with 'tfds build {base} --data_dir {root} --file_format=array_record' and copy "
            f"{root / base.split('/')[0]} here")


def datasets_in(root: Path) -> list[str]:
    """Names of the prepared datasets under a data dir (folders holding some
    ``[config/]version/dataset_info.json``), sorted; hidden and ``downloads`` folders skipped."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for sub in sorted(root.iterdir()):
        if sub.name.startswith(".") or sub.name == "downloads" or not sub.is_dir():
            continue
        if any(sub.glob("*/dataset_info.json")) or any(sub.glob("*/*/dataset_info.json")):
            found.append(sub.name)
    return found


def _version_key(path: Path):
    return tuple(int(p) for p in path.name.split("."))


def find_dataset_dir(name: str, root: Path) -> Optional[Path]:
    """``<root>/<name>[/<config>]/<version>`` holding dataset_info.json, or None. Without a
    version the newest one; a folder without a config part is tried before TFDS's default."""
    base, _, version = name.partition(":")
    if version and not VERSION_RE.match(version):
        raise DataError(f"dataset: version {version!r} in {name!r} is not allowed; use "
                        f"MAJOR.MINOR.PATCH, e.g. '{base}:1.0.0'")
    folder = Path(root) / base
    if not folder.is_dir():
        return None
    if version:
        candidate = folder / version
        return candidate if (candidate / "dataset_info.json").is_file() else None
    versions = [p for p in folder.iterdir()
                if VERSION_RE.match(p.name) and (p / "dataset_info.json").is_file()]
    return max(versions, key=_version_key) if versions else None


# ---------------------------------------------------------------- raw sources

def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (the MNIST format) as a uint8 array; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; Fashion-MNIST: {INSTALL_HINT}")
    try:
        raw = gzip.open(path).read()
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(f"data file {path} is truncated or corrupt ({err}); reinstall it: "
                        f"{INSTALL_HINT}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"data file {path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw[4:4 + 4 * ndim], ">u4").astype(int)
    data = np.frombuffer(raw[4 + 4 * ndim:], np.uint8)
    if data.size != int(np.prod(dims)):
        raise DataError(f"data file {path} holds {data.size} bytes of data, its header says "
                        f"{int(np.prod(dims))}: truncated or altered; {INSTALL_HINT}")
    return data.reshape(dims)


def _verified(array: np.ndarray, path: Path, digest: str) -> np.ndarray:
    actual = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    if actual != digest:
        raise DataError(f"data file {path} decodes to different data than Fashion-MNIST "
                        f"(SHA-256 {actual}, expected {digest}): altered or corrupt; "
                        f"{INSTALL_HINT}")
    return array


def fashion_mnist_source_dir(source_dir: Optional[str] = None) -> Path:
    return Path(source_dir or os.environ.get("VITLIB_FASHION_MNIST_DIR")
                or DEFAULT_FASHION_MNIST_DIR)


def fashion_mnist_arrays(source_dir: Optional[str] = None) -> dict:
    """{'train'|'test': (images [N,28,28,1] uint8, labels [N] int64)}, verified."""
    folder = fashion_mnist_source_dir(source_dir)
    if not folder.is_dir():
        raise DataError(f"Fashion-MNIST folder {folder} does not exist; {INSTALL_HINT}")
    arrays = {}
    for split in ("train", "test"):
        parts = {}
        for kind in ("images", "labels"):
            name, digest = FASHION_MNIST_FILES[(split, kind)]
            parts[kind] = _verified(read_idx(folder / name), folder / name, digest)
        arrays[split] = (parts["images"][..., None], parts["labels"].astype(np.int64))
    return arrays


def digits_arrays() -> dict:
    """scikit-learn's 8x8 digits, bilinearly upsampled to 28x28 uint8; fixed 2/3-1/3 split."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack([zoom(img / 16.0, 3.5, order=1) for img in digits.images])
    images = np.clip(np.round(images * 255), 0, 255).astype(np.uint8)[..., None]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    n_test = len(images) // 3
    test, train = order[:n_test], order[n_test:]
    labels = digits.target.astype(np.int64)
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def carve_minival(arrays: dict) -> dict:
    """Split a fixed ``MINIVAL_FRACTION`` of 'train' off as 'minival'."""
    images, labels = arrays["train"]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    n_minival = int(round(MINIVAL_FRACTION * len(images)))
    keep, held = np.sort(order[n_minival:]), np.sort(order[:n_minival])
    return {"train": (images[keep], labels[keep]), "minival": (images[held], labels[held]),
            "test": arrays["test"]}


# ---------------------------------------------------------------- TFDS builders

def _builder_class(tfds_name: str, description: str, load_arrays):
    import tensorflow_datasets as tfds

    class ArrayBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = tfds_name
        VERSION = tfds.core.Version("1.0.0")

        def __init__(self, source_dir=None, **kwargs):
            self._source_dir = source_dir
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, description=description, disable_shuffling=True,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10)}),
                supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            arrays = carve_minival(load_arrays(self._source_dir))  # verify before writing
            return {split: self._generate_examples(*arrays[split]) for split in SPLITS}

        def _generate_examples(self, images, labels):
            for i, (image, label) in enumerate(zip(images, labels)):
                yield i, {"image": image, "label": int(label)}

    return ArrayBuilder


@functools.cache
def _builders():
    return {
        "fashion_mnist": _builder_class(
            "vitlib_fashion_mnist", "Fashion-MNIST from local gzipped IDX files.",
            fashion_mnist_arrays),
        "digits": _builder_class(
            "vitlib_digits", "scikit-learn 8x8 digits upsampled to 28x28.",
            lambda source_dir: digits_arrays()),
    }


def check_dataset(name: str, data_dir: Optional[str] = None) -> None:
    """``name`` is a local dataset, a dataset prepared under the data dir, or a TFDS dataset;
    else an error (one line) saying where it looked, what is prepared there and the closest
    names, not TFDS's whole catalogue."""
    if name in LOCAL_DATASETS:
        return
    import difflib

    import tensorflow_datasets as tfds

    if not isinstance(name, str) or not name:
        raise DataError(f"dataset: {name!r} is not allowed; use {list(LOCAL_DATASETS)} or a "
                        f"TFDS dataset name")
    root = tfds_data_dir(data_dir)
    if find_dataset_dir(name, root) is not None:
        return  # prepared here (vitlib.data.prepare or tfds build)
    try:
        tfds.builder_cls(name.split(":")[0].split("/")[0])
    except tfds.core.registered.DatasetNotFoundError:
        # The local datasets' own folders (vitlib_<name>) are not names a user types.
        here = [d for d in datasets_in(root) if d not in {f"vitlib_{n}" for n in LOCAL_DATASETS}]
        known = [*LOCAL_DATASETS, *here, *tfds.list_builders(with_community_datasets=False)]
        close = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=3)
        hint = (f"did you mean {' or '.join(repr(c) for c in close)}? " if close
                else prepare_hint(name, root))
        raise DataError(f"dataset: {name!r} is not prepared in {root} (it holds "
                        f"{here or 'no prepared datasets'}), nor a local dataset "
                        f"{list(LOCAL_DATASETS)} or a TFDS dataset; {hint}") from None


def prepare(name: str, data_dir: Optional[str] = None, source_dir: Optional[str] = None):
    """The prepared TFDS builder of ``name`` (built on first use; never left half-written)."""
    import tensorflow_datasets as tfds

    root = tfds_data_dir(data_dir)
    if name not in LOCAL_DATASETS:
        # Nothing downloads at run time, and a missing data dir is never created: the data must
        # be prepared beforehand (vitlib.data.prepare, or tfds build on a machine with TF).
        folder = find_dataset_dir(name, root)
        if folder is not None:
            return tfds.builder_from_directory(str(folder))
        absl = logging.getLogger("absl")  # TFDS warns there of folders without dataset_info
        level = absl.level
        absl.setLevel(logging.ERROR)
        try:
            builder = tfds.builder(name, data_dir=str(root), file_format="array_record")
            prepared = builder.is_prepared()
        except tfds.core.registered.DatasetNotFoundError:
            prepared = False
        finally:
            absl.setLevel(level)
        if not prepared:
            raise DataError(f"dataset: {name!r} is not prepared in {root} (it holds "
                            f"{datasets_in(root) or 'no prepared datasets'}); nothing downloads "
                            f"at run time: {prepare_hint(name, root)}")
        return builder
    make = lambda: _builders()[name](source_dir=source_dir, data_dir=str(root),  # noqa: E731
                                     file_format="array_record")
    builder = make()
    if Path(builder.data_dir).joinpath("dataset_info.json").is_file():
        return builder
    # Processes preparing at once (test workers, notebook kernels) take turns: the cleanup
    # below would otherwise delete another process's half-written files.
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        builder = make()  # another process may have prepared it while this one waited
        if not Path(builder.data_dir).joinpath("dataset_info.json").is_file():
            try:
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(try_download_gcs=False))
            finally:  # TFDS writes into 'incomplete.*' and renames; drop leftovers of a failure
                for leftover in Path(builder.data_dir).parent.glob("incomplete*"):
                    shutil.rmtree(leftover, ignore_errors=True)
            builder = make()
    return builder


@functools.lru_cache(maxsize=16)
def load_split(name: str, split: str, data_dir: Optional[str] = None):
    """(images [N,H,W,C] uint8, labels [N] int32) of a split, read via the TFDS data source.

    ``split`` may join splits with '+' (e.g. 'train+minival': all of the original training set,
    for a final run once hyper-parameters are chosen on minival)."""
    if name in LOCAL_DATASETS and not all(part in SPLITS for part in split.split("+")):
        raise ValueError(f"split: {split!r} is not a split of {name!r}; choose one of "
                         f"{list(SPLITS)} or several joined with '+'")
    source = prepare(name, data_dir).as_data_source(split=split)
    records = source.__getitems__(list(range(len(source))))
    images = np.stack([r["image"] for r in records])
    labels = np.asarray([r["label"] for r in records], np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def num_classes(name: str, data_dir: Optional[str] = None) -> int:
    return int(prepare(name, data_dir).info.features["label"].num_classes)
