"""The joint model x data law L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022,
"Approach 3"), fitted as Epoch AI's replication does (Besiroglu, Erdil, Barnett, You 2024,
"Chinchilla Scaling: A replication attempt", arXiv 2404.10102); numpy / scipy only.

- Parametrisation: A = exp(a), B = exp(b), E = exp(e), so that
  log L(N, D) = LSE(a - alpha log N, b - beta log D, e) (log-sum-exp).
- Objective: the summed Huber loss (delta 1e-3) between log L and that LSE, minimised by
  L-BFGS-B (exact gradient) from every point of a grid of starts; the lowest loss wins and is
  polished with tight stopping rules.
- Data: N = ``Model Size``, D = ``Training FLOP`` / (6 N), L = ``loss`` (the columns of Epoch's
  ``svg_extracted_data.csv``, shipped as ``paper_data/chinchilla_svg_extracted_data.csv``); the
  five runs with the fewest tokens per parameter are left out (``exclude``).
- Intervals: percentile bootstrap over runs, each resample refitted from the full-data optimum.

    python -m vitlib.analysis.joint_law --json [--csv FILE] [--n-boot 100] [--seed 0]
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy import optimize
from scipy.special import logsumexp, softmax

DEFAULT_CSV = Path(__file__).parent / "paper_data" / "chinchilla_svg_extracted_data.csv"
COLUMNS = ("Model Size", "Training FLOP", "loss")
HUBER_DELTA = 1e-3
EXCLUDE = 5
# Epoch's grid of starts (a, b, e, alpha, beta) is a, b in 0..25 step 5, e in -1..1 step 0.5,
# alpha, beta in 0..2 step 0.5 (4500 starts); the default here is a coarser subset of it.
EPOCH_GRID = {"a": np.arange(0, 30, 5.0), "b": np.arange(0, 30, 5.0),
              "e": np.arange(-1, 1.5, 0.5), "alpha": np.arange(0, 2.5, 0.5),
              "beta": np.arange(0, 2.5, 0.5)}
DEFAULT_GRID = {"a": np.array([5.0, 15.0]), "b": np.array([5.0, 15.0]),
                "e": np.array([-1.0, 0.5]), "alpha": np.array([0.0, 0.5]),
                "beta": np.array([0.0, 0.5])}
DEFAULT_N_BOOT = 50
PARAMS = ("E", "A", "B", "alpha", "beta")


@dataclasses.dataclass(frozen=True)
class JointLaw:
    params: dict  # E, A, B, alpha, beta
    loss: float  # the summed Huber loss at the optimum
    n_runs: int  # runs fitted

    def predict(self, n, d) -> np.ndarray:
        p = self.params
        return p["E"] + p["A"] / np.asarray(n, float) ** p["alpha"] + \
            p["B"] / np.asarray(d, float) ** p["beta"]


def read_runs(path=DEFAULT_CSV) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, L) of every run in an Epoch-style CSV; D = Training FLOP / (6 N)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"csv: {str(path)!r} is not a file; give a CSV with columns "
                         f"{','.join(COLUMNS)}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"csv: {str(path)!r} lacks column(s) {missing}; required: "
                             f"{','.join(COLUMNS)}")
        try:
            rows = np.array([[float(r[c]) for c in COLUMNS] for r in reader], dtype=float)
        except ValueError as err:
            raise ValueError(f"csv: a value in {list(COLUMNS)} is not a number ({err})") from None
    if rows.size == 0 or np.any(~np.isfinite(rows)) or np.any(rows <= 0):
        raise ValueError(f"csv: every {list(COLUMNS)} value must be finite and > 0, and there "
                         f"must be runs")
    n, flop, loss = rows.T
    return n, flop / (6.0 * n), loss


def _objective(theta, log_n, log_d, log_l, delta):
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    r = logsumexp(terms, axis=0) - log_l
    absr = np.abs(r)
    loss = np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta)).sum()
    w = softmax(terms, axis=0) * np.clip(r, -delta, delta)  # dHuber/dr x dLSE/dterm
    grad = np.array([w[0].sum(), w[1].sum(), w[2].sum(), -(w[0] * log_n).sum(),
                     -(w[1] * log_d).sum()])
    return float(loss), grad


def _minimise(starts, log_n, log_d, log_l, delta):
    """The lowest of L-BFGS-B runs from ``starts`` (scipy's default stopping rules), then
    polished with tight ones: the loss is about 1e-3 in all, so the default rules stop early
    and would leave a bootstrap refit next to its start."""
    best = None
    for start in starts:
        res = optimize.minimize(_objective, np.asarray(start, float), jac=True,
                                args=(log_n, log_d, log_l, delta), method="L-BFGS-B")
        if np.all(np.isfinite(res.x)) and (best is None or res.fun < best.fun):
            best = res
    polished = optimize.minimize(_objective, best.x, jac=True,
                                 args=(log_n, log_d, log_l, delta), method="L-BFGS-B",
                                 options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
    return polished if polished.fun <= best.fun else best


def _law(theta, loss, n_runs) -> JointLaw:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return JointLaw({"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)),
                     "alpha": alpha, "beta": beta}, float(loss), n_runs)


def _kept(n, d, exclude: int) -> np.ndarray:
    if not isinstance(exclude, (int, np.integer)) or exclude < 0 or exclude >= n.size - 5:
        raise ValueError(f"exclude: must be an integer in [0, {n.size - 6}], got {exclude!r}")
    order = np.argsort(d / n, kind="stable")
    return np.sort(order[exclude:])


def fit(n, d, loss, exclude: int = EXCLUDE, grid: dict = None,
        delta: float = HUBER_DELTA) -> JointLaw:
    """Fit L(N, D) to the runs, leaving out the ``exclude`` with the fewest tokens per parameter,
    from every start of ``grid`` ({a, b, e, alpha, beta: values}; default ``DEFAULT_GRID``,
    ``EPOCH_GRID`` for Epoch's full one)."""
    n, d, loss = (np.asarray(v, dtype=float).ravel() for v in (n, d, loss))
    if not n.shape == d.shape == loss.shape:
        raise ValueError(f"n, d, loss: lengths differ ({n.size}, {d.size}, {loss.size})")
    if np.any(~np.isfinite(np.concatenate([n, d, loss]))) or np.any(
            np.concatenate([n, d, loss]) <= 0):
        raise ValueError("n, d, loss: every value must be finite and > 0")
    if not delta > 0:
        raise ValueError(f"delta: must be > 0, got {delta!r}")
    grid = DEFAULT_GRID if grid is None else grid
    missing = [k for k in ("a", "b", "e", "alpha", "beta") if k not in grid]
    if missing:
        raise ValueError(f"grid: lacks {missing}; needs values for a, b, e, alpha, beta")
    keep = _kept(n, d, exclude)
    starts = itertools.product(*(np.atleast_1d(grid[k]) for k in
                                 ("a", "b", "e", "alpha", "beta")))
    best = _minimise(starts, np.log(n[keep]), np.log(d[keep]), np.log(loss[keep]), delta)
    return _law(best.x, best.fun, int(keep.size))


def bootstrap(n, d, loss, n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = 0.95,
              exclude: int = EXCLUDE, grid: dict = None, delta: float = HUBER_DELTA) -> dict:
    """``fit`` on all kept runs, and percentile intervals {param: (lo, hi)} at ``level`` from
    ``n_boot`` resamples of the kept runs (each refitted from the full-data optimum, as Epoch
    refitted theirs from one start). Returns {"fit", "intervals", "n_boot", "level"}."""
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 1:
        raise ValueError(f"n_boot: must be an integer >= 1, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    law = fit(n, d, loss, exclude, grid, delta)
    n, d, loss = (np.asarray(v, dtype=float).ravel() for v in (n, d, loss))
    keep = _kept(n, d, exclude)
    p = law.params
    start = [np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]]
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(int(n_boot)):
        idx = rng.choice(keep, size=keep.size, replace=True)
        res = _minimise([start], np.log(n[idx]), np.log(d[idx]), np.log(loss[idx]), delta)
        samples.append([_law(res.x, res.fun, idx.size).params[k] for k in PARAMS])
    values = np.asarray(samples)
    tail = 100 * (1 - level) / 2
    intervals = {k: (float(np.percentile(values[:, j], tail)),
                     float(np.percentile(values[:, j], 100 - tail)))
                 for j, k in enumerate(PARAMS)}
    return {"fit": law, "intervals": intervals, "n_boot": int(n_boot), "level": level}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.analysis.joint_law",
        description="Fit L(N, D) = E + A/N^alpha + B/D^beta as Epoch AI's Chinchilla "
                    "replication does, with bootstrap intervals over runs.")
    parser.add_argument("--csv", default=str(DEFAULT_CSV),
                        help=f"CSV with columns {','.join(COLUMNS)} (default: Epoch's "
                             "digitised Chinchilla runs)")
    parser.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT,
                        help=f"bootstrap resamples (default {DEFAULT_N_BOOT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--exclude", type=int, default=EXCLUDE,
                        help=f"runs with the fewest tokens per parameter left out "
                             f"(default {EXCLUDE})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        n, d, loss = read_runs(args.csv)
        out = bootstrap(n, d, loss, n_boot=args.n_boot, seed=args.seed, level=args.level,
                        exclude=args.exclude)
    except ValueError as err:
        message = str(err)
        for field, flag in (("csv", "--csv"), ("n_boot", "--n-boot"), ("level", "--level"),
                            ("exclude", "--exclude")):
            if message.startswith(f"{field}:"):
                message = f"{flag}{message[len(field):]}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    law = out["fit"]
    result = {"csv": args.csv, "n_runs": law.n_runs, "huber_loss": law.loss,
              "params": law.params, "intervals": out["intervals"], "n_boot": out["n_boot"],
              "level": out["level"]}
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        for k in PARAMS:
            lo, hi = out["intervals"][k]
            print(f"{k:<6} {law.params[k]:>12.5g}   [{lo:.5g}, {hi:.5g}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
