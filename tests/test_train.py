"""fit end to end on real data: results, kill-and-resume, non-finite stop, 8-device equivalence,
fine-tuning, and the CLI's config handling."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from train_cli import train_command

from vitlib.configs import apply_overrides, load_config

SMALL = ["dataset=digits", "model.variant='Pico/7'", "batch_size=32", "eval_batch_size=200",
         "train_split='train'", "eval_splits=('test', 'minival')",
         "log_every=1", "fewshot.dataset=''", "optim.schedule.warmup_steps=2",
         "augment.crop_padding=0", "augment.flip=False"]


def _command(workdir, *sets):
    return train_command(workdir, [*SMALL, *sets])


def _train(workdir, *sets, env=None, timeout=300):
    return subprocess.run(_command(workdir, *sets), capture_output=True, text=True,
                          timeout=timeout,
                          env={**os.environ, **(env or {})})


def _losses(workdir):
    records = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text()
               .splitlines()]
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


def _result(workdir):
    return json.loads((Path(workdir) / "result.json").read_text())


def test_fit_writes_result_metrics_and_learns(tmp_path):
    out = _train(tmp_path, "total_steps=150", "fewshot.dataset='digits'", "fewshot.shots=(5,)",
                 "fewshot.seeds=(0,)")
    assert out.returncode == 0, out.stderr[-3000:]
    result = _result(tmp_path)
    for key in ("steps", "final_train_loss", "test_accuracy", "params_sha256", "wall_time_s",
                "images_per_s", "minival_accuracy", "fewshot_digits_5shot"):
        assert key in result, key
    assert result["steps"] == 150 and len(result["params_sha256"]) == 64
    losses = _losses(tmp_path)
    assert sorted(losses) == list(range(1, 151))
    assert result["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert losses[150] < losses[1]


def test_sigkill_and_resume_ends_with_the_same_parameters(tmp_path):
    sets = ["total_steps=40", "checkpoint_every=5"]
    reference = _train(tmp_path / "straight", *sets)
    assert reference.returncode == 0, reference.stderr[-3000:]

    workdir = tmp_path / "killed"
    proc = subprocess.Popen(_command(workdir, *sets), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill between checkpoints, mid-run
        if metrics.exists() and max(_losses(workdir) or [0]) >= 17:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / "result.json").exists()

    resumed = _train(workdir, *sets)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stdout + resumed.stderr
    assert _result(workdir)["params_sha256"] == _result(tmp_path / "straight")["params_sha256"]
    assert sorted(_losses(workdir)) == list(range(1, 41))  # no duplicated records


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = _train(tmp_path, "total_steps=20", "checkpoint_every=1", "optim.lr=1e30",
                 "optim.grad_clip_norm=0.0")
    assert out.returncode == 1
    assert "non-finite" in out.stderr and "last good checkpoint (step 1)" in out.stderr
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["1"]
    assert not (tmp_path / "result.json").exists()


@pytest.mark.parametrize("fsdp", [False, True])
def test_eight_devices_match_one_device_step_for_step(tmp_path, fsdp):
    sets = ["total_steps=8", f"fsdp={fsdp}"]
    single = _train(tmp_path / "one", *sets)
    eight = _train(tmp_path / "eight", *sets,
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert single.returncode == 0 and eight.returncode == 0, eight.stderr[-3000:]
    assert _result(tmp_path / "one")["devices"] == 1
    assert _result(tmp_path / "eight")["devices"] == 8
    one, many = _losses(tmp_path / "one"), _losses(tmp_path / "eight")
    assert sorted(one) == sorted(many) == list(range(1, 9))
    for step in one:
        assert many[step] == pytest.approx(one[step], rel=1e-5), step


def test_finetune_at_a_new_resolution(tmp_path):
    pre = _train(tmp_path / "pre", "total_steps=30")
    assert pre.returncode == 0, pre.stderr[-3000:]
    out = subprocess.run([sys.executable, "-m", "vitlib.train.finetune", "--from",
                          str(tmp_path / "pre"), "--dataset", "digits", "--workdir",
                          str(tmp_path / "ft"), "--steps", "20", "--batch-size", "32",
                          "--image-size", "35"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = _result(tmp_path / "ft")
    assert result["config"]["image_size"] == 35 and result["config"]["optim"]["optimizer"] == "sgd"
    assert result["test_accuracy"] > 0.2
    # A run recorded with cuDNN's attention (a GPU run) loads its parameters here, on a CPU.
    from vitlib.train.finetune import load_run

    _, params = load_run(tmp_path / "pre")
    record = json.loads((tmp_path / "pre" / "result.json").read_text())
    record["config"]["model"]["attention"] = "cudnn"
    (tmp_path / "pre" / "result.json").write_text(json.dumps(record))
    config, cudnn_params = load_run(tmp_path / "pre")
    assert config.model.attention == "cudnn"
    jax.tree_util.tree_map(np.testing.assert_array_equal, cudnn_params, params)


def test_unknown_override_lists_the_valid_keys():
    config = load_config("quickstart")
    with pytest.raises(ValueError, match="unknown key 'total_step'.*total_steps"):
        apply_overrides(config, ["total_step=5"])
    with pytest.raises(ValueError, match="batch_size must be int"):
        apply_overrides(config, ["batch_size='big'"])
    apply_overrides(config, ["total_steps=5", "optim.lr=3", "seed=2", "eval_every=0",
                             "checkpoint_every=1", "batch_size=8"])
    assert config.total_steps == 5 and config.optim.lr == 3.0 and config.batch_size == 8


def test_cli_reports_bad_config_without_traceback(tmp_path):
    out = _train(tmp_path, "total_steps=0")
    assert out.returncode == 1 and "total_steps" in out.stderr and "Traceback" not in out.stderr
    out = _train(tmp_path, "batch_size=30", env={
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert out.returncode == 1 and "batch_size" in out.stderr


def test_fit_equals_a_plain_loop_over_the_optax_chain_with_schedule_built_in(tmp_path):
    """fit passes lr and weight decay to its compiled step as inputs; the losses and final
    parameters equal a loop over make_optimizer's chain (lr_t and wd as constants)."""
    import jax
    import numpy as np

    from vitlib.data import datasets
    from vitlib.data.batches import train_batch
    from vitlib.optim.chain import make_optimizer
    from vitlib.study.experiments import make_config
    from vitlib.train.build import build_model, optimizer_config
    from vitlib.train.loop import fit
    from vitlib.train.steps import init_state, make_train_step, params_sha256

    config = make_config("quickstart", {
        "dataset": "digits", "model.variant": "Pico/7", "batch_size": 32, "total_steps": 8,
        "log_every": 1, "train_split": "train", "eval_splits": ("minival",),
        "fewshot.dataset": "", "optim.weight_decay": [("^head/", 1.0), (".*", 0.1)],
        "optim.schedule": {"kind": "cosine", "warmup_steps": 3}, "micro_batch_size": 32})
    result = fit(config, tmp_path, progress=False)
    logged = _losses(tmp_path)

    x, y = datasets.load_split("digits", "train")
    model = build_model(config, 28, 10)
    tx = make_optimizer(optimizer_config(config))
    state = init_state(model, tx, (28, 28, 1), config.seed)
    step = jax.jit(make_train_step(model, tx, "softmax"))
    for s in range(8):
        state, metrics = step(state, train_batch(x, y, s, 32, config.seed))
        np.testing.assert_allclose(logged[s + 1], float(metrics["loss"]), rtol=1e-6)
    assert result["params_sha256"] == params_sha256(state.params)


