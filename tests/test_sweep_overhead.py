"""benchmarks/sweep_overhead.py's arithmetic, worked out here by hand: each run is compared with
the pure step timings taken just before and just after it (overhead = 1 - steps x step time /
wall time), and with the train loop's pace against the pure step (overhead = 1 - train loop /
wall / pace). No timing is measured or asserted."""
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sweep_overhead(monkeypatch, tmp_path):
    # The script points VITLIB_COMPILATION_CACHE at an empty folder when imported; setting it
    # here first makes the fixture restore the session's value afterwards.
    monkeypatch.setenv("VITLIB_COMPILATION_CACHE", str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("sweep_overhead", None)
    yield importlib.import_module("sweep_overhead")
    sys.modules.pop("sweep_overhead", None)


def test_each_run_gets_the_timings_around_it(sweep_overhead):
    # Timings after runs 0, 1, 2 of one mode and runs 0, 1 of the next, in that order.
    after = [0.10, 0.12, 0.08, 0.20, 0.30]
    assert sweep_overhead.bracketing_step_times(after) == pytest.approx(
        [0.10, 0.11, 0.10, 0.14, 0.25])


def test_overheads_by_hand(sweep_overhead):
    runs = [{"wall_s": 50.0, "config": None}, {"wall_s": 40.0}, {"wall_s": 32.0}]
    summary = sweep_overhead.summarize(runs, steps=300, step_s=[0.1, 0.12, 0.1])
    # 1 - 300 x 0.1 / 50 = 40%; 1 - 36 / 40 = 10%; 1 - 30 / 32 = 6.25%
    assert summary["overhead_per_run_pct"] == pytest.approx([40.0, 10.0, 6.25])
    assert summary["median_overhead_pct"] == pytest.approx(10.0)
    assert summary["first_run_overhead_pct"] == pytest.approx(40.0)
    assert summary["sweep_wall_s"] == pytest.approx(122.0)
    assert summary["sweep_overhead_pct"] == pytest.approx(100 * (1 - 96 / 122))
    assert "config" not in summary["runs"][0]


def test_overheads_from_the_loops_pace_by_hand(sweep_overhead):
    # A run of 40 s whose train loop took 36 s, at a loop 1.2x the pure step's time per step:
    # 30 s of pure steps, so 25% overhead; a loop as fast as the pure step: 10%.
    runs = [{"wall_s": 40.0, "train_time_s": 36.0}, {"wall_s": 20.0, "train_time_s": 18.0}]
    assert sweep_overhead.overheads_from_pace(runs, 1.2) == pytest.approx([25.0, 25.0])
    assert sweep_overhead.overheads_from_pace(runs, 1.0) == pytest.approx([10.0, 10.0])


def test_pace_band_is_two_standard_errors(sweep_overhead):
    # mean 1.0; sample standard deviation sqrt(((-0.1)^2 + 0 + 0.1^2 + 0) / 3) = 0.0816...;
    # two standard errors: 2 x 0.0816 / sqrt(4) = 0.0816
    low, high = sweep_overhead.pace_band([0.9, 1.0, 1.1, 1.0])
    half = 2 * (0.02 / 3) ** 0.5 / 2
    assert (low, high) == pytest.approx((1.0 - half, 1.0 + half))
