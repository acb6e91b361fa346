"""The ``full`` profile's code path on CPU: each wired notebook runs end to end with ``profile =
"full"`` through ``python -m vitlib.study.reproduce --set ...``, every size shrunk
(``full_study``), on generated JPEG datasets prepared as TFDS array_record (``full_data``): the
grain pipeline, the paper's preprocessing, the sigmoid loss, bf16 compute, the plan's runs.

Slow (minutes): ``make test-full`` runs it (``VITLIB_FULL_NOTEBOOKS=1``); ``make test`` does not.
"""
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from jpeg_datasets import make_image_folder, prepare_folder_dataset

from vitlib.study import full_profile, reproduce

pytestmark = pytest.mark.skipif(os.environ.get("VITLIB_FULL_NOTEBOOKS") != "1",
                                reason="slow: the full profile's notebooks on CPU; run them "
                                       "with make test-full")

SPLITS = ("train", "minival", "test")
SUITE = ("shapes_fs:train:test", "shapes_fs_minival=shapes_fs:train:minival")
FULL_DATA = {"train_split": "train", "minival_split": "minival", "test_split": "test",
             "head_bias_init": -2.0, "suite": SUITE, "transfer": "shapes_fs", "image_size": 32,
             "workers": 0, "shots": (1, 5), "checkpoint_every": 4}
TINY = {  # every size of each notebook's full profile, shrunk for a CPU
    "03": dict(model="Atto/8", batch=16, lengths=[8, 16, 32], warmup=2,
               lrs=[1e-3, 2e-3, 4e-3], timescales=[4, 8, 16], timescale_factor=2, seeds=[0, 1],
               eval_every=8, eval_subset=32),
    "04": dict(state_variants=["Ti/16", "B/16"], plan_variants=["Ti/16"], batch_per_device=2,
               token_variants={"/14": "Ti/14", "/16": "Ti/16"}, token_batch=2,
               reality=("Ti/16", 8),
               dynamics=dict(model="Atto/8", heads=1, steps=12, warmup=2, cooldown=2, batch=16,
                             every=6, subset=32, seeds=[0, 1], max_extensions=0,
                             lr_grids={"adam": ([1e-3, 2e-3, 4e-3], 2),
                                       "adafactor_bv": ([1e-3, 2e-3, 4e-3], 2),
                                       "adafactor": ([1e-2, 3e-2, 1e-1], 3)})),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("full_data")
    for name, classes, seed in (("shapes_up", 6, 0), ("shapes_fs", 5, 1)):
        folder = make_image_folder(root / name, classes=classes, per_class=12, splits=SPLITS,
                                   sizes=(24, 56), seed=seed)
        prepare_folder_dataset(folder, root / "tfds", name)
    return root / "tfds"


@pytest.mark.parametrize("notebook", sorted(TINY))
def test_a_full_notebook_runs_end_to_end_on_jpeg_data_with_every_size_shrunk(
        notebook, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VITLIB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("VITLIB_RUNS_DIR", str(tmp_path / "runs"))
    sets = [f"upstream='shapes_up'", f"data_dir={str(data_dir)!r}", "devices=2",
            f"full_study={TINY[notebook]!r}", f"full_data={FULL_DATA!r}", "scale_checks=False"]
    code = reproduce.main(["--profile", "full", "--only", notebook,
                           *[a for s in sets for a in ("--set", s)]])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]

    # Every run trained the upstream through the grain pipeline with the paper's recipe.
    results = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "full").rglob(
        "result.json")]
    assert results
    for r in results:
        c = r["config"]
        assert (c["dataset"], c["input"]["pipeline"], c["image_size"]) == ("shapes_up", "grain",
                                                                          32)
        assert (c["loss"], c["model"]["dtype"], c["model"]["pool_type"]) == (
            "sigmoid", "bfloat16", "map")
        assert c["eval_splits"] == ["test=test", "minival=minival"]
    # The plan prices the runs the notebook trained: the same lengths, at least as many steps
    # (a grid extended past an edge trains more than the plan's starting grid).
    planned = full_profile.runs_of(notebook, TINY[notebook])
    planned_steps = Counter()
    for spec in planned:
        planned_steps[spec.steps] += spec.count
    trained_steps = Counter(r["steps_this_run"] for r in results)
    assert set(trained_steps) == set(planned_steps)
    assert sum(s * n for s, n in trained_steps.items()) >= sum(
        s * n for s, n in planned_steps.items())
    # The findings of the full profile are written beside its executed notebook.
    findings = json.loads(next((tmp_path / "results" / "figures").glob(
        f"{notebook}_*findings.json")).read_text())
    assert findings["profile"] == "full" and findings["claims"]
    assert all(c["passed"] for c in findings["checks"])
