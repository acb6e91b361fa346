"""How verdicts are computed and shown: parts as records, arms compared with themselves, what a
verdict rests on, its margin in se, ties, seeds that chose, smoke results and the README's
generated summary."""
import json
import math
from pathlib import Path

import pytest

from vitlib.study import findings, findings_report
from vitlib.study.findings import Findings, part
from vitlib.study.findings_report import render_readme_block, with_readme_block
from vitlib.study.statistics import (choose_inside_grid, margin_in_se, overlapping_seeds,
                                     paired_greater, paired_within)

ROOT = Path(__file__).resolve().parents[1]


def _render(tmp_path, f: Findings) -> str:
    f.save(tmp_path / "figures")  # written with sorted keys, as every findings JSON
    return findings_report.render_results(tmp_path)


def test_parts_keep_their_order_and_their_own_verdicts_through_sorted_json(tmp_path):
    # Labels chosen so that sorting them reverses them: a parallel list of verdicts would then
    # pair each label with the other's verdict.
    f = Findings("07_demo", "cpu")
    f.claim("two parts", paper="both", measured={"zeta rise": 0.3, "alpha drop": -0.2},
            tolerance="each > 2 se",
            parts=[part("zeta rise", 0.3, "holds", se=0.05, margin_se=4.0),
                   part("alpha drop", -0.2, "does not hold", se=0.05, margin_se=2.0)])
    text = _render(tmp_path, f)
    saved = json.loads((tmp_path / "figures" / "07_demo_findings.json").read_text())
    assert [p["label"] for p in saved["claims"][0]["parts"]] == ["zeta rise", "alpha drop"]
    assert "part 1, zeta rise: 0.3 +/- 0.05 se -> holds" in text
    assert "part 2, alpha drop: -0.2 +/- 0.05 se -> does not hold" in text
    assert saved["claims"][0]["verdict"] == "does not hold"  # verdict_all of the parts


def test_parts_are_validated():
    f = Findings("07_demo", "cpu")
    with pytest.raises(ValueError, match="parts: labels must be unique"):
        f.claim("x", paper="p", measured=1, tolerance="t",
                parts=[part("a", 1, "holds"), part("a", 2, "holds")])
    with pytest.raises(ValueError, match=r"parts\[0\] \(a\): verdict 'maybe'"):
        f.claim("x", paper="p", measured=1, tolerance="t", parts=[part("a", 1, "maybe")])


def test_an_arm_compared_with_itself_has_nothing_to_test(tmp_path):
    same = {1: 0.61, 2: 0.58, 3: 0.64}
    for verdict in (paired_greater(same, same), paired_within(same, same, 0.02)):
        assert verdict.verdict == "inconclusive" and verdict.reason.startswith("nothing to test:")
        assert verdict.margin_se is None
    f = Findings("07_demo", "cpu")
    f.claim("rise", paper="rises", measured=0.0, tolerance="> 2 se",
            parts=[paired_greater(same, same).part("map: rise")])
    text = _render(tmp_path, f)
    assert "**inconclusive**" in text and "nothing to test: the two arms give the same value" \
        in text
    assert "1 nothing to test" in text  # counted apart, like underpowered claims


def test_what_a_verdict_rests_on_is_named(tmp_path):
    f = Findings("07_demo", "cpu")
    f.claim("fit", paper="c = 0.09", measured={"c": 0.093}, tolerance="inside the interval",
            verdict="holds", basis="bootstrap interval")
    f.claim("count", paper="more fit", measured=3, tolerance="> 0", verdict="holds")
    f.claim("paired", paper="A > B", measured=0.1, tolerance="> 2 se",
            **paired_greater([1.0, 1.2, 1.1], [0.9, 1.0, 1.05]).claim_fields())
    with pytest.raises(ValueError, match="basis: 'guess' is not allowed"):
        f.claim("x", paper="p", measured=1, tolerance="t", verdict="holds", basis="guess")
    text = _render(tmp_path, f)
    assert "**holds** (bootstrap interval)" in text
    assert "**holds** (no noise (a count, a plan or a formula))" in text
    assert "(paired seeds; margin" in text
    assert "noiseless" not in text


