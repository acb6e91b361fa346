"""The input pipeline of encoded-image datasets (JPEG records of a TFDS array_record dataset),
with grain: random access, worker processes and a checkpointable iterator.

Batch ``s`` of a run is a pure function of (seed, s), exactly as in the in-memory pipeline:
its examples are positions ``s*B .. s*B+B-1`` of an endless sequence of per-epoch permutations
drawn from (seed, epoch) (``batches.batch_indices``), and example ``j`` of the batch is cropped
and flipped with a generator drawn from (seed, s, j). Each host makes only its own rows of the
global batch (``rows``), so every host count sees the same global batch. grain runs batch
``s`` as element ``s`` of a ``MapDataset`` over the steps; its iterator state goes into each
checkpoint (``TrainStream.state``), and a resumed run continues from it.

Training preprocessing is big_vision's: ``decode_jpeg_and_inception_crop(size)`` (area
``min_area``..100%, aspect 3/4..4/3), ``flip_lr``, ``value_range(-1, 1)``; evaluation decodes,
resizes the smaller side and crops the centre. Labels are class ids, or multi-hot rows for a
multi-label dataset (the sigmoid loss).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import sys
from typing import Iterator, Optional

import numpy as np

from vitlib.data import image_ops
from vitlib.data.batches import batch_indices

CROPS = ("inception", "resize")
BAD_IMAGE_POLICIES = ("skip", "fail")
MAX_BAD_IN_A_ROW = 100  # a dataset this broken is a configuration error, not bad luck


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How training images are made from records (config ``input``)."""
    image_size: int
    crop: str = "inception"
    min_area: float = 0.05
    flip: bool = True
    bad_images: str = "skip"
    decoder: str = "simplejpeg-rows"

    def __post_init__(self):
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) \
                or self.image_size < 1:
            raise ValueError(f"image_size: {self.image_size!r} is not allowed with "
                             f"input.pipeline 'grain'; set the training resolution (e.g. 224)")
        if self.crop not in CROPS:
            raise ValueError(f"input.crop: {self.crop!r} is not allowed; choose one of "
                             f"{list(CROPS)}")
        if isinstance(self.min_area, bool) or not isinstance(self.min_area, (int, float)) \
                or not 0 < self.min_area <= 1:
            raise ValueError(f"input.min_area: {self.min_area!r} is not allowed; use a "
                             f"fraction in (0, 1]")
        if not isinstance(self.flip, bool):
            raise ValueError(f"input.flip: must be true or false, got {self.flip!r}")
        if self.decoder not in image_ops.DECODERS:
            raise ValueError(f"input.decoder: {self.decoder!r} is not allowed; choose one of "
                             f"{list(image_ops.DECODERS)}")
        if self.bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"input.bad_images: {self.bad_images!r} is not allowed; choose "
                             f"one of {list(BAD_IMAGE_POLICIES)}")

    def train_image(self, data: bytes, rng: np.random.Generator) -> np.ndarray:
        if self.crop == "inception":
            image = image_ops.decode_inception_crop(data, self.image_size, rng,
                                                    area_range=(self.min_area, 1.0),
                                                    decoder=self.decoder)
        else:
            image = image_ops.decode_resize(data, self.image_size, decoder=self.decoder)
        return image_ops.flip_lr(image, rng) if self.flip else image


def check_workers(workers, threads, worker_buffer) -> None:
    for key, value, low in (("workers", workers, 0), ("threads", threads, 1),
                            ("worker_buffer", worker_buffer, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"input.{key}: {value!r} is not allowed; use an integer >= {low}")


def label_array(labels: list, num_classes: int, multi_label: bool) -> np.ndarray:
    """Class ids [n] int32, or multi-hot [n, num_classes] float32 for multi-label data."""
    if not multi_label:
        return np.asarray(labels, np.int32)
    out = np.zeros((len(labels), num_classes), np.float32)
    for row, ids in enumerate(labels):
        out[row, np.asarray(ids, np.int64)] = 1.0
    return out


def _tiny_jpeg() -> bytes:
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "JPEG")
    return out.getvalue()


