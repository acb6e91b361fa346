"""The few-shot ridge probe against an independent numpy least-squares formulation."""
import numpy as np
import pytest

from vitlib.evals import fewshot


def _reference_accuracy(train_x, train_y, test_x, test_y, num_classes, l2):
    """Augmented least squares: [X 1; sqrt(l2) I 0] [W; b] = [Y; 0], bias unregularised."""
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    x, t = (train_x - mean) / std, (test_x - mean) / std
    y = 2.0 * np.eye(num_classes)[train_y] - 1.0
    n, d = x.shape
    a = np.block([[x, np.ones((n, 1))], [np.sqrt(l2) * np.eye(d), np.zeros((d, 1))]])
    rhs = np.vstack([y, np.zeros((d, num_classes))])
    wb = np.linalg.lstsq(a, rhs, rcond=None)[0]
    pred = np.argmax(t @ wb[:d] + wb[d], axis=1)
    return np.mean(pred == test_y), wb


def _problem(n, d, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 1.5
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(size=(n, d)) + 3.0  # offset: the bias must matter
    ty = rng.integers(0, classes, 300)
    tx = centres[ty] + rng.normal(size=(300, d)) + 3.0
    return x, y, tx, ty


@pytest.mark.parametrize("n, d", [(200, 10), (12, 50)])  # primal and dual forms
@pytest.mark.parametrize("l2", [1e-3, 1.0, 50.0])
def test_ridge_matches_augmented_least_squares(n, d, l2):
    x, y, tx, ty = _problem(n, d)
    expected, wb = _reference_accuracy(x, y, tx, ty, 4, l2)
    assert fewshot.ridge_accuracy(x, y, tx, ty, 4, l2) == pytest.approx(expected)
    mean, std = x.mean(0), x.std(0)
    w, b = fewshot.ridge_fit((x - mean) / std, y, 4, l2)
    np.testing.assert_allclose(w, wb[:d], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b, wb[d], rtol=1e-6, atol=1e-8)


def test_draw_shots_balanced_and_seeded():
    y = np.repeat(np.arange(5), 30)
    idx = fewshot.draw_shots(y, 4, 5, seed=1)
    assert np.array_equal(np.bincount(y[idx]), [4] * 5)
    assert list(y[idx[:5]]) == [0, 1, 2, 3, 4]  # [shot, class] order for leave-one-shot-out
    assert np.array_equal(idx, fewshot.draw_shots(y, 4, 5, seed=1))
    assert not np.array_equal(idx, fewshot.draw_shots(y, 4, 5, seed=2))
    with pytest.raises(ValueError, match="shots"):
        fewshot.draw_shots(y, 31, 5, seed=0)


def test_l2_is_chosen_without_looking_at_the_test_set():
    x, y, tx, ty = _problem(400, 20)
    calls = []
    real = fewshot.ridge_accuracy

    def spy(train_x, train_y, test_x, test_y, num_classes, l2):
        calls.append(test_x is tx)
        return real(train_x, train_y, test_x, test_y, num_classes, l2)
    fewshot.ridge_accuracy, original = spy, fewshot.ridge_accuracy
    try:
        result = fewshot.fewshot_eval(x, y, tx, ty, 4, shots=(1, 5), seeds=(0, 1))
    finally:
        fewshot.ridge_accuracy = original
    # Only the final scoring of each (K, seed) touches the test features.
    assert sum(calls) == 4
    assert set(result) == {1, 5} and len(result[5]["accuracies"]) == 2
    assert result[5]["mean"] > result[1]["mean"] > 0.25  # better than chance, more shots help
    assert result[1]["l2"] == [fewshot.DEFAULT_L2] * 2


# big_vision's fixed-l2 probe (l2_mode="fixed"), against scikit-learn, numpy least squares and
# big_vision's own draw (evaluators/fewshot_lsr.py).
def _scaled_problem(n, d, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 1.5
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + 3.0
    ty = rng.integers(0, classes, 300)
    tx = centres[ty] + rng.normal(size=(300, d)) + 3.0
    return x, y, tx, ty


def _bigvision_design(train_x, *others):
    """big_vision's fewshot_lsr.py _precompute_cache, in numpy: whiten with mean and
    std + 1e-5, append a constant 100."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    return [np.hstack([(x - mean) / std, np.full((len(x), 1), 100.0)])
            for x in (train_x, *others)]


@pytest.mark.parametrize("n, d", [(200, 10), (12, 50)])  # primal and dual forms
@pytest.mark.parametrize("l2", [1.0, 2.0 ** 10, 1e5])
def test_fixed_probe_matches_sklearn_ridge_and_lstsq(n, d, l2):
    from sklearn.linear_model import Ridge

    x, y, tx, ty = _scaled_problem(n, d)
    z, zt = _bigvision_design(x, tx)
    targets = 2.0 * np.eye(4)[y] - 1.0
    ridge = Ridge(alpha=l2, fit_intercept=False, solver="svd").fit(z, targets)
    expected = np.mean(np.argmax(ridge.predict(zt), 1) == ty)
    # The same ridge as one least-squares system: [Z; sqrt(l2) I] W = [Y; 0].
    a = np.vstack([z, np.sqrt(l2) * np.eye(d + 1)])
    w_lstsq = np.linalg.lstsq(a, np.vstack([targets, np.zeros((d + 1, 4))]), rcond=None)[0]

    w = fewshot.ridge_fit_bigvision(x, y, 4, l2)
    np.testing.assert_allclose(w, ridge.coef_.T, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(w, w_lstsq, rtol=1e-7, atol=1e-9)
    assert fewshot.ridge_accuracy_bigvision(x, y, tx, ty, 4, l2) == pytest.approx(expected)


def test_bigvision_constants():
    # big_vision/evaluators/fewshot_lsr.py and configs/common_fewshot.py
    assert (fewshot.BIGVISION_L2, fewshot.BIGVISION_BIAS, fewshot.BIGVISION_STD_EPS) == \
        (1024.0, 100.0, 1e-5)


def _bigvision_draw(labels_train, num_classes, seed, shots):
    """big_vision's compute_fewshot_metrics, verbatim but for names."""
    rng = np.random.default_rng(seed)
    class_indices = [rng.permutation(np.where(labels_train == cls_i)[0])
                     for cls_i in range(num_classes)]
    return np.concatenate([indices[:shots] for indices in class_indices], axis=0)


def test_draw_shots_bigvision_is_big_vision_draw():
    y = np.random.default_rng(3).integers(0, 6, 400)
    for seed in (0, 1, 2):
        for k in (1, 5, 10, 25):
            np.testing.assert_array_equal(fewshot.draw_shots_bigvision(y, k, 6, seed),
                                          _bigvision_draw(y, 6, seed, k))
    with pytest.raises(ValueError, match="class 2 has only 3"):
        fewshot.draw_shots_bigvision(np.array([0] * 9 + [1] * 9 + [2] * 3), 5, 3, 0)


def test_fewshot_eval_fixed_mode_is_big_vision_evaluator():
    x, y, tx, ty = _scaled_problem(300, 8, classes=5)
    out = fewshot.fewshot_eval(x, y, tx, ty, 5, shots=(1, 5), seeds=(0, 1, 2), l2_mode="fixed",
                               fixed_l2=300.0)
    for k in (1, 5):
        accs = []
        for seed in (0, 1, 2):
            idx = _bigvision_draw(y, 5, seed, k)
            z, zt = _bigvision_design(x[idx], tx)
            w = np.linalg.solve(z.T @ z + 300.0 * np.eye(9), z.T @ (2.0 * np.eye(5)[y[idx]] - 1))
            accs.append(np.mean(np.argmax(zt @ w, 1) == ty))
        assert out[k]["accuracies"] == pytest.approx(accs)
        assert out[k]["mean"] == pytest.approx(np.mean(accs))
        assert out[k]["std"] == pytest.approx(np.std(accs))
        assert out[k]["l2"] == [300.0] * 3
    default = fewshot.fewshot_eval(x, y, tx, ty, 5, shots=(5,), seeds=(0,))
    assert default == fewshot.fewshot_eval(x, y, tx, ty, 5, shots=(5,), seeds=(0,),
                                           l2_mode="loso")
    with pytest.raises(ValueError, match="fewshot.l2.*'fixd'.*loso"):
        fewshot.fewshot_eval(x, y, tx, ty, 5, l2_mode="fixd")