@pytest.mark.parametrize("kind, d, se, threshold, expected", [
    # greater, k=2: holds above threshold + 2 se, does not hold at or below threshold - 2 se.
    ("greater", 1.0, 0.1, 0.0, (1.0 - 0.2) / 0.1),  # holds, 8 se above the boundary 0.2
    ("greater", -0.5, 0.1, 0.0, (0.5 - 0.2) / 0.1),  # does not hold, 3 se below -0.2
    ("greater", 0.15, 0.1, 0.0, 0.5),  # inconclusive: 0.05 = 0.5 se from deciding 'holds'
    # within, k=2: holds for |d| <= tol - 2 se, does not hold for |d| > tol + 2 se.
    ("within", 0.01, 0.01, 0.05, 2.0),  # holds: |d| 0.01 is 0.02 = 2 se under 0.03
    ("within", -0.10, 0.01, 0.05, 3.0),  # does not hold: 0.10 is 3 se above 0.07
    ("within", 0.04, 0.01, 0.05, 1.0),  # inconclusive: 1 se from 0.03
])
def test_margin_in_se_is_the_distance_to_the_boundary_that_changes_the_verdict(
        kind, d, se, threshold, expected):
    assert margin_in_se(kind, d, se, 2.0, threshold) == pytest.approx(expected)


def test_margins_of_paired_verdicts_and_fragile_claims(tmp_path):
    a, b = [0.70, 0.74, 0.72, 0.69], [0.66, 0.69, 0.70, 0.67]
    v = paired_greater(a, b)
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))
    assert v.verdict == "holds" and v.margin_se == pytest.approx((mean - 2 * se) / se)
    f = Findings("07_demo", "cpu")
    f.claim("narrow", paper="A > B", measured=0.1, tolerance="> 2 se", verdict="holds",
            noise=0.1, margin_se=0.4)
    text = _render(tmp_path, f)
    assert "margin 0.4 se, *fragile*" in text and "1 of them fragile" in text


def test_ties_within_the_minival_noise_are_recorded():
    scores = {0.1: 0.80, 0.3: 0.8275, 1.0: 0.827667, 3.0: 0.827667, 10.0: 0.79}
    exact = choose_inside_grid(scores.get, list(scores), factor=3.0)
    assert exact.best == 1.0 and exact.ties == (1.0, 3.0) and exact.tied
    noisy = choose_inside_grid(scores.get, list(scores), factor=3.0, tie=0.001)
    assert noisy.ties == (0.3, 1.0, 3.0)
    alone = choose_inside_grid({1.0: 0.5, 2.0: 0.9, 4.0: 0.6}.get, [1.0, 2.0, 4.0], factor=2.0)
    assert alone.ties == (2.0,) and not alone.tied
    with pytest.raises(ValueError, match="tie: must be a number >= 0"):
        choose_inside_grid(scores.get, list(scores), factor=3.0, tie=-1)


def test_seeds_that_chose_are_found_in_the_claims_they_test():
    chose = {"lr": [0], "timescale": [0, 1]}
    assert overlapping_seeds(chose, {"claim 1": [2, 3, 4]}) == {}
    assert overlapping_seeds(chose, {"claim 1": [1, 2], "claim 2": [0, 5]}) == {
        "claim 1": {"timescale": [1]}, "claim 2": {"lr": [0], "timescale": [0]}}


def test_smoke_verdicts_say_they_test_the_code_path_only(tmp_path, capsys):
    f = Findings("07_demo", "smoke")
    f.claim("bigger is better", paper="yes", measured=1.0, tolerance="> 0", verdict="holds")
    assert "smoke profile: tests the code path only" in capsys.readouterr().out
    text = _render(tmp_path, f)
    assert text.count("smoke profile: tests the code path only") >= 2  # the top and the notebook


