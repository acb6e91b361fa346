"""The full profile's design and its plan: every run a valid spec, the design's invariants (equal
training FLOPs across shapes, 10% cooldowns, Adafactor's cap passed), its cost on one host, and
``reproduce --plan``."""
import json
import subprocess
import sys

import pytest
from jpeg_datasets import make_image_folder, prepare_folder_dataset

from vitlib.analysis.compute_plan import plan
from vitlib.configs import load_config, set_fields
from vitlib.models import vit_config
from vitlib.models.counting import count_flops
from vitlib.study import full_profile, reproduce
from vitlib.study.findings import Findings
from vitlib.study.findings_report import render
from vitlib.study.full_setup import full_setup
from vitlib.study.reproduce import main
from vitlib.study.results import repo_root


def test_every_notebook_plans_valid_runs_and_01_trains_nothing():
    assert full_profile.runs_of("01") == []
    for notebook in full_profile.NOTEBOOKS:
        runs = full_profile.runs_of(notebook)
        assert runs and len({r.name for r in runs}) == len(runs), notebook
        assert all(r.batch_size == 4096 for r in runs)
    with pytest.raises(ValueError, match="notebook: '07' is not allowed"):
        full_profile.runs_of("07")


def test_the_shape_study_trains_every_shape_for_the_same_flops():
    shapes = [r for r in full_profile.runs_of("06")
              if r.name.startswith(("shape", "best scale-up"))]
    flops = [3 * count_flops(r.config()) * r.images for r in shapes]  # the zoo's training count
    assert len(shapes) == 9 + 2  # every shape once, the two compared shapes on the other seeds
    assert max(flops) / min(flops) < 1.001


def test_cooldowns_are_their_fraction_of_each_length_and_adafactor_passes_its_cap():
    fractions = {"03": 0.1, "05": full_profile.STUDIES["05"]["cooldown_fraction"]}
    for notebook, fraction in fractions.items():
        for run in full_profile.runs_of(notebook):
            if "cooldown@" in run.name:
                label = run.name.split("cooldown@")[1]  # "15k" or "12500"
                length = int(label[:-1]) * 1000 if label.endswith("k") else int(label)
                assert run.steps == round(length * fraction), run.name
    # 1 - (t+1)^-0.8 reaches 0.999 at t + 1 = 1000^(1/0.8)
    cap_step = 1000 ** (1 / 0.8)
    assert all(r.steps > 3 * cap_step for r in full_profile.runs_of("04"))


def test_the_whole_profile_is_about_a_week_on_one_h100_host():
    runs = [r for n in full_profile.NOTEBOOKS for r in full_profile.runs_of(n)]
    days = {name: plan(runs, name, devices=8, memory=False).totals["wall_hours"] / 24
            for name in ("h100", "a100")}
    assert 2 < days["h100"] <= 7 < days["a100"] < 21, days
    # the H100 / A100 ratio is their peak bf16 ratio: 989 / 312 TFLOP/s
    assert days["a100"] / days["h100"] == pytest.approx(989 / 312, rel=1e-3)


def test_plan_cli_prints_each_notebook_and_the_total(capsys):
    assert main(["--profile", "full", "--plan", "--no-memory", "--accelerator", "a100"]) == 0
    out = capsys.readouterr().out
    for notebook in full_profile.NOTEBOOKS:
        assert f"== notebook {notebook}" in out
    assert "== the whole full profile" in out and "A100" in out
    assert main(["--profile", "smoke", "--plan"]) == 2
    assert main(["--profile", "full", "--plan", "--accelerator", "tpu9"]) == 2
    assert "accelerator" in capsys.readouterr().err


