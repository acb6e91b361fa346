"""In-memory input pipeline: batches whose content is a pure function of (seed, step), nested
training subsets, padded evaluation batches, and a background prefetcher so the training step
does not wait on data.

A resumed run therefore sees exactly the batches it would have seen: batch ``step`` holds
positions ``step*B .. step*B+B-1`` of an endless sequence of per-epoch permutations, each drawn
from ``(seed, epoch)``, and its augmentation is drawn from ``(seed, step)``.
"""
from __future__ import annotations

import functools
import queue
import threading
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from vitlib.data.augment import Augment, augment_batch, preprocess


@functools.lru_cache(maxsize=4)  # one epoch spans many steps: draw its permutation once
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    permutation = np.random.default_rng([seed, epoch, 0]).permutation(n)
    permutation.setflags(write=False)
    return permutation


SUBSET_SEED = 0  # the fixed order that nested training subsets are cut from


def nested_subset(images: np.ndarray, labels: np.ndarray, size: int):
    """The first ``size`` examples of a fixed permutation (independent of the run's seed): a
    smaller subset is always inside a larger one, as in a data-size sweep. 0 means all."""
    idx = subset_indices(len(images), size)
    return (images, labels) if idx is None else (images[idx], labels[idx])


def subset_indices(n: int, size: int):
    """Sorted indices of the nested subset of ``size`` of ``n`` examples (None: all of them)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= n:
        raise ValueError(f"train_examples: {size!r} is not allowed; use 0 (all) or an integer "
                         f"in [1, {n}]")
    if size in (0, n):
        return None
    return np.sort(np.random.default_rng([SUBSET_SEED, n]).permutation(n)[:size])


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Example indices of batch ``step``: a pure function of its arguments."""
    positions = step * batch_size + np.arange(batch_size)
    epochs, offsets = np.divmod(positions, n)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        where = epochs == epoch
        out[where] = _epoch_permutation(seed, int(epoch), n)[offsets[where]]
    return out


def train_batch(images: np.ndarray, labels: np.ndarray, step: int, batch_size: int, seed: int,
                augment: Augment = Augment()) -> dict:
    """Batch ``step`` of the training stream: {'image': float32 [-1,1], 'label': int32}."""
    idx = batch_indices(step, batch_size, len(images), seed)
    return {"image": preprocess(augment_batch(images[idx], augment, seed, step)),
            "label": np.asarray(labels[idx], np.int32)}


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int) -> Iterator[dict]:
    """The whole split in order, in fixed-size batches; the last is padded, 'mask' marks real
    examples (one compiled eval step serves every batch)."""
    n = len(images)
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        mask = idx < n
        idx = np.where(mask, idx, n - 1)
        yield {"image": preprocess(images[idx]), "label": np.asarray(labels[idx], np.int32),
               "mask": mask}


class MemoryInput:
    """The training batches of an in-memory split (``train_batch``) as a stream."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
                 augment: Augment = Augment()):
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.augment = batch_size, seed, augment

    def stream(self, start: int, total_steps: int, rows: slice = slice(None),
               state: Optional[dict] = None) -> Iterator[tuple[int, dict, dict]]:
        """(step, this host's ``rows`` of batch ``step``, the data state after it) for steps
        ``start .. total_steps - 1``. The state is only the next step: batch s is a pure
        function of (seed, s), so nothing else is needed to resume."""
        for step in range(start, total_steps):
            batch = train_batch(self.images, self.labels, step, self.batch_size, self.seed,
                                self.augment)
            yield step, {k: v[rows] for k, v in batch.items()}, {"next_step": step + 1}


class Prefetcher:
    """Produces ``make_batch(step)`` for ``start <= step < stop`` (or the ``(step, batch)``
    pairs of ``items``) on a background thread, ``depth`` batches ahead, each batch passed
    through ``place`` (e.g. a device_put onto a mesh)."""

    def __init__(self, make_batch: Optional[Callable[[int], dict]] = None, start: int = 0,
                 stop: int = 0, depth: int = 3, place: Optional[Callable[[dict], dict]] = None,
                 items: Optional[Iterable[tuple[int, dict]]] = None):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._place = place or (lambda batch: batch)
        if items is None:
            items = ((step, make_batch(step)) for step in range(start, stop))

        def work():
            try:
                for step, batch in items:
                    if self._stop.is_set():
                        return
                    self._put((step, self._place(batch)))
            except BaseException as err:  # hand the failure to the consumer
                self._put(err)
            self._put(None)

        self._thread = threading.Thread(target=work, daemon=True, name="vitlib-prefetch")
        self._thread.start()

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
