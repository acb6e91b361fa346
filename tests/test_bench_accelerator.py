"""benchmarks/accelerator.py --tiny on the CPU: the device check runs end to end and writes its
results, its MFU is the formula's (recomputed here from the paper's FLOP count of the tiny model
by hand), and the correctness run on the CPU backend agrees with itself. No timing is asserted."""
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_accelerator")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accelerator.py"), "--tiny",
                          "--out", str(out)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    [path] = out.glob("accelerator_*.json")
    return json.loads(path.read_text()), path


def tiny_train_flops():
    """3 x forward FLOPs (2 x multiply-adds) of the tiny ViT, by hand: width 64, depth 2,
    MLP 256, patch 8 at 32 px (16 tokens, no class token), MAP head, 10 classes."""
    w, m, depth, n, patch_dim, classes = 64, 256, 2, 16, 8 * 8 * 3, 10
    embed = 2 * n * patch_dim * w
    block = 2 * n * 4 * w * w + 2 * 2 * n * n * w + 2 * 2 * n * w * m
    # MAP: probe query, keys + values of every token, one query's scores and sum, output, MLP
    head = 2 * w * w + 2 * 2 * n * w * w + 2 * 2 * n * w + 2 * w * w + 2 * 2 * w * m
    return 3 * (embed + depth * block + head + 2 * w * classes)


def test_rows_have_positive_throughput_and_formula_mfu(report):
    data, _ = report
    rows = [r for r in data["rows"] if "img_per_s_per_device" in r]
    assert len(rows) == 6  # 2 optimizers + remat x scan; cuDNN and Triton need a GPU:
    assert [(r["attention"], r["xla_flags"], r["skipped"]) for r in data["rows"]
            if "img_per_s_per_device" not in r] == [
        ("cudnn", "", "cuDNN attention needs an NVIDIA GPU"),
        ("xla", "--xla_gpu_enable_triton_gemm=false",
         "--xla_gpu_enable_triton_gemm=false is an XLA:GPU flag")]
    peak = data["device"]["peak_flops"]
    assert peak > 0
    for r in rows:
        assert r["img_per_s_per_device"] > 0 and r["step_time_s"] > 0
        assert len(r["step_times_s"]) == data["timed_steps"] == 3
        assert r["img_per_s_per_device"] == pytest.approx(
            r["batch_per_device"] / statistics.median(r["step_times_s"]), rel=1e-9)
        assert r["train_flops_per_image"] == tiny_train_flops()
        mfu = r["train_flops_per_image"] * r["img_per_s_per_device"] / peak
        assert r["mfu"] == pytest.approx(mfu, rel=1e-9) and 0 < r["mfu"] <= 1
        # XLA also counts element-wise work and (with remat) the recomputed forward pass.
        assert 1.0 <= r["xla_over_zoo"] < 2.0
        assert r["peak_bytes"] is None or r["peak_bytes"] > 0
        assert 1 <= r["batch_per_device"] <= 16 and r["planned_bytes"] > 0
        assert math.isfinite(r["final_loss"])
        assert r["anchor_img_per_s"] is None  # the anchor is ViT-B/16's
    assert {o for o in (r["optimizer"] for r in rows if r["group"] == "main")} == {
        "adam_hp", "adafactor_bv"}
    ab = {(r["remat"], r["scan"]) for r in rows if r["group"] == "A/B"}
    assert ab == {(True, True), (True, False), (False, True), (False, False)}
    assert len({r["batch_per_device"] for r in rows if r["group"] == "A/B"}) == 1
    fastest = max((r for r in rows if r["group"] == "A/B"), key=lambda r: r["img_per_s_per_device"])
    best = data["best_setting"]
    assert best["img_per_s_per_device"] == fastest["img_per_s_per_device"]
    assert best["setting"].startswith(f"remat {'on' if fastest['remat'] else 'off'}, scan "
                                      f"{'on' if fastest['scan'] else 'off'}, xla attention")
    assert len(best["over_each"]) == 3 and min(best["over_each"].values()) >= 1.0


