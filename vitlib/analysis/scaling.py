"""Scaling laws: training compute, the Pareto frontier, and power-law fits with uncertainty.

Pure numpy/scipy (the FLOP count comes from the zoo's closed-form counting, no JAX):

- ``training_flops``: 3 x forward FLOPs per image x images seen (the usual convention: the
  backward pass costs about twice the forward).
- ``pareto_frontier``: the runs that no other run beats with less or equal compute.
- ``fit_power_law``: ``power`` E = a C^-b, ``saturating`` E = a C^-b + c, and the paper's
  ``double_saturating`` E = a (C + d)^-b + c, with a > 0, b > 0, 0 <= c < min(E), d >= 0.
  Residuals are on log error. Robust rather than one ``curve_fit``: a grid over the non-linear
  parameters (b, d), the linear ones (a, c) solved by bounded weighted least squares at every
  grid point (variable projection), then a joint refinement from the best starts.
- ``bootstrap_fit``: percentile intervals of the parameters and of the predicted error, refitting
  from the grid for every resample (runs, or whole groups such as model sizes).
- ``extrapolation_check``: fit on the lower-compute part of a frontier, predict the held-out top.
- ``testability``: why a fit cannot be tested (a parameter on its bound, an interval of a
  parameter the claim reads spanning a decade, too few points per parameter), via
  ``fit_testability``, the same rule for any fitted law's parameters.
- ``unit_exponent``: the exponent g of compute-unit ~ FLOPs^g that maps one b onto another.

Compute is divided by its geometric mean inside the fit, so any unit *proportional* to FLOPs
gives the same b, c and predictions; a and d are reported in the caller's unit. A unit that is
not proportional (TPU core-days ~ FLOPs^g when small models use the chip less well) changes b:
b_unit = b_FLOPs / g (``unit_exponent``); c does not change.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import optimize

FORMS = ("power", "saturating", "double_saturating")
PARAMS = {"power": ("a", "b"), "saturating": ("a", "b", "c"),
          "double_saturating": ("a", "b", "c", "d")}
B_GRID = np.geomspace(0.01, 3.0, 30)
B_BOUNDS = (1e-4, 10.0)
C_MARGIN = 1e-6  # c stays strictly below the smallest error: c < (1 - C_MARGIN) min(E)
D_MAX_OVER_COMPUTE = 100.0  # d <= 100 x the largest compute (the grid goes to 10x)
MAX_EVALUATIONS = 100  # per refinement; starts from the grid converge in far fewer


# ---------------------------------------------------------------- compute

def training_flops(variant_or_config, image_size: int, images_seen, in_channels: int = 3,
                   num_classes: int = 0, pool_type: str = "gap"):
    """Training FLOPs = 3 x forward FLOPs per image x ``images_seen``.

    ``variant_or_config`` is a variant name ("Ti/16") or a ``ViTConfig``; the forward count is
    the zoo's (paper Table 2 convention) at ``image_size`` and ``in_channels``. Works on arrays
    of ``images_seen``.
    """
    from vitlib.models.counting import count_flops
    from vitlib.models.variants import ViTConfig, vit_config

    if isinstance(variant_or_config, ViTConfig):
        cfg = variant_or_config
    else:
        cfg = vit_config(variant_or_config, image_size=image_size, num_classes=num_classes,
                         pool_type=pool_type)
    images = np.asarray(images_seen, dtype=float)
    if np.any(~np.isfinite(images)) or np.any(images < 0):
        raise ValueError(f"images_seen: must be finite and >= 0, got {images_seen!r}")
    return 3.0 * count_flops(cfg, image_size, in_channels) * images


# ---------------------------------------------------------------- validation

def _points(compute, error) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(compute, dtype=float).ravel()
    e = np.asarray(error, dtype=float).ravel()
    if c.shape != e.shape:
        raise ValueError(f"compute and error: lengths differ ({c.size} vs {e.size})")
    if c.size == 0:
        raise ValueError("compute: no points given")
    if np.any(~np.isfinite(c)) or np.any(c <= 0):
        bad = c[~np.isfinite(c) | (c <= 0)][0]
        raise ValueError(f"compute: every value must be finite and > 0, got {float(bad)!r}")
    if np.any(~np.isfinite(e)) or np.any((e <= 0) | (e >= 1)):
        bad = e[~np.isfinite(e) | (e <= 0) | (e >= 1)][0]
        raise ValueError(f"error: every value must be in (0, 1), got {float(bad)!r}")
    return c, e


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"form: {form!r} is not allowed; choose one of {list(FORMS)}")


# ---------------------------------------------------------------- frontier

def pareto_frontier(compute, error) -> np.ndarray:
    """Indices, by increasing compute, of the runs no other run beats with less or equal compute
    (a lower error at compute <= theirs). Of exact duplicates the first is kept."""
    c, e = _points(compute, error)
    order = np.lexsort((np.arange(c.size), e, c))  # by compute, then error, then position
    keep, best = [], np.inf
    for i in order:
        if e[i] < best:
            keep.append(i)
            best = e[i]
    return np.asarray(keep, dtype=int)


# ---------------------------------------------------------------- the fit

def predict(form: str, params: dict, compute) -> np.ndarray:
    """E(C) of ``form`` with ``params`` (a, b and, by form, c and d)."""
    _check_form(form)
    c = np.asarray(compute, dtype=float)
    return (params["a"] * (c + params.get("d", 0.0)) ** -params["b"]
            + params.get("c", 0.0))


@dataclasses.dataclass
class PowerLawFit:
    form: str
    params: dict  # a, b, c, d in the caller's compute unit (c = d = 0 where the form has none)
    residuals: np.ndarray  # log(prediction) - log(error), per point
    log_rmse: float
    aic: float
    bic: float
    starts_refined: int
    starts_in_best_basin: int  # refined grid starts that reached the best loss
    bounds: dict = dataclasses.field(default_factory=dict)  # fitted param -> (lo, hi), caller's unit

    @property
    def num_params(self) -> int:
        return len(PARAMS[self.form])

    def predict(self, compute) -> np.ndarray:
        return predict(self.form, self.params, compute)


def _linear_ac(x: np.ndarray, e: np.ndarray, w: np.ndarray, c_max: float,
               with_c: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``x`` (points x grid): (a, c, cost) minimising sum w^2 (a x + c - e)^2
    with a >= 0 and 0 <= c <= c_max; closed form on the box (a convex quadratic in 2 unknowns:
    the optimum is interior or on an edge, so every candidate is evaluated)."""
    w2 = (w ** 2)[:, None]
    ee = e[:, None]
    sxx, sx, s1 = (w2 * x * x).sum(0), (w2 * x).sum(0), w2.sum()
    sxe, se = (w2 * x * ee).sum(0), (w2 * ee).sum()
    candidates = []
    if with_c:
        det = sxx * s1 - sx ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            a_int = (sxe * s1 - sx * se) / det
            c_int = (sxx * se - sx * sxe) / det
        ok = (det > 0) & (a_int >= 0) & (c_int >= 0) & (c_int <= c_max)
        candidates.append((np.where(ok, a_int, np.nan), np.where(ok, c_int, np.nan)))
        for c_edge in (0.0, c_max):
            with np.errstate(divide="ignore", invalid="ignore"):
                a_edge = np.maximum((sxe - c_edge * sx) / sxx, 0.0)
            candidates.append((a_edge, np.full_like(a_edge, c_edge)))
        c_a0 = float(np.clip(se / s1, 0.0, c_max))  # the a = 0 edge
        candidates.append((np.zeros_like(sxx), np.full_like(sxx, c_a0)))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            candidates.append((np.maximum(sxe / sxx, 0.0), np.zeros_like(sxx)))
    best_a = best_c = best_cost = None
    for a, c in candidates:
        cost = (w2 * (a[None] * x + c[None] - ee) ** 2).sum(0)
        cost = np.where(np.isfinite(cost), cost, np.inf)
        if best_cost is None:
            best_a, best_c, best_cost = a, c, cost
        else:
            better = cost < best_cost
            best_a = np.where(better, a, best_a)
            best_c = np.where(better, c, best_c)
            best_cost = np.where(better, cost, best_cost)
    return best_a, best_c, best_cost


