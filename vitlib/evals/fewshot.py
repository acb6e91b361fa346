"""The paper's few-shot linear evaluation of a frozen representation.

K examples per class are drawn with several seeds; features are standardised with the few-shot
train mean/std; a closed-form L2-regularised least-squares map to one-hot targets in {-1, +1},
with an unregularised bias, predicts by argmax. The primal (d x d) or dual (n x n) system is
solved, whichever is smaller. ``l2`` is chosen from a small grid by leave-one-shot-out
cross-validation on the few-shot train examples themselves, never on the test set.

``l2_mode="fixed"`` is big_vision's probe instead (``evaluators/fewshot_lsr.py``, used by the
paper): features whitened with the few-shot train mean and ``std + 1e-5``, a constant bias
feature of 100 appended (so the bias is regularised like every weight, but barely), targets
``2 * onehot - 1``, one fixed ``l2`` (``2^10``, ``configs/common_fewshot.py``), argmax; the
shots drawn as big_vision draws them (``draw_shots_bigvision``). It is computed here in
float64 numpy (big_vision: float32 on the host CPU, via an eigendecomposition), so its numbers
match big_vision's up to float32 rounding.

This module needs only a feature function; it knows nothing of training.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_L2_GRID = (2.0 ** -6, 2.0 ** -3, 1.0, 2.0 ** 3, 2.0 ** 6, 2.0 ** 10)
DEFAULT_L2 = 1.0  # used for K = 1, where there is no shot to hold out
MAX_FOLDS = 5
L2_MODES = ("loso", "fixed")
# big_vision's probe (evaluators/fewshot_lsr.py, configs/common_fewshot.py):
BIGVISION_L2 = 2.0 ** 10  # common_fewshot.py: l2_reg = 2.0 ** 10
BIGVISION_BIAS = 100.0  # fewshot_lsr.py: BIAS_CONSTANT, "large so it's almost unregularized"
BIGVISION_STD_EPS = 1e-5  # fewshot_lsr.py: std = jnp.std(x, axis=0) + 1e-5 (added, always)


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


def _whiten_bigvision(train_x: np.ndarray, *others: np.ndarray):
    """big_vision's whitening: (x - mean) / (std + 1e-5) with the train mean / population std,
    then a constant column ``BIGVISION_BIAS`` appended (the bias feature)."""
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0) + BIGVISION_STD_EPS
    out = []
    for x in (train_x, *others):
        z = (x - mean) / std
        out.append(np.concatenate([z, np.full((len(z), 1), BIGVISION_BIAS)], axis=1))
    return out


def ridge_fit_bigvision(train_x: np.ndarray, train_y: np.ndarray, num_classes: int,
                        l2: float = BIGVISION_L2):
    """W [d+1, C] of big_vision's probe on raw features ``train_x`` [n, d], and the
    (mean, std) it whitens with: ridge on the whitened, bias-augmented features ``Z`` to
    ``2 * onehot - 1`` targets, ``W = (Z^T Z + l2 I)^-1 Z^T Y`` (primal, n >= d+1) or
    ``Z^T (Z Z^T + l2 I)^-1 Y`` (dual), in float64. The bias row (last) is regularised too."""
    x = np.asarray(train_x, np.float64)
    (z,) = _whiten_bigvision(x)
    targets = 2.0 * np.eye(num_classes)[np.asarray(train_y)] - 1.0
    n, d = z.shape
    if n >= d:
        w = np.linalg.solve(z.T @ z + l2 * np.eye(d), z.T @ targets)
    else:
        w = z.T @ np.linalg.solve(z @ z.T + l2 * np.eye(n), targets)
    return w


def ridge_accuracy_bigvision(train_x, train_y, test_x, test_y, num_classes: int,
                             l2: float = BIGVISION_L2) -> float:
    """Test accuracy of big_vision's fixed-l2 probe (see the module docstring) fit on
    (train_x, train_y): test features whitened with the train statistics, bias feature 100,
    argmax of ``Z_test @ W``."""
    if not l2 > 0:
        raise ValueError(f"fixed_l2: must be > 0, got {l2}")
    train_x = np.asarray(train_x, np.float64)
    w = ridge_fit_bigvision(train_x, train_y, num_classes, l2)
    _, z_test = _whiten_bigvision(train_x, np.asarray(test_x, np.float64))
    predictions = np.argmax(z_test @ w, axis=1)
    return float(np.mean(predictions == np.asarray(test_y)))


def draw_shots_bigvision(labels: np.ndarray, shots: int, num_classes: int,
                         seed: int) -> np.ndarray:
    """big_vision's draw: ``rng = np.random.default_rng(seed)``, one permutation of each
    class's indices (class order), the first ``shots`` of each; [class, shot] order. The draws
    of different K with one seed are nested (the 5 shots hold the 1). big_vision silently
    takes fewer when a class is short; here that is an error."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < shots:
            raise ValueError(f"shots: class {c} has only {len(members)} training examples, "
                             f"fewer than {shots}")
        picks.append(members[:shots])
    return np.concatenate(picks)


def fewshot_eval(train_features: np.ndarray, train_labels: np.ndarray,
                 test_features: np.ndarray, test_labels: np.ndarray, num_classes: int,
                 shots: Iterable[int] = DEFAULT_SHOTS, seeds: Iterable[int] = (0, 1, 2),
                 l2_grid: Sequence[float] = DEFAULT_L2_GRID, l2_mode: str = "loso",
                 fixed_l2: float = BIGVISION_L2) -> dict:
    """{K: {'mean', 'std', 'accuracies', 'l2'}} over seeds, for every K in ``shots``.

    ``l2_mode``: ``"loso"`` (default) draws with ``draw_shots`` and picks l2 from ``l2_grid``
    by leave-one-shot-out; ``"fixed"`` is big_vision's probe with ``fixed_l2``, shots drawn
    with ``draw_shots_bigvision`` (``l2_grid`` unused)."""
    if l2_mode not in L2_MODES:
        raise ValueError(f"fewshot.l2: {l2_mode!r} is not allowed; choose one of "
                         f"{list(L2_MODES)}")
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    results = {}
    for k in shots:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"shots: each K must be a positive integer, got {k!r}")
        accs, l2s = [], []
        for seed in seeds:
            if l2_mode == "fixed":
                idx = draw_shots_bigvision(train_labels, int(k), num_classes, int(seed))
                l2 = float(fixed_l2)
                accs.append(ridge_accuracy_bigvision(train_features[idx], train_labels[idx],
                                                     test_features, test_labels, num_classes,
                                                     l2))
                l2s.append(l2)
                continue
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
