"""Notebook 05's statistics over real learning curves (vitlib.study.curve_claims), against scipy
and hand-made curves with known answers."""
import numpy as np
import pytest
from scipy import stats

from vitlib.analysis import joint_law
from vitlib.study import curve_claims as cc

# Made-up log-RMSE of a reference estimator and a better one on 10 curves.
REF = np.array([0.30, 0.25, 0.41, 0.12, 0.33, 0.28, 0.19, 0.50, 0.22, 0.35])
BETTER = REF - np.array([0.05, 0.02, 0.10, -0.01, 0.07, 0.03, 0.04, 0.12, 0.01, 0.06])


def test_signed_rank_matches_scipy_and_decides_by_direction():
    p = cc.signed_rank(REF, BETTER, 0.05, "ref - better")
    d = REF - BETTER
    assert p["p_value"] == pytest.approx(stats.wilcoxon(d, alternative="greater").pvalue)
    assert p["p_other_way"] == pytest.approx(stats.wilcoxon(d, alternative="less").pvalue)
    assert p["value"] == pytest.approx(np.median(d)) and p["wins"] == 9
    assert p["verdict"] == "holds" and p["p_value"] < 0.05
    worse = cc.signed_rank(BETTER, REF, 0.05, "the other way")
    assert worse["verdict"] == "does not hold" and worse["value"] < 0


def test_signed_rank_inconclusive_and_nothing_to_test():
    mixed = REF + np.array([0.01, -0.01, 0.02, -0.02, 0.01, -0.01, 0.03, -0.03, 0.0, 0.005])
    p = cc.signed_rank(REF, mixed, 0.05, "mixed")
    assert p["verdict"] == "inconclusive"
    assert p["p_value"] >= 0.05 and p["p_other_way"] >= 0.05
    same = cc.signed_rank(REF, REF, 0.05, "same")
    assert same["verdict"] == "inconclusive" and same["reason"].startswith("nothing to test:")
    with pytest.raises(ValueError, match="reference, other"):
        cc.signed_rank([0.1], [0.2], 0.05, "one curve")
    # Equal on 5 of 8 curves (a floor fitted at 0 makes M2 the plain power law): 3 curves left,
    # whose smallest one-sided p is 0.5^3 = 0.125, so no verdict was possible.
    reference = REF[:8]
    few = reference - np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.04, 0.02, 0.03])
    p = cc.signed_rank(reference, few, 0.05, "few")
    assert p["p_value"] == pytest.approx(stats.wilcoxon(reference - few, alternative="greater").pvalue)
    assert p["verdict"] == "inconclusive" and p["differing"] == 3 and p["p_value"] >= 0.125
    assert p["reason"].startswith("underpowered: the two differ on only 3 of 8 curves")
    assert mixed is not None and "reason" in cc.signed_rank(REF, mixed, 0.05, "mixed")
    assert cc.signed_rank(REF, mixed, 0.05, "mixed")["reason"] is None  # 10 curves could decide


def test_best_share_paper_rule_with_ties_and_failures():
    scores = {
        "a": {"m1": 0.30, "m4": 0.10},  # m4 wins
        "b": {"m1": 0.1004, "m4": 0.1009},  # both cut to 0.100: a tie, half each
        "c": {"m1": 0.20, "m4": None},  # m4 failed: counts as 1, m1 wins
        "d": {"m1": None, "m4": 0.90},  # m1 failed: m4 wins
    }
    out = cc.best_share(scores, ["m1", "m4"], "m4", n_boot=500, level=0.9)
    assert out["share"] == pytest.approx((1 + 0.5 + 0 + 1) / 4) and out["curves"] == 4
    lo, hi = out["interval"]
    assert 0 <= lo <= out["share"] <= hi <= 1
    assert cc.best_share(scores, ["m1", "m4"], "m1")["share"] == pytest.approx(1.5 / 4)
    assert cc.verdict_share([0.72, 0.9], 0.7) == "holds"
    assert cc.verdict_share([0.4, 0.69], 0.7) == "does not hold"
    assert cc.verdict_share([0.6, 0.8], 0.7) == "inconclusive"


