"""The sweep cache and cooldown branches: finished runs are read back, changed configs and
numerics versions train anew, and a branch equals its run trained from scratch."""
import json
from pathlib import Path

import numpy as np
import pytest

from vitlib.optim.schedules import cooldown_branch
from vitlib.study import experiments
from vitlib.train import loop

TINY = {"dataset": "digits", "model.variant": "Pico/7", "total_steps": 4, "batch_size": 16,
        "eval_batch_size": 100, "log_every": 2, "fewshot.dataset": "", "augment.flip": False,
        "train_split": "train", "eval_splits": ("minival",),
        "optim.schedule": {"kind": "constant", "warmup_steps": 0}}


def test_sweep_caches_finished_runs(tmp_path):
    first = experiments.sweep("quickstart", [TINY, {**TINY, "optim.lr": 1e-3}], tmp_path)
    assert [r["cached"] for r in first] == [False, False]
    again = experiments.sweep("quickstart", [TINY], tmp_path)
    assert again[0]["cached"] is True
    assert again[0]["params_sha256"] == first[0]["params_sha256"]
    assert first[0]["params_sha256"] != first[1]["params_sha256"]
    steps, mean, std = experiments.curves_over_seeds([first[0]["workdir"]], "train_loss")
    assert steps == [2, 4] and len(mean) == 2 and std == [0.0, 0.0]
    best = experiments.best_setting(
        [{"opt": "a", "lr": 1, "acc": 0.5}, {"opt": "a", "lr": 2, "acc": 0.7},
         {"opt": "b", "lr": 3, "acc": 0.1}], "opt", "lr", "acc")
    assert best == {"a": 2, "b": 3}


def test_a_new_numerics_version_retrains_instead_of_reading_old_results(tmp_path, monkeypatch):
    config = experiments.make_config("quickstart", TINY)
    first = experiments.run_cached(config, tmp_path)
    assert first["numerics_version"] == loop.NUMERICS_VERSION
    monkeypatch.setattr(experiments, "NUMERICS_VERSION", loop.NUMERICS_VERSION + 1)
    monkeypatch.setattr(loop, "NUMERICS_VERSION", loop.NUMERICS_VERSION + 1)
    again = experiments.run_cached(config, tmp_path)
    assert again["cached"] is False and again["workdir"] != first["workdir"]


PARENT = {**TINY, "total_steps": 14, "log_every": 1, "checkpoint_steps": (6, 10),
          "optim.lr": 3e-3, "optim.weight_decay": [(".*", 0.1)],
          "optim.schedule": {"kind": "rsqrt", "warmup_steps": 3, "timescale": 5}}


def test_branch_equals_the_run_trained_from_scratch_with_its_schedule(tmp_path):
    parent = experiments.run_cached(experiments.make_config("quickstart", PARENT), tmp_path,
                                    "main")
    assert sorted(p.name for p in (Path(parent["workdir"]) / "branch_points").iterdir()) \
        == ["10", "6"]
    branch = experiments.branch(parent, at_step=6, cooldown_steps=4)
    assert branch["cached"] is False and branch["steps_this_run"] == 4
    assert branch["parent_workdir"] == parent["workdir"] and branch["branch_step"] == 6
    assert branch["images_seen"] == 10 * 16 and branch["images_trained_here"] == 4 * 16

    # The reference: trained from step 0, written out by hand (not via branch_config).
    scratch = experiments.run_cached(experiments.make_config("quickstart", {
        **PARENT, "total_steps": 10, "checkpoint_steps": (),
        "optim.schedule": {"kind": "rsqrt", "warmup_steps": 3, "timescale": 5,
                           "cooldown_steps": 4}}), tmp_path, "scratch")
    assert branch["params_sha256"] == scratch["params_sha256"]
    assert branch["minival_accuracy"] == scratch["minival_accuracy"]

    # The branch's logged lr follows cooldown_branch; before the branch point, the parent's.
    expected = cooldown_branch(3e-3, 6, 4, kind="rsqrt", warmup_steps=3, timescale=5)
    logged = {r["step"]: r["lr"] for r in experiments.metrics(branch["workdir"]) if "lr" in r}
    assert sorted(logged) == [7, 8, 9, 10]
    np.testing.assert_allclose([logged[s] for s in logged],
                               [float(expected(s - 1)) for s in logged], rtol=1e-6)

    again = experiments.branch(parent, at_step=6, cooldown_steps=4)
    assert again["cached"] is True and again["params_sha256"] == branch["params_sha256"]
    assert json.loads((Path(again["workdir"]) / "result.json").read_text())["branch_step"] == 6


