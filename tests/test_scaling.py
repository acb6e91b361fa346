"""Scaling-law fits against references written here: known laws with noise, a brute-force
frontier, invariance to the compute unit, nested forms, bootstrap coverage, the FLOP formula."""
import numpy as np
import pytest

from vitlib.analysis import scaling

TRUE = {"a": 0.6, "b": 0.35, "c": 0.1, "d": 0.5}


def _law(compute, a, b, c=0.0, d=0.0):
    return a * (np.asarray(compute) + d) ** -b + c


def _noisy(params, n=24, sigma=0.01, seed=0, low=1e-2, high=1e4):
    rng = np.random.default_rng(seed)
    compute = np.geomspace(low, high, n)
    error = _law(compute, **params) * np.exp(sigma * rng.standard_normal(n))
    return compute, error


def test_recovers_a_known_double_saturating_law_from_noisy_points():
    compute, error = _noisy(TRUE)
    fit = scaling.fit_power_law(compute, error, "double_saturating")
    assert fit.params["b"] == pytest.approx(TRUE["b"], rel=0.15)
    assert fit.params["c"] == pytest.approx(TRUE["c"], abs=0.01)
    assert fit.params["a"] == pytest.approx(TRUE["a"], rel=0.2)
    assert fit.params["d"] == pytest.approx(TRUE["d"], rel=0.5)
    assert fit.log_rmse < 0.015  # about the noise, sigma = 0.01
    assert fit.starts_in_best_basin >= 1 and fit.starts_refined >= fit.starts_in_best_basin
    np.testing.assert_allclose(fit.predict(compute), _law(compute, **TRUE), rtol=0.02)


def test_exact_data_is_fit_exactly_by_every_form_that_contains_it():
    compute = np.geomspace(1e-1, 1e5, 15)
    for form, params in (("power", {"a": 0.3, "b": 0.2}),
                         ("saturating", {"a": 0.3, "b": 0.4, "c": 0.05}),
                         ("double_saturating", TRUE)):
        fit = scaling.fit_power_law(compute, _law(compute, **params), form)
        assert fit.log_rmse < 1e-5, form
        for name, value in params.items():
            assert fit.params[name] == pytest.approx(value, rel=1e-3, abs=1e-6), (form, name)


def test_nested_forms_reduce_to_each_other():
    compute = np.geomspace(1e-1, 1e5, 15)
    saturating = _law(compute, a=0.3, b=0.4, c=0.05)
    double = scaling.fit_power_law(compute, saturating, "double_saturating")
    assert double.params["d"] == pytest.approx(0.0, abs=1e-3)
    assert double.log_rmse < 1e-5
    power = _law(compute, a=0.3, b=0.2)
    sat = scaling.fit_power_law(compute, power, "saturating")
    assert sat.params["c"] == pytest.approx(0.0, abs=1e-5) and sat.log_rmse < 1e-5
    # The same parameters give the same curve in each form that has them.
    p = {"a": 0.3, "b": 0.2, "c": 0.0, "d": 0.0}
    np.testing.assert_allclose(scaling.predict("power", p, compute),
                               scaling.predict("double_saturating", p, compute))


@pytest.mark.parametrize("factor", [1e-6, 3.7, 1e9])
def test_the_compute_unit_changes_neither_b_c_nor_predictions(factor):
    compute, error = _noisy(TRUE, seed=3)
    base = scaling.fit_power_law(compute, error)
    scaled = scaling.fit_power_law(compute * factor, error)
    assert scaled.params["b"] == pytest.approx(base.params["b"], rel=1e-4)
    assert scaled.params["c"] == pytest.approx(base.params["c"], rel=1e-4, abs=1e-7)
    assert scaled.params["d"] == pytest.approx(base.params["d"] * factor, rel=1e-3, abs=1e-9)
    np.testing.assert_allclose(scaled.predict(compute * factor), base.predict(compute),
                               rtol=1e-5)


