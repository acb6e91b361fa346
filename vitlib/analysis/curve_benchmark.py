"""The learning-curve extrapolation benchmark of "Revisiting Neural Scaling Laws in Language and
Vision" (Alabdulmohsin et al. 2022): fit each curve's ``Training == 1`` points with every
estimator of ``learning_curves`` and score the RMSE of log(predicted) - log(actual) on its
``Training == 0`` points.

Input: a CSV with the columns ``Domain,Task,Model,Seen Examples,Loss,Training`` (default: the
shipped ``paper_data/benchmark.vision.csv``). Exact duplicate rows are dropped (every LM curve of
``benchmark.lang.csv`` appears four times) and each curve is sorted by x. M4's upper bound on the
error is 1 for the error-rate domains (``IC``, ``BB``) and none for losses (``NMT``, ``LM``), as
in the paper.

    python -m vitlib.analysis.curve_benchmark --json [--csv FILE] [--estimators m1,m4]
        [--domain IC]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from vitlib.analysis import learning_curves

COLUMNS = ("Domain", "Task", "Model", "Seen Examples", "Loss", "Training")
DEFAULT_CSV = Path(__file__).parent / "paper_data" / "benchmark.vision.csv"
UP_BOUND = {"IC": 1.0, "BB": 1.0}  # error rates; other domains are losses with no upper end


def read_curves(path) -> dict:
    """{(domain, task, model): (x_fit, e_fit, x_test, e_test)} from a benchmark CSV, rows
    deduplicated and each part sorted by x."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"csv: {str(path)!r} is not a file; give a benchmark CSV with columns "
                         f"{','.join(COLUMNS)}")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"csv: {str(path)!r} is empty; expected columns {','.join(COLUMNS)}")
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(f"csv: {str(path)!r} lacks column(s) {missing}; required: "
                             f"{','.join(COLUMNS)}")
        at = [header.index(c) for c in COLUMNS]
        rows = list(dict.fromkeys(tuple(row[i] for i in at) for row in reader if row))
    parts: dict = {}
    for line, (domain, task, model, x, loss, training) in enumerate(rows, start=2):
        try:
            xv, ev = float(x), float(loss)
        except ValueError:
            raise ValueError(f"csv: row {line} has Seen Examples {x!r} / Loss {loss!r}; both "
                             f"must be numbers") from None
        if training not in ("0", "1"):
            raise ValueError(f"csv: row {line} has Training {training!r}; allowed: 0 or 1")
        parts.setdefault((domain, task, model), ([], []))[int(training == "1")].append((xv, ev))
    curves = {}
    for key, (test, train) in parts.items():
        train, test = sorted(train), sorted(test)
        curves[key] = (np.array([p[0] for p in train]), np.array([p[1] for p in train]),
                       np.array([p[0] for p in test]), np.array([p[1] for p in test]))
    return curves


def split_at_half(x, e) -> tuple:
    """One learning curve split as the laptop study scores it: fit on the points whose x is at
    most half the curve's largest x, extrapolate to the rest. Returns (x_fit, e_fit, x_test,
    e_test) sorted by x, the layout of ``read_curves``."""
    x, e = np.asarray(x, float).ravel(), np.asarray(e, float).ravel()
    if x.shape != e.shape or x.size < 2:
        raise ValueError(f"x, e: need one error per x, at least 2 points, got {x.size} and {e.size}")
    if not (np.isfinite(x).all() and (x > 0).all()):
        raise ValueError("x: examples seen must be finite and positive")
    order = np.argsort(x, kind="stable")
    x, e = x[order], e[order]
    fit = x <= x[-1] / 2
    return x[fit], e[fit], x[~fit], e[~fit]


def parse_estimators(text: str) -> list:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in learning_curves.ESTIMATORS]
    if bad or not names:
        raise ValueError(f"estimators: {text!r} is not allowed; give a comma-separated subset of "
                         f"{','.join(learning_curves.ESTIMATORS)}")
    return names


def log_rmse(law, x, e) -> float:
    return float(np.sqrt(np.mean((np.log(law.predict(x)) - np.log(e)) ** 2)))


