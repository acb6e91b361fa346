"""The statistics of verdicts against scipy and closed forms."""
import math

import numpy as np
import pytest
from scipy import stats

from vitlib.analysis.scaling import fit_testability
from vitlib.study.statistics import (choose_inside_grid, equivalence_power,
                                     minimal_detectable_effect, paired_difference, paired_greater,
                                     paired_within)


def test_paired_difference_matches_scipys_paired_t_test():
    rng = np.random.default_rng(0)
    base = rng.normal(0.8, 0.02, size=5)  # shared seeds: most of the spread is common
    a, b = base + 0.03 + rng.normal(0, 0.003, 5), base + rng.normal(0, 0.003, 5)
    pd_ = paired_difference(a, b)
    ref = stats.ttest_rel(a, b)
    assert pd_.mean / pd_.se == pytest.approx(ref.statistic, rel=1e-12)
    assert pd_.n - 1 == ref.df
    assert pd_.mean == pytest.approx(np.mean(a - b))
    # pairing removes the shared spread: the unpaired se is far larger
    unpaired = math.sqrt(np.var(a, ddof=1) / 5 + np.var(b, ddof=1) / 5)
    assert pd_.se < unpaired / 3


def test_paired_difference_matches_seeds_given_as_dicts():
    a = {2: 0.70, 0: 0.75, 1: 0.72}
    b = {0: 0.71, 1: 0.70, 2: 0.69}
    pd_ = paired_difference(a, b)
    assert pd_.differences == pytest.approx((0.04, 0.02, 0.01))
    with pytest.raises(ValueError, match="share their seeds"):
        paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 2: 2.0})
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_difference([1.0], [2.0])


def test_minimal_detectable_effect_and_equivalence_power():
    assert minimal_detectable_effect(0.01, k=2) == pytest.approx(0.02)
    assert equivalence_power(0.03, 0.01, k=2) is None
    reason = equivalence_power(0.01, 0.01, k=2)
    assert reason.startswith("underpowered") and "0.02" in reason


def test_choose_inside_grid_extends_past_an_edge_until_the_best_is_interior():
    peak = 8e-3  # log-parabola peaking above the grid's top (4e-3)
    calls = []

    def score(lr):
        calls.append(lr)
        return -(math.log(lr) - math.log(peak)) ** 2

    choice = choose_inside_grid(score, [1e-3, 2e-3, 4e-3], factor=2)
    assert choice.extended == pytest.approx((8e-3, 1.6e-2))
    assert choice.best == pytest.approx(8e-3) and choice.interior
    assert len(calls) == len(set(calls)) == 5  # each point evaluated once


def test_choose_inside_grid_keeps_an_interior_choice_and_reports_a_stuck_edge():
    choice = choose_inside_grid(lambda v: -abs(math.log(v / 2e-3)), [1e-3, 2e-3, 4e-3],
                                factor=2)
    assert choice.best == pytest.approx(2e-3) and choice.interior and choice.extended == ()
    monotone = choose_inside_grid(lambda v: v, [1.0, 2.0, 4.0], factor=2, max_extensions=2)
    assert monotone.best == 16.0 and not monotone.interior
    lower = choose_inside_grid(lambda v: v, [1.0, 2.0, 4.0], factor=2, higher_is_better=False)
    assert lower.extended == (0.5, 0.25, 0.125) and lower.best == 0.125 and not lower.interior


def test_fit_testability_names_bounds_wide_intervals_and_too_few_points():
    params = {"a": 1.0, "b": 0.8, "c": 0.15, "d": 0.0}
    bounds = {"c": (0.0, 0.15), "d": (0.0, None), "b": (1e-4, 10.0)}
    reasons = fit_testability(params, bounds, {"b": (0.68, 9.36), "c": (0.1, 0.15)},
                              n_points=7)
    assert any(r.startswith("c = 0.15 is at its upper bound") for r in reasons)
    assert any(r.startswith("d = 0 is at its lower bound") for r in reasons)
    assert any("b's interval" in r for r in reasons)
    assert any("7 points for 4 parameters" in r for r in reasons)
    assert fit_testability({"a": 1.0, "b": 0.5}, {"b": (1e-4, 10.0)}, {"b": (0.4, 0.6)},
                           n_points=20) == []
    near_zero = fit_testability({"c": 0.1}, {}, {"c": (1e-18, 0.2)}, n_points=20)
    assert near_zero == ["c's interval [1e-18, 0.2] spans over 1000x (limit 10x)"]


def _scipy_se(a, b):
    # ttest_rel's statistic is mean(d) / se(d): recover se from scipy, not from our formula.
    t = stats.ttest_rel(a, b).statistic
    return float(np.mean(np.subtract(a, b)) / t)


def test_paired_within_uses_the_paired_se_and_flags_an_underpowered_tolerance():
    a, b = [0.580, 0.600, 0.571], [0.547, 0.556, 0.535]  # gaps +0.033, +0.044, +0.036
    result = paired_within(a, b, tolerance=0.1, k=2)
    se = _scipy_se(a, b)
    assert result.noise == pytest.approx(se, rel=1e-9)
    assert result.mde == pytest.approx(2 * se, rel=1e-9)
    assert result.difference == pytest.approx(np.mean(np.subtract(a, b)))
    assert result.verdict == "holds"  # 0.0377 + 2 x 0.0033 <= 0.1
    assert paired_within(a, b, tolerance=0.02, k=2).verdict == "does not hold"
    noisy_a, noisy_b = [0.50, 0.60, 0.55], [0.55, 0.50, 0.60]
    underpowered = paired_within(noisy_a, noisy_b, tolerance=0.01, k=2)
    assert underpowered.verdict == "inconclusive"
    assert underpowered.reason.startswith("underpowered")
    fields = underpowered.claim_fields()
    assert {"verdict", "reason", "noise", "mde"} <= set(fields) and fields["seeds_paired"] == 3


def test_paired_greater_is_read_at_the_paired_se_not_the_unpaired_one():
    a, b = [0.580, 0.600, 0.571], [0.547, 0.556, 0.535]
    unpaired_se = math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3)
    assert unpaired_se > 2 * _scipy_se(a, b)  # the shared seed noise cancels in the pairs
    result = paired_greater(a, b, k=2)
    assert result.verdict == "holds" and result.reason is None
    assert paired_greater(b, a, k=2).verdict == "does not hold"
    assert paired_greater(a, b, k=2, margin=0.05).verdict == "does not hold"
    assert paired_greater([0.5, 0.6, 0.55], [0.55, 0.5, 0.6], k=2).verdict == "inconclusive"
