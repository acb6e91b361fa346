"""The extrapolation benchmark CLI: reading, deduplication, scoring and one-line errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from vitlib.analysis import curve_benchmark as cb

LANG = str(cb.DEFAULT_CSV.parent / "benchmark.lang.csv")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vitlib.analysis.curve_benchmark", *args],
                          capture_output=True, text=True, timeout=120)


def test_reads_the_shipped_files_deduplicated_and_sorted():
    vision = cb.read_curves(cb.DEFAULT_CSV)
    assert len(vision) == 72  # 6 models x 12 tasks (SOURCES)
    assert sum(v[0].size for v in vision.values()) == 3902
    assert sum(v[2].size for v in vision.values()) == 14981
    assert all(np.all(np.diff(v[0]) > 0) for v in vision.values())
    lang = cb.read_curves(LANG)
    lm = [v for k, v in lang.items() if k[0] == "LM"]
    assert len(lm) == 5 and sum(v[0].size + v[2].size for v in lm) == 916 // 4


def test_log_rmse_by_hand(tmp_path):
    path = tmp_path / "c.csv"
    rows = [("T", "t", "m", x, 2.0 * x ** -0.5, 1) for x in (1.0, 2.0, 4.0, 8.0)]
    rows += [("T", "t", "m", 16.0, 0.6, 0), ("T", "t", "m", 32.0, 0.3, 0)]
    path.write_text("Domain,Task,Model,Seen Examples,Loss,Training\n" + "".join(
        ",".join(map(str, r)) + "\n" for r in rows * 2))  # duplicated rows are dropped
    (record,) = cb.run(path, ["m1"])
    expected = np.sqrt(np.mean([np.log(0.5 / 0.6) ** 2, np.log((2 / 32 ** 0.5) / 0.3) ** 2]))
    assert record["n_fit"] == 4 and record["log_rmse"] == pytest.approx(expected, rel=1e-9)


def test_split_at_half_fits_up_to_half_the_last_point_and_sorts():
    x = np.array([600.0, 40.0, 300.0, 301.0, 100.0])  # unsorted, one point exactly at half
    xf, ef, xt, et = cb.split_at_half(x, 1.0 / x)
    assert xf.tolist() == [40.0, 100.0, 300.0] and xt.tolist() == [301.0, 600.0]
    assert np.allclose(ef * xf, 1.0) and np.allclose(et * xt, 1.0)
    with pytest.raises(ValueError, match="x: examples seen must be finite and positive"):
        cb.split_at_half([0.0, 1.0], [0.5, 0.4])
    with pytest.raises(ValueError, match="x, e: need one error per x"):
        cb.split_at_half([1.0, 2.0, 3.0], [0.5, 0.4])


def test_cli_json_on_nmt():
    out = _cli("--csv", LANG, "--json", "--domain", "NMT", "--estimators", "m1,m2")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["records"]) == 10
    assert {r["estimator"] for r in result["records"]} == {"m1", "m2"}
    assert all(r["log_rmse"] > 0 for r in result["records"])
    assert set(result["summary"]) == {"m1", "m2"}


@pytest.mark.parametrize("args,flag,allowed", [
    (["--estimators", "m1,m9"], "--estimators", "m1,m2,m3,m4,double"),
    (["--csv", LANG, "--domain", "XX"], "--domain", "NMT"),
])
def test_cli_errors_are_one_line(args, flag, allowed):
    out = _cli(*args, "--json")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and allowed in lines[0]


def test_cli_missing_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Domain,Task,Model,Loss,Training\n")
    out = _cli("--csv", str(path), "--json")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Seen Examples" in lines[0]