def run(path=DEFAULT_CSV, estimators: Sequence[str] = learning_curves.ESTIMATORS,
        domain: Optional[str] = None) -> list:
    """One record per (domain, task, model, estimator): ``log_rmse`` on the held-out points
    (None, with ``error``, where the fit failed or a curve has no fit / no test points)."""
    curves = read_curves(path)
    domains = sorted({k[0] for k in curves})
    if domain is not None and domain not in domains:
        raise ValueError(f"domain: {domain!r} is not in {str(path)!r}; allowed: {domains}")
    records = []
    for (dom, task, model), (xf, ef, xt, et) in sorted(curves.items()):
        if domain is not None and dom != domain:
            continue
        records += [score_curve((dom, task, model), (xf, ef, xt, et), name)
                    for name in estimators]
    return records


def score_curve(key: tuple, points: tuple, name: str) -> dict:
    """The record of one (curve, estimator): ``name`` fitted on the curve's fit points and
    scored (log-RMSE) on its test points; ``log_rmse`` None with ``error`` where it fails."""
    (dom, task, model), (xf, ef, xt, et) = key, points
    record = {"domain": dom, "task": task, "model": model, "estimator": name,
              "n_fit": int(xf.size), "n_test": int(xt.size), "log_rmse": None}
    try:
        if xt.size == 0:
            raise ValueError("no Training == 0 points to score")
        law = learning_curves.fit(xf, ef, name, up_bound=UP_BOUND.get(dom))
        score = log_rmse(law, xt, et)
        if not np.isfinite(score):
            raise ValueError("non-finite prediction")
        record.update(log_rmse=score, params=law.params)
    except (ValueError, RuntimeError, FloatingPointError) as err:
        record["error"] = str(err)
    return record


def summary(records: list) -> dict:
    """Per estimator: the median log-RMSE and the paper's win rate (scores cut to 3 decimals,
    a failed fit counting as 1, ties sharing the win)."""
    names = list(dict.fromkeys(r["estimator"] for r in records))
    by_curve: dict = {}
    for r in records:
        by_curve.setdefault((r["domain"], r["task"], r["model"]), {})[r["estimator"]] = \
            r["log_rmse"]
    wins = dict.fromkeys(names, 0.0)
    for scores in by_curve.values():
        cut = {n: int((1.0 if scores.get(n) is None else scores[n]) * 1000) / 1000
               for n in names}
        best = min(cut.values())
        winners = [n for n in names if cut[n] == best]
        for n in winners:
            wins[n] += 1.0 / len(winners)
    out = {}
    for n in names:
        scores = [r["log_rmse"] for r in records if r["estimator"] == n
                  and r["log_rmse"] is not None]
        out[n] = {"median_log_rmse": float(np.median(scores)) if scores else None,
                  "failed": sum(1 for r in records if r["estimator"] == n
                                and r["log_rmse"] is None),
                  "win_rate": wins[n] / max(len(by_curve), 1)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.analysis.curve_benchmark",
        description="Extrapolation RMSE (log space) of learning-curve estimators on the "
                    "Revisiting-scaling-laws benchmark or any CSV with its columns.")
    parser.add_argument("--csv", default=str(DEFAULT_CSV),
                        help=f"benchmark CSV with columns {','.join(COLUMNS)} (default: the "
                             "shipped vision benchmark)")
    parser.add_argument("--estimators", default=",".join(learning_curves.ESTIMATORS),
                        help=f"comma-separated subset of {','.join(learning_curves.ESTIMATORS)}")
    parser.add_argument("--domain", default=None, help="only this Domain (e.g. IC, NMT)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: records and summary")
    args = parser.parse_args(argv)
    try:
        names = parse_estimators(args.estimators)
        records = run(args.csv, names, args.domain)
    except ValueError as err:
        message = str(err)
        for field in ("csv", "estimators", "domain"):
            if message.startswith(f"{field}:"):
                message = f"--{field}{message[len(field):]}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    result = {"csv": args.csv, "records": records, "summary": summary(records)}
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(f"{'estimator':<10} {'median log-RMSE':>16} {'win rate':>9} {'failed':>7}")
        for name, s in result["summary"].items():
            med = "-" if s["median_log_rmse"] is None else f"{s['median_log_rmse']:.4f}"
            print(f"{name:<10} {med:>16} {s['win_rate']:>9.3f} {s['failed']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
