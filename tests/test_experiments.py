"""The sweep cache: finished runs are read back, changed configs train anew."""
from vitlib import experiments

TINY = {"dataset": "digits", "model.variant": "Pico/7", "total_steps": 4, "batch_size": 16,
        "eval_batch_size": 100, "log_every": 2, "fewshot.dataset": "", "augment.flip": False,
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
