"""Turn an image folder (or per-split list files) into a TFDS array_record dataset, without
TensorFlow; check a prepared dataset against its manifest.

    python -m vitlib.data.prepare build NAME --folder ROOT [--data_dir DIR] [options]
    python -m vitlib.data.prepare build NAME --list train=train.txt --list test=test.txt \
        [--class_names names.txt]
    python -m vitlib.data.prepare verify NAME [--data_dir DIR] [--version 1.0.0]

Inputs:
- an image folder ``ROOT/<split>/<class>/*.{jpg,jpeg,png,...}``: the class names are the sorted
  folder names of the ``train`` split (else of the first split), or those of ``--class_names``;
  a class may be missing from another split, an unknown one is an error;
- or list files, one per split, of ``path<TAB, comma or spaces>label`` lines (paths relative to
  the list file's folder; ``label`` a class id or a class name; blank lines and ``#`` comments
  are skipped); class names from ``--class_names`` (one per line), else the sorted names used
  in the lists, else ``0..max`` for integer labels.

Output: ``<data_dir>/<NAME>/<version>/``, readable by ``vitlib.data.sources.open_source(NAME,
split, data_dir)`` and by plain ``tfds.builder_from_directory(path).as_data_source(split)``, with
features ``image`` (``tfds.features.Image(encoding_format='jpeg')``), ``label``
(``ClassLabel(names=...)``) and ``file_name`` (the path relative to ROOT, or as in the list).
JPEG files are stored byte for byte (whatever their mode: grayscale and CMYK JPEGs stay so,
readers convert to RGB); other formats PIL reads (PNG, GIF, BMP, WEBP, TIFF) are converted to
RGB and re-encoded as JPEG, quality 95. Records are stored in a fixed order (TFDS
``disable_shuffling``): per split, the folder input's files sorted by (class name, file name),
or the list file's lines in order, so ``train[a:b]`` is records a..b-1 of that order.

``vitlib_manifest.json`` beside ``dataset_info.json`` records the class names, each split's
size, skipped files and a SHA-256 over its stored records (for each record in order: the
SHA-256 of the image bytes, the label as 8 little-endian bytes and the UTF-8 file name with its
length); ``verify`` reads every record back and compares.

Every file is decoded once with PIL before it is stored: an undecodable or truncated image is
skipped and counted (``--on_bad_image skip``, the default; the first paths are named at the end),
fails naming its path and index (``fail``), or is stored as it is (``keep``: only to test how
readers handle bad records). A dataset is built in a hidden temporary folder of the data dir and
renamed into place (never half-written), under a lock (one builder per dataset at a time); an
existing one is kept unless ``overwrite``.
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from vitlib.data.datasets import DataError, tfds_data_dir
from vitlib.data.image_lists import read_class_names, read_lists, scan_folder
from vitlib.files import write_json

BAD_IMAGE_POLICIES = ("skip", "fail", "keep")
JPEG_QUALITY = 95
MANIFEST = "vitlib_manifest.json"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
NAMED_BAD = 5  # bad files named in the summary
CHECKSUM_DOC = ("sha256 over the split's records in order: per record sha256(image bytes), "
                "label as int64 little-endian, len(file_name) as uint64 little-endian, "
                "file_name UTF-8")


@dataclasses.dataclass
class Prepared:
    """Where a dataset went and what it holds."""
    name: str
    version: str
    path: Path
    data_dir: Path
    class_names: list
    splits: dict  # split -> records stored
    skipped: dict  # split -> files skipped (undecodable)
    skipped_files: list  # the first few skipped paths
    built: bool  # False: it existed already and was kept

    def summary(self) -> str:
        sizes = ", ".join(f"{s} {n}" for s, n in self.splits.items())
        lines = [f"dataset {self.name!r} ({'built' if self.built else 'already prepared'}) "
                 f"in {self.path}", f"  {len(self.class_names)} classes; splits: {sizes}"]
        if sum(self.skipped.values()):
            lines.append(f"  skipped {sum(self.skipped.values())} undecodable image(s) "
                         f"({self.skipped}), e.g. {', '.join(self.skipped_files)}")
        lines += [f"  {label}: {command}" for label, command in self.train_commands()]
        return "\n".join(lines)

    def train_commands(self, backend: Optional[str] = None) -> list[tuple[str, str]]:
        """Training commands for this dataset, labelled: one sized to the machine it runs on
        (on a CPU: a small model at 64 px for a few hundred steps, minutes; on an accelerator
        the next one) and the paper-scale one (S/16 at 224 px, 1,000 steps of 256: hours on a
        CPU). ``backend``: JAX's default backend (read when not given)."""
        if backend is None:
            import jax

            backend = jax.default_backend()
        train = "train" if "train" in self.splits else next(iter(self.splits))
        held = [s for s in self.splits if s != train]
        evals = f"('test={held[0]}',)" if held else f"('test={train}[:2%]',)"
        common = (f"python -m vitlib.train --config base --set dataset={self.name} "
                  f"--set data_dir={self.data_dir} --set input.pipeline=grain "
                  f"--set train_split={train} --set \"eval_splits={evals}\" "
                  f"--set fewshot.dataset=''")
        paper = (f"{common} --workdir runs/{self.name} --set image_size=224 "
                 f"--set model.variant=S/16")
        small = (f"{common} --workdir runs/{self.name}_small --set image_size=64 "
                 f"--set model.variant=Femto/8 --set batch_size=64 --set total_steps=300 "
                 f"--set optim.schedule.warmup_steps=30 --set eval_batch_size=256")
        if backend == "cpu":
            return [(f"train on it on this CPU ({os.cpu_count()} cores, minutes)", small),
                    ("at the paper's scale (S/16 at 224 px; hours on a CPU, for an accelerator "
                     "host)", paper)]
        return [(f"train on it at the paper's scale on this {backend.upper()} host", paper),
                ("a quick check first (minutes)", small)]