def test_fewshot_record_scores_each_split_like_fewshot_eval_on_those_features():
    """fewshot_record against the fewshot module called directly on the same features: shots
    from train, one score per eval split, minival under its own key; bad splits refused."""
    import numpy as np

    from vitlib.data import datasets
    from vitlib.data.augment import preprocess
    from vitlib.evals import fewshot
    from vitlib.train.build import check_config
    from vitlib.train.evaluation import fewshot_record

    config = apply_overrides(load_config("quickstart"), [
        "fewshot.dataset='digits'", "fewshot.shots=(1, 5)", "fewshot.seeds=(0, 1)",
        "fewshot.eval_splits=('test', 'minival')", "eval_batch_size=100"])
    features = lambda params, batch: batch.reshape(len(batch), -1)[:, ::7] * params  # noqa: E731
    record = fewshot_record(config, 2.0, features)
    train_x, train_y = datasets.load_split("digits", "train")
    flat = lambda x: preprocess(x).reshape(len(x), -1)[:, ::7] * 2.0  # noqa: E731
    for split, prefix in (("test", "fewshot_digits_"), ("minival", "fewshot_digits_minival_")):
        x, y = datasets.load_split("digits", split)
        expected = fewshot.fewshot_eval(flat(train_x), train_y, flat(x), y, 10, shots=(1, 5),
                                        seeds=(0, 1))
        for k in (1, 5):
            assert record[f"{prefix}{k}shot"] == pytest.approx(expected[k]["mean"], abs=1e-12)
            assert record[f"{prefix}{k}shot_std"] == pytest.approx(expected[k]["std"], abs=1e-12)
    assert np.isfinite(list(record.values())).all() and len(record) == 8
    bad = apply_overrides(load_config("quickstart"), ["fewshot.eval_splits=('train',)"])
    with pytest.raises(ValueError, match="fewshot.eval_splits"):
        check_config(bad)


def test_config_model_fields_override_the_variant_shape():
    from vitlib.train.build import build_model

    config = apply_overrides(load_config("quickstart"), [
        "model.variant='Pico/7'", "model.width=96", "model.depth=3", "model.num_heads=3"])
    cfg = build_model(config, 28, 10).config
    assert (cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_dim, cfg.patch_size) == (96, 3, 3, 256, 7)
    default = build_model(apply_overrides(load_config("quickstart"), ["model.variant='Pico/7'"]),
                          28, 10).config
    assert (default.width, default.depth, default.mlp_dim, default.num_heads) == (64, 4, 256, 2)
    with pytest.raises(ValueError, match="model.depth"):
        build_model(apply_overrides(load_config("quickstart"), ["model.depth=-1"]), 28, 10)