def _unpack(p: np.ndarray, form: str) -> tuple:
    return (p[0], p[1], p[2] if form != "power" else 0.0,
            p[3] if form == "double_saturating" else 0.0)


def _log_residuals(p: np.ndarray, form: str, c: np.ndarray, log_e: np.ndarray) -> np.ndarray:
    a, b, cc, d = _unpack(p, form)
    model = a * (c + d) ** -b + cc
    return np.log(np.maximum(model, 1e-300)) - log_e


def _log_jacobian(p: np.ndarray, form: str, c: np.ndarray, log_e: np.ndarray) -> np.ndarray:
    """d log(model) / d(a, b[, c[, d]]): exact, so the refinement needs few evaluations."""
    a, b, cc, d = _unpack(p, form)
    u = (c + d) ** -b
    model = np.maximum(a * u + cc, 1e-300)
    columns = [u / model, -a * u * np.log(c + d) / model]
    if form != "power":
        columns.append(1.0 / model)
    if form == "double_saturating":
        columns.append(-a * b * u / (c + d) / model)
    return np.stack(columns, axis=1)


def fit_power_law(compute, error, form: str = "double_saturating", huber: Optional[float] = None,
                  refine_starts: int = 5) -> PowerLawFit:
    """Fit ``form`` to (compute, error) on log error; see the module docstring.

    ``huber``: a residual scale (in log error) beyond which residuals count linearly (robust to
    outliers); None for plain least squares. ``refine_starts``: how many of the best grid points
    are refined jointly.
    """
    _check_form(form)
    c_raw, e = _points(compute, error)
    k = len(PARAMS[form])
    if c_raw.size < k:
        raise ValueError(f"compute: {c_raw.size} points cannot fit the {k} parameters of "
                         f"{form!r}; give at least {k}")
    if huber is not None and not huber > 0:
        raise ValueError(f"huber: must be a positive residual scale or None, got {huber!r}")
    if not isinstance(refine_starts, int) or refine_starts < 1:
        raise ValueError(f"refine_starts: must be an integer >= 1, got {refine_starts!r}")
    scale = float(np.exp(np.mean(np.log(c_raw))))
    c = c_raw / scale
    log_e = np.log(e)
    c_max = (1.0 - C_MARGIN) * float(e.min())
    with_c = form != "power"

    # Variable projection over the grid of (b, d); weights 1/e make the linear fit's
    # residuals approximate the log residuals.
    d_grid = (np.concatenate([[0.0], np.geomspace(1e-3 * c.min(), 10 * c.max(), 20)])
              if form == "double_saturating" else np.zeros(1))
    bb, dd = np.meshgrid(B_GRID, d_grid, indexing="ij")
    bb, dd = bb.ravel(), dd.ravel()
    x = (c[:, None] + dd[None]) ** -bb[None]
    a_grid, cc_grid, cost = _linear_ac(x, e, 1.0 / e, c_max, with_c)
    order = np.argsort(cost)[:refine_starts]

    lower = [0.0, B_BOUNDS[0]] + ([0.0] if with_c else []) + \
        ([0.0] if form == "double_saturating" else [])
    # d far beyond the largest compute makes the law flat over the data: bound it there.
    upper = [np.inf, B_BOUNDS[1]] + ([c_max] if with_c else []) + \
        ([D_MAX_OVER_COMPUTE * c.max()] if form == "double_saturating" else [])
    fits = []
    for i in order:
        p0 = [max(float(np.nan_to_num(a_grid[i])), 1e-12), bb[i]]
        p0 += [min(cc_grid[i], c_max)] if with_c else []
        p0 += [dd[i]] if form == "double_saturating" else []
        p0 = np.clip(p0, lower, upper)
        try:
            res = optimize.least_squares(
                _log_residuals, p0, jac=_log_jacobian, bounds=(lower, upper),
                args=(form, c, log_e), loss="huber" if huber else "linear",
                f_scale=huber or 1.0, x_scale="jac", max_nfev=MAX_EVALUATIONS)
            fits.append((float(res.cost), res.x))
        except ValueError:  # a start on the boundary that scipy rejects: skip it
            continue
    if not fits:
        raise RuntimeError(f"fit_power_law: no start of the {form!r} fit converged")
    best_cost = min(f[0] for f in fits)
    in_basin = sum(f[0] <= best_cost * (1 + 1e-4) + 1e-12 for f in fits)
    p = min(fits, key=lambda f: f[0])[1]

    params = {"a": float(p[0]) * scale ** float(p[1]), "b": float(p[1]),
              "c": float(p[2]) if with_c else 0.0,
              "d": float(p[3]) * scale if form == "double_saturating" else 0.0}
    residuals = _log_residuals(p, form, c, log_e)
    # a's bounds in the caller's unit are (0, inf) at any b; d's scale with compute.
    bounds = {"a": (0.0, np.inf), "b": B_BOUNDS}
    if with_c:
        bounds["c"] = (0.0, c_max)
    if form == "double_saturating":
        bounds["d"] = (0.0, upper[3] * scale)
    n, rss = c.size, float(np.sum(residuals ** 2))
    log_lik_term = n * np.log(max(rss / n, 1e-300))
    return PowerLawFit(form=form, params=params, residuals=residuals,
                       log_rmse=float(np.sqrt(rss / n)), aic=float(log_lik_term + 2 * k),
                       bic=float(log_lik_term + k * np.log(n)), starts_refined=len(fits),
                       starts_in_best_basin=int(in_basin), bounds=bounds)