def test_pareto_frontier_matches_the_brute_force_definition():
    rng = np.random.default_rng(1)
    for trial in range(20):
        compute = rng.choice([1.0, 2.0, 3.0, 5.0, 8.0], size=12)  # ties in compute
        error = rng.choice([0.1, 0.2, 0.3, 0.4], size=12)  # ties in error
        front = scaling.pareto_frontier(compute, error)
        expected = [i for i in range(12) if not any(
            compute[j] <= compute[i] and (error[j] < error[i] or (
                error[j] == error[i] and (compute[j] < compute[i] or j < i)))
            for j in range(12) if j != i)]
        assert sorted(front.tolist()) == expected, trial
        assert np.all(np.diff(compute[front]) > 0) and np.all(np.diff(error[front]) < 0)


def test_bootstrap_intervals_cover_the_truth_for_most_replicates():
    params = {"a": 0.5, "b": 0.3, "c": 0.08}
    covered = 0
    for seed in range(20):
        compute, error = _noisy(params, n=24, sigma=0.03, seed=100 + seed, low=1.0, high=1e6)
        boot = scaling.bootstrap_fit(compute, error, "saturating", n_boot=40, seed=seed)
        lo, hi = boot["intervals"]["b"]
        covered += lo <= params["b"] <= hi
        assert boot["replicates_ok"] == 40
    # Nominal 90%; case-resampling percentile intervals run narrow at ~20 points (about 70%
    # measured), so the floor asks for "most", not for the nominal level.
    assert covered >= 12


def test_bootstrap_is_seeded_and_resamples_whole_groups():
    compute, error = _noisy(TRUE, n=12)
    groups = np.repeat(["s", "m", "l", "xl"], 3)
    one = scaling.bootstrap_fit(compute, error, n_boot=15, seed=4, groups=groups)
    two = scaling.bootstrap_fit(compute, error, n_boot=15, seed=4, groups=groups)
    np.testing.assert_array_equal(one["samples"]["b"], two["samples"]["b"])
    assert np.all(one["band_lo"] <= one["band_hi"])
    with pytest.raises(ValueError, match="groups: needs one label per point"):
        scaling.bootstrap_fit(compute, error, groups=groups[:5])


def test_extrapolation_check_predicts_held_out_points_of_a_true_law():
    compute, error = _noisy(TRUE, n=20, sigma=0.005, seed=7)
    check = scaling.extrapolation_check(compute, error, holdout=3, n_boot=40)
    assert len(check["heldout_error"]) == 3
    assert check["log_rmse"] < 0.05
    assert check["fraction_inside"] >= 2 / 3
    with pytest.raises(ValueError, match="holdout: 18 leaves 2 frontier points"):
        scaling.extrapolation_check(compute, error, holdout=18)


@pytest.mark.parametrize("compute, error, match", [
    ([1.0, -2.0, 3.0], [0.5, 0.4, 0.3], r"compute: every value must be finite and > 0, got -2"),
    ([1.0, 2.0, 3.0], [0.5, 1.2, 0.3], r"error: every value must be in \(0, 1\), got 1.2"),
    ([1.0, 2.0, np.nan], [0.5, 0.4, 0.3], r"compute: .* got nan"),
    ([1.0, 2.0, 3.0], [0.5, 0.4, 0.0], r"error: .* got 0.0"),
    ([1.0, 2.0, 3.0], [0.5, 0.4], r"lengths differ"),
    ([1.0, 2.0, 3.0], [0.5, 0.4, 0.3], r"3 points cannot fit the 4 parameters"),
])
def test_bad_inputs_name_the_argument_and_value(compute, error, match):
    with pytest.raises(ValueError, match=match):
        scaling.fit_power_law(compute, error, "double_saturating")


def test_unknown_form_and_huber_option():
    compute, error = _noisy(TRUE)
    with pytest.raises(ValueError, match="form: 'cubic'"):
        scaling.fit_power_law(compute, error, "cubic")
    outlier = error.copy()
    outlier[15] *= 1.5
    plain = scaling.fit_power_law(compute, outlier)
    robust = scaling.fit_power_law(compute, outlier, huber=0.02)
    # The robust fit follows the 23 clean points, not the outlier.
    clean = np.delete(np.arange(compute.size), 15)
    assert np.abs(robust.residuals[clean]).max() < np.abs(plain.residuals[clean]).max()


