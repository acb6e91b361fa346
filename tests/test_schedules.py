"""Learning-rate schedules against their closed forms, cooldown branches, validation."""
import math

import numpy as np
import pytest

from vitlib.optim.schedules import cooldown_branch, lr_integral, make_schedule

LR, TOTAL, WARMUP, TIMESCALE = 8e-4, 1000, 100, 50


def _values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def _expected_rsqrt(step):
    if step < WARMUP:
        return LR * step / WARMUP
    return LR / math.sqrt(1 + (step - WARMUP) / TIMESCALE)


def test_warmup_then_rsqrt():
    schedule = make_schedule(LR, TOTAL, "rsqrt", warmup_steps=WARMUP, timescale=TIMESCALE)
    steps = [0, 1, 50, 99, 100, 150, 300, 999]
    np.testing.assert_allclose(_values(schedule, steps), [_expected_rsqrt(s) for s in steps],
                               rtol=1e-6)
    np.testing.assert_allclose(float(schedule(WARMUP + TIMESCALE)), LR / math.sqrt(2), rtol=1e-6)


def test_linear_cosine_constant():
    steps = [0, 50, 100, 400, 700, 1000]
    linear = make_schedule(LR, TOTAL, "linear", warmup_steps=WARMUP, end_value=1e-5)
    cosine = make_schedule(LR, TOTAL, "cosine", warmup_steps=WARMUP)
    constant = make_schedule(LR, TOTAL, "constant", warmup_steps=WARMUP)
    for s, lin, cos, const in zip(steps, _values(linear, steps), _values(cosine, steps),
                                  _values(constant, steps)):
        if s < WARMUP:
            assert lin == pytest.approx(LR * s / WARMUP) == cos == const
            continue
        progress = (s - WARMUP) / (TOTAL - WARMUP)
        assert lin == pytest.approx(LR + (1e-5 - LR) * progress, rel=1e-5)
        assert cos == pytest.approx(0.5 * LR * (1 + math.cos(math.pi * progress)), rel=1e-5,
                                    abs=1e-12)
        assert const == pytest.approx(LR)


def test_cooldown_is_linear_to_zero_over_the_last_steps():
    cooldown = 200
    plain = make_schedule(LR, TOTAL, "rsqrt", warmup_steps=WARMUP, timescale=TIMESCALE)
    cooled = make_schedule(LR, TOTAL, "rsqrt", warmup_steps=WARMUP, timescale=TIMESCALE,
                           cooldown_steps=cooldown)
    for s in (0, 150, 799, 800, 850, 900, 999, 1000):
        factor = min(1.0, (TOTAL - s) / cooldown)
        assert float(cooled(s)) == pytest.approx(_expected_rsqrt(s) * factor, rel=1e-5, abs=1e-12)
    assert float(cooled(TOTAL)) == 0.0
    np.testing.assert_array_equal(_values(plain, range(800)), _values(cooled, range(800)))


@pytest.mark.parametrize("branch_step", [200, 500, 2000])
def test_cooldown_branch_equals_main_run_until_it_branches(branch_step):
    main = make_schedule(LR, 10_000, "rsqrt", warmup_steps=WARMUP, timescale=TIMESCALE,
                         cooldown_steps=1000)
    branch = cooldown_branch(LR, branch_step, 300, warmup_steps=WARMUP, timescale=TIMESCALE)
    before = range(0, branch_step + 1)
    np.testing.assert_array_equal(_values(branch, before), _values(main, before))
    # Then straight down to zero over the next 300 steps.
    at_branch = _expected_rsqrt(branch_step)
    for k in (1, 150, 299, 300):
        s = branch_step + k
        assert float(branch(s)) == pytest.approx(_expected_rsqrt(s) * (300 - k) / 300,
                                                 rel=1e-5, abs=1e-12)
    assert float(branch(branch_step)) == pytest.approx(at_branch, rel=1e-6)


@pytest.mark.parametrize("kwargs, field", [
    (dict(kind="step"), "schedule.kind"),
    (dict(warmup_steps=600, cooldown_steps=500),
     "schedule.warmup_steps \\+ schedule.cooldown_steps: 600 \\+ 500"),
    (dict(warmup_steps=-1), "schedule.warmup_steps"),
    (dict(cooldown_steps=-5), "schedule.cooldown_steps"),
    (dict(timescale=0), "schedule.timescale"),
    (dict(end_value=-1.0), "schedule.end_value"),
])
def test_bad_schedules_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_schedule(LR, TOTAL, **{"kind": "rsqrt", **kwargs})


def test_bad_totals_and_branches():
    with pytest.raises(ValueError, match="lr"):
        make_schedule(-1.0, TOTAL)
    with pytest.raises(ValueError, match="total_steps"):
        make_schedule(LR, 0)
    with pytest.raises(ValueError, match="kind.*linear"):
        cooldown_branch(LR, 500, 100, kind="linear")
    with pytest.raises(ValueError, match="branch_step"):
        cooldown_branch(LR, 50, 100, warmup_steps=100)


def test_lr_integral_matches_closed_forms():
    assert lr_integral(2e-3, 100, "constant") == pytest.approx(0.2, rel=1e-6)
    # warmup 0..9 sums lr * (0 + 1 + ... + 9) / 10, then 90 steps at lr
    assert lr_integral(1.0, 100, "constant", warmup_steps=10) == pytest.approx(4.5 + 90, rel=1e-6)
    # linear from 1 to 0 over 100 steps: sum of (1 - t / 100) for t < 100 = 50.5
    assert lr_integral(1.0, 100, "linear") == pytest.approx(50.5, rel=1e-6)
    t = np.arange(1000)
    rsqrt = (1.0 / np.sqrt(1.0 + t / 200)).sum()
    assert lr_integral(1.0, 1000, "rsqrt", timescale=200) == pytest.approx(rsqrt, rel=1e-6)