def test_earlier_exploratory_verdicts_are_shown_beside_the_confirmatory_one(tmp_path):
    f = Findings("07_demo", "cpu")
    f.claim("A > B", paper="yes", measured=0.1, tolerance="> 2 se", verdict="holds",
            noise=0.01, stage="confirmatory",
            earlier=[{"verdict": "does not hold", "seeds": [0, 1, 2], "commit": "abc1234def99",
                      "note": "seed 0 also chose the lr"}])
    with pytest.raises(ValueError, match="stage: 'final' is not allowed"):
        f.claim("x", paper="p", measured=1, tolerance="t", verdict="holds", stage="final")
    text = _render(tmp_path, f)
    assert "confirmatory: **holds**" in text
    assert "earlier, exploratory, commit abc1234def, seeds 0, 1, 2: does not hold (seed 0 " \
           "also chose the lr)" in text


def test_readme_block_is_generated_and_replaced_between_its_markers(tmp_path, monkeypatch):
    f = Findings("07_demo", "cpu")
    f.claim("A > B", paper="yes", measured=0.1, tolerance="> 2 se", verdict="holds", noise=0.01,
            margin_se=0.5, stage="confirmatory")
    f.check("ok", True)
    f.save(tmp_path / "results" / "figures")
    block = render_readme_block(findings_report.load_findings(tmp_path / "results" / "figures"))
    assert "1 claims of the paper: 1 hold, 0 do not hold, 0 inconclusive" in block
    assert "| 1: 1 / 0 / 0 | 1 | 1 | 1 of 1 | not recorded |" in block
    # The run time comes from the executed notebook's stamp (reproduce.stamp_source).
    executed = tmp_path / "results" / "notebooks" / "07_demo.ipynb"
    executed.parent.mkdir(parents=True)
    executed.write_text(json.dumps({"cells": [], "metadata": {"vitlib": {
        "source": {}, "wall_s": 1530.0, "runs_cached_at_start": 0, "runs_trained": 12,
        "machine": {"cpu": "Some CPU", "cores": 2}}}}))
    times = findings_report.run_times(tmp_path / "results")
    block = render_readme_block(findings_report.load_findings(tmp_path / "results" / "figures"), times)
    assert "| 25.5 min, empty run cache (12 runs trained) |" in block
    assert "Run times measured on: Some CPU, 2 cores." in block
    # A cpu notebook's time is shown against its budget (profiles.CPU_BUDGET_MINUTES).
    monkeypatch.setitem(findings_report.CPU_BUDGET_MINUTES, "07", 30)
    block = render_readme_block(findings_report.load_findings(tmp_path / "results" / "figures"), times)
    assert "| 25.5 of 30 min, empty run cache (12 runs trained) |" in block
    assert f"All 1 notebooks from empty run caches, one at a time: 25.5 of " \
           f"{findings_report.CPU_TOTAL_BUDGET_MINUTES} min." in block
    monkeypatch.delitem(findings_report.CPU_BUDGET_MINUTES, "07")
    times["07_demo"].update(runs_cached_at_start=12, runs_trained=0, wall_s=60.0)
    assert "| 1.0 min, 12 runs read back, 0 trained |" in render_readme_block(
        findings_report.load_findings(tmp_path / "results" / "figures"), times)
    times["07_demo"]["empty_cache_run"] = {"wall_s": 1530.0, "runs_trained": 12,
                                           "source": {"commit": "abc1234def"},
                                           "machine": {"cpu": "First CPU", "cores": 2}}
    block = render_readme_block(findings_report.load_findings(tmp_path / "results" / "figures"), times)
    assert "| 25.5 min, empty run cache (12 runs trained, at abc1234); read back in 1.0 min |" in block
    assert "Run times measured on: First CPU, 2 cores." in block
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{findings_report.README_BEGIN}\nold numbers\n{findings_report.README_END}\nrest\n")
    args = ["--results", str(tmp_path / "results"), "--output", str(tmp_path / "F.md"),
            "--readme", str(readme)]
    assert findings_report.main(args + ["--check"]) == 1
    assert findings_report.main(args) == 0 and findings_report.main(args + ["--check"]) == 0
    text = readme.read_text()
    assert "old numbers" not in text and text.startswith("# x\n\n") and text.endswith("rest\n")
    with pytest.raises(ValueError, match="markers of the generated results are missing"):
        with_readme_block("# no markers\n", block)