def test_branch_points_must_exist_inside_the_parent(tmp_path):
    parent = {"workdir": str(tmp_path / "main-x"),
              "config": experiments.make_config("quickstart", PARENT).to_dict()}
    with pytest.raises(ValueError, match="at_step: 20 is past the parent's main phase"):
        experiments.branch(parent, at_step=20, cooldown_steps=4)
    with pytest.raises(ValueError, match="no checkpoint at step 8.*checkpoint_steps are"):
        experiments.branch(parent, at_step=8, cooldown_steps=4)
    with pytest.raises(ValueError, match="inside the parent's warmup"):
        experiments.branch(parent, at_step=2, cooldown_steps=4)
    cosine = {**parent, "config": experiments.make_config("quickstart", {
        **PARENT, "optim.schedule": {"kind": "cosine", "warmup_steps": 3}}).to_dict()}
    with pytest.raises(ValueError, match="'cosine' depends on the run length"):
        experiments.branch(cosine, at_step=6, cooldown_steps=4)
    with pytest.raises(ValueError, match="does not exist"):  # parent never trained
        experiments.branch(parent, at_step=6, cooldown_steps=4)
    with pytest.raises(ValueError, match=r"checkpoint_steps: \(99,\) is not allowed"):
        loop.fit(experiments.make_config("quickstart", {**PARENT, "checkpoint_steps": (99,)}),
                  tmp_path / "bad", progress=False)


def test_runs_of_many_lengths_train_one_main_run_plus_the_cooldowns(tmp_path):
    assert experiments.cooldown_lengths([8, 12], 0.25) == [(6, 2), (9, 3)]
    with pytest.raises(ValueError, match="cooldown_fraction"):
        experiments.cooldown_lengths([8], 1.5)
    runs = experiments.runs_of_many_lengths("quickstart", {
        **TINY, "optim.schedule": {"kind": "rsqrt", "warmup_steps": 2, "timescale": 4}},
        [12, 8], 0.25, tmp_path)
    assert [r["length"] for r in runs] == [8, 12]
    assert [r["images_seen"] for r in runs] == [8 * 16, 12 * 16]
    assert [r["steps_this_run"] for r in runs] == [2, 3]
    main = json.loads((Path(runs[0]["parent_workdir"]) / "result.json").read_text())
    assert main["steps"] == 9 and main["config"]["checkpoint_steps"] == [6, 9]


def test_cached_runs_and_branches_read_back_after_the_runs_folder_moves(tmp_path):
    import shutil

    overrides = {**TINY, "optim.schedule": {"kind": "rsqrt", "warmup_steps": 2, "timescale": 4}}
    first = experiments.runs_of_many_lengths("quickstart", overrides, [8, 12], 0.25,
                                             tmp_path / "here")
    shutil.copytree(tmp_path / "here", tmp_path / "moved")
    shutil.rmtree(tmp_path / "here")
    again = experiments.runs_of_many_lengths("quickstart", overrides, [8, 12], 0.25,
                                             tmp_path / "moved")
    assert [r["cached"] for r in again] == [True, True]
    assert [r["params_sha256"] for r in again] == [r["params_sha256"] for r in first]
    assert [r["steps_this_run"] for r in again] == [2, 3]