# ---------------------------------------------------------------- inputs

def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise DataError(f"name: {name!r} is not allowed; use lower-case letters, digits and "
                        f"'_', starting with a letter (TFDS dataset names), e.g. 'my_pets'")


def _check_version(version: str) -> None:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise DataError(f"version: {version!r} is not allowed; use MAJOR.MINOR.PATCH, "
                        f"e.g. '1.0.0'")


# ---------------------------------------------------------------- images and checksums

def jpeg_bytes(path) -> tuple[Optional[bytes], Optional[str]]:
    """(bytes to store, None), or (None, why) for a file PIL cannot decode completely. A JPEG
    is returned as read; other formats are converted to RGB and encoded as JPEG."""
    from PIL import Image, ImageFile

    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return None, f"cannot be read ({err})"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.format == "JPEG":
                if ImageFile.LOAD_TRUNCATED_IMAGES and b"\xff\xd9" not in data[-1024:]:
                    return None, "truncated JPEG (no end-of-image marker)"
                return data, None
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
            return out.getvalue(), None
    except Exception as err:  # PIL raises many kinds for bad data
        return None, f"cannot be decoded ({type(err).__name__}: {err})"


def _keep_as_is(path) -> tuple[Optional[bytes], Optional[str]]:
    data, why = jpeg_bytes(path)
    if data is None:
        try:
            return Path(path).read_bytes(), why
        except OSError:
            return None, why
    return data, None


class RecordDigest:
    """SHA-256 over records in order: for each, the SHA-256 of its image bytes, its label as 8
    little-endian bytes, then its UTF-8 file name preceded by its length (8 bytes)."""

    def __init__(self):
        self._total, self.count = hashlib.sha256(), 0

    def add(self, image: bytes, label: int, file_name) -> None:
        name = file_name.encode() if isinstance(file_name, str) else bytes(file_name)
        self._total.update(hashlib.sha256(image).digest())
        self._total.update(int(label).to_bytes(8, "little", signed=True))
        self._total.update(len(name).to_bytes(8, "little") + name)
        self.count += 1

    def hexdigest(self) -> str:
        return self._total.hexdigest()


# ---------------------------------------------------------------- the TFDS builder

