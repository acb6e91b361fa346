"""The paper's few-shot linear evaluation of a frozen representation.

K examples per class are drawn with several seeds; features are standardised with the few-shot
train mean/std; a closed-form L2-regularised least-squares map to one-hot targets in {-1, +1},
with an unregularised bias, predicts by argmax. The primal (d x d) or dual (n x n) system is
solved, whichever is smaller. ``l2`` is chosen from a small grid by leave-one-shot-out
cross-validation on the few-shot train examples themselves, never on the test set.

This module needs only a feature function; it knows nothing of training.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_L2_GRID = (2.0 ** -6, 2.0 ** -3, 1.0, 2.0 ** 3, 2.0 ** 6, 2.0 ** 10)
DEFAULT_L2 = 1.0  # used for K = 1, where there is no shot to hold out
MAX_FOLDS = 5


def _standardise(train_x: np.ndarray, *others: np.ndarray):
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return [(x - mean) / std for x in (train_x, *others)]


def ridge_fit(train_x: np.ndarray, train_y: np.ndarray, num_classes: int, l2: float):
    """(W, b) of ridge regression to {-1,+1} one-hot targets on standardised, centred features.

    With centred features the unregularised bias is the mean target. Primal
    ``W = (X^T X + l2 I)^-1 X^T Yc`` when d <= n, else dual ``W = X^T (X X^T + l2 I)^-1 Yc``.
    """
    x = np.asarray(train_x, np.float64)
    targets = 2.0 * np.eye(num_classes)[np.asarray(train_y)] - 1.0
    bias = targets.mean(axis=0)
    centred = targets - bias
    n, d = x.shape
    if d <= n:
        w = np.linalg.solve(x.T @ x + l2 * np.eye(d), x.T @ centred)
    else:
        w = x.T @ np.linalg.solve(x @ x.T + l2 * np.eye(n), centred)
    return w, bias


def ridge_accuracy(train_x, train_y, test_x, test_y, num_classes: int, l2: float) -> float:
    """Test accuracy of the closed-form ridge probe fit on (train_x, train_y)."""
    if l2 < 0:
        raise ValueError(f"l2: must be >= 0, got {l2}")
    train_x, test_x = _standardise(np.asarray(train_x, np.float64),
                                   np.asarray(test_x, np.float64))
    w, bias = ridge_fit(train_x, train_y, num_classes, l2)
    predictions = np.argmax(test_x @ w + bias, axis=1)
    return float(np.mean(predictions == np.asarray(test_y)))


def draw_shots(labels: np.ndarray, shots: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices of ``shots`` examples of every class, drawn with ``seed``; [shot, class] order."""
    rng = np.random.default_rng([seed, shots])
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < shots:
            raise ValueError(f"shots: class {c} has only {len(members)} training examples, "
                             f"fewer than {shots}")
        picks.append(rng.choice(members, shots, replace=False))
    return np.stack(picks, axis=1).reshape(-1)


def choose_l2(x: np.ndarray, y: np.ndarray, shots: int, num_classes: int,
              grid: Sequence[float] = DEFAULT_L2_GRID) -> float:
    """The grid value with the best leave-one-shot-out accuracy (ties: the larger l2)."""
    if shots < 2:
        return DEFAULT_L2
    folds = min(shots, MAX_FOLDS)
    shot_of = np.arange(len(y)) // num_classes  # draw_shots orders examples by shot
    scores = []
    for l2 in grid:
        accs = [ridge_accuracy(x[shot_of != f], y[shot_of != f], x[shot_of == f],
                               y[shot_of == f], num_classes, l2) for f in range(folds)]
        scores.append(np.mean(accs))
    best = max(scores)
    return max(l2 for l2, s in zip(grid, scores) if s == best)


def fewshot_eval(train_features: np.ndarray, train_labels: np.ndarray,
                 test_features: np.ndarray, test_labels: np.ndarray, num_classes: int,
                 shots: Iterable[int] = DEFAULT_SHOTS, seeds: Iterable[int] = (0, 1, 2),
                 l2_grid: Sequence[float] = DEFAULT_L2_GRID) -> dict:
    """{K: {'mean', 'std', 'accuracies', 'l2'}} over seeds, for every K in ``shots``."""
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    results = {}
    for k in shots:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"shots: each K must be a positive integer, got {k!r}")
        accs, l2s = [], []
        for seed in seeds:
            idx = draw_shots(train_labels, int(k), num_classes, int(seed))
            x, y = train_features[idx], train_labels[idx]
            l2 = choose_l2(x, y, int(k), num_classes, l2_grid)
            accs.append(ridge_accuracy(x, y, test_features, test_labels, num_classes, l2))
            l2s.append(l2)
        results[int(k)] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)),
                           "accuracies": accs, "l2": l2s}
    return results


def extract_features(feature_fn: Callable, images: np.ndarray, batch_size: int = 500,
                     preprocess: Optional[Callable] = None) -> np.ndarray:
    """Run ``feature_fn(images_batch)`` over ``images`` in fixed-size batches (last padded)."""
    n = len(images)
    out = []
    for start in range(0, n, batch_size):
        idx = np.minimum(np.arange(start, start + batch_size), n - 1)
        batch = images[idx] if preprocess is None else preprocess(images[idx])
        out.append(np.asarray(feature_fn(batch))[: min(batch_size, n - start)])
    return np.concatenate(out)
