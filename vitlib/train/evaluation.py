"""Evaluation during and at the end of a run: accuracy on the config's eval splits (a fixed
subset of them at intermediate steps) and few-shot accuracy of the frozen pre-logits."""
from __future__ import annotations

import numpy as np

from vitlib.data import datasets
from vitlib.data.augment import preprocess
from vitlib.data.batches import eval_batches
from vitlib.evals import fewshot
from vitlib.train.programs import Programs
from vitlib.train.sharding import shard_batch

EVAL_SUBSET_SEED = 0  # which examples an intermediate evaluation on a subset uses


def accuracy(eval_step, params, images, labels, batch_size: int, mesh) -> float:
    correct = 0
    for batch in eval_batches(images, labels, batch_size):
        correct += int(eval_step(params, shard_batch(batch, mesh)))
    return correct / len(images)


def eval_subset(images, labels, size: int):
    """A fixed random subset of ``size`` examples (the whole split if ``size`` is 0 or more)."""
    if not size or size >= len(images):
        return images, labels
    idx = np.sort(np.random.default_rng(EVAL_SUBSET_SEED).choice(len(images), size, False))
    return images[idx], labels[idx]


def fewshot_record(config, params, feature_fn) -> dict:
    """Few-shot accuracy of the frozen pre-logits on ``config.fewshot.dataset``: the probes
    are fit on shots drawn from its train split and scored on each of ``fewshot.eval_splits``
    (keys ``fewshot_digits_10shot`` for test, ``fewshot_digits_minival_10shot`` for minival,
    the split on which notebooks choose hyper-parameters)."""
    name, data_dir = config.fewshot.dataset, config.data_dir or None
    extract = lambda x: fewshot.extract_features(  # noqa: E731
        lambda batch: feature_fn(params, batch), x, config.eval_batch_size, preprocess)
    train_x, train_y = datasets.load_split(name, "train", data_dir)
    train_features = extract(train_x)
    record = {}
    for split in config.fewshot.eval_splits:
        eval_x, eval_y = datasets.load_split(name, split, data_dir)
        results = fewshot.fewshot_eval(train_features, train_y, extract(eval_x), eval_y,
                                       datasets.num_classes(name, data_dir),
                                       shots=config.fewshot.shots, seeds=config.fewshot.seeds)
        prefix = f"fewshot_{name}_" + ("" if split == "test" else f"{split}_")
        for k, r in results.items():
            record[f"{prefix}{k}shot"] = r["mean"]
            record[f"{prefix}{k}shot_std"] = r["std"]
    return record


class Evaluator:
    """``evaluator(step, params, final)`` -> the evaluation record of ``step``: accuracy on each
    of ``config.eval_splits`` (whole splits when ``final``, else their ``eval_subset``) and the
    few-shot record when ``config.fewshot.dataset`` is set. The splits are loaded once."""

    def __init__(self, config, programs: Programs, mesh):
        self.config, self.programs, self.mesh = config, programs, mesh
        data_dir = config.data_dir or None
        self.eval_sets = {split: datasets.load_split(config.dataset, split, data_dir)
                          for split in config.eval_splits}
        self.subsets = {split: eval_subset(*xy, config.eval_subset)
                        for split, xy in self.eval_sets.items()}

    def __call__(self, step: int, params, final: bool) -> dict:
        config = self.config
        record = {"step": step}
        for split, (x, y) in (self.eval_sets if final else self.subsets).items():
            record[f"{split}_accuracy"] = accuracy(self.programs.eval_step, params, x, y,
                                                   config.eval_batch_size, self.mesh)
        if not final and config.eval_subset:
            record["eval_examples"] = {split: len(x) for split, (x, _) in self.subsets.items()}
        if config.fewshot.dataset:
            record.update(fewshot_record(config, params, self.programs.feature_fn))
        return record