def best_unit_log_rmse(compute, error, params: dict) -> dict:
    """How well a law printed in another compute unit fits (compute, error): its a, b, c, d are
    kept and only the conversion ``flops_per_unit`` (compute / printed unit) is fitted. Returns
    that conversion and the log-RMSE."""
    c, e = _points(compute, error)

    def misfit(log_k):
        model = predict("double_saturating", params, c / np.exp(log_k))
        return float(np.sqrt(np.mean((np.log(np.maximum(model, 1e-300)) - np.log(e)) ** 2)))
    centre = float(np.log(np.median(c)))
    grid = centre + np.linspace(-30, 30, 241)
    start = grid[int(np.argmin([misfit(g) for g in grid]))]
    res = optimize.minimize_scalar(misfit, bounds=(start - 0.5, start + 0.5), method="bounded")
    return {"flops_per_unit": float(np.exp(res.x)), "log_rmse": float(res.fun)}


# ---------------------------------------------------------------- uncertainty

def bootstrap_fit(compute, error, form: str = "double_saturating", n_boot: int = 200,
                  seed: int = 0, groups: Optional[Sequence] = None, frontier: bool = False,
                  at=None, level: float = 0.9, huber: Optional[float] = None) -> dict:
    """Percentile bootstrap of ``fit_power_law``: resample the runs (or, with ``groups``, whole
    groups such as model sizes) with replacement, take the frontier of the resample if
    ``frontier``, refit from the grid, and collect the parameters and the predicted error at
    ``at`` (default: the given compute). Seeded: the same call gives the same numbers.

    Case-resampling percentile intervals run narrow for small samples: on synthetic saturating
    laws with 24 points and 3% noise, the nominal 90% interval of b covered the truth in about
    70% of replicates (tests/test_scaling.py); read the bands as a lower bound on uncertainty.

    With ``frontier``, every resample of *all* runs has its own frontier. That frontier is
    biased upwards: a resample holds about 63% of the distinct runs, so its frontier lies on or
    above the full data's at every compute (never below); ``bias`` (median over resamples minus
    the fit to all points, per parameter) states how far that moves each parameter.

    Returns ``fit`` (the fit to all points), ``intervals`` {param: (lo, hi)}, ``bias``
    {param: median - fit}, ``at``, ``prediction`` (median) with ``band_lo``/``band_hi``,
    ``samples`` {param: array} and ``replicates_ok`` (resamples with enough distinct points to
    fit); when none had enough, the intervals, bias and bands are NaN and ``replicates_ok`` is 0.
    """
    c, e = _points(compute, error)
    if not 0 < level < 1:
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot: must be an integer >= 1, got {n_boot!r}")
    select = (lambda cc, ee: pareto_frontier(cc, ee)) if frontier \
        else (lambda cc, ee: np.arange(cc.size))
    base = select(c, e)
    fit = fit_power_law(c[base], e[base], form, huber=huber)
    at = np.asarray(c[base] if at is None else at, dtype=float)
    labels = np.asarray(groups) if groups is not None else np.arange(c.size)
    if labels.shape != (c.size,):
        raise ValueError(f"groups: needs one label per point ({c.size}), got {labels.shape}")
    unique = np.unique(labels)
    members = {g: np.flatnonzero(labels == g) for g in unique}
    rng = np.random.default_rng(seed)
    k = len(PARAMS[form])
    samples = {p: [] for p in PARAMS[form]}
    predictions = []
    for _ in range(n_boot):
        drawn = rng.choice(unique, size=unique.size, replace=True)
        idx = np.concatenate([members[g] for g in drawn])
        cc, ee = c[idx], e[idx]
        chosen = select(cc, ee)
        if np.unique(cc[chosen]).size < k:
            continue
        try:
            f = fit_power_law(cc[chosen], ee[chosen], form, huber=huber)
        except RuntimeError:
            continue
        for p in PARAMS[form]:
            samples[p].append(f.params[p])
        predictions.append(f.predict(at))
    tail = 100 * (1 - level) / 2
    if not predictions:  # too few distinct points in every resample: no interval, say so
        predictions = [np.full(at.shape, np.nan)]
        samples = {p: [np.nan] for p in samples}
    preds = np.asarray(predictions)
    samples = {p: np.asarray(v) for p, v in samples.items()}
    ok = int(np.isfinite(preds).all(axis=-1).sum()) if preds.ndim > 1 else len(predictions)
    return {"fit": fit, "level": level, "replicates_ok": ok, "n_boot": n_boot,
            "intervals": {p: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail)))
                          for p, v in samples.items()},
            "bias": {p: float(np.median(v) - fit.params[p]) for p, v in samples.items()},
            "samples": samples, "at": at,
            "prediction": np.median(preds, axis=0),
            "band_lo": np.percentile(preds, tail, axis=0),
            "band_hi": np.percentile(preds, 100 - tail, axis=0)}


