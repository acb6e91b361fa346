"""The data and recipe of the ``full`` profile's runs: the upstream dataset (ImageNet-21k when it
is prepared in the data dir, else ImageNet-1k), its train / minival / test splits, the grain
pipeline with the paper's preprocessing, the sigmoid loss with its negative initial head bias,
bf16 compute with fp32 parameters, and few-shot on the paper's suite.

    setup = full_setup(upstream="auto", data_dir="/data/tfds")
    common = {**notebook_settings, **setup.overrides()}  # every run of the notebook

Splits (``UPSTREAMS``; big_vision's configs hold out the first examples of ImageNet-21k's one
split, and the last 1% of ImageNet-1k's train split as minival):

- ``imagenet21k``: train ``train[51200:]``, minival ``train[:25600]``, test ``train[25600:51200]``;
- ``imagenet2012``: train ``train[:99%]``, minival ``train[99%:]``, test ``validation``.

Transfer (``transfer``): the notebooks read ``fewshot_<transfer>_<K>shot`` (test split of the
few-shot dataset) and ``fewshot_<transfer>_minival_<K>shot`` (its minival, for choices). The
paper's suite is extended with ``imagenet2012_minival``: shots from ``train[:65000]`` scored on
``train[99%:]`` (disjoint from the shots).

ImageNet-1k from scratch overfits without AugReg-style regularisation (mixup, RandAugment,
stochastic depth), which vitlib does not implement: ``caveat()`` says so, and every claim of a
run on ImageNet-1k carries it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

from vitlib.analysis.accelerators import accelerator as named_accelerator

UPSTREAMS = {
    "imagenet21k": dict(train_split="train[51200:]", minival_split="train[:25600]",
                        test_split="train[25600:51200]", head_bias_init=-10.0),
    "imagenet2012": dict(train_split="train[:99%]", minival_split="train[99%:]",
                         test_split="validation", head_bias_init=-6.9),
}
PAPER_SUITE = ("paper", "imagenet2012_minival=imagenet2012:train[:65000]:train[99%:]")
TRANSFER = "imagenet2012"
AUTO = "auto"
IMAGENET1K_CAVEAT = ("upstream is ImageNet-1k, not the paper's JFT / ImageNet-21k: from scratch "
                     "without AugReg-style regularisation (mixup, RandAugment, stochastic depth; "
                     "not in vitlib) a ViT overfits it, so absolute accuracies are low and "
                     "larger models are penalised")


def default_data_dir() -> str:
    """TFDS's own default: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return os.environ.get("TFDS_DATA_DIR") or str(Path("~/tensorflow_datasets").expanduser())


@dataclasses.dataclass(frozen=True)
class FullSetup:
    """What every run of a ``full`` notebook shares; ``overrides()`` is its config."""

    upstream: str
    data_dir: str
    train_split: str
    minival_split: str
    test_split: str
    head_bias_init: float
    suite: tuple = PAPER_SUITE
    transfer: str = TRANSFER
    accelerator: str = "h100"
    devices: int = 8
    image_size: int = 224
    workers: int = 8
    shots: tuple = (1, 5, 10, 25)
    checkpoint_every: int = 1000  # steps; preemptible hosts lose at most this much

    def overrides(self, fewshot: bool = True) -> dict:
        """Config fields of every run (``fewshot=False``: no few-shot evaluation at all)."""
        return {
            "dataset": self.upstream, "data_dir": self.data_dir, "train_split": self.train_split,
            "eval_splits": self.eval_splits("test", "minival"),
            "input.pipeline": "grain", "input.crop": "inception", "input.min_area": 0.05,
            "input.flip": True, "input.workers": self.workers, "image_size": self.image_size,
            "augment.flip": False, "loss": "sigmoid", "model.head_bias_init": self.head_bias_init,
            "model.pool_type": "map",
            "model.dtype": "bfloat16", "model.param_dtype": "float32",
            "fewshot.dataset": "", "fewshot.suite": tuple(self.suite) if fewshot else (),
            "fewshot.shots": tuple(self.shots), "fewshot.l2": "fixed", "fewshot.every": 0,
            "checkpoint_every": self.checkpoint_every,
        }

    def eval_splits(self, *labels: str) -> tuple:
        """Config ``eval_splits`` entries of ``labels`` ('test', 'minival'): 'test=<split>'."""
        splits = {"test": self.test_split, "minival": self.minival_split}
        unknown = sorted(set(labels) - set(splits))
        if unknown:
            raise ValueError(f"eval split labels: {unknown} are not allowed; use {sorted(splits)}")
        return tuple(f"{label}={splits[label]}" for label in labels)

    def train_size(self) -> int:
        """Examples in the upstream's train split."""
        from vitlib.data.sources import open_source

        return len(open_source(self.upstream, self.train_split, self.data_dir))

    def num_classes(self) -> int:
        from vitlib.data.sources import open_source

        return open_source(self.upstream, self.train_split, self.data_dir).num_classes

    def nested_sizes(self, fractions) -> list:
        """Data sizes (examples) at ``fractions`` of the train split, for ``train_examples``:
        nested subsets, a smaller inside a larger."""
        n = self.train_size()
        bad = [f for f in fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"data_fractions: {bad} are not allowed; use fractions in (0, 1]")
        return [max(1, round(f * n)) for f in fractions]

    def transfer_keys(self, k: int) -> tuple[str, str]:
        """(test, minival) record keys of the ``k``-shot transfer accuracy."""
        return f"fewshot_{self.transfer}_{k}shot", f"fewshot_{self.transfer}_minival_{k}shot"

    def caveat(self) -> Optional[str]:
        """What every claim of these runs must say about the upstream, or None."""
        return IMAGENET1K_CAVEAT if self.upstream == "imagenet2012" else None

    def describe(self) -> str:
        return (f"upstream {self.upstream} (train {self.train_split}, minival "
                f"{self.minival_split}, test {self.test_split}) in {self.data_dir}; "
                f"{self.image_size} px, few-shot {list(self.suite)} (transfer: {self.transfer}); "
                f"host: {self.devices} x {self.accelerator}")


