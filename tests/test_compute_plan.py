"""The compute plan: FLOPs against the zoo's count and paper Table 2, device-hours against a hand
computation from the accelerator's datasheet peak, one memory plan per distinct compiled step,
memory equal to step_memory's planner, up-front validation, the CLI."""
import json

import pytest

from vitlib.analysis import compute_plan as cp
from vitlib.analysis import cpu_estimate
from vitlib.analysis.compute_plan import RunSpec, plan
from vitlib.analysis.cpu_estimate import compare_with_measured
from vitlib.analysis.scaling import training_flops
from vitlib.models.counting import count_flops
from vitlib.models.variants import vit_config

B16 = dict(variant="B/16", batch_size=4096, steps=90_000, image_size=224)


def strict_json(obj) -> dict:
    def reject(token):
        raise ValueError(f"non-finite JSON number {token}")

    return json.loads(json.dumps(obj, allow_nan=False), parse_constant=reject)


def test_flops_are_the_zoo_count_and_match_paper_table2():
    runs = [RunSpec("b16", **B16), RunSpec("b16x3", **B16, count=3, eval_overhead=0.1)]
    rows = plan(runs, memory=False).rows
    images = 4096 * 90_000
    zoo = training_flops("B/16", 224, images, num_classes=1000, pool_type="gap")
    by_hand = 3 * count_flops(vit_config("B/16", image_size=224, num_classes=1000)) * images
    assert rows[0]["images_per_run"] == images
    assert rows[0]["train_flops_per_run"] == pytest.approx(zoo, rel=1e-12)
    assert rows[0]["train_flops_per_run"] == pytest.approx(by_hand, rel=1e-12)
    # Paper Table 2: B/16 is 35.1 GFLOPs per image at 224px (forward).
    assert rows[0]["train_flops_per_run"] == pytest.approx(3 * 35.1e9 * images, rel=0.02)
    assert rows[1]["flops_per_run"] == pytest.approx(1.1 * zoo, rel=1e-12)
    assert rows[1]["flops_total"] == pytest.approx(3 * 1.1 * zoo, rel=1e-12)
    assert rows[1]["train_flops_total"] == pytest.approx(3 * zoo, rel=1e-12)


def test_custom_shape_counts_its_own_config():
    shape = dict(width=96, depth=3, mlp_dim=384, num_heads=3, patch_size=4)
    row = plan([RunSpec("custom", None, 64, 10, image_size=28, num_classes=10, model=shape)],
               devices=2, memory=False).rows[0]
    cfg = vit_config(image_size=28, num_classes=10, **shape)
    assert row["train_flops_per_run"] == pytest.approx(3 * count_flops(cfg) * 640, rel=1e-12)
    assert row["label"] == "w96d3m384h3/4"


def test_device_hours_by_hand():
    flops = training_flops("B/16", 224, 4096 * 90_000, num_classes=1000)
    p = plan([RunSpec("b16", **B16, count=2)], "h100", devices=8, mfu=0.5, memory=False)
    row = p.rows[0]
    device_hours = flops / (989e12 * 0.5) / 3600  # H100 SXM: 989 TFLOP/s dense bf16
    assert row["device_hours_per_run"] == pytest.approx(device_hours, rel=1e-12)
    assert row["wall_hours_per_run"] == pytest.approx(device_hours / 8, rel=1e-12)
    assert p.totals["device_hours"] == pytest.approx(2 * device_hours, rel=1e-12)
    assert p.totals["wall_hours"] == pytest.approx(2 * device_hours / 8, rel=1e-12)
    assert not p.mfu_assumed and p.mfu == 0.5
    # Default MFU 0.4 (assumed, and said so); TPU v3 core: 123 / 2 TFLOP/s.
    q = plan([RunSpec("b16", **B16)], "tpuv3-core", devices=4, memory=False)
    assert q.rows[0]["device_hours_per_run"] == pytest.approx(flops / (61.5e12 * 0.4) / 3600,
                                                              rel=1e-12)
    assert q.mfu_assumed and "MFU 0.40 (assumed" in q.table()


def _fake_planner(calls, bytes_per_image=2 ** 20):
    def fake(plans, devices):
        calls.append((list(plans), devices))
        return [{**p, "devices": devices, "argument_bytes": 1000, "output_bytes": 1000,
                 "alias_bytes": 1000, "temp_bytes": p["batch_per_device"] * bytes_per_image,
                 "total_bytes": 1000 + p["batch_per_device"] * bytes_per_image} for p in plans]
    return fake


