"""The paper's few-shot suite: frozen features of JPEG datasets (TFDS array_record, read with
``vitlib.data.sources``), probed with ``vitlib.evals.fewshot`` for 1/5/10/25 shots.

    record = run_suite(features_fn, parse_suite(["paper"]), 224, data_dir, l2_mode="fixed")
    record["fewshot_imagenet2012_10shot"], record["fewshot_imagenet2012_10shot_std"]

**Suite entries** (config ``fewshot.suite``; ``parse_suite``):

- ``"paper"``: the paper's four datasets, ``PAPER_SUITE``, with big_vision's splits;
- ``"name"``: a TFDS name (``cifar100``, ``cifar100:3.0.2``, ``dataset/config``), its splits
  from ``PAPER_SUITE`` / big_vision's ``common_fewshot.py`` when known, else train / test;
- ``"name:train_split:eval_split"``: explicit TFDS splits, slices allowed
  (``imagenet2012:train[:65000]:validation``); colons inside ``[...]`` belong to the split;
- any of these after ``"label="`` names the record keys
  (``cifar100_minival=cifar100:train[:45000]:train[45000:]``).

**Record keys**: ``fewshot_{label}_{k}shot`` (mean accuracy over seeds) and
``fewshot_{label}_{k}shot_std`` (their population std), for every K in ``shots``. ``label`` is
the entry's ``label=`` if given, else the dataset name with every character outside
``[A-Za-z0-9_]`` (the ``/`` of a config, the ``:`` and dots of a version) replaced by ``_``:
``fewshot_imagenet2012_10shot``, ``fewshot_oxford_iiit_pet_25shot_std``,
``fewshot_cifar100_3_0_2_5shot``. Two entries with one label are an error.

**Probe**: ``fewshot.fewshot_eval`` with ``l2_mode`` ``"loso"`` (l2 chosen per draw by
leave-one-shot-out) or ``"fixed"`` (big_vision's probe: ``2^10``, bias feature 100). Multi-label
datasets are refused (one label per example is needed). A class of the train split with fewer
examples than the largest K is an error naming dataset, class and counts (never a silent
smaller draw, as big_vision's would be).

**Preprocessing** (``preprocess``), then ``value_range(-1, 1)``:

- ``"resize_crop"`` (default, the trainer's evaluation preprocessing):
  ``image_ops.decode_resize_central_crop(data, image_size, resize_size)``: the smaller side
  resized to ``resize_size`` (default ``round(image_size * 256 / 224)``, aspect kept), then the
  centre ``image_size`` square;
- ``"resize"``: ``image_ops.decode_resize(data, image_size)``, a square resize of the whole
  image (aspect ratio not kept);
- ``"bigvision"``: exactly big_vision's few-shot geometry
  ``decode|resize(256)|central_crop(224)|value_range(-1,1)`` (``common_fewshot.py``): a SQUARE
  resize to ``resize_size`` (default ``round(image_size * 256 / 224)``) then the centre
  ``image_size`` crop (``image_ops.central_crop``); PIL's resampling, not TF's.

**Features**: ``extract_features`` runs ``features_fn`` over a split in global batches of
``batch_size`` (the last padded by repeating the last record; padded rows dropped). With
several processes, process ``p`` of ``P`` decodes rows ``[p*B/P, (p+1)*B/P)`` of each global
batch and ``features_fn(local_rows)`` must return the features of the whole global batch (the
trainer's ``features_on_mesh`` places the rows on the mesh and gathers across hosts); every
process gets every feature and label, and runs the same probes.

**Cache**: ``ImageCache(max_bytes)`` keeps the decoded, preprocessed uint8 images of this
process's rows of a split (and the split's labels) between calls: the representation changes
with training, the decoded images do not. A split is cached only if its images fit what is left
of ``max_bytes`` (known before decoding: ``batches * rows * size^2 * 3`` bytes); labels are
always kept (a few bytes each). ImageNet's ``train[:65000]`` at 224px is ~9.8 GB on one
process. Without a cache every call decodes everything again.

This module needs only a feature function; it never imports jax or vitlib.train.
"""
from __future__ import annotations

import concurrent.futures
import re
import sys
from typing import Callable, Iterable, NamedTuple, Optional, Sequence