def extrapolation_check(compute, error, form: str = "double_saturating",
                        holdout: int = 2, n_boot: int = 200, seed: int = 0,
                        level: float = 0.9) -> dict:
    """Fit the frontier without its ``holdout`` highest-compute points, predict them.

    Returns the fit of the lower part with its bootstrap ``intervals`` and ``fit_points``, the
    held-out compute and error, the prediction with its bootstrap band (from the lower part
    only), the log-RMSE of the prediction and which held-out points fall inside the band.
    """
    c, e = _points(compute, error)
    front = pareto_frontier(c, e)
    k = len(PARAMS[form])
    if not isinstance(holdout, int) or holdout < 1 or front.size - holdout < k:
        raise ValueError(f"holdout: {holdout!r} leaves {front.size - holdout} frontier points "
                         f"to fit {form!r} ({k} parameters); use 1 .. {front.size - k}")
    fit_idx, test_idx = front[:-holdout], front[-holdout:]
    boot = bootstrap_fit(c[fit_idx], e[fit_idx], form, n_boot=n_boot, seed=seed,
                         at=c[test_idx], level=level)
    predicted = boot["fit"].predict(c[test_idx])
    inside = (e[test_idx] >= boot["band_lo"]) & (e[test_idx] <= boot["band_hi"])
    return {"form": form, "fit": boot["fit"], "intervals": boot["intervals"],
            "fit_points": int(fit_idx.size), "heldout_compute": c[test_idx],
            "heldout_error": e[test_idx], "predicted": predicted,
            "band_lo": boot["band_lo"], "band_hi": boot["band_hi"],
            "log_rmse": float(np.sqrt(np.mean((np.log(predicted) - np.log(e[test_idx])) ** 2))),
            "inside_band": inside, "fraction_inside": float(inside.mean())}


