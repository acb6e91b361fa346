"""``python -m vitlib.models.zoo``: its JSON against paper Table 2, and its errors."""
import json
import subprocess
import sys

from test_counting import TABLE2, _tolerance


def _zoo(*args):
    return subprocess.run([sys.executable, "-m", "vitlib.models.zoo", *args], capture_output=True,
                          text=True, timeout=120)


def test_json_lists_every_table2_row_matching_the_paper():
    result = _zoo("--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["variant"] for r in rows] == [t[0] for t in TABLE2]
    for row, (variant, params_m, gflops) in zip(rows, TABLE2):
        assert {"variant", "width", "depth", "mlp_dim", "heads", "patch", "params",
                "gflops"} <= set(row)
        assert abs(row["params"] / 1e6 - float(params_m)) <= _tolerance(params_m, 0.01), variant
        assert abs(row["gflops"] - float(gflops)) <= _tolerance(gflops, 0.02), variant


def test_selected_variants_and_image_size():
    result = _zoo("--json", "--image-size", "28", "Pico/4")
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["tokens"] == 49 and rows[0]["width"] == 64


def test_text_table_and_remainder_warning():
    result = _zoo("--image-size", "384", "g/14")
    assert result.returncode == 0
    assert "g/14" in result.stdout and "1408" in result.stdout
    assert "drops the last 6 pixel" in result.stderr


def test_bad_variant_prints_message_without_traceback_and_fails():
    result = _zoo("Q/16")
    assert result.returncode != 0
    assert "variant" in result.stderr and "'Q'" in result.stderr
    assert "Traceback" not in result.stderr


def test_patch_larger_than_image_is_an_error():
    result = _zoo("--image-size", "28", "B/32")
    assert result.returncode != 0 and "patch_size" in result.stderr
    assert "Traceback" not in result.stderr
