"""Accelerator table and budget units against hand-computed values (vendor peaks x seconds x
MFU) and the error messages of bad inputs."""
import numpy as np
import pytest

from vitlib.analysis import accelerators as acc

DAY, HOUR = 86_400.0, 3_600.0


def test_vendor_peaks_and_memory():
    # Dense bf16 peaks (TFLOP/s) and memory as the vendors state them.
    peaks = {"h100": 989, "a100": 312, "tpuv4": 275, "tpuv5e": 197, "tpuv3": 123,
             "tpuv3-core": 61.5}
    for name, tflops in peaks.items():
        assert acc.accelerator(name).peak_flops == pytest.approx(tflops * 1e12, rel=1e-12)
    assert acc.accelerator("h100").memory_bytes == 80e9
    assert acc.accelerator("tpuv4").memory_bytes == 32 * 2 ** 30
    assert acc.accelerator("tpuv3-core").memory_bytes == 16 * 2 ** 30  # half a 32 GiB chip
    assert acc.DEFAULT_MFU == 0.4


def test_budget_units_against_hand_computed_flops():
    # The paper's unit: one TPUv3 core-day at MFU 0.4 = 61.5e12 x 86,400 x 0.4 = 2.12544e18.
    assert acc.flops_of_budget(1, "tpuv3-core-days") == pytest.approx(2.12544e18, rel=1e-12)
    assert acc.flops_of_budget(50, "h100-days", mfu=0.5) == pytest.approx(
        50 * DAY * 989e12 * 0.5, rel=1e-12)
    assert acc.flops_of_budget(2, "a100-hours") == pytest.approx(2 * HOUR * 312e12 * 0.4,
                                                                 rel=1e-12)
    assert acc.flops_of_budget(3, "tpuv3-days") == pytest.approx(
        2 * acc.flops_of_budget(3, "tpuv3-core-days"), rel=1e-12)  # two cores per chip
    assert acc.flops_of_budget(7e20, "flops", mfu=0.1) == 7e20  # FLOPs ignore the MFU
    assert acc.flops_of_budget(1, "H100-Days") == acc.flops_of_budget(1, "h100-days")
    np.testing.assert_allclose(acc.flops_of_budget([1, 10], "tpuv4-hours"),
                               [HOUR * 275e12 * 0.4, 10 * HOUR * 275e12 * 0.4], rtol=1e-12)
    # 1 H100-day = 989 / 61.5 TPUv3 core-days at any common MFU.
    assert acc.budget_of_flops(acc.flops_of_budget(1, "h100-days", 0.3), "tpuv3-core-days",
                               0.3) == pytest.approx(989 / 61.5, rel=1e-12)
    assert acc.unit_label("tpuv3-core-days") == "TPUv3-core-days"
    assert acc.unit_label("flops") == "FLOPs"


def test_device_seconds():
    one_hour = 989e12 * 0.4 * HOUR
    assert acc.device_seconds(one_hour, "h100") == pytest.approx(HOUR, rel=1e-12)
    assert acc.device_seconds(one_hour, "h100", devices=8) == pytest.approx(HOUR / 8, rel=1e-12)
    assert acc.device_seconds(61.5e12, "tpuv3-core", mfu=1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("call, words", [
    (lambda: acc.accelerator("h200"), ["accelerator", "'h200'", "h100", "tpuv3-core"]),
    (lambda: acc.flops_of_budget(1, "h200-days"), ["unit", "'h200-days'", "flops", "h100"]),
    (lambda: acc.flops_of_budget(1, "h100-weeks"), ["unit", "'h100-weeks'", "-days", "-hours"]),
    (lambda: acc.flops_of_budget(-5, "h100-days"), ["budget", "-5", "> 0"]),
    (lambda: acc.flops_of_budget(float("nan"), "flops"), ["budget", "nan"]),
    (lambda: acc.flops_of_budget(1, "h100-days", mfu=1.5), ["mfu", "1.5", "(0, 1]"]),
    (lambda: acc.flops_of_budget(1, "h100-days", mfu=0), ["mfu", "0"]),
    (lambda: acc.device_seconds(1e18, "h100", devices=0), ["devices", "0", ">= 1"]),
    (lambda: acc.device_seconds(-1.0, "h100"), ["flops", "-1.0"]),
])
def test_errors_name_field_value_and_allowed(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for word in words:
        assert word in str(err.value)