_WARM_JPEG = _tiny_jpeg()


class BadImageError(image_ops.BadImage):
    """An image that cannot be decoded, under ``input.bad_images='fail'``."""


def _decode_record(source, index: int, make_image, policy: str):
    """(image, label, records skipped): an undecodable record is replaced by the next one
    (``skip``, counted) or raises naming its index (``fail``)."""
    skipped = 0
    while True:
        record = source[index]
        try:
            return make_image(record["image"]), record["label"], skipped
        except image_ops.BadImage as err:
            if policy == "fail":
                raise BadImageError(f"{source.name} {source.split}: record {index} cannot be "
                                    f"decoded ({err}); set input.bad_images='skip' to skip "
                                    f"such records") from None
            skipped += 1
            if skipped >= MAX_BAD_IN_A_ROW:
                raise BadImageError(f"{source.name} {source.split}: {skipped} records in a "
                                    f"row from {index - skipped + 1} cannot be decoded; is "
                                    f"this an image dataset?") from None
            index = (index + 1) % len(source)


class BatchOfStep:
    """``batch_of_step(s)`` -> this host's rows of batch ``s``: {'image' float32 [-1, 1],
    'label', 'step', 'bad_images' (records skipped)}. Picklable: grain sends it to workers."""

    def __init__(self, source, batch_size: int, seed: int, preprocess: Preprocess,
                 rows: slice, threads: int = 1):
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.preprocess, self.rows, self.threads = preprocess, rows, threads
        self._pool = None

    def __getstate__(self):
        return {**self.__dict__, "_pool": None}

    def _map(self, fn, items):
        if self.threads <= 1:
            return list(map(fn, items))
        if self._pool is None:
            # The first use in a process (a fresh grain worker) opens the source and imports
            # the decoder here, in one thread: threads importing TFDS at once can deadlock.
            self.source[0]
            image_ops.decode_resize(_WARM_JPEG, 8, decoder=self.preprocess.decoder)
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads)
        return list(self._pool.map(fn, items))

    def __call__(self, step: int) -> dict:
        step = int(step)
        indices = batch_indices(step, self.batch_size, len(self.source), self.seed)
        positions = range(self.batch_size)[self.rows]

        def one(position):
            rng = np.random.default_rng([self.seed, step, 2, position])
            return _decode_record(self.source, int(indices[position]),
                                  lambda data: self.preprocess.train_image(data, rng),
                                  self.preprocess.bad_images)
        made = self._map(one, positions)
        return {"image": image_ops.value_range(np.stack([m[0] for m in made])),
                "label": label_array([m[1] for m in made], self.source.num_classes,
                                     self.source.multi_label),
                "step": np.int64(step), "bad_images": np.int64(sum(m[2] for m in made))}


def _end_with_parent(worker_index: int, worker_count: int) -> None:
    """In each grain worker: die with the training process. A run killed with SIGKILL (or a
    preempted VM's hard stop) would otherwise leave its workers running, orphaned."""
    import ctypes
    import os
    import signal

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the line above took effect
        os._exit(1)