import numpy as np

from vitlib.data import image_ops, sources
from vitlib.data.datasets import DataError
from vitlib.evals import fewshot

# The paper's few-shot datasets with big_vision's splits: big_vision/configs/common_fewshot.py
# (google-research/big_vision @ 0127fb6b), ``config.datasets``:
#   # The first 65000 ImageNet samples have at least 30 shots per any class.
#   # 'imagenet': ('imagenet2012', 'train[:65000]', 'validation'),  (commented out: manual
#                                                                     download)
#   'cifar100': ('cifar100', 'train', 'test'),
#   'pets': ('oxford_iiit_pet', 'train', 'test'),
# caltech_birds2011 (the paper's "Birds") is not in that file; its TFDS splits are train
# (5,994) / test (5,794), used the same way.
PAPER_SUITE = (
    ("imagenet2012", "train[:65000]", "validation"),
    ("cifar100", "train", "test"),
    ("oxford_iiit_pet", "train", "test"),
    ("caltech_birds2011", "train", "test"),
)
# The other datasets of big_vision's common_fewshot.py, with its splits (defaults for "name").
BIGVISION_OTHER = (
    ("caltech101", "train", "test"),
    ("cars196", "train", "test"),
    ("dtd", "train", "test"),
    ("uc_merced", "train[:1000]", "train[1000:]"),
)
DEFAULT_SPLITS = {name: (train, test) for name, train, test in PAPER_SUITE + BIGVISION_OTHER}
PREPROCESS = ("resize_crop", "resize", "bigvision")
BIGVISION_RESIZE_RATIO = 256 / 224  # common_fewshot.py: resize(256) before central_crop(224)

_NAME_RE = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_.-]+)?$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_]+$")
_FORMS = ("'paper', 'name' (e.g. 'cifar100', 'cifar100:3.0.2'), "
          "'name:train_split:eval_split' (e.g. 'imagenet2012:train[:65000]:validation'), "
          "optionally after 'label=' (letters, digits, '_')")


class SuiteEntry(NamedTuple):
    label: str  # the dataset part of the record keys
    name: str  # TFDS name, with config / version
    train_split: str  # shots are drawn from it
    eval_split: str  # the probes are scored on it


def key_safe(name: str) -> str:
    """``name`` with every character outside [A-Za-z0-9_] replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _split_colons(entry: str, text: str) -> list:
    """``text`` split at the colons outside square brackets (which must pair up)."""
    parts, depth, current = [], 0, []
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth not in (0, 1):
            break
        if ch == ":" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise ValueError(f"fewshot.suite: entry {entry!r} has unbalanced '[' / ']'; a split "
                         f"slice is written 'train[:65000]'")
    parts.append("".join(current))
    return parts


def _check_split(entry: str, which: str, split: str) -> None:
    if not split.strip() or not re.fullmatch(r"[A-Za-z0-9_\[\]:%+.\-\s]+", split):
        raise ValueError(f"fewshot.suite: {which} {split!r} of entry {entry!r} is not allowed; "
                         f"use a TFDS split ('train', 'train[:65000]', 'train[:90%]', "
                         f"'train+validation')")


def parse_entry(entry: str) -> list:
    """The ``SuiteEntry`` list of one spec string (``"paper"`` gives four); see the module
    docstring. Errors name ``fewshot.suite``, the entry and the allowed forms."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError(f"fewshot.suite: entry {entry!r} is not allowed; use {_FORMS}")
    spec = entry.strip()
    label = None
    if "=" in spec:
        label, spec = (part.strip() for part in spec.split("=", 1))
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(f"fewshot.suite: label {label!r} of entry {entry!r} is not "
                             f"allowed; use letters, digits and '_'")
    if spec == "paper":
        if label is not None:
            raise ValueError(f"fewshot.suite: entry {entry!r} is not allowed; 'paper' stands "
                             f"for four datasets and takes no label")
        return [SuiteEntry(key_safe(n), n, tr, ev) for n, tr, ev in PAPER_SUITE]
    parts = _split_colons(entry, spec)
    name = parts.pop(0)
    if parts and _VERSION_RE.fullmatch(parts[0]):
        name = f"{name}:{parts.pop(0)}"
    if not _NAME_RE.fullmatch(name.split(":")[0]):
        raise ValueError(f"fewshot.suite: dataset name {name!r} of entry {entry!r} is not "
                         f"allowed; use a TFDS name (letters, digits, '_', an optional "
                         f"'/config' and ':MAJOR.MINOR.PATCH'); forms: {_FORMS}")
    if len(parts) == 0:
        base = name.split(":")[0]
        train_split, eval_split = DEFAULT_SPLITS.get(base, ("train", "test"))
    elif len(parts) == 2:
        train_split, eval_split = (p.strip() for p in parts)
        _check_split(entry, "train_split", train_split)
        _check_split(entry, "eval_split", eval_split)
    else:
        raise ValueError(f"fewshot.suite: entry {entry!r} has {len(parts)} split field(s) "
                         f"after the dataset name; give none or two (train and eval); forms: "
                         f"{_FORMS}")
    return [SuiteEntry(label or key_safe(name), name, train_split, eval_split)]