def _builder_class(dataset_name: str, dataset_version: str):
    import tensorflow_datasets as tfds

    class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = dataset_name
        VERSION = tfds.core.Version(dataset_version)

        def __init__(self, class_names, examples, on_bad_image, progress, **kwargs):
            self._class_names, self._examples = class_names, examples
            self._on_bad_image, self._progress = on_bad_image, progress
            self.report = {}  # split -> {'digest', 'stored', 'skipped', 'skipped_files'}
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, disable_shuffling=True,
                description=f"Image folder prepared by vitlib.data.prepare; see {MANIFEST}.",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=self._class_names),
                    "file_name": tfds.features.Text()}),
                supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split, examples)
                    for split, examples in self._examples.items()}

        def _generate_examples(self, split, examples):
            from tqdm import tqdm

            read = _keep_as_is if self._on_bad_image == "keep" else jpeg_bytes
            report = self.report[split] = {"stored": 0, "skipped": 0, "skipped_files": [],
                                           "kept_bad": 0}
            digest = RecordDigest()
            for index, example in enumerate(tqdm(examples, desc=f"{self.name} {split}",
                                                 unit=" images", disable=not self._progress)):
                data, why = read(example.path)
                if data is None or (why and self._on_bad_image != "keep"):
                    if self._on_bad_image == "fail":
                        raise DataError(f"image {example.path} (index {index} of split "
                                        f"{split!r}) {why}; use on_bad_image='skip' to skip "
                                        f"such files")
                    report["skipped"] += 1
                    if len(report["skipped_files"]) < NAMED_BAD:
                        report["skipped_files"].append(str(example.path))
                    continue
                report["kept_bad"] += bool(why)
                digest.add(data, example.label, example.file_name)
                yield report["stored"], {"image": data, "label": example.label,
                                         "file_name": example.file_name}
                report["stored"] += 1
            if report["stored"] == 0:
                raise DataError(f"split {split!r}: none of its {len(examples)} image files "
                                f"could be decoded (e.g. {report['skipped_files'][:3]})")
            report["sha256"] = digest.hexdigest()

    return FolderBuilder


# ---------------------------------------------------------------- build and verify

def _existing(name: str, version: str, root: Path, final: Path) -> Prepared:
    import json

    manifest = final / MANIFEST
    info = json.loads(manifest.read_text()) if manifest.is_file() else {"splits": {}}
    return Prepared(name, version, final, root, info.get("class_names", []),
                    {s: v["num_examples"] for s, v in info["splits"].items()},
                    {s: v.get("skipped", 0) for s, v in info["splits"].items()},
                    [f for v in info["splits"].values() for f in v.get("skipped_files", [])],
                    built=False)