# ---------------------------------------------------------------- can it be tested

def fit_testability(params: Mapping[str, float], bounds: Mapping[str, tuple],
                    intervals: Mapping[str, tuple], n_points: int, *,
                    max_interval_ratio: float = 10.0, min_points_per_param: float = 2.0,
                    rel_tol: float = 1e-6) -> list[str]:
    """Why a fitted law cannot be tested (empty when it can): a parameter on a bound of its
    fit, a positive parameter whose interval spans ``max_interval_ratio`` or more, or fewer
    than ``min_points_per_param`` points per fitted parameter."""
    reasons = []
    for name, value in params.items():
        for side, bound in zip(("lower", "upper"), bounds.get(name, (None, None))):
            if bound is not None and math.isfinite(bound) and \
                    abs(value - bound) <= rel_tol * max(abs(bound), 1e-12):
                reasons.append(f"{name} = {value:.3g} is at its {side} bound")
        lo, hi = intervals.get(name, (None, None))
        if lo is not None and hi is not None and lo > 0 and hi / lo >= max_interval_ratio:
            ratio = hi / lo
            span = f"{ratio:.1f}x" if ratio < 1000 else "over 1000x"  # an end near 0
            reasons.append(f"{name}'s interval [{lo:.3g}, {hi:.3g}] spans {span} "
                           f"(limit {max_interval_ratio:g}x)")
    if params and n_points / len(params) < min_points_per_param:
        reasons.append(f"{n_points} points for {len(params)} parameters (need "
                       f"{min_points_per_param:g} per parameter)")
    return reasons