class TrainStream:
    """Batches ``start .. total_steps - 1`` from grain, in order, with the iterator state after
    each. ``state`` (from a checkpoint at ``start``) resumes grain's iterator where it was;
    without it the stream starts at ``start`` directly (a new run, or a branch)."""

    def __init__(self, batch_of_step: BatchOfStep, start: int, total_steps: int,
                 workers: int = 0, worker_buffer: int = 2, state: Optional[dict] = None):
        if state and state.get("workers") != workers:
            # Another worker count keeps grain's state in another shape; the batches do not
            # depend on it, so the stream starts at ``start`` directly instead.
            print(f"data iterator: saved with input.workers={state.get('workers')}, resumed "
                  f"with {workers}; starting the stream at step {start} (batches depend only "
                  f"on the seed and the step)", file=sys.stderr, flush=True)
            state = None
        self._open(batch_of_step, start, total_steps, workers, worker_buffer, state)

    def _open(self, batch_of_step, start, total_steps, workers, worker_buffer, state):
        import grain

        first = start if not state else int(state["first_step"])
        self.first_step, self.workers = first, workers
        dataset = grain.MapDataset.range(first, total_steps).map(batch_of_step)
        # Whole batches are the elements: each thread / worker makes whole batches, and the
        # read-ahead is counted in batches, not images.
        threads = 1 if workers else max(1, batch_of_step.threads // 4)
        iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                             prefetch_buffer_size=threads + 1))
        if workers:
            from absl import flags
            if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (defaults here)
                flags.FLAGS.mark_as_parsed()
            iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=workers, per_worker_buffer_size=worker_buffer),
                worker_init_fn=_end_with_parent)
        self._iterator = iter(iterable)
        if state:
            self._iterator.set_state(state["grain"])
        self.expected = start

    def __iter__(self) -> Iterator[tuple[int, dict, dict]]:
        return self

    def __next__(self) -> tuple[int, dict, dict]:
        batch = next(self._iterator)
        step = int(batch.pop("step"))
        if step != self.expected:  # a state from another run or pipeline: never train on it
            raise RuntimeError(f"the data iterator produced the batch of step {step} where "
                               f"step {self.expected} was due; the checkpoint's data "
                               f"iterator state does not belong to this run")
        self.expected += 1
        return step, batch, {"first_step": self.first_step, "workers": self.workers,
                             "grain": self._iterator.get_state()}

    def close(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()


def eval_batches(source, image_size: int, batch_size: int, rows: slice = slice(None),
                 indices: Optional[np.ndarray] = None, threads: int = 8,
                 resize_size: Optional[int] = None,
                 decoder: str = "simplejpeg-rows") -> Iterator[dict]:
    """``source`` (or its ``indices``) in order, in global batches of ``batch_size`` (the last
    padded; 'mask' marks real examples), each image resized and centre-cropped to
    ``image_size``; this host's ``rows`` of each batch. Undecodable images are errors."""
    order = np.arange(len(source)) if indices is None else np.asarray(indices)
    n = len(order)
    pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for start in range(0, n, batch_size):
            positions = np.arange(start, start + batch_size)[rows]
            mask = positions < n
            picks = order[np.minimum(positions, n - 1)]

            def one(index):
                record = source[int(index)]
                try:
                    image = image_ops.decode_resize_central_crop(record["image"], image_size,
                                                                 resize_size, decoder=decoder)
                except image_ops.BadImage as err:
                    raise BadImageError(f"{source.name} {source.split}: record {index} "
                                        f"cannot be decoded ({err})") from None
                return image, record["label"]
            made = list(pool.map(one, picks)) if pool else [one(i) for i in picks]
            yield {"image": image_ops.value_range(np.stack([m[0] for m in made])),
                   "label": label_array([m[1] for m in made], source.num_classes,
                                        source.multi_label),
                   "mask": mask}
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def report_bad_images(count: int, name: str) -> None:
    if count:
        print(f"{name}: skipped {count} undecodable records so far (input.bad_images='skip')",
              file=sys.stderr, flush=True)


class GrainInput:
    """The training batches of an encoded-image ``source`` (``sources.open_source``)."""

    def __init__(self, source, batch_size: int, seed: int, preprocess: Preprocess,
                 workers: int = 0, threads: int = 8, worker_buffer: int = 2):
        self.source, self.batch_size, self.seed, self.preprocess = (source, batch_size, seed,
                                                                     preprocess)
        self.workers, self.threads, self.worker_buffer = workers, threads, worker_buffer

    def stream(self, start: int, total_steps: int, rows: slice = slice(None),
               state: Optional[dict] = None) -> TrainStream:
        """(step, this host's ``rows`` of batch ``step``, grain's state after it) for steps
        ``start .. total_steps - 1``; ``state`` as saved with the checkpoint at ``start``."""
        batch_of_step = BatchOfStep(self.source, self.batch_size, self.seed, self.preprocess,
                                    rows, self.threads)
        return TrainStream(batch_of_step, start, total_steps, self.workers, self.worker_buffer,
                           state if state and "grain" in state else None)
