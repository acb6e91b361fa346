"""Random access to the encoded images of a TFDS image-classification dataset (array_record
files), without TensorFlow.

``open_source(name, split, data_dir)`` -> an ``ImageSource``: ``len(source)``, ``source[i]`` and
``source.__getitems__([i, ...])`` give ``{"image": bytes, "label": int}``; ``image`` is the
encoded image (JPEG for every dataset vitlib prepares) exactly as stored, never decoded, and
``label`` a class id, or a 1-D int64 array of class ids for a multi-label dataset (a
``Sequence(ClassLabel)`` label feature).

- ``name`` is a TFDS name with optional config and version (``imagenet2012``,
  ``imagenet2012:5.1.0``, ``caltech_birds2011``, ``cifar100``), or the name of a dataset written by
  ``python -m vitlib.data.prepare``. It is looked up as a folder first,
  ``<data_dir>/<name>[/<config>]/<version>/dataset_info.json`` (newest version when none is
  given; no registered builder needed), then as a registered TFDS builder (which is what
  ``tfds.testing.mock_data`` mocks).
- ``split`` is TFDS's split syntax, resolved by TFDS itself: ``train``, ``train[:65000]``,
  ``train[:2%]``, ``train+validation``. Records come in the order TFDS stores them (the
  generation order for datasets built with ``disable_shuffling``, as vitlib's are).
- ``data_dir``: the argument, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.

The bytes come from TFDS's own data source with ``tfds.decode.SkipDecoding()`` on every
feature but the label: the image feature then yields its serialized form, the encoded file.

An ``ImageSource`` pickles as (name, split, data dir, keys, metadata) and reopens the TFDS data
source lazily in each process, so grain can send it to worker processes.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from vitlib.data.datasets import (VERSION_RE, DataError, prepare_hint, datasets_in,
                                   find_dataset_dir, tfds_data_dir)



def _tfrecord_hint(name: str, folder) -> str:
    return (f"dataset {name!r} at {folder} is stored as tfrecord, which has no random access; "
            f"convert it on a machine with TensorFlow with 'tfds convert_format "
            f"--dataset_dir={folder} --out_file_format=array_record' (or rebuild it with "
            f"'tfds build {name.split(':')[0]} --file_format=array_record')")


def _split_names(split: str) -> list[str]:
    return [re.sub(r"\[.*\]$", "", part.strip()) for part in split.split("+")]


def _label_keys(features) -> dict:
    """{key: multi_label} of the label-like features (ClassLabel, or a Sequence of one)."""
    import tensorflow_datasets as tfds

    keys = {}
    for key, feature in features.items():
        if isinstance(feature, tfds.features.ClassLabel):
            keys[key] = False
        elif isinstance(feature, tfds.features.Sequence) and isinstance(
                feature.feature, tfds.features.ClassLabel):
            keys[key] = True
    return keys


def _image_keys(features) -> list:
    import tensorflow_datasets as tfds

    return [k for k, f in features.items() if isinstance(f, tfds.features.Image)]


def _skip_decoders(features, label_key: str) -> dict:
    """SkipDecoding on every top-level feature but the label (and sequences or dicts, which
    TFDS cannot skip): the image stays encoded, and other heavy features (segmentation masks,
    ...) are not decoded for nothing."""
    import tensorflow_datasets as tfds

    nested = (tfds.features.FeaturesDict, tfds.features.Sequence, tfds.features.Dataset)
    return {key: tfds.decode.SkipDecoding() for key, feature in features.items()
            if key != label_key and not isinstance(feature, nested)}  # TFDS cannot skip these


class ImageSource:
    """Encoded images and labels of one split, by index. See the module docstring."""

    def __init__(self, name: str, split: str, data_dir: str, *, builder_dir: Optional[str],
                 image_key: str, label_key: str, num_classes: int, class_names: list,
                 multi_label: bool, length: int):
        self.name, self.split, self.data_dir = name, split, data_dir
        self.builder_dir = builder_dir  # the version folder, or None: a registered builder
        self.image_key, self.label_key = image_key, label_key
        self.num_classes, self.class_names = num_classes, class_names
        self.multi_label, self._length = multi_label, length
        self._source = None
        self._opening = threading.Lock()

    def _builder(self):
        import tensorflow_datasets as tfds

        if self.builder_dir is not None:
            return tfds.builder_from_directory(self.builder_dir)
        return tfds.builder(self.name, data_dir=self.data_dir)

    @property
    def source(self):
        """The TFDS data source (opened on first use in each process, by one thread: decoding
        threads of a fresh grain worker would otherwise import TFDS at once and deadlock in
        its lazy imports)."""
        if self._source is None:
            with self._opening:
                if self._source is None:
                    builder = self._builder()
                    self._source = builder.as_data_source(
                        split=self.split,
                        decoders=_skip_decoders(builder.info.features, self.label_key))
        return self._source

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None
        del state["_opening"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._opening = threading.Lock()

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return (f"ImageSource({self.name!r}, {self.split!r}, {len(self)} records, "
                f"{self.num_classes} classes, data_dir={self.data_dir!r})")

    def _index(self, index) -> int:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{self.name} {self.split}: index {index!r} is not an integer")
        index = int(index)
        if not -self._length <= index < self._length:
            raise IndexError(f"{self.name} {self.split}: index {index} is out of range; the "
                             f"split has {self._length} records")
        return index % self._length

    def _record(self, index: int, record) -> dict:
        image = record[self.image_key]
        image = image.item() if isinstance(image, np.ndarray) else image
        raw = record[self.label_key]
        if self.multi_label:
            label = np.asarray(raw, np.int64).reshape(-1)
            bad = label[(label < 0) | (label >= self.num_classes)]
        else:
            label = int(np.asarray(raw).reshape(()))
            bad = [] if 0 <= label < self.num_classes else [label]
        if len(bad):
            raise DataError(f"{self.name} {self.split}: record {index} has label "
                            f"{int(bad[0])} ({self.label_key!r}), outside [0, "
                            f"{self.num_classes}); the dataset is corrupt or its "
                            f"label feature is not {self.label_key!r}")
        return {"image": bytes(image), "label": label}

    def __getitem__(self, index) -> dict:
        index = self._index(index)
        return self._record(index, self.source[index])

    def __getitems__(self, indices: Sequence[int]) -> list:
        indices = [self._index(i) for i in indices]
        records = self.source.__getitems__(indices)
        return [self._record(i, r) for i, r in zip(indices, records)]


def _check_split(name: str, split: str, splits: dict, folder) -> None:
    if not isinstance(split, str) or not split.strip():
        raise DataError(f"split: {split!r} is not allowed; choose one of {sorted(splits)} "
                        f"(TFDS syntax: 'train[:90%]', 'train+validation')")
    unknown = [s for s in _split_names(split) if s not in splits]
    if unknown:
        raise DataError(f"split: {split!r} names {unknown[0]!r}, not a split of {name!r} at "
                        f"{folder}; the splits are {sorted(splits)} (TFDS syntax: "
                        f"'train[:90%]', 'train+validation')")


def open_source(name: str, split: str, data_dir: Optional[str] = None, *,
                label_key: str = "label", image_key: str = "image") -> ImageSource:
    """The ``split`` of dataset ``name`` as an ``ImageSource`` (see the module docstring).

    Errors (``DataError``) name the data dir searched and the datasets found there, a dataset
    stored as tfrecord, a split that does not exist, and label / image keys that do not exist.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import file_adapters

    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_.-]+)?"
                                                 r"(:[0-9.]+)?$", name):
        raise DataError(f"dataset: {name!r} is not allowed; use a TFDS name such as "
                        f"'imagenet2012', 'cifar100:3.0.2' or 'dataset/config'")
    root = tfds_data_dir(data_dir)
    folder = find_dataset_dir(name, root)
    builder_dir = str(folder) if folder is not None else None
    if folder is not None:
        builder = tfds.builder_from_directory(builder_dir)
    else:
        try:
            builder = tfds.builder(name, data_dir=str(root))
        except tfds.core.registered.DatasetNotFoundError:
            builder = None
        except Exception as err:  # a config or version TFDS does not know, ...
            raise DataError(f"dataset: {name!r} is not available in {root} ({err}); the "
                            f"data dir holds {datasets_in(root)}; "
                            f"{prepare_hint(name, root)}") from None
        if builder is None:
            raise DataError(f"dataset: {name!r} is not in {root} (it holds "
                            f"{datasets_in(root) or 'no prepared datasets'}) and is not a "
                            f"TFDS dataset; {prepare_hint(name, root)}")
        folder = builder.data_dir
    info = builder.info
    prepared = builder_dir is not None or builder.is_prepared()
    if prepared:
        formats = info.available_file_formats() or {info.file_format}
        if file_adapters.FileFormat.ARRAY_RECORD not in formats:
            raise DataError(_tfrecord_hint(name, folder))
        _check_split(name, split, info.splits, folder)
    features = info.features
    labels = _label_keys(features)
    if label_key not in labels:
        raise DataError(f"label_key: {label_key!r} is not a label feature of {name!r}; "
                        f"choose one of {sorted(labels)}")
    if image_key not in _image_keys(features):
        raise DataError(f"image_key: {image_key!r} is not an image feature of {name!r}; "
                        f"choose one of {_image_keys(features)}")
    try:
        source = builder.as_data_source(split=split,
                                        decoders=_skip_decoders(features, label_key))
    except Exception as err:
        if not prepared:  # no files; a mocked builder (tfds.testing.mock_data) gets here
            raise DataError(f"dataset: {name!r} is not prepared in {root} (it holds "
                            f"{datasets_in(root) or 'no prepared datasets'}); "
                            f"{prepare_hint(name, root)}") from None
        raise DataError(f"split: {split!r} of {name!r} is not allowed ({err}); the splits "
                        f"are {sorted(info.splits)} (TFDS syntax: 'train[:90%]', "
                        f"'train+validation')") from None
    if len(source) == 0:
        raise DataError(f"split: {split!r} of {name!r} selects no records; the splits are "
                        f"{ {k: v.num_examples for k, v in info.splits.items()} }")
    label_feature = features[label_key]
    if labels[label_key]:
        label_feature = label_feature.feature
    opened = ImageSource(
        name, split, str(root), builder_dir=builder_dir, image_key=image_key,
        label_key=label_key, num_classes=int(label_feature.num_classes),
        class_names=list(label_feature.names), multi_label=labels[label_key],
        length=len(source))
    opened._source = source
    return opened


class SubsetSource:
    """The records ``indices`` of ``source``, as a source of its own (a nested training subset:
    ``batches.subset_indices``); everything else (classes, labels, name) is the source's."""

    def __init__(self, source, indices):
        self.base, self.indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getattr__(self, name):
        if name in ("base", "indices"):  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, index) -> dict:
        return self.base[int(self.indices[index])]

    def __repr__(self) -> str:
        return f"SubsetSource({len(self)} of {self.base!r})"


def nested_subset_source(source, size: int):
    """``source`` itself (``size`` 0 or all) or its nested subset of ``size`` records."""
    from vitlib.data.batches import subset_indices

    indices = subset_indices(len(source), size)
    return source if indices is None else SubsetSource(source, indices)