def test_drop_past_on_a_hand_made_curve():
    x = np.array([4e9, 1e8, 5e8, 1e9, 2e9])  # unsorted on purpose
    e = np.array([0.20, 0.50, 0.40, 0.35, 0.25])
    assert cc.drop_past(x, e, 1e9) == pytest.approx(0.35 - 0.20)
    assert cc.drop_past(x, e, 1e9, end=3e9) == pytest.approx(0.35 - 0.25)
    assert cc.drop_past(x, e, 1e9, end=1e9) is None  # nothing past the threshold
    assert cc.drop_past(x, e, 5e7) is None  # nothing at or below it


def test_select_by_holdout():
    assert cc.select_by_holdout({"m1": 0.3, "m2": None, "m4": 0.1}) == "m4"
    assert cc.select_by_holdout({"m1": None}) is None


def _csv(path, curves):
    rows = ["Domain,Task,Model,Seen Examples,Loss,Training"]
    for (task, model), (x, e, n_fit) in curves.items():
        rows += [f"IC,{task},{model},{xi},{ei},{int(i < n_fit)}" for i, (xi, ei) in
                 enumerate(zip(x, e))]
    path.write_text("\n".join(rows) + "\n")


def test_scored_curves_scores_by_hand_and_reads_the_cache_back(tmp_path):
    x = np.geomspace(1e6, 1e9, 12)
    e = 2.0 * x ** -0.1  # a pure power law: M1 extrapolates it exactly
    path = tmp_path / "b.csv"
    _csv(path, {("t", "A"): (x, e, 8), ("u", "B"): (x, 0.9 * e, 8)})
    cache = tmp_path / "cache"
    records = cc.scored_curves(cache, path, ["m1"], keys=[("IC", "t", "A")], holdout=0.25)
    (r,) = records
    assert (r["task"], r["n_fit"], r["n_test"]) == ("t", 8, 4)
    assert r["log_rmse"] == pytest.approx(0.0, abs=1e-9)
    assert r["holdout_log_rmse"] == pytest.approx(0.0, abs=1e-9)
    assert r["params"]["c"] == pytest.approx(-0.1)
    (file,) = cache.iterdir()
    # A second call reads the file back instead of fitting: a marker written into it shows.
    text = file.read_text().replace('"log_rmse": ', '"log_rmse": 12345.0, "old": ', 1)
    file.write_text(text)
    again = cc.scored_curves(cache, path, ["m1"], keys=[("IC", "t", "A")], holdout=0.25)
    assert again[0]["log_rmse"] == 12345.0
    # Another question (other curves, or another CSV) is another key.
    both = cc.scored_curves(cache, path, ["m1"], holdout=0.25)
    assert len(both) == 2 and len(list(cache.iterdir())) == 2
    _csv(path, {("t", "A"): (x, 1.1 * e, 8)})
    assert cc.scored_curves(cache, path, ["m1"], holdout=0.25)[0]["params"]["b"] == \
        pytest.approx(2.2)
    with pytest.raises(ValueError, match="keys"):
        cc.scored_curves(cache, path, ["m1"], keys=[("IC", "zz", "A")])
    law = cc.law_of(both[0])
    assert law.predict(1e7) == pytest.approx(2.0 * 1e7 ** -0.1)


def test_joint_bootstrap_recovers_a_known_law_and_its_derived_quantities():
    truth = {"E": 0.1, "A": 30.0, "B": 400.0, "alpha": 0.3, "beta": 0.4}
    n, d = np.meshgrid(np.geomspace(1e6, 1e9, 6), np.geomspace(1e7, 1e10, 6))
    law = joint_law.JointLaw(truth, 0.0, n.size)
    loss = law.predict(n, d).ravel() * np.exp(0.002 * np.sin(np.arange(n.size)))
    data_term = {"data term at 1e8": lambda j: j.params["B"] / 1e8 ** j.params["beta"]}
    out = cc.joint_bootstrap(n.ravel(), d.ravel(), loss, data_term, n_boot=5, level=0.9)
    assert out["values"]["alpha"] == pytest.approx(0.3, rel=0.05)
    assert out["values"]["data term at 1e8"] == pytest.approx(400 / 1e8 ** 0.4, rel=0.05)
    lo, hi = out["intervals"]["data term at 1e8"]
    assert lo <= hi and set(out["intervals"]) >= set(joint_law.PARAMS)


def test_mean_interval():
    lo, hi = cc.mean_interval([1.0, 2.0, 3.0, 4.0], n_boot=2000, level=0.9)
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    with pytest.raises(ValueError, match="values"):
        cc.mean_interval([1.0])