def parse_suite(suite) -> list:
    """``SuiteEntry``s of ``suite``: a sequence of spec strings (or ``SuiteEntry``s), or one
    spec string. Every entry is checked before anything runs; labels must be distinct."""
    if isinstance(suite, str):
        suite = [suite]
    if not isinstance(suite, (list, tuple)):
        raise ValueError(f"fewshot.suite: {suite!r} is not allowed; use a list of entries, "
                         f"each {_FORMS}")
    entries = []
    for item in suite:
        entries.extend([item] if isinstance(item, SuiteEntry) else parse_entry(item))
    seen = {}
    for e in entries:
        if e.label in seen:
            raise ValueError(f"fewshot.suite: entries {seen[e.label]!r} and {e!r} would both "
                             f"record as 'fewshot_{e.label}_*'; give one of them a label "
                             f"('label=name:train_split:eval_split')")
        seen[e.label] = e
    return entries


class ImageCache:
    """Preprocessed uint8 images (this process's rows) and labels of whole splits, kept
    between ``extract_features`` calls within ``max_bytes`` (see the module docstring)."""

    def __init__(self, max_bytes: int):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) \
                or max_bytes < 0:
            raise ValueError(f"fewshot cache max_bytes: {max_bytes!r} is not allowed; use an "
                             f"integer >= 0 (bytes)")
        self.max_bytes = int(max_bytes)
        self.images: dict = {}  # key -> list of uint8 [rows, S, S, 3] per global batch
        self.labels: dict = {}  # (name, split, data_dir, label_key) -> int64 [N]

    @property
    def used_bytes(self) -> int:
        return sum(b.nbytes for batches in self.images.values() for b in batches)

    def fits(self, nbytes: int) -> bool:
        return self.used_bytes + nbytes <= self.max_bytes