def test_gpu_rows_run_on_a_gpu_in_their_own_process_with_their_flag(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("accelerator_bench",
                                                  ROOT / "benchmarks" / "accelerator.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.configurations(bench.SIZES["tiny"])
    cudnn, triton = rows[-2:]
    gpu, tpu = {"platform": "gpu"}, {"platform": "tpu"}
    assert bench.not_on_this_device(cudnn, gpu, isolate=True) is None
    assert bench.not_on_this_device(triton, gpu, isolate=True) is None
    assert "process of their own" in bench.not_on_this_device(triton, gpu, isolate=False)
    assert "NVIDIA GPU" in bench.not_on_this_device(cudnn, tpu, isolate=False)
    assert bench.model_config(dict(cudnn, scan=True)).attention == "cudnn"
    # The flag reaches the row's process: XLA_FLAGS of the subprocess, after the host's own.
    seen = {}
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    monkeypatch.setattr(bench, "in_subprocess", lambda task, spec, env=None: seen.update(
        env or {}) or {"error": "not run"})
    monkeypatch.setattr(bench, "plan_batches", lambda specs, *a: [{"batch_per_device": 2,
                                                                  "total_bytes": 1}] * len(specs))
    device = {"platform": "gpu", "memory_bytes": 2**30, "accelerator": "h100"}
    [row] = bench.run_rows([triton], device, bench.SIZES["tiny"], isolate=True)
    assert seen == {"XLA_FLAGS": "--xla_dump_to=/tmp/x --xla_gpu_enable_triton_gemm=false"}
    assert row["error"] == "not run" and row["xla_flags"] == triton["xla_flags"]


def test_device_and_versions_recorded(report):
    data, _ = report
    device = data["device"]
    assert data["tiny"] is True and device["platform"] == "cpu"
    assert device["accelerator"] is None and "measured" in device["peak_source"]
    assert device["memory_stats"].startswith("none")  # CPU: no memory statistics
    assert all(r.get("peak_bytes") is None for r in data["rows"])
    assert data["jax"] == jax.__version__ and data["jaxlib"]
    assert "xla_flags" in data


def test_correctness_rows_agree(report):
    c = report[0]["correctness"]
    assert c["tolerance_kind"] == "cpu vs cpu" and c["rtol"] == 1e-6
    assert len(c["losses_default"]) == len(c["losses_cpu"]) == c["steps"] == 10
    worst = max(abs(a - b) / abs(b) for a, b in zip(c["losses_default"], c["losses_cpu"]))
    assert worst == pytest.approx(c["max_rel_diff"], abs=1e-12) and worst <= c["rtol"]
    assert c["agree"] is True
    assert c["losses_default"][-1] < c["losses_default"][0]  # the tiny model learns


def test_kill_and_resume_ends_with_the_straight_runs_parameters(report):
    r = report[0]["resume"]
    assert "error" not in r, r.get("error")
    steps, every, kill_after = 40, 5, 17  # resume_check.SIZES["tiny"]
    assert (r["steps"], r["checkpoint_every"]) == (steps, every)
    assert kill_after <= r["killed_after_step"] < steps and r["resumed_from_checkpoint"]
    assert len(r["straight_sha256"]) == 64 and r["straight_sha256"] == r["resumed_sha256"]
    assert r["same_parameters"] is True


def test_markdown_written(report):
    _, path = report
    text = path.with_suffix(".md").read_text()
    assert "| group | model | optimizer |" in text and "## Correctness" in text
    assert "## Kill and resume" in text and "parameters identical" in text


def test_the_input_side_is_measured_and_set_against_each_step(report):
    data, path = report
    supply = data["input_side"]
    assert supply["img_per_s"] > 0 and supply["image_size"] == data["image_size"] == 32
    assert supply["cores"] == os.cpu_count() and supply["decoder"] == "simplejpeg-rows"
    measured = [r for r in data["rows"] if "img_per_s_per_device" in r]
    assert len(data["feeding"]) == len(measured) and data["devices_on_host"] >= 1
    for f, r in zip(data["feeding"], measured):
        demand = r["img_per_s_per_device"] * data["devices_on_host"]
        assert f["demand_img_per_s"] == pytest.approx(demand, rel=1e-12)
        assert f["supply_over_demand"] == pytest.approx(supply["img_per_s"] / demand, rel=1e-12)
    assert "## The input side" in path.with_suffix(".md").read_text()


def test_the_input_side_runs_grain_worker_processes():
    """The full-size path: one grain worker process per core (here 2), whole batches each."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("accelerator_bench",
                                                  ROOT / "benchmarks" / "accelerator.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    supply = bench.input_side(dict(images=8, shapes=((48, 64), (64, 48)), batch=4,
                                   warmup_batches=1, timed_batches=2, workers=2), 32)
    assert supply["workers"] == 2 and supply["threads_per_process"] == 1
    assert supply["img_per_s"] > 0