def test_training_flops_is_three_forward_passes_per_image():
    # Ti/16 at 224px, Table 2 convention: forward FLOPs computed here from the shapes.
    w, depth, mlp, tokens, patch = 192, 12, 768, 196, 16
    forward = (2 * tokens * patch * patch * 3 * w
               + depth * (2 * tokens * 4 * w * w + 4 * tokens * tokens * w + 4 * tokens * w * mlp))
    assert scaling.training_flops("Ti/16", 224, 1000) == pytest.approx(3 * forward * 1000)
    np.testing.assert_allclose(scaling.training_flops("Ti/16", 224, [1, 2]),
                               [3 * forward, 6 * forward])
    with pytest.raises(ValueError, match="images_seen"):
        scaling.training_flops("Ti/16", 224, -1)


def test_a_law_printed_in_another_unit_is_recovered_with_its_conversion():
    compute = np.geomspace(1e15, 1e21, 20)  # FLOPs
    law = {"a": 0.63, "b": 0.32, "c": 0.12, "d": 0.52}  # in "days" = FLOPs / 4e18
    error = _law(compute / 4e18, **law)
    found = scaling.best_unit_log_rmse(compute, error, law)
    assert found["flops_per_unit"] == pytest.approx(4e18, rel=1e-3)
    assert found["log_rmse"] < 1e-6


def test_paper_tables_ship_with_vitlib_and_derive_compute_and_error():
    from vitlib.analysis import paper_tables

    few, fine = paper_tables.load("fewshot"), paper_tables.load("finetune")
    assert len(few) == 262 and len(fine) == 258  # the appendix rows (paper_data/README.md)
    row = few[(few["model"] == "L/16") & (few["data_size"] == "30M")
              & (few["steps"] == 20000)].iloc[0]
    assert row["train_flops"] == pytest.approx(3 * 122.9e9 * 20000 * 4096)
    assert row["error"] == pytest.approx(1 - row["inet10"] / 100)
    assert not row["label_inferred"]
    assert few[few["model"] == "B/28"]["label_inferred"].all()
    assert fine["error"].between(0, 1).all()
    with pytest.raises(ValueError, match="which: 'imagenet'"):
        paper_tables.load("imagenet")


def test_the_analytic_jacobian_matches_finite_differences():
    from vitlib.analysis.scaling import _log_jacobian, _log_residuals

    c = np.geomspace(0.1, 100, 7)
    log_e = np.log(_law(c, **TRUE))
    for form, p in (("power", [0.6, 0.35]), ("saturating", [0.6, 0.35, 0.1]),
                    ("double_saturating", [0.6, 0.35, 0.1, 0.5])):
        p = np.asarray(p, float)
        numeric = np.stack([(_log_residuals(p + h, form, c, log_e)
                             - _log_residuals(p - h, form, c, log_e)) / (2e-6)
                            for h in np.eye(len(p)) * 1e-6], axis=1)
        np.testing.assert_allclose(_log_jacobian(p, form, c, log_e), numeric, rtol=1e-5,
                                   atol=1e-7)


def test_bootstrap_without_any_fittable_resample_gives_nan_intervals():
    compute, error = _noisy(TRUE, n=4)
    outcomes = [scaling.bootstrap_fit(compute, error, n_boot=1, seed=s) for s in range(40)]
    failed = [o for o in outcomes if o["replicates_ok"] == 0]
    assert failed and len(failed) < len(outcomes)  # 4 distinct draws of 4 points: ~9%
    assert all(np.isnan(o["intervals"]["b"][0]) and np.isnan(o["band_lo"]).all() for o in failed)
    assert all(np.isfinite(o["intervals"]["b"][0]) for o in outcomes if o["replicates_ok"])


def test_a_unit_growing_as_flops_to_the_g_divides_b_by_g():
    # Reference: a law printed in units U = k F^g; refitted on F its exponent is g * b_U
    # (the formula in unit_exponent's docstring), and c is the same in both units.
    g, k = 0.75, 1.0
    flops = np.geomspace(1e2, 1e10, 30)
    units = k * flops ** g
    error = _law(units, a=0.6, b=0.32, c=0.1, d=0.0)
    fit = scaling.fit_power_law(flops, error, "saturating")
    assert fit.params["b"] == pytest.approx(g * 0.32, rel=1e-3)
    assert fit.params["c"] == pytest.approx(0.1, abs=1e-4)
    assert scaling.unit_exponent(fit.params["b"], 0.32) == pytest.approx(g, rel=1e-3)
    np.testing.assert_allclose(scaling.unit_exponent([0.2, 0.4], 0.4), [0.5, 1.0])
    with pytest.raises(ValueError, match="b_flops, b_unit"):
        scaling.unit_exponent(0.3, 0.0)


