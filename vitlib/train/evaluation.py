"""Evaluation during and at the end of a run: accuracy on the config's eval splits (a fixed
subset of them at intermediate steps) and few-shot accuracy of the frozen pre-logits, on an
in-memory dataset (``fewshot.dataset``) and on the suite of JPEG datasets (``fewshot.suite``).

With the grain pipeline the eval splits are read from the dataset's records, decoded, resized
and centre-cropped; an entry of ``eval_splits`` may name its TFDS split, e.g.
``"minival=train[99%:]"`` or ``"test=validation"`` (recorded as ``minival_accuracy``,
``test_accuracy``). Every host decodes only its rows of each batch."""
from __future__ import annotations

import re

import jax
import numpy as np

from vitlib.data import datasets, grain_pipeline, sources
from vitlib.data.augment import preprocess
from vitlib.data.batches import eval_batches
from vitlib.evals import fewshot, suite
from vitlib.train.programs import Programs
from vitlib.train.sharding import host_rows, shard_batch, shard_local_rows

EVAL_SUBSET_SEED = 0  # which examples an intermediate evaluation on a subset uses


def eval_batch_size_for(examples: int, batch_size: int, devices: int,
                        slice_size: int = 0) -> int:
    """The eval batch for a split of ``examples``: ``batch_size``, or for a smaller split the
    split itself rounded up to a multiple of the eval programs' slice (``slice_size``; else of
    the devices), so a 12-image split is never padded to 1,000, and every example is computed
    in a slice of the same shape as in a full batch, so with the same numbers. Splits of
    ``batch_size`` or more keep it, and their results."""
    unit = slice_size or devices
    return min(batch_size, -(-max(examples, 1) // unit) * unit)


def accuracy(eval_step, params, images, labels, batch_size: int, mesh,
             slice_size: int = 0) -> float:
    batch_size = eval_batch_size_for(len(images), batch_size, mesh.devices.size, slice_size)
    correct = 0
    for batch in eval_batches(images, labels, batch_size):
        correct += int(eval_step(params, shard_batch(batch, mesh)))
    return correct / len(images)


def accuracy_of_source(eval_step, params, source, image_size: int, batch_size: int, mesh,
                       indices=None, threads: int = 8,
                       decoder: str = "simplejpeg-rows", slice_size: int = 0) -> float:
    """Accuracy on the records of ``source`` (or its ``indices``), decoded batch by batch."""
    batch_size = eval_batch_size_for(len(source) if indices is None else len(indices),
                                     batch_size, mesh.devices.size, slice_size)
    rows = host_rows(batch_size, mesh)
    correct = 0
    for batch in grain_pipeline.eval_batches(source, image_size, batch_size, rows, indices,
                                             threads, decoder=decoder):
        correct += int(eval_step(params, shard_local_rows(batch, mesh, batch_size)))
    return correct / (len(source) if indices is None else len(indices))


def eval_split_labels(eval_splits) -> dict:
    """{label: split} of ``eval_splits`` entries 'split' or 'label=split' (labels name the
    record keys: '<label>_accuracy')."""
    out = {}
    for entry in eval_splits:
        label, _, split = entry.partition("=") if "=" in entry else (entry, "", entry)
        if not re.fullmatch(r"[A-Za-z0-9_]+", label) or not split:
            raise ValueError(f"eval_splits: {entry!r} is not allowed; use a split name "
                             f"('test') or label=split ('minival=train[99%:]'), the label made "
                             f"of letters, digits and '_'")
        out[label] = split
    return out


def features_on_mesh(feature_fn, params, mesh, batch_size: int):
    """``features(local_rows) -> global features`` of a batch of ``batch_size`` whose rows this
    host holds ``host_rows`` of: placed on the mesh, gathered from every host."""
    def features(local_images):
        placed = shard_local_rows({"image": local_images}, mesh, batch_size)["image"]
        out = feature_fn(params, placed)
        if jax.process_count() == 1:
            return np.asarray(out)
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(out, tiled=True))
    return features


def eval_subset(images, labels, size: int):
    """A fixed random subset of ``size`` examples (the whole split if ``size`` is 0 or more)."""
    if not size or size >= len(images):
        return images, labels
    idx = np.sort(np.random.default_rng(EVAL_SUBSET_SEED).choice(len(images), size, False))
    return images[idx], labels[idx]


def fewshot_record(config, params, feature_fn, slice_size: int = 0) -> dict:
    """Few-shot accuracy of the frozen pre-logits on ``config.fewshot.dataset``: the probes
    are fit on shots drawn from its train split and scored on each of ``fewshot.eval_splits``
    (keys ``fewshot_digits_10shot`` for test, ``fewshot_digits_minival_10shot`` for minival,
    the split on which notebooks choose hyper-parameters)."""
    name, data_dir = config.fewshot.dataset, config.data_dir or None
    devices = jax.device_count()
    extract = lambda x: fewshot.extract_features(  # noqa: E731
        lambda batch: feature_fn(params, batch), x,
        eval_batch_size_for(len(x), config.eval_batch_size, devices, slice_size), preprocess)
    train_x, train_y = datasets.load_split(name, "train", data_dir)
    train_features = extract(train_x)
    record = {}
    for split in config.fewshot.eval_splits:
        eval_x, eval_y = datasets.load_split(name, split, data_dir)
        results = fewshot.fewshot_eval(train_features, train_y, extract(eval_x), eval_y,
                                       datasets.num_classes(name, data_dir),
                                       shots=config.fewshot.shots, seeds=config.fewshot.seeds,
                                       l2_mode=config.fewshot.l2)
        prefix = f"fewshot_{name}_" + ("" if split == "test" else f"{split}_")
        for k, r in results.items():
            record[f"{prefix}{k}shot"] = r["mean"]
            record[f"{prefix}{k}shot_std"] = r["std"]
    return record


class Evaluator:
    """``evaluator(step, params, final)`` -> the evaluation record of ``step``: accuracy on each
    of ``config.eval_splits`` (whole splits when ``final``, else their ``eval_subset``) and the
    few-shot records of ``fewshot.dataset`` and ``fewshot.suite`` (every ``fewshot.every``
    steps, and at the end). In-memory splits are loaded once; record splits are opened once."""

    def __init__(self, config, programs: Programs, mesh):
        self.config, self.programs, self.mesh = config, programs, mesh
        data_dir = config.data_dir or None
        self.records = config.input.pipeline == "grain"
        if self.records:
            self.eval_sets = {
                label: sources.open_source(config.dataset, split, data_dir,
                                           label_key=config.input.label_key)
                for label, split in eval_split_labels(config.eval_splits).items()}
            self.subsets = {label: _subset_indices(len(source), config.eval_subset)
                            for label, source in self.eval_sets.items()}
        else:
            self.eval_sets = {split: datasets.load_split(config.dataset, split, data_dir)
                              for split in config.eval_splits}
            self.subsets = {split: eval_subset(*xy, config.eval_subset)
                            for split, xy in self.eval_sets.items()}
        self.suite = suite.parse_suite(config.fewshot.suite) if config.fewshot.suite else []
        self.suite_cache = (suite.ImageCache(int(config.fewshot.cache_gib * 2 ** 30))
                            if config.fewshot.cache_gib else None)

    def _mesh_features(self, params, batch):
        """Pre-logits of a global batch: this host's rows placed on the mesh, all gathered."""
        rows = host_rows(len(batch), self.mesh)
        return features_on_mesh(self.programs.feature_fn, params, self.mesh,
                                len(batch))(batch[rows])

    def _accuracy(self, params, split: str, final: bool) -> tuple[float, int]:
        config = self.config
        if self.records:
            source, indices = self.eval_sets[split], None if final else self.subsets[split]
            size = len(source) if indices is None else len(indices)
            return accuracy_of_source(self.programs.eval_step, params, source,
                                      config.image_size, config.eval_batch_size, self.mesh,
                                      indices, config.input.threads,
                                      config.input.decoder, self.programs.eval_slice), size
        x, y = self.eval_sets[split] if final else self.subsets[split]
        return accuracy(self.programs.eval_step, params, x, y, config.eval_batch_size,
                        self.mesh, self.programs.eval_slice), len(x)

    def __call__(self, step: int, params, final: bool) -> dict:
        config = self.config
        record = {"step": step}
        sizes = {}
        for split in self.eval_sets:
            record[f"{split}_accuracy"], sizes[split] = self._accuracy(params, split, final)
        if not final and config.eval_subset:
            record["eval_examples"] = sizes
        if final or not config.fewshot.every or step % config.fewshot.every == 0:
            if config.fewshot.dataset:
                record.update(fewshot_record(config, params, self._mesh_features,
                                             self.programs.eval_slice))
            if self.suite:
                record.update(suite.run_suite(
                    features_on_mesh(self.programs.feature_fn, params, self.mesh,
                                     config.eval_batch_size),
                    self.suite, config.image_size, config.data_dir or None,
                    shots=config.fewshot.shots, seeds=config.fewshot.seeds,
                    l2_mode=config.fewshot.l2, batch_size=config.eval_batch_size,
                    cache=self.suite_cache,
                    process_index=jax.process_index(), process_count=jax.process_count()))
        return record


def _subset_indices(n: int, size: int):
    """A fixed random subset of ``size`` of ``n`` records (None: all of them)."""
    if not size or size >= n:
        return None
    return np.sort(np.random.default_rng(EVAL_SUBSET_SEED).choice(n, size, False))
