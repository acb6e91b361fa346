"""Profiles, atomic result files, claim checks, the notebook runner and the pinned environment."""
import json
import os
import re
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest

from vitlib.files import write_json
from vitlib.study import findings_report, reproduce
from vitlib.study.findings import (ClaimCheckFailed, Findings, pooled_std, verdict_all,
                                   verdict_greater, verdict_within)
from vitlib.study.profiles import by_profile, resolve_profile
from vitlib.study.results import results_dir, results_note

ROOT = Path(__file__).resolve().parents[1]


def test_profile_from_argument_environment_and_default(monkeypatch):
    monkeypatch.delenv("VITLIB_PROFILE", raising=False)
    assert resolve_profile() == "cpu"
    monkeypatch.setenv("VITLIB_PROFILE", "smoke")
    assert resolve_profile() == "smoke" and resolve_profile("full") == "full"
    assert by_profile("smoke", smoke=1, cpu=2, full=3) == 1
    with pytest.raises(ValueError, match="profile: 'laptop'.*smoke"):
        resolve_profile("laptop")


def test_only_reproduce_writes_the_committed_results(monkeypatch):
    monkeypatch.delenv("VITLIB_RESULTS_DIR", raising=False)
    monkeypatch.delenv("VITLIB_COMMITTED_RESULTS", raising=False)
    monkeypatch.chdir(ROOT / "notebooks")
    # a notebook run from Jupyter (Run All) or papermill by hand
    assert results_dir("cpu") == ROOT / "results" / "interactive"
    assert "cannot overwrite" in results_note("cpu") and "interactive" in results_note("cpu")
    assert results_dir("smoke") == ROOT / "results" / "smoke"
    monkeypatch.setenv("VITLIB_COMMITTED_RESULTS", "1")  # what vitlib.study.reproduce sets
    assert results_dir("cpu") == ROOT / "results"
    assert results_dir("smoke") == ROOT / "results" / "smoke"
    assert "committed" in results_note("cpu")


def test_interactive_and_profile_results_are_not_committed():
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "results/interactive/x",
                              "results/smoke/x", "runs/x"], capture_output=True, text=True)
    assert ignored.stdout.split() == ["results/interactive/x", "results/smoke/x", "runs/x"]


def test_findings_of_another_results_folder_never_overwrite_findings_md(tmp_path, monkeypatch):
    results = tmp_path / "smoke"
    f = Findings("07_demo", "smoke")
    f.check("counts add up", True)
    f.save(results / "figures")
    committed = (ROOT / "FINDINGS.md").read_bytes()
    monkeypatch.chdir(ROOT)
    assert findings_report.main(["--results", str(results)]) == 0
    assert (results / "FINDINGS.md").is_file()
    assert (ROOT / "FINDINGS.md").read_bytes() == committed


