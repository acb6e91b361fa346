"""The full profile's design and its plan: every run a valid spec, the design's invariants (equal
training FLOPs across shapes, 10% cooldowns, Adafactor's cap passed), its cost on one host, and
``reproduce --plan``."""
import subprocess
import sys

import pytest

from vitlib.analysis.compute_plan import plan
from vitlib.models.counting import count_flops
from vitlib.study import full_profile
from vitlib.study.reproduce import main


def test_every_notebook_plans_valid_runs_and_01_trains_nothing():
    assert full_profile.runs_of("01") == []
    for notebook in full_profile.NOTEBOOKS:
        runs = full_profile.runs_of(notebook)
        assert runs and len({r.name for r in runs}) == len(runs), notebook
        assert all(r.batch_size == 4096 for r in runs)
    with pytest.raises(ValueError, match="notebook: '07' is not allowed"):
        full_profile.runs_of("07")


def test_the_shape_study_trains_every_shape_for_the_same_flops():
    shapes = [r for r in full_profile.runs_of("06") if r.name.startswith("shape")]
    flops = [3 * count_flops(r.config()) * r.images for r in shapes]  # the zoo's training count
    assert len(shapes) == 5
    assert max(flops) / min(flops) < 1.001


def test_cooldowns_are_ten_percent_of_their_lengths_and_adafactor_passes_its_cap():
    for notebook in ("03", "05"):
        for run in full_profile.runs_of(notebook):
            if "cooldown@" in run.name:
                length = int(run.name.split("cooldown@")[1].rstrip("k")) * 1000
                assert run.steps == length // 10, run.name
    # 1 - (t+1)^-0.8 reaches 0.999 at t + 1 = 1000^(1/0.8)
    cap_step = 1000 ** (1 / 0.8)
    assert all(r.steps > 3 * cap_step for r in full_profile.runs_of("04"))


def test_the_whole_profile_is_days_not_weeks_on_one_host():
    runs = [r for n in full_profile.NOTEBOOKS for r in full_profile.runs_of(n)]
    days = {name: plan(runs, name, devices=8, memory=False).totals["wall_hours"] / 24
            for name in ("h100", "a100")}
    assert 2 < days["h100"] < days["a100"] < 14, days


def test_plan_cli_prints_each_notebook_and_the_total(capsys):
    assert main(["--profile", "full", "--plan", "--no-memory", "--accelerator", "a100"]) == 0
    out = capsys.readouterr().out
    for notebook in full_profile.NOTEBOOKS:
        assert f"== notebook {notebook}" in out
    assert "== the whole full profile" in out and "A100" in out
    assert main(["--profile", "cpu", "--plan"]) == 2
    assert main(["--profile", "full", "--plan", "--accelerator", "tpu9"]) == 2
    assert "accelerator" in capsys.readouterr().err


def test_plan_cli_in_a_subprocess_with_memory_of_a_small_notebook():
    out = subprocess.run([sys.executable, "-m", "vitlib.study.reproduce", "--profile", "full",
                          "--plan", "--only", "04", "--devices", "8"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4 distinct compiled step(s)" in out.stdout and "fits" in out.stdout