def testability(fit: PowerLawFit, intervals: dict, reads: Sequence[str] = ("b", "c"),
                max_interval_ratio: float = 10.0, min_points_per_param: float = 2.0) -> list:
    """Why ``fit`` cannot test a claim about its parameters ``reads`` (empty when it can):
    ``fit_testability`` on every fitted parameter's bound, on the ``intervals``
    (e.g. ``bootstrap_fit``'s) of the parameters in ``reads``, and on the points per fitted
    parameter. Intervals of parameters the claim does not read (a, whose unit moves with b; d,
    often unidentified when the data reach no small-compute bend) are not checked: a bootstrap
    that refits them already carries their uncertainty into b's and c's intervals."""
    unknown = sorted(set(reads) - set(PARAMS[fit.form]))
    if unknown:
        raise ValueError(f"reads: {unknown} are not parameters of {fit.form!r}; allowed: "
                         f"{list(PARAMS[fit.form])}")
    params = {p: fit.params[p] for p in PARAMS[fit.form]}
    return fit_testability(params, fit.bounds, {p: intervals[p] for p in reads if p in intervals},
                           len(fit.residuals), max_interval_ratio=max_interval_ratio,
                           min_points_per_param=min_points_per_param)


def unit_exponent(b_flops, b_unit):
    """The g that reconciles two exponents if the other compute unit grows as FLOPs^g.

    With units U = k F^g, E - c = a (U + d)^-b_U ~ a k^-b_U F^-(g b_U) where U >> d, so an
    exponent fitted on FLOPs is b_F = g b_U: g = b_F / b_U. g < 1 means the unit grows slower
    than FLOPs (small runs cost more units per FLOP: the chip is used less well by small
    models); over a compute span C_max / C_min the units per FLOP then change by
    (C_max / C_min)^(1 - g). Works on arrays (e.g. bootstrap samples of b_F)."""
    b_f, b_u = np.asarray(b_flops, dtype=float), np.asarray(b_unit, dtype=float)
    if np.any(~np.isfinite(b_f)) or np.any(b_f <= 0) or np.any(~np.isfinite(b_u)) \
            or np.any(b_u <= 0):
        raise ValueError(f"b_flops, b_unit: exponents must be finite and > 0, got {b_flops!r}, "
                         f"{b_unit!r}")
    return b_f / b_u