def test_write_json_refuses_nan_and_writes_files_others_can_read(tmp_path):
    with pytest.raises(ValueError, match=r"loss\[1\] is not a finite number"):
        write_json(tmp_path / "x.json", {"loss": [1.0, float("nan")]})
    assert not list(tmp_path.iterdir())
    path = write_json(tmp_path / "ok.json", {"loss": None})
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_write_json_is_atomic_and_leaves_no_temp_file(tmp_path):
    path = write_json(tmp_path / "a" / "b.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]

    class Unserialisable:
        pass
    with pytest.raises(TypeError):
        write_json(path, {"x": Unserialisable()})
    assert json.loads(path.read_text()) == {"x": 1}  # the old file survives a failed write


def test_checks_fail_the_notebook_claims_never_do(tmp_path):
    f = Findings("99_demo", "smoke")
    f.check("holds", True, value=1)
    f.claim("the paper's statement", paper="A > B", measured={"A": 1.0, "B": 2.0},
            tolerance="A - B > 2 se", noise=0.1, verdict="does not hold")
    f.raise_if_failed()  # a claim that does not hold is a finding, not a failure
    f.check("does not hold", False, value=2)
    saved = json.loads(f.save(tmp_path).read_text())
    assert saved["all_checks_passed"] is False and len(saved["checks"]) == 2
    assert saved["claims"][0]["verdict"] == "does not hold"
    assert set(saved["source"]) == {"commit", "dirty"}
    with pytest.raises(ClaimCheckFailed, match="does not hold"):
        f.raise_if_failed()
    with pytest.raises(ValueError, match="verdict: 'maybe'"):
        f.claim("x", paper="p", measured=1, tolerance=0.1, verdict="maybe")
    with pytest.raises(ValueError, match="tolerance"):
        f.claim("x", paper="p", measured=1, tolerance=None, verdict="holds")


@pytest.mark.parametrize("difference, tolerance, noise, expected", [
    (0.2, 1.0, 0.3, "holds"),  # 0.2 + 2 * 0.3 <= 1
    (0.6, 1.0, 0.3, "inconclusive"),  # inside the tolerance, but not beyond the noise
    (-1.2, 1.0, 0.3, "inconclusive"),
    (-1.7, 1.0, 0.3, "does not hold"),  # 1.7 - 0.6 > 1
    (0.0, 0.0, 0.0, "holds"),
])
def test_verdict_within_is_an_equivalence_test(difference, tolerance, noise, expected):
    assert verdict_within(difference, tolerance, noise, k=2) == expected


@pytest.mark.parametrize("difference, noise, margin, expected", [
    (1.0, 0.3, 0.0, "holds"), (0.5, 0.3, 0.0, "inconclusive"), (-0.7, 0.3, 0.0, "does not hold"),
    (1.0, 0.3, 0.5, "inconclusive"), (0.0, 0.0, 0.0, "does not hold"),
])
def test_verdict_greater(difference, noise, margin, expected):
    assert verdict_greater(difference, noise, k=2, margin=margin) == expected
    with pytest.raises(ValueError, match="noise: must be a number >= 0"):
        verdict_greater(difference, -1.0)


def test_findings_md_renders_claims_and_checks_and_detects_staleness(tmp_path, capsys):
    figures = tmp_path / "results" / "figures"
    f = Findings("07_demo", "cpu")
    f.claim("bigger is better", paper="yes | always", measured={"small": 0.81234567, "big": 0.9},
            tolerance="> 2 se", noise=0.01, mde=0.02, verdict="holds")
    f.claim("cheap", paper="~60%", measured=0.7, tolerance="<= 0.6", verdict="does not hold")
    f.check("counts add up", True)
    f.save(figures)
    out = tmp_path / "FINDINGS.md"
    args = ["--results", str(tmp_path / "results"), "--output", str(out)]
    assert findings_report.main(args + ["--check"]) == 1  # missing
    assert findings_report.main(args) == 0
    text = out.read_text()
    assert "2 claims of the paper: 1 hold, 1 do not hold, 0 inconclusive" in text
    assert "| bigger is better | yes \\| always | big: 0.9, small: 0.8123 | 0.01 | 0.02 | " \
           "> 2 se | **holds** (paired seeds) |" in text
    assert "| cheap | ~60% | 0.7 | n/a | n/a | <= 0.6 | **does not hold** (no noise (a count, " \
           "a plan or a formula)) |" in text
    assert "- PASS: counts add up" in text and "## 07_demo" in text
    assert findings_report.main(args + ["--check"]) == 0
    out.write_text(text.replace("**holds**", "**inconclusive**"))  # a hand edit is caught
    assert findings_report.main(args + ["--check"]) == 1


def test_committed_findings_md_is_what_the_committed_jsons_generate():
    assert (ROOT / "FINDINGS.md").is_file(), "run: python -m vitlib.study.findings_report"
    expected = findings_report.render_results(ROOT / "results")
    assert (ROOT / "FINDINGS.md").read_text() == expected, \
        "FINDINGS.md is stale or hand-edited: run 'python -m vitlib.study.findings_report'"


def test_committed_findings_record_the_commit_that_produced_them():
    for path in sorted((ROOT / "results" / "figures").glob("*_findings.json")):
        source = json.loads(path.read_text()).get("source") or {}
        assert source.get("commit") and source.get("dirty") is False, path.name
        nb = nbformat.read(ROOT / "results" / "notebooks" / (path.name[:-len("_findings.json")]
                                                            + ".ipynb"), as_version=4)
        assert nb.metadata["vitlib"]["source"] == source, path.name


def _fake_repo(tmp_path, cells):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "vitlib"\n')
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / "notebooks" / "01_demo.ipynb")