def _prepared(name: str, data_dir: str) -> bool:
    from vitlib.data.sources import find_dataset_dir

    return find_dataset_dir(name, Path(data_dir)) is not None


def full_setup(upstream: str = AUTO, data_dir: str = "", accelerator: str = "h100",
               devices: int = 8, **fields: Any) -> FullSetup:
    """The setup for ``upstream`` ('auto': imagenet21k if prepared in ``data_dir``, else
    imagenet2012; or any prepared dataset, whose splits ``fields`` then give) in ``data_dir``
    (empty: TFDS's default). ``fields`` override any other ``FullSetup`` field (the splits,
    ``suite``, ``transfer``, ``image_size``, ``workers``, ``shots``). The upstream must be
    prepared there (an error says how otherwise)."""
    data_dir = data_dir or default_data_dir()
    if not isinstance(upstream, str) or not upstream:
        raise ValueError(f"upstream: {upstream!r} is not allowed; use 'auto' or a prepared "
                         f"TFDS dataset name ({sorted(UPSTREAMS)})")
    if upstream == AUTO:
        found = [n for n in UPSTREAMS if _prepared(n, data_dir)]
        if not found:
            raise ValueError(f"upstream: 'auto' found neither {sorted(UPSTREAMS)} in data_dir "
                             f"{data_dir}; prepare one (docs/data.md: python -m "
                             f"vitlib.data.prepare build imagenet2012 ...) or set data_dir")
        upstream = found[0]
    elif not _prepared(upstream, data_dir):
        from vitlib.data.sources import open_source

        open_source(upstream, "train", data_dir)  # raises, naming the dir and how to prepare
    allowed = {f.name for f in dataclasses.fields(FullSetup)} - {"upstream", "data_dir",
                                                                 "accelerator", "devices"}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"full_data: {unknown} are not allowed; allowed: {sorted(allowed)}")
    known = UPSTREAMS.get(upstream, {})
    missing = sorted({"train_split", "minival_split", "test_split", "head_bias_init"}
                     - set(known) - set(fields))
    if missing:
        raise ValueError(f"full_data: upstream {upstream!r} has no default splits; give "
                         f"{missing} (e.g. full_data={{'train_split': 'train', 'minival_split': "
                         f"'minival', 'test_split': 'test', 'head_bias_init': -6.9}})")
    named_accelerator(accelerator)  # an unknown name is an error listing the known ones
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices: {devices!r} is not allowed; use a positive integer")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    setup = FullSetup(upstream=upstream, data_dir=data_dir, accelerator=accelerator,
                      devices=devices, **{**known, **fields})
    for field in ("suite", "shots"):
        if not isinstance(getattr(setup, field), (list, tuple)) or not getattr(setup, field):
            raise ValueError(f"full_data: {field} must be a non-empty list, got "
                             f"{getattr(setup, field)!r}")
    return setup