def test_plan_cli_in_a_subprocess_with_memory_of_a_small_notebook():
    out = subprocess.run([sys.executable, "-m", "vitlib.study.reproduce", "--profile", "full",
                          "--plan", "--only", "04", "--devices", "8"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4 distinct compiled step(s)" in out.stdout and "fits" in out.stdout


def test_a_wired_notebook_reads_its_sizes_from_the_study_that_the_plan_prices():
    sizes = full_profile.study("03", {"lengths": [100, 200, 400], "seeds": [0]})
    runs = full_profile.runs_of("03", {"lengths": [100, 200, 400], "seeds": [0]})
    assert sizes["lengths"] == [100, 200, 400] and sizes["model"] == "S/16"
    steps = {r.name.split(" ", 1)[1]: r.steps for r in runs}
    # each length's cooldown is 10%; the main run trains to the longest's branch point
    assert steps["rsqrt main"] == 360 and len(steps) == len(runs)
    assert [steps[f"rsqrt cooldown@{n}"] for n in (100, 200, 400)] == [10, 20, 40]
    assert full_profile.STUDIES["03"]["lengths"] == [20_000, 40_000, 80_000]  # not mutated
    with pytest.raises(ValueError, match=r"full_study: \['steps'\] are not sizes of notebook 03"):
        full_profile.study("03", {"steps": 5})
    with pytest.raises(ValueError, match="notebook: '01' has no full profile sizes"):
        full_profile.study("01")


def test_plan_reads_the_notebooks_parameters_and_set_overrides_them(capsys):
    params = reproduce.notebook_parameters(repo_root() / "notebooks" / "03_schedules.ipynb")
    assert params["accelerator"] == "h100" and params["devices"] == 8
    assert params["full_study"] == {} and "profile" not in params  # not a literal there
    assert main(["--profile", "full", "--plan", "--no-memory", "--only", "03",
                 "--set", "devices=4", "--set", "full_study={'seeds': [0]}"]) == 0
    out = capsys.readouterr().out
    assert "on 4 x H100" in out and "S/16 linear 80k" in out
    linear = next(line for line in out.splitlines() if line.startswith("S/16 linear 80k"))
    assert linear.split()[-6] == "1"  # one seed
    assert main(["--profile", "full", "--plan", "--set", "devices"]) == 2
    assert "--set: 'devices' is not allowed" in capsys.readouterr().err


def test_set_values_are_literals_or_strings_and_tuples_become_lists():
    assert reproduce.parse_sets(["a=1", "b=/data/tfds", "c=('x', (1, 2))", "d={'k': (3,)}"]) == {
        "a": 1, "b": "/data/tfds", "c": ["x", [1, 2]], "d": {"k": [3]}}
    with pytest.raises(ValueError, match="--set: profile is set by --profile"):
        reproduce.parse_sets(["profile=cpu"])
    with pytest.raises(ValueError, match="--set: '1x=2' is not allowed"):
        reproduce.parse_sets(["1x=2"])


@pytest.fixture(scope="module")
def imagenets(tmp_path_factory):
    """A data dir holding a tiny 'imagenet2012' (train, validation) and one without it."""
    root = tmp_path_factory.mktemp("imagenets")
    folder = make_image_folder(root / "images", classes=2, per_class=3,
                               splits=("train", "validation"), sizes=(16, 24))
    prepare_folder_dataset(folder, root / "with", "imagenet2012")
    (root / "empty").mkdir()
    return root


def test_full_setup_finds_the_upstream_and_gives_the_papers_recipe(imagenets):
    setup = full_setup("auto", str(imagenets / "with"))
    assert setup.upstream == "imagenet2012"  # no imagenet21k there
    o = setup.overrides()
    assert (o["dataset"], o["train_split"], o["eval_splits"]) == (
        "imagenet2012", "train[:99%]", ("test=validation", "minival=train[99%:]"))
    assert (o["input.pipeline"], o["input.crop"], o["input.min_area"], o["image_size"]) == (
        "grain", "inception", 0.05, 224)
    assert (o["loss"], o["model.head_bias_init"], o["model.dtype"], o["model.pool_type"]) == (
        "sigmoid", -6.9, "bfloat16", "map")
    assert "paper" in o["fewshot.suite"] and setup.overrides(fewshot=False)["fewshot.suite"] == ()
    assert setup.transfer_keys(10) == ("fewshot_imagenet2012_10shot",
                                       "fewshot_imagenet2012_minival_10shot")
    assert "ImageNet-1k" in setup.caveat()
    base = load_config("paper_b16")
    assert set_fields(base, o).input.pipeline == "grain"  # every key is a config field
    with pytest.raises(ValueError, match="upstream: 'auto' found neither.*empty"):
        full_setup("auto", str(imagenets / "empty"))
    with pytest.raises(Exception, match="imagenet21k"):
        full_setup("imagenet21k", str(imagenets / "empty"))
    with pytest.raises(ValueError, match=r"full_data: \['colour'\] are not allowed"):
        full_setup("imagenet2012", str(imagenets / "with"), colour=1)
    with pytest.raises(ValueError, match="devices: 0 is not allowed"):
        full_setup("imagenet2012", str(imagenets / "with"), devices=0)
    with pytest.raises(ValueError, match="accelerator"):
        full_setup("imagenet2012", str(imagenets / "with"), accelerator="tpu9")


def test_a_claim_carries_the_notebooks_caveat_into_findings_md(tmp_path):
    findings = Findings("09_demo", "full", caveat="upstream is ImageNet-1k")
    findings.claim("s", paper="p", measured=1.0, tolerance=0.1, verdict="holds")
    assert findings.claims[0]["caveat"] == "upstream is ImageNet-1k"
    assert "*Caveat: upstream is ImageNet-1k.*" in render([{
        "notebook": "09_demo", "profile": "full", "claims": findings.claims, "checks": []}], "x")


def test_cpu_plan_prices_the_cached_runs_beside_their_measured_times(tmp_path, monkeypatch,
                                                                     capsys):
    """Three cached runs (digits, 28 px) of two shapes: grouped by shape and length, FLOPs by
    the zoo's count (3 x forward x images), estimated at the benchmark's peak x MFU, measured =
    the recorded training seconds."""
    from vitlib.study.measured_plan import cpu_plan
    from vitlib.train.workdir import plain

    folder = tmp_path / "runs" / "cpu" / "05_scaling"
    config = load_config("quickstart")
    runs = [("Atto/7", 30, 2.0), ("Atto/7", 30, 3.0), ("Femto/7", 60, 5.0)]
    for i, (variant, steps, seconds) in enumerate(runs):
        c = set_fields(config, {"model.variant": variant, "dataset": "digits",
                                "batch_size": 32, "image_size": 0})
        (folder / f"run-{i}").mkdir(parents=True)
        (folder / f"run-{i}" / "result.json").write_text(json.dumps(
            {"config": plain(c), "steps_this_run": steps, "train_time_s": seconds}))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"matmul_peak_gflops": 100.0, "configs": {"C": {
        "model_fwd_gflop_per_image": 0.01, "median_img_s": {"vitlib_train": 1000.0}}}}))
    report = cpu_plan(folder, benchmark=bench)
    rows = {r["name"].split(" ")[0]: r for r in report["rows"]}
    assert report["runs"] == 3 and set(rows) == {"Atto/7", "Femto/7"}
    mfu = 3 * 0.01 * 1000 / 100.0  # the benchmark's train rate over its matmul peak
    for variant, steps, count, seconds in (("Atto/7", 30, 2, 5.0), ("Femto/7", 60, 1, 5.0)):
        flops = 3 * count_flops(vit_config(variant, image_size=28, num_classes=10)) * 32 * steps
        assert rows[variant]["flops"] == pytest.approx(count * flops, rel=1e-9)
        assert rows[variant]["estimated_seconds"] == pytest.approx(
            count * flops / (100e9 * mfu), rel=1e-9)
        assert rows[variant]["measured_seconds"] == seconds
    monkeypatch.setenv("VITLIB_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["--profile", "cpu", "--plan", "--only", "05", "04"]) == 0
    out = capsys.readouterr().out
    assert "3 runs: estimated" in out and "measured 0.2 min" in out
    assert "== notebook 04" in out and "no finished runs cached" in out


def _device_report(folder, name, accelerator, date, mfus, tiny=False):
    rows = [{"group": "main", "mfu": m} for m in mfus] + [{"group": "A/B", "mfu": 0.99},
                                                         {"group": "main", "skipped": "no fit"}]
    (folder / f"accelerator_{name}.json").write_text(json.dumps(
        {"tiny": tiny, "date": date, "rows": rows,
         "device": {"accelerator": accelerator, "device_kind": f"kind of {name}"}}))


def test_plan_prices_at_the_mfu_a_device_check_measured_else_says_it_assumes(
        tmp_path, monkeypatch, capsys):
    from vitlib.analysis.accelerators import DEFAULT_MFU
    from vitlib.study import device_check

    monkeypatch.setattr(device_check, "BENCHMARKS", tmp_path)
    assert device_check.measured_mfu("h100") is None
    args = ["--profile", "full", "--plan", "--no-memory", "--only", "03", "--accelerator", "h100"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"h100: MFU {DEFAULT_MFU:.2f} assumed: no device check of h100" in out
    assert f"at MFU {DEFAULT_MFU:.2f} (assumed" in out
    # Reports: an older H100 one, the newest (its main rows' median: 0.3), a tiny one and an A100
    # one, neither of which counts for the H100.
    _device_report(tmp_path, "h100-old", "h100", "2026-01-01", [0.5, 0.5])
    _device_report(tmp_path, "h100", "h100", "2026-02-01", [0.2, 0.3, 0.45])
    _device_report(tmp_path, "h100-tiny", "h100", "2026-03-01", [0.01], tiny=True)
    _device_report(tmp_path, "a100", "a100", "2026-03-01", [0.6])
    measured = device_check.measured_mfu("h100")
    assert (measured.mfu, measured.rows) == (0.3, 3)
    assert "accelerator_h100.json (kind of h100, 2026-02-01)" in measured.source
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "h100: MFU 0.30 measured: the median of 3 main rows of accelerator_h100.json" in out
    assert "at MFU 0.30" in out and "(assumed" not in out
    # --mfu wins, and says so.
    assert main([*args, "--mfu", "0.25"]) == 0
    assert "h100: MFU 0.25 given (--mfu)" in capsys.readouterr().out


def test_the_whole_plan_has_a_grand_total_and_its_assumptions_once(capsys):
    assert main(["--profile", "full", "--plan", "--no-memory", "--only", "03", "06"]) == 0
    out = capsys.readouterr().out
    assert out.count("Assumptions") == 1 and out.index("Assumptions") > out.index("== the whole")
    total = out[out.index("== the whole full profile"):]
    lines = {line.split()[1]: line.split() for line in total.splitlines()
             if line.startswith("notebook ")}
    [grand] = [line.split() for line in total.splitlines() if line.startswith("total ")]
    assert set(lines) == {"03", "06"}
    # The grand total is the sum of the notebooks' rows (runs and device-hours).
    assert int(grand[1]) == sum(int(v[2]) for v in lines.values())
    assert float(grand[3].replace(",", "")) == pytest.approx(
        sum(float(v[4].replace(",", "")) for v in lines.values()), abs=0.11)
    # 06's shapes are S/16 with a changed shape: the table says what the star means.
    assert "S/16*" in out and "* the named variant with a changed shape" in out