def test_committed_readme_summary_is_what_the_committed_jsons_generate():
    records = findings_report.load_findings(ROOT / "results" / "figures")
    readme = (ROOT / "README.md").read_text()
    times = findings_report.run_times(ROOT / "results")
    assert readme == with_readme_block(readme, render_readme_block(records, times)), \
        "README.md's results at a glance are stale: run 'python -m vitlib.study.findings_report'"


def test_best_or_tied_counts_a_tie_only_when_it_is_powered():
    from vitlib.study.statistics import paired_best_or_tied

    linear = [0.80, 0.81, 0.82, 0.83]
    assert paired_best_or_tied(linear, [x - 0.02 for x in linear], 0.01).verdict == "holds"
    beaten = paired_best_or_tied(linear, [x + 0.02 + 0.001 * i for i, x in enumerate(linear)], 0.01)
    assert beaten.verdict == "does not hold" and beaten.difference > 0
    tied = paired_best_or_tied(linear, [x + d for x, d in zip(linear, (0.001, -0.001, 0.0005, 0))],
                               0.01)
    assert tied.verdict == "holds" and tied.reason is None  # |d| + 2 se well under 0.01
    # Noisy differences around zero: no tie can be shown (2 se > 0.01), so not 'holds'.
    noisy = paired_best_or_tied(linear, [x + d for x, d in zip(linear, (0.02, -0.02, 0.015, -0.012))],
                                0.01)
    assert noisy.verdict == "inconclusive" and noisy.reason.startswith("underpowered:")
    with pytest.raises(ValueError, match="tie_margin"):
        paired_best_or_tied(linear, linear, 0.0)


def test_exploratory_records_are_verbatim_earlier_results_and_earlier_verdicts_quote_them():
    """results/exploratory/ holds findings JSONs exactly as committed before their protocols
    changed (some commit of results/figures/ has the same bytes), and every 'earlier' verdict a
    committed claim shows is one of those records' claims, with its verdict and commit."""
    import subprocess

    folder = ROOT / "results" / "exploratory"
    records = {}
    for path in sorted(folder.glob("*_findings.json")):
        target = f"results/figures/{path.name}"
        commits = subprocess.run(["git", "log", "--format=%H", "--", target], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
        versions = [subprocess.run(["git", "show", f"{c}:{target}"], cwd=ROOT,
                                   capture_output=True).stdout for c in commits]
        assert path.read_bytes() in versions, f"{path.name} is not a committed version of {target}"
        records[path.name.removesuffix("_findings.json")] = json.loads(path.read_text())
    assert records, "results/exploratory/ holds no earlier findings"
    for path in sorted((ROOT / "results" / "figures").glob("*_findings.json")):
        for claim in json.loads(path.read_text())["claims"]:
            for old in claim.get("earlier") or []:
                notebook = path.name.removesuffix("_findings.json")
                source = records[notebook]
                match = [c for c in source["claims"] if c["statement"] == old["statement"]]
                assert len(match) == 1 and match[0]["verdict"] == old["verdict"], old
                assert old["commit"] == source["source"]["commit"]


@pytest.mark.parametrize("verdicts, margins, expected", [
    (["holds", "holds"], [3.0, 0.5], 0.5),  # the weakest part undoes 'holds'
    (["holds", "does not hold", "does not hold"], [2.0, 5.0, 0.7], 5.0),  # every failing part must flip
    (["holds", "inconclusive", "inconclusive"], [2.0, 1.5, 0.3], 0.3),  # the nearest open part decides
])
def test_a_claims_margin_follows_the_parts_its_verdict_rests_on(verdicts, margins, expected):
    from vitlib.study.findings import claim_margin, margin_of_parts

    parts = [part(f"p{i}", 0.0, v, margin_se=m) for i, (v, m) in enumerate(zip(verdicts, margins))]
    verdict = findings.verdict_all(*verdicts)
    assert margin_of_parts(verdict, parts) == expected
    assert claim_margin({"verdict": verdict, "parts": parts, "margin_se": 99.0}) == expected
