"""Advice against synthetic laws whose answers are known in closed form: the best model on each
side of computed crossovers, the frontier law recovered with an interval that covers it, the
extrapolation flag; run validation, the CLI's errors, table and JSON."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from vitlib.analysis import advice, budget_runs, scaling

# Model k: error vs its training compute C is c_k + A (C / F_k)^-BETA (images seen = C / F_k):
# bigger models cost more per image and saturate lower.
F = np.array([1e9, 1e10, 1e11])  # training FLOPs per image
FLOOR = np.array([0.30, 0.15, 0.05])
A, BETA = 20.0, 0.3
IMAGES = np.geomspace(1e5, 1e9, 9)  # each model's runs: compute F_k x 1e5 .. F_k x 1e9


def _model_error(k, compute):
    return FLOOR[k] + A * (np.asarray(compute) / F[k]) ** -BETA


def _crossover(i, j):
    """The compute at which models i < j have equal error: FLOOR_i - FLOOR_j = A C^-BETA
    (F_j^BETA - F_i^BETA)."""
    return ((FLOOR[i] - FLOOR[j]) / (A * (F[j] ** BETA - F[i] ** BETA))) ** (-1 / BETA)


def _model_runs(sigma=0.005, seed=0):
    rng = np.random.default_rng(seed)
    rows = [{"model": f"M{k}", "images_seen": n, "train_flops": F[k] * n,
             "error": float(_model_error(k, F[k] * n) * np.exp(sigma * rng.standard_normal()))}
            for k in range(3) for n in IMAGES]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def crossover_advice():
    c01, c12 = _crossover(0, 1), _crossover(1, 2)
    budgets = [c01 / 4, c01 * 4, c12 / 4, c12 * 4]
    return budgets, advice.advise_many(budgets, runs=_model_runs(), n_boot=30, seed=0)


def test_crossovers_lie_inside_the_data():
    c01, c12 = _crossover(0, 1), _crossover(1, 2)
    assert F[1] * IMAGES[0] < c01 / 4 and c01 * 4 < F[0] * IMAGES[-1]
    assert F[2] * IMAGES[0] < c12 / 4 and c12 * 4 < F[1] * IMAGES[-1]
    assert _model_error(0, c01) == pytest.approx(_model_error(1, c01), rel=1e-9)
    assert _model_error(1, c12) == pytest.approx(_model_error(2, c12), rel=1e-9)


def test_picks_the_best_model_on_each_side_of_each_crossover(crossover_advice):
    budgets, answers = crossover_advice
    for budget, answer in zip(budgets, answers):
        truth = int(np.argmin([_model_error(k, budget) for k in range(3)]))
        assert answer.model == f"M{truth}", budget
        # Its own law's error at the budget: within 1% of the generating curve (0.5% noise).
        true_error = float(_model_error(truth, budget))
        assert answer.model_error == pytest.approx(true_error, rel=0.01)
        assert answer.model_error_lo <= answer.model_error <= answer.model_error_hi
        assert answer.model_error_hi - answer.model_error_lo < 0.03 * true_error
        assert answer.model_p_best >= 0.9  # a factor 4 from the crossover: clear choice
        # Images and steps from the budget and the model's FLOPs per image.
        assert answer.flops_per_image == pytest.approx(F[truth], rel=1e-9)
        assert answer.images == pytest.approx(budget / F[truth], rel=1e-9)
        assert answer.steps == pytest.approx(budget / F[truth] / 4096, rel=1e-9)
        assert not answer.extrapolated and answer.extrapolation == 1.0
    assert [answer.model for answer in answers] == ["M0", "M1", "M1", "M2"]


def test_reports_models_runs_and_json(crossover_advice):
    budgets, answers = crossover_advice
    answer = answers[0]
    assert [m["model"] for m in answer.models] == ["M0", "M1", "M2"]  # by FLOPs per image
    m2 = answer.models[2]
    assert m2["runs"] == 9 and m2["compute_lo"] == pytest.approx(F[2] * 1e5)
    assert m2["reach_factor"] == pytest.approx(F[2] * 1e5 / budgets[0], rel=1e-9)
    assert not m2["candidate"] and "outside" in m2["reason"]  # 4x beyond its runs > reach 3
    # The nearest runs really are the nearest in log compute.
    c = _model_runs()["train_flops"].to_numpy()
    distance = np.sort(np.abs(np.log(c / budgets[0])))[advice.NEAREST - 1]
    shown = [r for r in answer.nearest_runs if not r["on_frontier"]]
    assert all(abs(np.log(r["compute_ratio"])) <= distance + 1e-12 for r in shown)
    text = json.dumps(answer.to_dict(), allow_nan=False)
    assert json.loads(text)["model"] == "M0"
    table = answer.table("flops")
    assert "Model: M0" in table and "Per model" in table and "Runs nearest" in table


def test_frontier_law_recovered_and_covered_by_its_interval():
    """Frontier runs drawn from a known double-saturating law (2% noise), dominated runs above
    them; over several noise draws the prediction is within 3% and the 90% band mostly covers
    the truth (case-resampling bands run narrow: see scaling.bootstrap_fit)."""
    law = {"a": 0.7 * 4e15 ** 0.3, "b": 0.3, "c": 0.1, "d": 3e15}
    compute = np.geomspace(1e15, 1e20, 24)
    truth_at = lambda cc: scaling.predict("double_saturating", law, cc)
    budgets = [3e16, 3e18]
    covered, total = 0, 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        error = truth_at(compute) * np.exp(0.02 * rng.standard_normal(compute.size))
        runs = pd.DataFrame({"model": [f"M{i % 4}" for i in range(24)] * 2,
                             "images_seen": np.concatenate([compute, compute]) / 1e10,
                             "train_flops": np.concatenate([compute, compute * 1.3]),
                             "error": np.concatenate([error, truth_at(compute) * 1.2])})
        for budget, answer in zip(budgets, advice.advise_many(budgets, runs=runs, n_boot=40,
                                                              seed=seed)):
            truth = float(truth_at(budget))
            assert 18 <= answer.frontier_points <= 24  # the law's runs; never the dominated
            assert answer.predicted_error == pytest.approx(truth, rel=0.03)
            assert answer.error_lo <= answer.predicted_error <= answer.error_hi
            covered += answer.error_lo <= truth <= answer.error_hi
            total += 1
    assert covered >= 0.7 * total, (covered, total)


def test_extrapolation_is_flagged_beyond_the_data():
    runs = _model_runs()
    lo, hi = runs["train_flops"].min(), runs["train_flops"].max()
    above, below, inside = advice.advise_many([10 * hi, lo / 20, np.sqrt(lo * hi)], runs=runs,
                                              n_boot=5)
    assert above.extrapolated and above.extrapolation == pytest.approx(10, rel=1e-9)
    assert above.extrapolation_side == "above" and above.model == "M2"
    assert below.extrapolation == pytest.approx(20, rel=1e-9)
    assert below.extrapolation_side == "below" and below.model == "M0"
    assert not inside.extrapolated and inside.extrapolation_side is None
    assert any("10x above" in n for n in above.notes)
    assert any("no model's runs come within" in n for n in above.notes)
    assert "EXTRAPOLATED 10x above" in above.table("flops")


def test_runs_from_csv_with_steps_batch_accuracy_and_zoo_flops(tmp_path):
    # Zoo variants without train_flops: training FLOPs = 3 x forward; the paper's Table 2 gives
    # forward GFLOPs at 224 px (Ti/16 2.5, B/16 35.1) as the independent reference.
    rows = [{"variant": v, "steps": s, "batch": 256, "accuracy": 0.5, "data_size": "1M"}
            for v in ("Ti/16", "B/16") for s in (100, 200, 400, 800, 1600)]
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    frame = budget_runs.load_runs(path)
    per_image = dict(zip(frame["model"], frame["train_flops"] / frame["images_seen"]))
    assert per_image["Ti/16"] == pytest.approx(3 * 2.5e9, rel=0.02)
    assert per_image["B/16"] == pytest.approx(3 * 35.1e9, rel=0.02)
    assert frame["images_seen"].tolist()[:2] == [25600.0, 51200.0]
    assert np.allclose(frame["error"], 0.5)


@pytest.mark.parametrize("rows, words", [
    ([{"model": "a", "error": 0.5}], ["missing column", "images_seen (or steps and batch)"]),
    ([{"images_seen": 1, "error": 0.5}], ["missing column", "model (or variant)"]),
    ([{"model": "a", "images_seen": 1}], ["missing column", "error (or accuracy)"]),
    ([{"model": "a", "images_seen": 1, "accuracy": 76.4, "train_flops": 1}],
     ["'accuracy'", "76.4", "fractions"]),
    ([{"model": "a", "images_seen": -3, "error": 0.5, "train_flops": 1}],
     ["'images_seen'", "-3", "> 0"]),
    ([{"model": "a", "images_seen": "many", "error": 0.5, "train_flops": 1}],
     ["'images_seen'", "'many'", "not a finite number"]),
    ([{"model": "Q/16", "images_seen": 10, "error": 0.5}], ["row 0", "'Q/16'", "train_flops"]),
])
def test_bad_runs_name_column_and_value(rows, words):
    with pytest.raises(ValueError) as err:
        budget_runs.load_runs(pd.DataFrame(rows))
    for word in words:
        assert word in str(err.value)


def test_bad_arguments_name_field_and_value(tmp_path):
    for call, words in [
        (lambda: advice.advise(-1.0), ["budget_flops", "-1.0"]),
        (lambda: advice.advise(1e20, metric="5shot"), ["metric", "'5shot'", "10shot"]),
        (lambda: advice.advise(1e20, n_boot=0), ["n_boot", "0"]),
        (lambda: advice.advise(1e20, reach=0.5), ["reach", "0.5"]),
    ]:
        with pytest.raises(ValueError) as err:
            call()
        for word in words:
            assert word in str(err.value)
    with pytest.raises(FileNotFoundError, match="runs: no file"):
        advice.advise(1e20, runs=tmp_path / "absent.csv")


def test_paper_runs_answer_is_consistent_with_the_paper_table():
    """On Appendix F: the chosen model's nearest frontier run is the paper's; the frontier law
    at the compute of each paper frontier run is within 3 log-RMSE of that run's error."""
    from vitlib.analysis import paper_tables
    table = paper_tables.load("fewshot")
    c, e = table["train_flops"].to_numpy(), table["error"].to_numpy()
    front = scaling.pareto_frontier(c, e)
    answers = advice.advise_many(c[front][[5, 15, 25]], n_boot=5)
    for i, answer in zip(front[[5, 15, 25]], answers):
        assert answer.runs == len(table) and answer.frontier_points == front.size
        assert abs(np.log(answer.predicted_error / e[i])) < 3 * answer.law_log_rmse
        assert answer.model in set(table["model"]) and answer.data_size in {"30M", "300M", "1B",
                                                                            "3B"}
        assert answer.model_error <= 1.1 * e[i]  # the model's own law, near the paper's best


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vitlib.analysis.advice", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_table_and_json(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    _model_runs().to_csv(path, index=False)
    budget = _crossover(1, 2) * 4
    assert advice.main(["--budget", str(budget), "--unit", "flops", "--runs", str(path),
                        "--n-boot", "5"]) == 0
    out = capsys.readouterr().out
    assert "Model: M2" in out and "Frontier law" in out and "Runs nearest" in out
    done = _cli("--budget", "1", "10", "--unit", "tpuv3-core-days", "--n-boot", "5", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["unit"] == "tpuv3-core-days" and data["mfu"] == 0.4
    assert [a["budget"] for a in data["advice"]] == [1.0, 10.0]
    assert data["advice"][0]["budget_flops"] == pytest.approx(2.12544e18, rel=1e-12)
    # One answer, from the chosen model's own law, and the upstream data it assumes.
    table = _cli("--budget", "50", "--unit", "h100-days", "--n-boot", "5")
    answer = [line for line in table.stdout.splitlines() if line.startswith("Answer: ")]
    assert len(answer) == 1 and "(its own law;" in answer[0], table.stdout
    model = next(line for line in table.stdout.splitlines() if line.startswith("Model: "))
    assert answer[0].split()[2] == model.split()[1].rstrip(":")
    assert "Upstream data assumed: the paper's JFT-3B" in table.stdout


@pytest.mark.parametrize("args, words", [
    (["--budget", "-5"], ["--budget", "-5", "> 0"]),
    (["--budget", "1", "--unit", "h200-days"], ["--unit", "'h200-days'", "h100"]),
    (["--budget", "1", "--mfu", "2"], ["--mfu", "2"]),
    (["--budget", "1", "--metric", "5shot"], ["--metric", "'5shot'", "finetune"]),
    (["--budget", "1", "--runs", "/nonexistent/runs.csv"], ["--runs", "/nonexistent/runs.csv"]),
    (["--budget", "1", "--with-paper"], ["--with-paper", "--runs"]),
])
def test_cli_errors_name_flag_and_value(args, words, capsys):
    assert advice.main(args) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err
