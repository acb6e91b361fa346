"""Profiles, atomic result files, claim checks, the notebook runner and the pinned environment."""
import json
import re
from pathlib import Path

import nbformat
import pytest

from vitlib import reproduce
from vitlib.artifacts import results_dir, write_json
from vitlib.findings import ClaimCheckFailed, Findings
from vitlib.profiles import by_profile, resolve_profile

ROOT = Path(__file__).resolve().parents[1]


def test_profile_from_argument_environment_and_default(monkeypatch):
    monkeypatch.delenv("VITLIB_PROFILE", raising=False)
    assert resolve_profile() == "cpu"
    monkeypatch.setenv("VITLIB_PROFILE", "smoke")
    assert resolve_profile() == "smoke" and resolve_profile("full") == "full"
    assert by_profile("smoke", smoke=1, cpu=2, full=3) == 1
    with pytest.raises(ValueError, match="profile: 'laptop'.*smoke"):
        resolve_profile("laptop")


def test_smoke_results_never_land_in_the_committed_results(monkeypatch):
    monkeypatch.delenv("VITLIB_RESULTS_DIR", raising=False)
    monkeypatch.chdir(ROOT / "notebooks")
    assert results_dir("cpu") == ROOT / "results"
    assert results_dir("smoke") == ROOT / "results" / "smoke"


def test_write_json_is_atomic_and_leaves_no_temp_file(tmp_path):
    path = write_json(tmp_path / "a" / "b.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]

    class Unserialisable:
        pass
    with pytest.raises(TypeError):
        write_json(path, {"x": Unserialisable()})
    assert json.loads(path.read_text()) == {"x": 1}  # the old file survives a failed write


def test_findings_record_and_fail_by_claim(tmp_path):
    f = Findings("99_demo", "smoke")
    f.check("holds", True, value=1)
    f.check("does not hold", False, value=2)
    saved = json.loads(f.save(tmp_path).read_text())
    assert saved["all_passed"] is False and len(saved["checks"]) == 2
    with pytest.raises(ClaimCheckFailed, match="does not hold"):
        f.raise_if_failed()


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


def test_reproduce_runs_notebooks_with_the_profile_parameter(tmp_path, monkeypatch):
    _fake_repo(tmp_path, ["profile = 'cpu'",
                          "open('seen.txt', 'w').write(profile)"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITLIB_RESULTS_DIR", str(tmp_path / "results"))
    assert reproduce.main(["--profile", "smoke"]) == 0
    assert (tmp_path / "notebooks" / "seen.txt").read_text() == "smoke"
    assert (tmp_path / "results" / "notebooks" / "01_demo.ipynb").is_file()
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