def test_each_distinct_step_is_planned_once(monkeypatch):
    calls = []
    monkeypatch.setattr(cp, "plans_in_subprocess", _fake_planner(calls, bytes_per_image=2 ** 30))
    runs = [RunSpec("short", "Ti/16", 64, 100),
            RunSpec("long", "Ti/16", 64, 5000, count=3, eval_overhead=0.2),  # same step
            RunSpec("big batch", "Ti/16", 1024, 100)]  # 128 per device: 128 GiB, too big
    p = plan(runs, "h100", devices=8)
    assert len(calls) == 1 and calls[0][1] == 8
    planned = calls[0][0]
    assert [q["batch_per_device"] for q in planned] == [8, 128]
    assert planned[0] == dict(variant="Ti/16", optimizer="adam", batch_per_device=8, fsdp=False,
                              remat=False, image_size=224, num_classes=1000, dtype="bfloat16",
                              model={"pool_type": "gap"})
    assert [r["step"] for r in p.rows] == [0, 0, 1]
    assert p.totals["distinct_steps"] == len(p.steps) == 2
    assert [r["fits"] for r in p.rows] == [True, True, False]
    assert p.totals["all_fit"] is False
    assert p.totals["max_memory_bytes"] == 1000 + 128 * 2 ** 30
    assert "NO" in p.table() and "DOES NOT FIT" in p.table()
    strict_json(p.to_dict())


def test_memory_equals_the_step_planner():
    from vitlib.analysis.step_memory import plan_in_subprocess

    runs = [RunSpec("a", "Pico/7", 8, 10, image_size=28, num_classes=10),
            RunSpec("b", "Pico/7", 8, 500, image_size=28, num_classes=10, count=4)]
    p = plan(runs, "tpuv5e", devices=2)
    expected = plan_in_subprocess("Pico/7", "adam", 4, 2, image_size=28, num_classes=10,
                                  dtype="bfloat16", model={"pool_type": "gap"})
    assert len(p.steps) == 1
    for key in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "total_bytes"):
        assert p.steps[0][key] == expected[key], key
    assert p.rows[0]["memory_bytes_per_device"] == p.rows[1]["memory_bytes_per_device"] \
        == expected["total_bytes"]
    assert p.steps[0]["fits"] and p.steps[0]["memory_fraction"] == pytest.approx(
        expected["total_bytes"] / 16e9)
    assert "virtual mesh of 2 CPU devices" in p.table()
    strict_json(p.to_dict())


@pytest.mark.parametrize("fields, match", [
    (dict(batch_size=0), r"batch_size: must be an integer >= 1, got 0"),
    (dict(steps=1.5), r"steps: must be an integer >= 1, got 1.5"),
    (dict(count=0), r"count: must be an integer >= 1"),
    (dict(image_size=-1), r"image_size"),
    (dict(optimizer="sgd"), r"optimizer: 'sgd' is not allowed; choose one of .*adafactor_bv"),
    (dict(pool_type="cls"), r"pool_type: 'cls' is not allowed; choose one of .*'map'"),
    (dict(dtype="float64"), r"dtype: 'float64' is not allowed; choose one of .*'bfloat16'"),
    (dict(eval_overhead=-0.1), r"eval_overhead: must be a finite fraction >= 0"),
    (dict(eval_overhead=float("nan")), r"eval_overhead"),
    (dict(variant="Q/16"), r"variant: unknown name 'Q'"),
    (dict(variant=16), r"variant: must be a zoo name"),
    (dict(model={"image_size": 32}), r"model: \['image_size'\] are set by the run spec"),
    (dict(model={"widht": 8}), r"unknown field"),
    (dict(fsdp="yes"), r"fsdp: must be True or False"),
])
def test_run_spec_validation(fields, match):
    with pytest.raises(ValueError, match=match) as err:
        RunSpec(**{"name": "r", "variant": "Ti/16", "batch_size": 64, "steps": 10, **fields})
    if "name" not in fields:
        assert "run 'r'" in str(err.value)


@pytest.mark.parametrize("kwargs, match", [
    (dict(accelerator="v100"), r"accelerator: 'v100' is not known; choose one of .*'h100'"),
    (dict(devices=0), r"devices: must be an integer >= 1, got 0"),
    (dict(mfu=1.5), r"mfu: must be a fraction in \(0, 1\]"),
    (dict(devices=3), r"batch_size: 64 does not split evenly over devices=3"),
    (dict(memory="no"), r"memory: must be True or False"),
])
def test_plan_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan([RunSpec("r", "Ti/16", 64, 10)], **{"memory": False, **kwargs})


def test_plan_rejects_bad_run_lists():
    with pytest.raises(ValueError, match="runs: no run spec"):
        plan([], memory=False)
    with pytest.raises(ValueError, match=r"runs: names \['r'\] are used more than once"):
        plan([RunSpec("r", "Ti/16", 64, 10), RunSpec("r", "S/16", 64, 10)], memory=False)
    with pytest.raises(ValueError, match=r"runs\[0\]: must be a RunSpec"):
        plan([{"name": "r"}], memory=False)
    with pytest.raises(ValueError, match="name: must be a non-empty string"):
        RunSpec("", "Ti/16", 64, 10)