def test_reproduce_names_the_failing_notebook_and_cell(tmp_path, monkeypatch, capsys):
    _fake_repo(tmp_path, ["profile = 'cpu'", "x = 1", "raise RuntimeError('claim broken')"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITLIB_RESULTS_DIR", str(tmp_path / "results"))
    assert reproduce.main(["--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    # Cell 3 as written; papermill's injected parameters cell is not counted.
    assert "notebooks/01_demo.ipynb, cell 3" in err and "raise RuntimeError" in err
    assert "RuntimeError: claim broken" in err


def test_reproduce_writes_findings_to_a_results_folder_outside_any_checkout(
        tmp_path, monkeypatch, capsys):
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere" / "results"
    repo.mkdir()
    _fake_repo(repo, ["profile = 'cpu'",
                      "from vitlib.study.findings import Findings\n"
                      "from vitlib.study.results import results_dir\n"
                      "f = Findings('01_demo', profile)\n"
                      "f.check('c', True)\n"
                      "f.save(results_dir(profile) / 'figures')"])
    monkeypatch.chdir(repo)
    monkeypatch.setenv("VITLIB_RESULTS_DIR", str(elsewhere))
    assert reproduce.main(["--profile", "smoke"]) == 0, capsys.readouterr().err[-2000:]
    assert (elsewhere / "figures" / "01_demo_findings.json").is_file()
    assert "findings (" in capsys.readouterr().out
    assert not (repo / "FINDINGS.md").exists()  # the checkout's own results are untouched


def test_reproduce_runs_notebooks_with_the_profile_parameter(tmp_path, monkeypatch, capsys):
    _fake_repo(tmp_path, ["profile = 'cpu'",
                          "open('seen.txt', 'w').write(profile)\n"
                          "from vitlib.study.findings import Findings\n"
                          "f = Findings('01_demo', profile)\n"
                          "f.claim('s', paper='p', measured=1.0, tolerance=0.1, verdict='holds')\n"
                          "f.check('c', True)\n"
                          "f.save('../results/figures')",
                          "from vitlib.study.results import runs_dir\n"
                          "run = runs_dir(profile) / '01_demo' / 'run-a'\n"
                          "run.mkdir(parents=True, exist_ok=True)\n"
                          "(run / 'result.json').write_text('{}')"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITLIB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("VITLIB_RUNS_DIR", str(tmp_path / "runs"))
    executed_path = tmp_path / "results" / "notebooks" / "01_demo.ipynb"
    assert reproduce.main(["--profile", "smoke"]) == 0
    assert (tmp_path / "notebooks" / "seen.txt").read_text() == "smoke"
    executed = nbformat.read(executed_path, as_version=4)
    assert set(executed.metadata["vitlib"]["source"]) == {"commit", "dirty"}
    # The budget's evidence: wall time, runs read back at the start and runs trained.
    stamp = executed.metadata["vitlib"]
    assert stamp["wall_s"] > 0 and (stamp["runs_cached_at_start"], stamp["runs_trained"]) == (0, 1)
    assert stamp["machine"]["cores"] == os.cpu_count() and stamp["machine"]["cpu"]
    first = stamp
    assert reproduce.main(["--profile", "smoke"]) == 0  # again: the run is read back
    stamp = nbformat.read(executed_path, as_version=4).metadata["vitlib"]
    assert (stamp["runs_cached_at_start"], stamp["runs_trained"]) == (1, 0)
    # ... and the empty-cache run that trained it stays on record, through every read-back.
    kept = {k: first[k] for k in ("source", "machine", "wall_s", "runs_trained")}
    assert stamp["empty_cache_run"] == kept
    assert reproduce.main(["--profile", "smoke"]) == 0
    assert nbformat.read(executed_path, as_version=4).metadata["vitlib"]["empty_cache_run"] == kept
    assert reproduce.empty_cache_run(first, {"runs_trained": 1, "runs_cached_at_start": 1}) is None
    assert reproduce.empty_cache_run(first, {"runs_trained": 0, "runs_cached_at_start": 2}) is None
    out = capsys.readouterr().out
    assert "all 1 notebook(s) in" in out
    assert "1 claims of the paper: 1 hold, 0 do not hold" in out
    assert (tmp_path / "FINDINGS.md").is_file()  # the repository's own results folder
    budget = reproduce.CPU_BUDGET_MINUTES["04"]
    assert reproduce.budget_note("04_memory", (budget + 1) * 60, "cpu").endswith("OVER BUDGET")
    assert f"budget {budget} min" in reproduce.budget_note("04_memory", 60, "cpu")
    assert not reproduce.budget_note("04_memory", 60, "cpu").endswith("OVER BUDGET")
    # DESIGN.md section 4: each notebook <= 40 minutes, all of them <= 150.
    assert max(reproduce.CPU_BUDGET_MINUTES.values()) <= 40
    assert sum(reproduce.CPU_BUDGET_MINUTES.values()) <= reproduce.CPU_TOTAL_BUDGET_MINUTES <= 150
    assert reproduce.main(["--only", "07"]) == 2


def test_every_notebook_has_a_parameters_cell_reading_the_profile():
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert "VITLIB_PROFILE" in tagged[0].source, path.name


def _pins(lines):
    return {m.group(1).lower(): m.group(2) for line in lines
            if (m := re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-\[\]]+)==(\S+)\s*$", line))}


def test_environment_yml_has_the_same_pins_as_the_lock_file():
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    conda = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert lock and lock == conda
    for needed in ("jax", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets",
                   "importlib-resources", "papermill", "nbval", "pytest", "matplotlib"):
        assert needed in {k.replace("_", "-") for k in lock}, needed


def test_source_state_ignores_outputs_but_sees_code_changes(tmp_path):
    import subprocess

    from vitlib.study.provenance import source_state

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    state = source_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "results" / "figures").mkdir(parents=True)
    (tmp_path / "results" / "figures" / "a.json").write_text("{}")
    (tmp_path / "FINDINGS.md").write_text("# Findings\n")
    (tmp_path / "README.md").write_text("# the results block, regenerated\n")
    assert source_state(tmp_path)["dirty"] is False  # outputs are not code changes
    (tmp_path / "code.py").write_text("x = 2\n")
    assert source_state(tmp_path)["dirty"] is True
    assert source_state(tmp_path / "no-such-dir") == {"commit": None, "dirty": None}


def test_compilation_cache_folder_from_the_environment(monkeypatch, tmp_path):
    from vitlib.train import compile_cache

    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.cache_dir() is None
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "c"))
    assert compile_cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(compile_cache.ENV)
    assert compile_cache.cache_dir() == compile_cache.DEFAULT_DIR


@pytest.mark.parametrize("parts, expected", [
    (("holds", "holds"), "holds"), (("holds", "inconclusive"), "inconclusive"),
    (("inconclusive", "does not hold", "holds"), "does not hold"), (("holds",), "holds")])
def test_verdict_all(parts, expected):
    assert verdict_all(*parts) == expected


def test_verdict_all_refuses_unknown_or_no_verdicts():
    with pytest.raises(ValueError, match="verdicts"):
        verdict_all("holds", "maybe")
    with pytest.raises(ValueError, match="verdicts"):
        verdict_all()


def test_pooled_std_matches_the_anova_within_group_estimate():
    groups = [[1.0, 2.0, 4.0], [10.0, 10.5], [7.0]]
    # Written out: within-group sums of squares 4.6667 and 0.125, over (3-1)+(2-1) = 3 dof.
    expected = np.sqrt((np.var(groups[0]) * 3 + np.var(groups[1]) * 2) / 3)
    std, dof = pooled_std(groups)
    assert dof == 3 and std == pytest.approx(expected) == pytest.approx(np.sqrt(4.79166667 / 3))
    same = [np.random.default_rng(0).normal(0, 1, 4) for _ in range(3)]
    assert pooled_std([same[0]])[0] == pytest.approx(np.std(same[0], ddof=1))
    assert np.isnan(pooled_std([[1.0], [2.0]])[0]) and pooled_std([[1.0], [2.0]])[1] == 0


def test_underpowered_and_untestable_claims_are_counted_apart(tmp_path):
    from vitlib.study.statistics import equivalence_power

    f = Findings("07_demo", "cpu")
    f.claim("equal", paper="same", measured=0.004, tolerance="|d| <= 0.01", noise=0.01,
            verdict="inconclusive", reason=equivalence_power(0.01, 0.01, k=2))
    f.claim("law", paper="saturates", measured={"c": 0.15}, tolerance="fit",
            verdict="inconclusive", reason="not testable: c is at its upper bound")
    f.claim("bigger wins", paper="yes", measured=0.1, tolerance="> 2 se", noise=0.01,
            verdict="holds")
    with pytest.raises(ValueError, match="reason"):
        f.claim("x", paper="y", measured=1, tolerance="t", verdict="holds",
                reason="underpowered: no")
    f.save(tmp_path / "figures")
    text = findings_report.render_results(tmp_path)
    assert "3 claims of the paper: 1 hold, 0 do not hold, 2 inconclusive (1 underpowered, " \
           "1 not testable)" in text
    assert "**inconclusive** (paired seeds; underpowered: the tolerance 0.01 is not above" in text
