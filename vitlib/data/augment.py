"""Preprocessing (uint8 -> [-1, 1]) and the augmentation of in-memory batches (pad-and-crop,
horizontal flip), drawn from ``(seed, step)`` so a resumed run augments as an uninterrupted one."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Augment:
    crop_padding: int = 0  # zero-pad by this many pixels, then crop back at a random offset
    flip: bool = False  # random horizontal flip

    def __post_init__(self):
        if not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"augment.crop_padding: must be an integer >= 0, got "
                             f"{self.crop_padding!r}")


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.astype(np.float32) * (2.0 / 255.0) - 1.0


def augment_batch(images: np.ndarray, augment: Augment, seed: int, step: int) -> np.ndarray:
    if not augment.crop_padding and not augment.flip:
        return images
    rng = np.random.default_rng([seed, step, 1])
    n, h, w, _ = images.shape
    out = images
    if augment.crop_padding:
        p = augment.crop_padding
        padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        dy, dx = rng.integers(0, 2 * p + 1, size=(2, n))
        out = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if augment.flip:
        flip = rng.random(n) < 0.5
        out = np.where(flip[:, None, None, None], out[:, :, ::-1], out)
    return out