def test_compare_with_measured(tmp_path):
    p = plan([RunSpec("tiny", "Pico/4", 256, 100, image_size=28, num_classes=10, count=2,
                      dtype="float32")], "h100", devices=1, memory=False)
    flops = p.rows[0]["flops_total"]
    out = compare_with_measured(p, {"tiny": 60.0}, peak_flops=200e9, mfu=0.5)
    row = out["rows"][0]
    assert row["estimated_seconds"] == pytest.approx(flops / (200e9 * 0.5))
    assert row["ratio"] == pytest.approx(60.0 / (flops / 100e9))
    assert row["implied_mfu"] == pytest.approx(flops / (60.0 * 200e9))
    strict_json(out)
    # Defaults from a benchmark file: peak = its matmul rate; mfu = the mean, over configs, of
    # 3 x forward GFLOPs x images/s / peak.
    bench = tmp_path / "cpu_train.json"
    bench.write_text(json.dumps({"matmul_peak_gflops": 200.0, "configs": {
        "C1": {"model_fwd_gflop_per_image": 0.02, "median_img_s": {"vitlib_train": 1000.0}},
        "C2": {"model_fwd_gflop_per_image": 0.2, "median_img_s": {"vitlib_train": 200.0}}}}))
    out = compare_with_measured(p, {"tiny": 60.0}, benchmark=bench)
    mfu = (3 * 0.02 * 1000 / 200 + 3 * 0.2 * 200 / 200) / 2
    assert out["peak_flops"] == 200e9 and out["mfu"] == pytest.approx(mfu)
    assert out["rows"][0]["estimated_seconds"] == pytest.approx(flops / (200e9 * mfu))
    assert "tiny" in cpu_estimate.comparison_table(out)
    # No benchmark: a given peak is taken as the sustained rate; without one, an error.
    missing = tmp_path / "absent.json"
    assert compare_with_measured(p, {"tiny": 60.0}, peak_flops=1e11, benchmark=missing)[
        "mfu"] == 1.0
    with pytest.raises(ValueError, match="benchmark: .*absent.json does not exist"):
        compare_with_measured(p, {"tiny": 60.0}, benchmark=missing)
    with pytest.raises(ValueError, match=r"measured_seconds: runs \['other'\] are not in the "
                                         r"plan; allowed: \['tiny'\]"):
        compare_with_measured(p, {"other": 1.0}, peak_flops=1e11, mfu=0.5)
    with pytest.raises(ValueError, match=r"measured_seconds\['tiny'\]: must be a finite"):
        compare_with_measured(p, {"tiny": 0}, peak_flops=1e11, mfu=0.5)


def test_cli_prints_a_table_and_strict_json(capsys):
    argv = ["--variant", "B/16", "--steps", "90000", "--batch", "4096", "--accelerator", "h100",
            "--devices", "8", "--count", "3", "--no-memory"]
    assert cp.main(argv) == 0
    table = capsys.readouterr().out
    flops = training_flops("B/16", 224, 4096 * 90_000, num_classes=1000)
    device_hours = 3 * flops / (989e12 * 0.4) / 3600
    assert "B/16" in table and "total" in table and "8 x H100" in table
    assert f"{device_hours:,.1f}" in table
    assert "MFU 0.40 (assumed" in table and "memory: not planned" in table
    assert cp.main(argv + ["--json"]) == 0
    data = strict_json(json.loads(capsys.readouterr().out))
    assert data["totals"]["runs"] == 3
    assert data["totals"]["device_hours"] == pytest.approx(device_hours, rel=1e-12)
    assert data["accelerator"]["name"] == "h100" and data["runs"][0]["fits"] is None


def test_cli_with_memory_and_errors(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cp, "plans_in_subprocess", _fake_planner(calls))
    assert cp.main(["--variant", "Ti/16", "--steps", "10", "--batch", "64", "--devices", "4",
                    "--optimizer", "adafactor_bv", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(calls) == 1 and calls[0][1] == 4
    assert calls[0][0][0]["optimizer"] == "adafactor_bv"
    assert data["steps"][0]["total_bytes"] == 1000 + 16 * 2 ** 20 and data["totals"]["all_fit"]
    assert cp.main(["--variant", "Ti/16", "--steps", "10", "--batch", "64", "--devices", "3",
                    "--no-memory"]) == 2
    assert "batch_size: 64 does not split evenly" in capsys.readouterr().err
    assert cp.main(["--variant", "Ti/16", "--steps", "10", "--batch", "64",
                    "--optimizer", "sgd", "--no-memory"]) == 2
    assert "optimizer: 'sgd' is not allowed" in capsys.readouterr().err
