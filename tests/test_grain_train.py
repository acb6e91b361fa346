"""Training through the grain pipeline on generated JPEG datasets: batches as a pure function
of (seed, step) whatever the workers and hosts, the iterator state in checkpoints, exact resume
after SIGKILL and after SIGTERM (preemption), 2 processes x 2 devices = 1 process x 4 devices,
bad records, and few-shot on a second generated dataset."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from jpeg_datasets import make_image_folder, prepare_folder_dataset

from vitlib.data import grain_pipeline, image_ops, sources

SIZE = 32


@pytest.fixture(autouse=True)
def no_hang():
    """A pipeline that stops producing fails its test with the stacks, instead of hanging the
    whole test run (grain's workers wait forever on a dead peer)."""
    import faulthandler

    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two prepared JPEG datasets in one data dir: 'shapes_up' (upstream, 4 classes, a corrupt
    record in train) and 'shapes_fs' (few-shot target, 3 classes)."""
    root = tmp_path_factory.mktemp("jpeg")
    data_dir = root / "tfds"
    up = make_image_folder(root / "up", classes=4, per_class=40, splits=("train", "test"),
                           sizes=(24, 64), corrupt=1, seed=0)
    fs = make_image_folder(root / "fs", classes=3, per_class=30, splits=("train", "test"),
                           sizes=(24, 64), corrupt=0, seed=1)
    prepare_folder_dataset(up, data_dir, "shapes_up")
    prepare_folder_dataset(fs, data_dir, "shapes_fs")
    return data_dir


def _batch_of_step(data, rows=slice(None), threads=1, bad="skip"):
    source = sources.open_source("shapes_up", "train", str(data))
    pre = grain_pipeline.Preprocess(SIZE, bad_images=bad)
    return grain_pipeline.BatchOfStep(source, 16, 7, pre, rows, threads)


def test_a_batch_is_a_pure_function_of_seed_and_step_whatever_the_workers(data):
    make = _batch_of_step(data)
    in_process = [b for _, b, _ in grain_pipeline.TrainStream(make, 3, 7, workers=0)]
    workers = grain_pipeline.TrainStream(_batch_of_step(data, threads=2), 3, 7, workers=2)
    with_workers = [b for _, b, _ in workers]
    workers.close()
    assert len(in_process) == len(with_workers) == 4
    for a, b, step in zip(in_process, with_workers, range(3, 7)):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_array_equal(a["image"], make(step)["image"])
    assert in_process[0]["image"].shape == (16, SIZE, SIZE, 3)
    assert in_process[0]["image"].dtype == np.float32
    assert -1.0 <= in_process[0]["image"].min() and in_process[0]["image"].max() <= 1.0


def test_hosts_make_disjoint_rows_that_assemble_the_global_batch(data):
    whole = _batch_of_step(data)(5)
    halves = [_batch_of_step(data, rows=slice(0, 8))(5), _batch_of_step(data, rows=slice(8, 16))(5)]
    np.testing.assert_array_equal(np.concatenate([h["image"] for h in halves]), whole["image"])
    np.testing.assert_array_equal(np.concatenate([h["label"] for h in halves]), whole["label"])


def test_the_batch_holds_the_examples_of_batch_indices_with_an_inception_crop(data):
    """Independent reference: the labels are those of the records batch_indices names, and
    each image is decode_inception_crop + flip of that record with the documented generator."""
    from vitlib.data.batches import batch_indices

    make = _batch_of_step(data)
    source = make.source
    step = 4
    idx = batch_indices(step, 16, len(source), 7)
    batch = make(step)
    good = [i for i in range(16) if batch["label"][i] == source[int(idx[i])]["label"]]
    assert len(good) >= 15  # one corrupt record may be replaced by its successor
    for j in good[:4]:
        rng = np.random.default_rng([7, step, 2, j])
        image = image_ops.decode_inception_crop(source[int(idx[j])]["image"], SIZE, rng,
                                                area_range=(0.05, 1.0),
                                                decoder="simplejpeg-rows")
        image = image_ops.flip_lr(image, rng)
        np.testing.assert_array_equal(batch["image"][j], image_ops.value_range(image))


def test_iterator_state_resumes_the_stream_where_it_stopped(data):
    make = _batch_of_step(data, threads=2)
    stream = grain_pipeline.TrainStream(make, 0, 8, workers=2)
    seen = [next(stream) for _ in range(4)]
    state = seen[2][2]  # after the batch of step 2
    stream.close()
    json.dumps(state)  # what the checkpoint stores is JSON
    resumed = grain_pipeline.TrainStream(make, 3, 8, workers=2, state=state)
    step, batch, _ = next(resumed)
    resumed.close()
    assert step == 3
    np.testing.assert_array_equal(batch["image"], seen[3][1]["image"])
    other = grain_pipeline.TrainStream(make, 5, 8, workers=2, state=seen[0][2])
    with pytest.raises(RuntimeError, match="does not belong to this run"):
        next(other)
    other.close()
    # another worker count: the stream starts at its step directly
    step, batch, _ = next(grain_pipeline.TrainStream(make, 3, 8, workers=0, state=state))
    assert step == 3
    np.testing.assert_array_equal(batch["image"], seen[3][1]["image"])


def test_a_corrupt_record_is_skipped_and_counted_or_fails_with_its_index(data):
    source = sources.open_source("shapes_up", "train", str(data))
    bad = [i for i in range(len(source)) if _undecodable(source[i]["image"])]
    assert len(bad) == 1
    make = _batch_of_step(data)
    steps = [s for s in range(40) if bad[0] in _indices(s, len(source))]
    assert steps, "the corrupt record is in some batch of the first 40 steps"
    assert make(steps[0])["bad_images"] == 1
    with pytest.raises(grain_pipeline.BadImageError, match=f"record {bad[0]} cannot be decoded"):
        _batch_of_step(data, bad="fail")(steps[0])


def _indices(step, n):
    from vitlib.data.batches import batch_indices
    return set(batch_indices(step, 16, n, 7).tolist())


def _undecodable(data: bytes) -> bool:
    try:
        image_ops.decode(data)
        return False
    except image_ops.BadImage:
        return True


# ---------------------------------------------------------------- fit through the CLI

def _sets(data, *extra):
    return ["dataset='shapes_up'", f"data_dir='{data}'", "input.pipeline='grain'",
            f"image_size={SIZE}", "model.variant='Pico/8'", "model.pool_type='map'",
            "batch_size=16", "eval_batch_size=40", "eval_splits=('test',)",
            "train_split='train'", "log_every=1", "optim.schedule.warmup_steps=2",
            "fewshot.dataset=''", "input.threads=2", *extra]


def _command(workdir, sets, config="base"):
    cmd = [sys.executable, "-m", "vitlib.train", "--config", config, "--workdir", str(workdir),
           "--no-progress"]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def _run(workdir, sets, env=None, timeout=300):
    return subprocess.run(_command(workdir, sets), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _records(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text()
            .splitlines()]


def _losses(workdir):
    return {r["step"]: r["train_loss"] for r in _records(workdir) if "train_loss" in r}


def _result(workdir):
    return json.loads((Path(workdir) / "result.json").read_text())


def _wait_for_step(proc, workdir, step, limit=240):
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None:
        if (workdir / "metrics.jsonl").exists() and max(_losses(workdir) or [0]) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach step {step}")


def test_fit_trains_with_fewshot_on_the_suite_and_resumes_exactly_after_sigkill(data, tmp_path):
    sets = _sets(data, "total_steps=24", "checkpoint_every=4", "input.workers=2",
                 "fewshot.suite=('shapes_fs:train:test',)", "fewshot.shots=(1, 5)",
                 "fewshot.seeds=(0, 1)", "fewshot.l2='fixed'", "fewshot.cache_gib=0.1",
                 "eval_every=12")
    straight = _run(tmp_path / "straight", sets)
    assert straight.returncode == 0, straight.stderr[-3000:]
    result = _result(tmp_path / "straight")
    for key in ("test_accuracy", "fewshot_shapes_fs_1shot", "fewshot_shapes_fs_5shot"):
        assert key in result, key
    assert result["fewshot_shapes_fs_5shot"] > 1 / 3  # colour-coded classes: above chance

    workdir = tmp_path / "killed"
    proc = subprocess.Popen(_command(workdir, sets), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_for_step(proc, workdir, 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / "result.json").exists()
    resumed = _run(workdir, sets)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stdout + resumed.stderr
    assert _result(workdir)["params_sha256"] == result["params_sha256"]
    assert _losses(workdir) == _losses(tmp_path / "straight")


def test_sigterm_saves_a_checkpoint_exits_and_resumes_exactly(data, tmp_path):
    sets = _sets(data, "total_steps=400", "checkpoint_every=0", "optim.schedule.kind='rsqrt'")
    workdir = tmp_path / "run"
    proc = subprocess.Popen(_command(workdir, sets), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_step(proc, workdir, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "preempted (SIGTERM) at step" in err
    step = int(err.split("preempted (SIGTERM) at step ")[1].split(":")[0])
    assert [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()] == \
        [str(step)]
    assert (workdir / "checkpoints" / str(step) / "data_iterator").is_dir()
    # rsqrt does not depend on the length: finish at a nearby end, as a straight run of it
    end = [f"total_steps={step + 4}"]
    resumed = _run(workdir, [*sets, *end])
    straight = _run(tmp_path / "straight", [*sets, *end])
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr[-3000:]
    assert _result(workdir)["params_sha256"] == _result(tmp_path / "straight")["params_sha256"]


def _distributed(workdir, sets, processes: int, devices_each: int):
    """``processes`` CLI processes on JAX's distributed runtime (a local coordinator, gloo
    collectives), each with ``devices_each`` CPU devices."""
    import portpicker

    port = portpicker.pick_unused_port()
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_each}"}
    procs = [subprocess.Popen(
        _command(workdir, sets) + ["--coordinator", f"localhost:{port}", "--num_processes",
                                   str(processes), "--process_id", str(i)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(processes)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [err for _, err in outs]


def test_two_processes_of_two_devices_train_as_one_process_of_four(data, tmp_path):
    """Bit for bit against one process of four devices on the same runtime (its all-reduce
    sums in the same order), and to float rounding against a plain four-device process (XLA's
    in-process all-reduce sums in another order: one ulp apart at some steps)."""
    sets = _sets(data, "total_steps=6", "checkpoint_every=3")
    _distributed(tmp_path / "one", sets, processes=1, devices_each=4)
    _distributed(tmp_path / "two", sets, processes=2, devices_each=2)
    plain = _run(tmp_path / "plain", sets,
                 env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert plain.returncode == 0, plain.stderr[-3000:]
    one, two = _result(tmp_path / "one"), _result(tmp_path / "two")
    assert one["devices"] == two["devices"] == _result(tmp_path / "plain")["devices"] == 4
    assert two["params_sha256"] == one["params_sha256"]
    assert _losses(tmp_path / "two") == _losses(tmp_path / "one")
    assert two["test_accuracy"] == one["test_accuracy"]
    assert sorted(_losses(tmp_path / "two")) == list(range(1, 7))
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-6)
    # the second process wrote nothing of its own: one metrics record per step
    assert len([r for r in _records(tmp_path / "two") if "train_loss" in r]) == 6


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(data, tmp_path):
    """JAX's preemption service hears the signal; every process stops at one step."""
    import portpicker

    sets = _sets(data, "total_steps=400", "checkpoint_every=0", "optim.schedule.kind='rsqrt'")
    workdir = tmp_path / "run"
    port = portpicker.pick_unused_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [subprocess.Popen(
        _command(workdir, sets) + ["--coordinator", f"localhost:{port}", "--num_processes", "2",
                                   "--process_id", str(i)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    _wait_for_step(procs[0], workdir, 3)
    procs[1].send_signal(signal.SIGTERM)
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], errs[0][-2000:] + errs[1][-2000:]
    steps = {int(err.split("preempted (SIGTERM) at step ")[1].split(":")[0]) for err in errs}
    assert len(steps) == 1
    step = steps.pop()
    assert [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()] == \
        [str(step)]


def test_train_examples_trains_on_the_nested_subset_the_memory_pipeline_would_take(data):
    """The subset is batches.nested_subset's: a permutation fixed by the split size alone, so a
    smaller data size is inside a larger one, whatever the run's seed."""
    from vitlib.data.batches import nested_subset

    source = sources.open_source("shapes_up", "train", str(data))
    n = len(source)
    small, large = (sources.nested_subset_source(source, k) for k in (20, 60))
    positions = np.arange(n)
    expected_small, _ = nested_subset(positions, positions, 20)
    expected_large, _ = nested_subset(positions, positions, 60)
    assert len(small) == 20 and len(large) == 60 and small.num_classes == source.num_classes
    assert [small[i]["image"] for i in range(20)] == [source[int(j)]["image"]
                                                       for j in expected_small]
    assert set(small.indices) < set(large.indices)
    assert set(large.indices) == set(expected_large.tolist())
    assert sources.nested_subset_source(source, 0) is source
    with pytest.raises(ValueError, match=f"train_examples: {n + 1} is not allowed"):
        sources.nested_subset_source(source, n + 1)
    # Batches draw only from the subset, and the subset pickles into grain's workers.
    make = grain_pipeline.BatchOfStep(small, 16, 7, grain_pipeline.Preprocess(SIZE), slice(None))
    stream = grain_pipeline.TrainStream(make, 0, 2, workers=1)
    batches = [b for _, b, _ in stream]
    stream.close()
    from vitlib.data.batches import batch_indices

    for step, batch in enumerate(batches):
        records = small.indices[batch_indices(step, 16, 20, 7)]
        expected = [source[int(r)]["label"] for r in records]
        assert sum(a == b for a, b in zip(batch["label"].tolist(), expected)) >= 15  # 1 corrupt
    np.testing.assert_array_equal(batches[1]["image"], make(1)["image"])