def test_testability_flags_c_on_its_bound_few_points_and_wide_intervals():
    # A frontier that keeps falling as a plain power law: the saturating fits push c to its
    # upper bound, the smallest error (the rule of scaling.fit_testability).
    compute = np.geomspace(1e-1, 1e5, 6)
    error = _law(compute, a=0.3, b=0.05) * np.exp(0.02 * np.sin(np.arange(6)))
    fit = scaling.fit_power_law(compute, error, "double_saturating")
    assert fit.bounds["c"][1] == pytest.approx((1 - scaling.C_MARGIN) * error.min())
    assert fit.bounds["b"] == scaling.B_BOUNDS
    assert fit.bounds["d"][1] == pytest.approx(scaling.D_MAX_OVER_COMPUTE * compute.max())
    reasons = scaling.testability(fit, {"b": (0.1, 2.0), "c": (0.0, 0.2)})
    assert any("6 points for 4 parameters" in r for r in reasons)
    assert any("b's interval" in r for r in reasons)  # 20x >= 10x
    # A well-sampled true law is testable.
    compute, error = _noisy(TRUE, n=40)
    fit = scaling.fit_power_law(compute, error, "double_saturating")
    boot = scaling.bootstrap_fit(compute, error, n_boot=30, seed=1)
    assert scaling.testability(fit, boot["intervals"]) == []
    with pytest.raises(ValueError, match="reads"):
        scaling.testability(scaling.fit_power_law(compute, error, "power"), {}, reads=("c",))


def test_a_saturation_pushed_to_its_bound_makes_the_fit_untestable():
    # Error falling linearly in log compute bends the wrong way for a floor: the best c is 0,
    # its lower bound (a bounded fit, not an estimate).
    compute = np.geomspace(1.0, 1e4, 12)
    fit = scaling.fit_power_law(compute, 0.4 - 0.07 * np.log10(compute), "saturating")
    assert fit.bounds["c"] == (0.0, pytest.approx((1 - scaling.C_MARGIN) * 0.12))
    assert any(r.startswith("c = ") and "lower bound" in r for r in scaling.testability(fit, {}))


def test_frontier_bootstrap_bias_is_its_median_minus_the_full_fit():
    compute, error = _noisy(TRUE, n=30, sigma=0.02)
    rng = np.random.default_rng(3)
    compute = np.concatenate([compute, compute * 1.5])  # dominated runs above the frontier
    error = np.concatenate([error, np.minimum(error * np.exp(0.1 * rng.random(30)), 0.99)])
    boot = scaling.bootstrap_fit(compute, error, n_boot=40, seed=0, frontier=True)
    for p in ("a", "b", "c", "d"):
        assert boot["bias"][p] == pytest.approx(np.median(boot["samples"][p])
                                                - boot["fit"].params[p])
    # A resample's frontier never lies below the full frontier: its errors are at least
    # the full frontier's best error at the same compute (numpy reference).
    front = scaling.pareto_frontier(compute, error)
    idx = np.random.default_rng(0).integers(0, compute.size, compute.size)
    sub = scaling.pareto_frontier(compute[idx], error[idx])
    for c_, e_ in zip(compute[idx][sub], error[idx][sub]):
        best_full = error[front][compute[front] <= c_].min()
        assert e_ >= best_full


def test_extrapolation_check_reports_the_points_and_intervals_of_its_fit():
    compute, error = _noisy(TRUE, n=12)
    ex = scaling.extrapolation_check(compute, error, holdout=2, n_boot=10)
    assert ex["fit_points"] == len(scaling.pareto_frontier(compute, error)) - 2
    assert set(ex["intervals"]) == {"a", "b", "c", "d"}
