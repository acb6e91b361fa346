"""Where a prepared dataset's images come from: an image folder ``ROOT/<split>/<class>/*`` or
per-split list files of ``path<TAB>label`` lines, read into ``Example``s (path, class id, the
file name recorded) with the class names; ``vitlib.data.prepare`` stores them."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Optional, Sequence

from vitlib.data.datasets import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
SPLIT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Example:
    """One image to store: its path, class id and the file name recorded with it."""
    path: Path
    label: int
    file_name: str


def _check_split_name(split: str, where) -> None:
    if not SPLIT_RE.match(split):
        raise DataError(f"split: {split!r} ({where}) is not allowed as a split name; use "
                        f"letters, digits and '_' (e.g. train, validation, test)")


def read_class_names(path) -> list:
    """Class names, one per line (blank lines skipped); duplicates are an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class_names: {path} is not a file; give a text file with one class "
                        f"name per line")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"class_names: {path} holds no class names")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"class_names: {path} names {dupes[0]!r} more than once")
    return names


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") \
        and path.suffix.lower() in IMAGE_EXTENSIONS


def scan_folder(root, splits: Optional[Sequence[str]] = None,
                class_names: Optional[Sequence[str]] = None) -> tuple[list, dict]:
    """(class names, {split: [Example]}) of an image folder ``root/<split>/<class>/*``.

    Splits are the sub-folders of ``root`` (or ``splits``), each one's files sorted by (class,
    file name). Class names: ``class_names``, else the sorted folders of 'train' (else of the
    first split); a class folder not among them is an error naming it."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder: {root} is not a folder; give ROOT of ROOT/<split>/<class>/"
                        f"<image files>")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if splits is None:
        splits = found
        if not splits:
            raise DataError(f"folder: {root} has no split folders; expected ROOT/<split>/"
                            f"<class>/<image files>, e.g. {root}/train/cat/1.jpg")
    for split in splits:
        _check_split_name(split, root / split)
        if split not in found:
            raise DataError(f"splits: {split!r} is not a folder of {root}; it has {found}")
    order = sorted(splits, key=lambda s: (s != "train", list(splits).index(s)))
    classes_of = {s: sorted(p.name for p in (root / s).iterdir()
                            if p.is_dir() and not p.name.startswith(".")) for s in splits}
    if class_names is None:
        class_names = classes_of[order[0]]
        defined_by = f"the class folders of {root / order[0]}"
    else:
        defined_by = "--class_names"
    class_names = list(class_names)
    index = {n: i for i, n in enumerate(class_names)}
    out = {}
    for split in splits:
        unknown = [c for c in classes_of[split] if c not in index]
        if unknown:
            raise DataError(f"folder: class folder {root / split / unknown[0]} is not a class of "
                            f"{defined_by} ({len(class_names)} classes: "
                            f"{class_names[:10]}{' ...' if len(class_names) > 10 else ''})")
        examples = []
        for cls in classes_of[split]:
            for path in sorted((root / split / cls).iterdir()):
                if _is_image_file(path):
                    examples.append(Example(path, index[cls], f"{split}/{cls}/{path.name}"))
        if not examples:
            raise DataError(f"folder: split {split!r} ({root / split}) holds no image files "
                            f"({', '.join(IMAGE_EXTENSIONS)}) in class folders")
        out[split] = examples
    return class_names, out


def _parse_line(line: str) -> tuple[str, str]:
    for sep in ("\t", ","):
        if sep in line:
            path, _, label = line.rpartition(sep)
            return path.strip(), label.strip()
    parts = line.rsplit(None, 1)
    return (parts[0], parts[1]) if len(parts) == 2 else (line, "")


def read_lists(lists: dict, class_names: Optional[Sequence[str]] = None) -> tuple[list, dict]:
    """(class names, {split: [Example]}) of list files ``{split: path}``; see the module
    docstring for the format. Errors name the file and line."""
    parsed = {}
    for split, list_path in lists.items():
        list_path = Path(list_path)
        _check_split_name(split, list_path)
        if not list_path.is_file():
            raise DataError(f"list: {split}={list_path} is not a file")
        rows = []
        for number, line in enumerate(list_path.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            path, label = _parse_line(line.strip())
            if not label:
                raise DataError(f"list: {list_path}:{number}: {line!r} has no label; write "
                                f"'path<TAB>label' (label a class id or class name)")
            rows.append((list_path.parent / path, path, label, f"{list_path}:{number}"))
        if not rows:
            raise DataError(f"list: split {split!r} ({list_path}) lists no images")
        parsed[split] = rows
    labels = [row[2] for rows in parsed.values() for row in rows]
    numeric = all(re.fullmatch(r"-?\d+", label) for label in labels)
    if class_names is None:
        if numeric:
            class_names = [str(i) for i in range(max(int(x) for x in labels) + 1)]
        elif any(re.fullmatch(r"-?\d+", label) for label in labels):
            where = next(r[3] for rows in parsed.values() for r in rows
                         if re.fullmatch(r"-?\d+", r[2]))
            raise DataError(f"list: {where}: mixes class ids with class names; give "
                            f"--class_names to map both")
        else:
            class_names = sorted(set(labels))
    class_names = list(class_names)
    index = {n: i for i, n in enumerate(class_names)}
    out = {}
    for split, rows in parsed.items():
        examples = []
        for path, written, label, where in rows:
            if label in index:
                label_id = index[label]
            elif re.fullmatch(r"-?\d+", label):
                label_id = int(label)
                if not 0 <= label_id < len(class_names):
                    raise DataError(f"list: {where}: label {label_id} is outside [0, "
                                    f"{len(class_names)}) ({len(class_names)} classes)")
            else:
                raise DataError(f"list: {where}: label {label!r} is not a class name "
                                f"({len(class_names)} classes: {class_names[:10]}"
                                f"{' ...' if len(class_names) > 10 else ''})")
            if not path.is_file():
                raise DataError(f"list: {where}: image {path} does not exist")
            examples.append(Example(path, label_id, written))
        out[split] = examples
    return class_names, out