def build(name: str, examples: dict, class_names: Sequence[str], data_dir=None, *,
          version: str = "1.0.0", on_bad_image: str = "skip", overwrite: bool = False,
          progress: bool = True, source: str = "") -> Prepared:
    """Write ``{split: [Example]}`` as dataset ``name`` into ``<data_dir>/<name>/<version>``
    (atomically, under a lock; kept if it exists unless ``overwrite``)."""
    import tensorflow_datasets as tfds

    _check_name(name)
    _check_version(version)
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise DataError(f"on_bad_image: {on_bad_image!r} is not allowed; choose one of "
                        f"{list(BAD_IMAGE_POLICIES)}")
    class_names = [str(c) for c in class_names]
    if not class_names:
        raise DataError("class_names: no classes")
    root = tfds_data_dir(data_dir)
    final = root / name / version
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building it: wait, then reuse
        if (final / "dataset_info.json").is_file() and not overwrite:
            return _existing(name, version, root, final)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-{version}.incomplete."))
        try:
            builder = _builder_class(name, version)(
                class_names, examples, on_bad_image, progress, data_dir=str(tmp),
                file_format="array_record")
            from tensorflow_datasets.core.utils import tqdm_utils

            shown = getattr(tqdm_utils, "_active", True)
            tfds.display_progress_bar(False)  # ours counts the images
            try:
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(try_download_gcs=False))
            finally:
                tfds.display_progress_bar(shown)
            built = tmp / name / version
            report = builder.report
            write_json(built / MANIFEST, {
                "name": name, "version": version, "source": source,
                "class_names": class_names, "image_encoding": "jpeg",
                "checksum": CHECKSUM_DOC,
                "splits": {split: {"num_examples": r["stored"], "sha256": r["sha256"],
                                   "skipped": r["skipped"], "skipped_files": r["skipped_files"],
                                   "stored_undecodable": r["kept_bad"]}
                           for split, r in report.items()}})
            final.parent.mkdir(parents=True, exist_ok=True)
            old = None
            if final.exists():
                old = tmp / "replaced"
                os.rename(final, old)
            os.rename(built, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Prepared(name, version, final, root, class_names,
                    {s: r["stored"] for s, r in report.items()},
                    {s: r["skipped"] for s, r in report.items()},
                    [f for r in report.values() for f in r["skipped_files"]][:NAMED_BAD],
                    built=True)


def prepare_folder(name: str, folder=None, data_dir=None, *, lists: Optional[dict] = None,
                   class_names=None, splits: Optional[Sequence[str]] = None,
                   version: str = "1.0.0", on_bad_image: str = "skip", overwrite: bool = False,
                   progress: bool = True) -> Prepared:
    """Prepare dataset ``name`` from an image ``folder`` or from ``lists`` ({split: list
    file}); ``class_names`` a list or a file of names. See the module docstring."""
    _check_name(name)
    _check_version(version)
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise DataError(f"on_bad_image: {on_bad_image!r} is not allowed; choose one of "
                        f"{list(BAD_IMAGE_POLICIES)}")
    if (folder is None) == (lists is None):
        raise DataError("give either folder (ROOT/<split>/<class>/images) or lists "
                        "({split: list file}), not both or neither")
    if isinstance(class_names, (str, os.PathLike)):
        class_names = read_class_names(class_names)
    if folder is not None:
        names, examples = scan_folder(folder, splits, class_names)
        source = str(Path(folder).resolve())
    else:
        if not lists:
            raise DataError("lists: give at least one SPLIT=FILE")
        names, examples = read_lists(lists, class_names)
        source = ", ".join(f"{s}={Path(p).resolve()}" for s, p in lists.items())
    return build(name, examples, names, data_dir, version=version, on_bad_image=on_bad_image,
                 overwrite=overwrite, progress=progress, source=source)


def verify(name: str, data_dir=None, version: Optional[str] = None) -> dict:
    """{split: records checked}: every stored record read back and hashed as at build time;
    a changed, missing or unreadable record file is a ``DataError`` naming the split."""
    import json

    import tensorflow_datasets as tfds

    from vitlib.data.sources import find_dataset_dir

    _check_name(name)
    if version is not None:
        _check_version(version)
    root = tfds_data_dir(data_dir)
    folder = find_dataset_dir(f"{name}:{version}" if version else name, root)
    if folder is None:
        raise DataError(f"dataset {name!r}{' version ' + version if version else ''} is not "
                        f"in {root}")
    if not (folder / MANIFEST).is_file():
        raise DataError(f"{folder} has no {MANIFEST}: it was not prepared by "
                        f"vitlib.data.prepare, so there is nothing to verify against")
    manifest = json.loads((folder / MANIFEST).read_text())
    builder = tfds.builder_from_directory(str(folder))
    checked = {}
    for split, expected in manifest["splits"].items():
        digest = RecordDigest()
        try:
            data = builder.as_data_source(split=split, decoders={
                "image": tfds.decode.SkipDecoding(), "file_name": tfds.decode.SkipDecoding()})
            for start in range(0, len(data), 256):
                for record in data.__getitems__(list(range(start, min(len(data),
                                                                       start + 256)))):
                    digest.add(bytes(record["image"]), int(record["label"]),
                               record["file_name"])
        except Exception as err:  # array_record raises various errors on damaged files
            raise DataError(f"{name} split {split!r} in {folder} cannot be read back "
                            f"({type(err).__name__}: {err}); rebuild it with --overwrite"
                            ) from None
        if digest.count != expected["num_examples"] or digest.hexdigest() != expected["sha256"]:
            raise DataError(f"{name} split {split!r} in {folder} has changed: "
                            f"{digest.count} records with SHA-256 {digest.hexdigest()}, the "
                            f"manifest says {expected['num_examples']} with "
                            f"{expected['sha256']}; rebuild it with --overwrite")
        checked[split] = digest.count
    return checked


# ---------------------------------------------------------------- CLI

def _list_arg(text: str) -> tuple[str, str]:
    split, sep, path = text.partition("=")
    if not sep or not split or not path:
        raise argparse.ArgumentTypeError(f"--list: {text!r} is not SPLIT=FILE "
                                         f"(e.g. train=lists/train.txt)")
    return split, path


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="python -m vitlib.data.prepare", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = cli.add_subparsers(dest="command", required=True, metavar="{build,verify}")
    make = commands.add_parser("build", help="image folder or list files -> array_record",
                               description="Build a TFDS array_record dataset from an image "
                                           "folder or list files (see "
                                           "'python -m vitlib.data.prepare --help').")
    make.add_argument("name", help="dataset name: lower-case letters, digits, '_' (e.g. pets)")
    source = make.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", metavar="ROOT",
                        help="image folder ROOT/<split>/<class>/<image files>")
    source.add_argument("--list", action="append", type=_list_arg, metavar="SPLIT=FILE",
                        help="a split's list file of 'path<TAB|,|spaces>label' lines (paths "
                             "relative to the file); repeat for each split")
    make.add_argument("--class_names", metavar="FILE",
                      help="class names, one per line, in class-id order (default: sorted "
                           "class folders of the train split, or the names in the lists)")
    make.add_argument("--splits", metavar="A,B",
                      help="with --folder: only these split folders (default: all)")
    make.add_argument("--data_dir", metavar="DIR",
                      help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    make.add_argument("--version", default="1.0.0", help="dataset version (default 1.0.0)")
    make.add_argument("--on_bad_image", default="skip", choices=BAD_IMAGE_POLICIES,
                      help="an undecodable image: skip it and count it (default), fail naming "
                           "it, or keep it as it is (only to test readers)")
    make.add_argument("--overwrite", action="store_true",
                      help="rebuild the dataset if it exists (default: keep it)")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")
    check = commands.add_parser("verify", help="re-hash a prepared dataset's records",
                                description="Read every record of a dataset built by this "
                                            "module and compare with its manifest.")
    check.add_argument("name", help="dataset name")
    check.add_argument("--data_dir", metavar="DIR",
                       help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    check.add_argument("--version", help="version (default: the newest)")
    return cli


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "verify":
            checked = verify(args.name, args.data_dir, args.version)
            print(f"dataset {args.name!r}: {', '.join(f'{s} {n}' for s, n in checked.items())} "
                  f"records match the manifest")
            return 0
        lists = None
        if args.list is not None:
            lists = {}
            for split, path in args.list:
                if split in lists:
                    raise DataError(f"--list: split {split!r} is given twice")
                lists[split] = path
        splits = None
        if args.splits is not None:
            splits = [s.strip() for s in args.splits.split(",") if s.strip()]
            if not splits or args.folder is None:
                raise DataError(f"--splits: {args.splits!r} is not allowed; give split folder "
                                f"names, e.g. train,test, together with --folder")
        if args.folder is not None and not Path(args.folder).is_dir():
            raise DataError(f"--folder: {args.folder} is not a folder")
        if args.class_names is not None and not Path(args.class_names).is_file():
            raise DataError(f"--class_names: {args.class_names} is not a file")
        if args.data_dir is not None and Path(args.data_dir).exists() \
                and not Path(args.data_dir).is_dir():
            raise DataError(f"--data_dir: {args.data_dir} exists and is not a folder")
        _check_name(args.name)
        _check_version(args.version)
        prepared = prepare_folder(args.name, args.folder, args.data_dir, lists=lists,
                                  class_names=args.class_names, splits=splits,
                                  version=args.version, on_bad_image=args.on_bad_image,
                                  overwrite=args.overwrite, progress=not args.no_progress)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(prepared.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
