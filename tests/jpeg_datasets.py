"""Small generated JPEG datasets for tests: an image folder written with PIL, and the same
folder prepared as a TFDS array_record dataset (``vitlib.data.prepare``), in seconds.

    folder = make_image_folder(tmp_path / "images", classes=4, per_class=40,
                               splits=("train", "test"), sizes=(24, 64), corrupt=1, seed=0)
    data_dir, name = prepare_folder_dataset(folder, tmp_path / "tfds", "shapes")
    source = vitlib.data.sources.open_source(name, "train", str(data_dir))

Images: class ``c`` is a shape of its own colour on a background (a filled square, disc,
horizontal or vertical stripes, a cross, a triangle, checks, ...), at a random position and
scale, with noise; widths and heights drawn independently from ``sizes`` (so images are not
square and not all the same size). A small ViT learns the classes in a few hundred steps.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

PALETTE = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 30), (200, 60, 200),
           (40, 200, 210), (240, 130, 20), (120, 120, 120), (150, 90, 40), (250, 250, 250)]
PATTERNS = ("square", "disc", "hstripes", "vstripes", "cross", "triangle", "checks", "ring")
CORRUPT_KINDS = ("truncated", "random")


def class_name(c: int) -> str:
    """The folder name of class ``c`` (sorted order = class order)."""
    return f"class_{c:02d}"


def draw_image(c: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A [height, width, 3] uint8 image of class ``c``: pattern ``c % 8`` in colour ``c % 10``
    (the two cycles differ, so up to 40 classes are distinct) on a dim random background."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    r = rng.uniform(0.25, 0.4) * min(height, width)
    dy, dx = (yy - cy) / r, (xx - cx) / r
    pattern = PATTERNS[c % len(PATTERNS)]
    period = max(2.0, min(height, width) / 6)
    mask = {
        "square": (np.abs(dy) < 1) & (np.abs(dx) < 1),
        "disc": dy ** 2 + dx ** 2 < 1,
        "hstripes": (yy // period) % 2 == 0,
        "vstripes": (xx // period) % 2 == 0,
        "cross": ((np.abs(dy) < 0.3) | (np.abs(dx) < 0.3)) & (np.abs(dy) < 1.2)
        & (np.abs(dx) < 1.2),
        "triangle": (dy < 1) & (np.abs(dx) < (dy + 1) / 2),
        "checks": ((yy // period + xx // period) % 2) == 0,
        "ring": np.abs(np.sqrt(dy ** 2 + dx ** 2) - 0.8) < 0.25,
    }[pattern]
    colour = np.asarray(PALETTE[c % len(PALETTE)], np.float32)
    background = rng.uniform(0, 60, size=3).astype(np.float32)
    image = np.where(mask[..., None], colour, background)
    image = image + rng.normal(0, 12, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_of(image: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def make_image_folder(root, classes: int = 4, per_class: int = 20,
                      splits: Sequence[str] = ("train", "test"), sizes=(20, 120),
                      corrupt: int = 0, png: int = 0, seed: int = 0,
                      split_sizes: Optional[dict] = None) -> Path:
    """Write ``root/<split>/<class_name(c)>/<i>.jpg`` and return ``root``.

    - ``classes``: number of classes; ``per_class``: images per class in each split (or
      ``split_sizes={split: per_class}``);
    - ``sizes``: (min, max) of each image's height and width, drawn independently per image;
    - ``corrupt``: number of undecodable files added to the FIRST split, named ``bad_<k>.jpg``
      in class folders ``k % classes``, alternately a truncated JPEG (its first half) and
      random bytes;
    - ``png``: number of images of the first split saved as PNG (``<i>.png``) instead of JPEG;
    - ``seed``: everything is a function of it.

    File names sort in generation order within a class folder (``00000.jpg`` ...)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    low, high = sizes
    for s, split in enumerate(splits):
        count = (split_sizes or {}).get(split, per_class)
        for c in range(classes):
            folder = root / split / class_name(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                height, width = (int(v) for v in rng.integers(low, high + 1, size=2))
                image = draw_image(c, height, width, rng)
                if s == 0 and c * count + i < png:
                    Image.fromarray(image).save(folder / f"{i:05d}.png")
                else:
                    (folder / f"{i:05d}.jpg").write_bytes(jpeg_of(image))
        if s == 0:
            for k in range(corrupt):
                folder = root / split / class_name(k % classes)
                if CORRUPT_KINDS[k % 2] == "truncated":
                    good = jpeg_of(draw_image(k % classes, 64, 64, rng))
                    data = good[:len(good) // 2]
                else:
                    data = rng.integers(0, 256, size=500, dtype=np.uint8).tobytes()
                (folder / f"bad_{k}.jpg").write_bytes(data)
    return root


def corrupt_files(root) -> list:
    """The corrupt files ``make_image_folder`` wrote under ``root``, sorted."""
    return sorted(Path(root).glob("*/*/bad_*.jpg"))


def prepare_folder_dataset(folder, data_dir, name: str = "shapes",
                           on_bad_image: str = "keep", **kwargs) -> tuple[Path, str]:
    """Prepare ``folder`` as TFDS dataset ``name`` in ``data_dir``; returns (data_dir, name).

    By default (``on_bad_image='keep'``) corrupt files are stored as they are, so that readers'
    handling of bad records can be tested; pass ``'skip'`` or ``'fail'`` to test the builder's
    own checks. Other keyword arguments go to ``vitlib.data.prepare.prepare_folder``."""
    from vitlib.data import prepare

    prepare.prepare_folder(name, folder, str(data_dir), on_bad_image=on_bad_image,
                           progress=False, **kwargs)
    return Path(data_dir), name
