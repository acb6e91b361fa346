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
