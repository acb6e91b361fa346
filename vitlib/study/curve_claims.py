"""Notebook 05's claims on real learning curves at the paper's scale: the Revisiting-paper
benchmark (``analysis.curve_benchmark``) scored once and cached, and the statistics its claims
read, each a pure function over that benchmark's records.

- ``scored_curves``: every (curve, estimator) fitted on the ``Training == 1`` points and scored
  on the ``Training == 0`` points (log-RMSE), plus the score of a fit to the first part of the
  ``Training == 1`` points on their last part (``holdout_log_rmse``, which chooses an estimator
  from the fit rows alone); cached as JSON keyed by the estimators, the curves, the hold-out
  fraction and a hash of the CSV.
- ``signed_rank``: a paired comparison over curves, decided by scipy's one-sided Wilcoxon
  signed-rank test in each direction; a part that could not reach ``alpha`` on the curves where
  the two differ says it is underpowered.
- ``best_share``: the share of curves on which an estimator scores lowest, by the paper's rule
  (scores cut to 3 decimals, a failed fit counting as 1, ties sharing the win), with a percentile
  bootstrap interval over curves.
- ``drop_past``: a curve's error drop from its last point at or below a threshold to its end.
- ``joint_bootstrap``: the joint law L(N, D) (``analysis.joint_law``) with bootstrap samples of
  any quantity derived from it (a prediction, a term).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

from vitlib.analysis import curve_benchmark, joint_law, learning_curves
from vitlib.files import write_json
from vitlib.study.findings import part

CACHE_VERSION = 1  # bump when the scoring changes: older cached records are not read back


# ---------------------------------------------------------------- the benchmark, cached

def _holdout_score(name, xf, ef, fraction, up_bound) -> Optional[float]:
    k = max(1, int(round(fraction * xf.size)))
    try:
        law = learning_curves.fit(xf[:-k], ef[:-k], name, up_bound=up_bound)
        score = curve_benchmark.log_rmse(law, xf[-k:], ef[-k:])
    except (ValueError, RuntimeError, FloatingPointError):
        return None
    return score if np.isfinite(score) else None


def score_curves(curves: Mapping, estimators: Sequence[str], holdout: float) -> list:
    """One record per (curve, estimator), as ``curve_benchmark.run`` gives, plus
    ``holdout_log_rmse``: the estimator fitted to all but the last ``holdout`` fraction of the
    ``Training == 1`` points and scored on that last part (None where it fails)."""
    records = []
    for (dom, task, model), (xf, ef, xt, et) in sorted(curves.items()):
        up = curve_benchmark.UP_BOUND.get(dom)
        for name in estimators:
            record = curve_benchmark.score_curve((dom, task, model), (xf, ef, xt, et), name)
            record.setdefault("params", None)
            record["holdout_log_rmse"] = _holdout_score(name, xf, ef, holdout, up)
            records.append(record)
    return records


def cache_key(path, estimators: Sequence[str], keys: Optional[Sequence], holdout: float) -> str:
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    spec = json.dumps({"estimators": list(estimators), "holdout": holdout, "version": CACHE_VERSION,
                       "curves": None if keys is None else sorted(map(list, keys))})
    return f"{digest}-{'_'.join(estimators)}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def scored_curves(cache_dir, path=curve_benchmark.DEFAULT_CSV,
                  estimators: Sequence[str] = learning_curves.ESTIMATORS,
                  keys: Optional[Sequence] = None, holdout: float = 0.25) -> list:
    """``score_curves`` over the curves of ``path`` (only ``keys``, (domain, task, model) tuples,
    when given), read back from ``cache_dir`` when this exact question was scored before."""
    names = curve_benchmark.parse_estimators(",".join(estimators))
    if not 0 < holdout < 1:
        raise ValueError(f"holdout: must be a fraction in (0, 1), got {holdout!r}")
    curves = curve_benchmark.read_curves(path)
    if keys is not None:
        keys = [tuple(k) for k in keys]
        missing = [k for k in keys if k not in curves]
        if missing:
            raise ValueError(f"keys: {missing} are not curves of {str(path)!r}")
        curves = {k: curves[k] for k in keys}
    file = Path(cache_dir) / f"{cache_key(path, names, keys, holdout)}.json"
    if file.is_file():
        return json.loads(file.read_text())["records"]
    records = score_curves(curves, names, holdout)
    write_json(file, {"csv": str(path), "estimators": names, "holdout": holdout,
                      "records": records})
    return records


def law_of(record: dict) -> learning_curves.LearningCurveLaw:
    """The fitted law of a scored record (for its predictions)."""
    return learning_curves.LearningCurveLaw(record["estimator"], record["params"], float("nan"))


def scores_by_curve(records: list, key: str = "log_rmse") -> dict:
    """{(domain, task, model): {estimator: score or None}}."""
    out: dict = {}
    for r in records:
        out.setdefault((r["domain"], r["task"], r["model"]), {})[r["estimator"]] = r[key]
    return out


# ---------------------------------------------------------------- statistics over curves

def signed_rank(reference, other, alpha: float, label: str) -> dict:
    """"``other`` extrapolates better than ``reference``", paired over curves: the differences
    ``reference - other`` (positive favours ``other``) under scipy's one-sided Wilcoxon
    signed-rank test (zero differences dropped, scipy's default). ``holds`` when the test that
    ``other`` is lower gives p < ``alpha`` and the median difference is > 0; ``does not hold``
    when the test the other way gives p < ``alpha``; else ``inconclusive``. A part record."""
    a, b = np.asarray(reference, float), np.asarray(other, float)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"reference, other: need one value per curve in each, at least 2, got "
                         f"shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("reference, other: values must be finite")
    d = a - b
    median = float(np.median(d))
    if np.all(d == 0):
        return part(label, median, "inconclusive", reason="nothing to test: the two give the "
                    "same score on every curve", p_value=None, p_other_way=None, curves=int(d.size))
    p_better = float(stats.wilcoxon(d, alternative="greater").pvalue)
    p_worse = float(stats.wilcoxon(d, alternative="less").pvalue)
    verdict = ("holds" if p_better < alpha and median > 0 else
               "does not hold" if p_worse < alpha else "inconclusive")
    differing = int(np.count_nonzero(d))
    floor = 0.5 ** differing  # the smallest one-sided p that many signed ranks can give
    reason = (f"underpowered: the two differ on only {differing} of {d.size} curves, where the "
              f"smallest p the test can give is {floor:.3g} >= {alpha}"
              if verdict == "inconclusive" and floor >= alpha else None)
    return part(label, median, verdict, reason=reason, p_value=p_better, p_other_way=p_worse,
                alpha=alpha, curves=int(d.size), differing=differing, wins=int((d > 0).sum()))


def _credits(scores: Mapping, names: Sequence[str]) -> np.ndarray:
    """Per curve (rows) and estimator (columns): 1 / (number of winners) for each winner."""
    rows = []
    for per_curve in scores.values():
        cut = np.array([int((1.0 if per_curve.get(n) is None else per_curve[n]) * 1000) / 1000
                        for n in names])
        won = cut == cut.min()
        rows.append(won / won.sum())
    return np.array(rows)


def best_share(scores: Mapping, names: Sequence[str], who: str, n_boot: int = 1000,
               seed: int = 0, level: float = 0.95) -> dict:
    """The share of curves on which ``who`` scores lowest among ``names`` (the paper's rule:
    scores cut to 3 decimals, failed fits count as 1, ties share the win), with a percentile
    bootstrap interval over curves. ``scores``: {curve: {estimator: score or None}}."""
    if who not in names:
        raise ValueError(f"who: {who!r} is not among {list(names)}")
    credits = _credits(scores, names)[:, list(names).index(who)]
    rng = np.random.default_rng(seed)
    boots = credits[rng.integers(0, credits.size, (n_boot, credits.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return {"share": float(credits.mean()), "interval": [float(np.percentile(boots, tail)),
                                                         float(np.percentile(boots, 100 - tail))],
            "curves": int(credits.size), "level": level}


def verdict_share(interval: Sequence[float], threshold: float) -> str:
    """``holds`` when the interval lies above ``threshold``, ``does not hold`` below it."""
    lo, hi = interval
    return "holds" if lo > threshold else "does not hold" if hi < threshold else "inconclusive"


def drop_past(x, e, threshold: float, end: Optional[float] = None) -> Optional[float]:
    """Error at the last point with x <= ``threshold`` minus the error at the last point with
    x <= ``end`` (the curve's last point when None); None when no point lies at or below the
    threshold or none lies past it (within ``end``)."""
    x, e = np.asarray(x, float), np.asarray(e, float)
    order = np.argsort(x, kind="stable")
    x, e = x[order], e[order]
    end = x[-1] if end is None else end
    below, upto = np.flatnonzero(x <= threshold), np.flatnonzero(x <= end)
    if below.size == 0 or upto.size == 0 or x[upto[-1]] <= threshold:
        return None
    return float(e[below[-1]] - e[upto[-1]])


def select_by_holdout(holdout_scores: Mapping[str, Optional[float]]) -> Optional[str]:
    """The estimator with the lowest hold-out score (None scores never chosen; ties: the first
    in order); None when every one failed."""
    valid = {n: s for n, s in holdout_scores.items() if s is not None}
    return min(valid, key=valid.get) if valid else None


# ---------------------------------------------------------------- the joint law

def joint_bootstrap(n, d, loss, derived: Mapping[str, Callable], n_boot: int, seed: int = 0,
                    level: float = 0.95, exclude: int = 0) -> dict:
    """``joint_law.fit`` on the runs and percentile intervals of its parameters and of each
    ``derived`` quantity (a function of the fitted ``JointLaw``), from ``n_boot`` resamples of
    the kept runs, each refitted from the full-data optimum (as ``joint_law.bootstrap``)."""
    n, d, loss = (np.asarray(v, float).ravel() for v in (n, d, loss))
    law = joint_law.fit(n, d, loss, exclude=exclude)
    p = law.params
    start = {"a": np.log(p["A"]), "b": np.log(p["B"]), "e": np.log(p["E"]),
             "alpha": p["alpha"], "beta": p["beta"]}
    keep = joint_law._kept(n, d, exclude)
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in (*joint_law.PARAMS, *derived)}
    for _ in range(int(n_boot)):
        idx = rng.choice(keep, size=keep.size, replace=True)
        boot = joint_law.fit(n[idx], d[idx], loss[idx], exclude=0, grid=start)
        for k in joint_law.PARAMS:
            samples[k].append(boot.params[k])
        for k, f in derived.items():
            samples[k].append(float(f(boot)))
    tail = 100 * (1 - level) / 2
    intervals = {k: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]
                 for k, v in samples.items()}
    return {"fit": law, "values": {**p, **{k: float(f(law)) for k, f in derived.items()}},
            "intervals": intervals, "n_boot": int(n_boot), "level": level}


def mean_interval(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    v = np.asarray(values, float)
    if v.ndim != 1 or v.size < 2 or not np.isfinite(v).all():
        raise ValueError(f"values: need at least 2 finite numbers, got {values!r}")
    boots = v[np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(boots, tail)), float(np.percentile(boots, 100 - tail))]