def _rows(batch_size: int, process_index: int, process_count: int) -> slice:
    for key, value, low in (("batch_size", batch_size, 1), ("process_count", process_count, 1),
                            ("process_index", process_index, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{key}: {value!r} is not allowed; use an integer >= {low}")
    if process_index >= process_count:
        raise ValueError(f"process_index: {process_index} is not allowed with process_count "
                         f"{process_count}; use 0 .. {process_count - 1}")
    if batch_size % process_count:
        raise ValueError(f"batch_size: {batch_size} is not divisible by the {process_count} "
                         f"processes; every process decodes an equal block of rows")
    per = batch_size // process_count
    return slice(process_index * per, (process_index + 1) * per)


def _make_image_fn(preprocess: str, image_size: int, resize_size: Optional[int]):
    if preprocess not in PREPROCESS:
        raise ValueError(f"fewshot preprocess: {preprocess!r} is not allowed; choose one of "
                         f"{list(PREPROCESS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or image_size < 1:
        raise ValueError(f"image_size: {image_size!r} is not allowed; use a positive integer")
    if preprocess == "resize_crop":
        return lambda data: image_ops.decode_resize_central_crop(data, image_size, resize_size)
    if preprocess == "resize":
        return lambda data: image_ops.decode_resize(data, image_size)
    resized = resize_size or int(round(image_size * BIGVISION_RESIZE_RATIO))
    if resized < image_size:
        raise ValueError(f"resize_size: {resized} is smaller than image_size {image_size}")

    return lambda data: image_ops.central_crop(image_ops.decode_resize(data, resized),
                                               image_size)


def _single_label(source, record_index: int, label) -> int:
    if isinstance(label, np.ndarray) and label.ndim > 0:
        raise DataError(f"{source.name} {source.split}: record {record_index} has several "
                        f"labels; few-shot needs one label per example")
    return int(label)


def extract_features(features_fn: Callable, source, image_size: int, batch_size: int,
                     preprocess: str = "resize_crop", process_index: int = 0,
                     process_count: int = 1, progress: bool = False, *,
                     resize_size: Optional[int] = None, threads: int = 8,
                     cache: Optional[ImageCache] = None):
    """(features [N, D] numpy, labels int64 [N]) of every record of ``source``, in order.

    Global batches of ``batch_size`` (the last padded with the last record); this process
    decodes its rows ``[p*B/P, (p+1)*B/P)`` with ``threads`` threads (order kept), as uint8
    ``image_size`` squares (``preprocess``), value-ranged to float32 [-1, 1];
    ``features_fn(local_float32_rows)`` returns the global batch's features [B, D]."""
    rows = _rows(batch_size, process_index, process_count)
    make_image = _make_image_fn(preprocess, image_size, resize_size)
    if getattr(source, "multi_label", False):
        raise DataError(f"{source.name} {source.split} is multi-label; few-shot needs one "
                        f"label per example")
    n = len(source)
    if n == 0:
        raise DataError(f"{source.name} {source.split}: the split has no records")
    num_batches = -(-n // batch_size)
    image_key = (source.name, source.split, getattr(source, "data_dir", None), int(image_size),
                 preprocess, resize_size, batch_size, process_index, process_count)
    label_key = (source.name, source.split, getattr(source, "data_dir", None),
                 getattr(source, "label_key", "label"))
    cached = cache.images.get(image_key) if cache is not None else None
    labels = cache.labels.get(label_key) if cache is not None else None
    store = None
    if cached is None and cache is not None:
        nbytes = num_batches * (rows.stop - rows.start) * image_size * image_size * 3
        store = [] if cache.fits(nbytes) else None
    read_all = labels is None and process_count > 1  # other processes' labels are needed too
    new_labels = np.zeros(n, np.int64) if labels is None else None

    def decode(item):
        index, record = item
        try:
            image = make_image(record["image"])
        except image_ops.BadImage as err:
            raise DataError(f"{source.name} {source.split}: record {index} cannot be decoded "
                            f"({err})") from None
        return np.asarray(image, np.uint8)

    def prepare(b: int) -> np.ndarray:
        """This process's uint8 rows of global batch ``b`` (labels of the batch noted)."""
        if cached is not None:
            return cached[b]
        picks = np.minimum(np.arange(b * batch_size, (b + 1) * batch_size), n - 1)
        local_picks = [int(i) for i in picks[rows]]
        wanted = [int(i) for i in picks] if read_all else local_picks
        by_index = dict(zip(wanted, source.__getitems__(wanted)))
        if new_labels is not None:  # ``wanted`` holds every row of the batch then
            for i in wanted:
                new_labels[i] = _single_label(source, i, by_index[i]["label"])
        items = [(i, by_index[i]) for i in local_picks]
        local = np.stack(list(pool.map(decode, items)) if pool else [decode(x) for x in items])
        if store is not None:
            store.append(local)
        return local

    # Batch b + 1 is read and decoded (one producer thread, ``threads`` decoders) while
    # ``features_fn`` runs on batch b; batches are made in order, one at a time.
    pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 and cached is None \
        else None
    producer = concurrent.futures.ThreadPoolExecutor(1)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, desc=f"features {source.name} {source.split}", file=sys.stderr,
                   mininterval=1.0)
    out = []
    try:
        pending = producer.submit(prepare, 0)
        for b in range(num_batches):
            local = pending.result()
            if b + 1 < num_batches:
                pending = producer.submit(prepare, b + 1)
            features = np.asarray(features_fn(image_ops.value_range(local, -1, 1)))
            if features.ndim != 2 or features.shape[0] != batch_size:
                raise ValueError(f"features_fn: returned shape {features.shape} for a global "
                                 f"batch of {batch_size}; it must return the global batch's "
                                 f"features [batch_size, D]")
            real = min(batch_size, n - b * batch_size)
            out.append(features[:real])
            if bar is not None:
                bar.update(real)
    finally:
        producer.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if bar is not None:
            bar.close()
    if labels is None:
        labels = new_labels
    if cache is not None:
        cache.labels[label_key] = labels
        if store is not None:
            cache.images[image_key] = store
    return np.concatenate(out), labels


def check_shots(label: str, labels: np.ndarray, num_classes: int, shots: Iterable[int],
                class_names: Optional[Sequence[str]] = None) -> None:
    """An error naming the dataset, the first class with fewer train examples than max(shots),
    and the counts."""
    need = max(int(k) for k in shots)
    counts = np.bincount(labels, minlength=num_classes)
    short = np.flatnonzero(counts < need)
    if len(short):
        c = int(short[0])
        name = f" ({class_names[c]!r})" if class_names and c < len(class_names) else ""
        raise DataError(f"fewshot.suite: dataset {label!r}: class {c}{name} has "
                        f"{int(counts[c])} train examples, fewer than {need} shots "
                        f"({len(short)} of {num_classes} classes are short; the smallest "
                        f"has {int(counts.min())}); use a larger train split or fewer shots")


def run_suite(features_fn: Callable, suite, image_size: int, data_dir: Optional[str] = None,
              shots: Iterable[int] = fewshot.DEFAULT_SHOTS, seeds: Iterable[int] = (0, 1, 2),
              l2_mode: str = "loso", fixed_l2: float = fewshot.BIGVISION_L2,
              batch_size: int = 256, cache: Optional[ImageCache] = None,
              preprocess: str = "resize_crop", resize_size: Optional[int] = None,
              process_index: int = 0, process_count: int = 1, threads: int = 8,
              label_key: str = "label", progress: bool = False) -> dict:
    """The flat few-shot record of ``suite`` (spec strings or ``SuiteEntry``s):
    ``{'fewshot_{label}_{k}shot': mean, 'fewshot_{label}_{k}shot_std': std}`` (module
    docstring). Every entry, split and argument is checked before any feature is extracted."""
    entries = parse_suite(suite)
    shots = tuple(shots)
    seeds = tuple(seeds)
    if not shots or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1
                        for k in shots):
        raise ValueError(f"fewshot.shots: {shots!r} is not allowed; use positive integers")
    if not seeds:
        raise ValueError("fewshot.seeds: at least one seed is needed")
    if l2_mode not in fewshot.L2_MODES:
        raise ValueError(f"fewshot.l2: {l2_mode!r} is not allowed; choose one of "
                         f"{list(fewshot.L2_MODES)}")
    _rows(batch_size, process_index, process_count)
    _make_image_fn(preprocess, image_size, resize_size)

    opened = []
    for e in entries:
        train = sources.open_source(e.name, e.train_split, data_dir, label_key=label_key)
        test = sources.open_source(e.name, e.eval_split, data_dir, label_key=label_key)
        if train.multi_label:
            raise DataError(f"fewshot.suite: dataset {e.name!r} is multi-label "
                            f"({label_key!r}); few-shot needs one label per example")
        opened.append((e, train, test))

    record = {}
    for e, train, test in opened:
        common = dict(image_size=image_size, batch_size=batch_size, preprocess=preprocess,
                      process_index=process_index, process_count=process_count,
                      progress=progress, resize_size=resize_size, threads=threads, cache=cache)
        train_x, train_y = extract_features(features_fn, train, **common)
        check_shots(e.label, train_y, train.num_classes, shots, train.class_names)
        test_x, test_y = extract_features(features_fn, test, **common)
        results = fewshot.fewshot_eval(train_x, train_y, test_x, test_y, train.num_classes,
                                       shots=shots, seeds=seeds, l2_mode=l2_mode,
                                       fixed_l2=fixed_l2)
        for k, r in results.items():
            record[f"fewshot_{e.label}_{k}shot"] = r["mean"]
            record[f"fewshot_{e.label}_{k}shot_std"] = r["std"]
    return record
