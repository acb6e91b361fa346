"""Learning-curve estimators: error e against examples seen x, fitted on the early part of a
curve to extrapolate the rest (numpy / scipy only).

The four estimators of Alabdulmohsin, Neyshabur & Zhai, "Revisiting Neural Scaling Laws in
Language and Vision" (NeurIPS 2022, arXiv 2209.06640), Section 3, with the paper's sign
convention (c < 0 for a falling curve), and the Scaling-ViT paper's double-saturating law:

- ``m1``: e = b x^c                                  (params b, c)
- ``m2``: e - e_inf = b x^c                          (params b, c, e_inf)
- ``m3``: e = b (x^-1 + g)^-c, g >= 0, c <= 0        (params b, c, g)
- ``m4``: (e - e_inf) / (e_0 - e)^alpha = b x^c, alpha >= 0, c <= 0
                                                     (params b, c, alpha, e_inf, e_0)
- ``double``: e = a (x + d)^-b + c                   (params a, b, c, d; ``scaling.fit_power_law``)

How each is fitted (the objective is always the squared misfit of the law's own equation in log
space, as in the paper):

- M1: ordinary least squares of log e on (1, log x).
- M2: for a given e_inf, (log b, c) is a least-squares problem in log(e - e_inf); the profile
  misfit over e_inf in [0, min(e) - 1e-3] is searched on a grid and refined (bounded Brent).
- M3: the paper's search: (log b, c) by least squares on log(x^-1 + g) with c <= 0, alternating
  with the best g >= 0 among the values that put the law through one single point.
- M4: block coordinate descent, the paper's recipe: a non-negative least-squares step (scipy
  ``nnls``) for (log b, -c, alpha) in log(e - e_inf) = log b - c (-log x) + alpha log(e_0 - e)
  (the intercept free, the other two >= 0), alternating with a bounded minimisation of the same
  misfit over (e_inf, e_0) with (b, c, alpha) held, until the misfit stops falling. e_inf stays in
  [0, min(e) - 1e-3] and e_0 in [max(e) + 1e-3, up_bound + 1e-3] (no upper end without
  ``up_bound``; use ``up_bound=1`` for error rates). e_0 starts at 1 (or max(e) + 1e-3 if larger)
  and e_inf at min(e) - 1e-3, the paper's starting point. The misfit falls slowly along a
  valley, so the rounds run to ``M4_MAX_ROUNDS`` (300) unless (e_inf, e_0) stop moving;
  stopping on a small fall of the misfit instead ends after a few rounds, far from the valley's
  floor (on the 72 vision curves that doubled M4's median extrapolation error). Predictions invert the law exactly:
  (e - e_inf) - b x^c (e_0 - e)^alpha is increasing on (e_inf, e_0), so scipy's ``brentq`` finds
  its single root there.

Every estimator has ``fit(x, e)`` -> ``LearningCurveLaw`` (``predict``, ``params``) and
``bootstrap(x, e, n, seed, level)`` -> {param: (lo, hi)}, percentile intervals from refitting
resamples of the points (drawn with replacement).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
from scipy import optimize

ESTIMATORS = ("m1", "m2", "m3", "m4", "double")
PARAMS = {"m1": ("b", "c"), "m2": ("b", "c", "e_inf"), "m3": ("b", "c", "g"),
          "m4": ("b", "c", "alpha", "e_inf", "e_0"), "double": ("a", "b", "c", "d")}
ERR_MARGIN = 1e-3  # e_inf <= min(e) - margin, e_0 >= max(e) + margin (the paper's margin)
PROFILE_GRID = 200  # grid points of the 1-d profile searches (M2's e_inf, M3's g)
M3_MAX_ROUNDS = 10_000  # alternations of M3's two steps (the paper's cap)
M3_STOP = 1e-10  # M3 stops when b moves less than this in a round (the paper's rule)
M4_MAX_ROUNDS = 300  # alternations of M4's two steps (the misfit falls slowly along a valley)
M4_TOL = 1e-10  # ... or fewer, once a round moves e_inf and e_0 by less than this


# ---------------------------------------------------------------- the law

def _m4_root(x: float, p: dict) -> float:
    f = p["b"] * x ** p["c"]
    if p["alpha"] == 0.0:
        return p["e_inf"] + f
    e_inf, e_0, alpha = p["e_inf"], p["e_0"], p["alpha"]
    h = lambda e: (e - e_inf) - f * (e_0 - e) ** alpha  # noqa: E731 (increasing in e)
    if h(e_0) <= 0.0:  # only when f is huge: the law sits on e_0
        return e_0
    if h(e_inf) >= 0.0:  # f underflowed to 0: the law sits on e_inf
        return e_inf
    return optimize.brentq(h, e_inf, e_0, xtol=1e-15, rtol=4 * np.finfo(float).eps)


@dataclasses.dataclass(frozen=True)
class LearningCurveLaw:
    """A fitted learning curve: ``estimator`` (one of ``ESTIMATORS``), ``params`` and
    ``misfit`` (half the summed squared log residuals of the estimator's own equation on the
    points it was fitted to)."""
    estimator: str
    params: dict
    misfit: float

    def predict(self, x) -> np.ndarray:
        """The error the law gives at examples seen ``x`` (scalar or array, > 0)."""
        xs = np.asarray(x, dtype=float)
        if np.any(~np.isfinite(xs)) or np.any(xs <= 0):
            raise ValueError(f"x: every value must be finite and > 0, got {x!r}")
        p = self.params
        if self.estimator == "m1":
            return p["b"] * xs ** p["c"]
        if self.estimator == "m2":
            return p["e_inf"] + p["b"] * xs ** p["c"]
        if self.estimator == "m3":
            return p["b"] * (1.0 / xs + p["g"]) ** -p["c"]
        if self.estimator == "m4":
            return np.vectorize(lambda v: _m4_root(float(v), p), otypes=[float])(xs)
        return p["a"] * (xs + p["d"]) ** -p["b"] + p["c"]


# ---------------------------------------------------------------- validation

def _curve(x, e, need: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.asarray(x, dtype=float)
    es = np.asarray(e, dtype=float)
    if xs.ndim != 1 or es.ndim != 1 or xs.shape != es.shape:
        raise ValueError(f"x and e: must be 1-d arrays of one length, got shapes {xs.shape} "
                         f"and {es.shape}")
    bad = ~np.isfinite(xs) | (xs <= 0)
    if bad.any():
        raise ValueError(f"x: every value must be finite and > 0, got {float(xs[bad][0])!r}")
    bad = ~np.isfinite(es) | (es <= 0)
    if bad.any():
        raise ValueError(f"e: every value must be finite and > 0, got {float(es[bad][0])!r}")
    if np.unique(xs).size < need:
        raise ValueError(f"x: {np.unique(xs).size} distinct values cannot fit this estimator; "
                         f"give at least {need}")
    return xs, es


def _least_squares_line(u: np.ndarray, y: np.ndarray, slope_max: float = np.inf):
    """(intercept, slope, misfit) of y ~ intercept + slope u with slope <= slope_max."""
    um, ym = u.mean(), y.mean()
    du = u - um
    suu = float(du @ du)
    slope = float(du @ (y - ym)) / suu if suu > 0 else 0.0
    slope = min(slope, slope_max)
    intercept = ym - slope * um
    r = y - intercept - slope * u
    return intercept, slope, 0.5 * float(r @ r)


def _profile_minimum(misfit, grid: np.ndarray) -> float:
    """The argument of the smallest ``misfit`` over ``grid`` (increasing), refined by bounded
    Brent between the grid neighbours of the best point."""
    values = np.array([misfit(t) for t in grid])
    i = int(np.nanargmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    if hi > lo:
        res = optimize.minimize_scalar(misfit, bounds=(lo, hi), method="bounded",
                                       options={"xatol": 1e-10 * max(1.0, abs(grid[i]))})
        if res.fun <= values[i]:
            return float(res.x)
    return float(grid[i])


# ---------------------------------------------------------------- estimators

class _Estimator:
    name = ""

    @property
    def params(self) -> tuple:
        return PARAMS[self.name]

    def fit(self, x, e) -> LearningCurveLaw:
        xs, es = _curve(x, e, len(self.params))
        return self._fit(xs, es)

    def _fit(self, x: np.ndarray, e: np.ndarray) -> LearningCurveLaw:
        raise NotImplementedError

    def bootstrap(self, x, e, n: int = 200, seed: int = 0, level: float = 0.95) -> dict:
        """Percentile intervals {param: (lo, hi)} at ``level`` from ``n`` refits to resamples of
        the points drawn with replacement (resamples with too few distinct x are skipped)."""
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n: must be an integer >= 1, got {n!r}")
        if not 0 < level < 1:
            raise ValueError(f"level: must be in (0, 1), got {level!r}")
        xs, es = _curve(x, e, len(self.params))
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(int(n)):
            idx = rng.integers(0, xs.size, xs.size)
            if np.unique(xs[idx]).size < len(self.params):
                continue
            law = self._fit(xs[idx], es[idx])
            samples.append([law.params[p] for p in self.params])
        if not samples:
            raise ValueError(f"n: none of the {n} resamples had {len(self.params)} distinct x "
                             f"to fit; give more points or a larger n")
        values = np.asarray(samples)
        tail = 100 * (1 - level) / 2
        return {p: (float(np.percentile(values[:, j], tail)),
                    float(np.percentile(values[:, j], 100 - tail)))
                for j, p in enumerate(self.params)}


class M1(_Estimator):
    """e = b x^c, least squares in log-log space."""
    name = "m1"

    def _fit(self, x, e):
        log_b, c, misfit = _least_squares_line(np.log(x), np.log(e))
        return LearningCurveLaw("m1", {"b": float(np.exp(log_b)), "c": float(c)}, misfit)


class M2(_Estimator):
    """e - e_inf = b x^c, with 0 <= e_inf <= min(e) - 1e-3."""
    name = "m2"

    def _fit(self, x, e):
        log_x = np.log(x)
        hi = float(e.min()) - ERR_MARGIN
        if hi <= 0:  # no room for an e_inf above zero
            law = M1()._fit(x, e)
            return LearningCurveLaw("m2", dict(law.params, e_inf=0.0), law.misfit)

        def misfit(e_inf):
            return _least_squares_line(log_x, np.log(e - e_inf))[2]

        # The paper starts e_inf at min(e) - 1e-3 and descends: walk a grid down from there
        # (dense near the top, where log(e - e_inf) changes fastest) to the first local minimum
        # of the profile misfit, then refine it between its neighbours.
        grid = np.unique(np.clip(float(e.min()) - np.geomspace(
            ERR_MARGIN, float(e.min()), PROFILE_GRID), 0.0, hi))[::-1]
        values = np.array([misfit(t) for t in grid])
        i = 0
        while i + 1 < grid.size and values[i + 1] < values[i]:
            i += 1
        e_inf = float(grid[i])
        lo_b, hi_b = grid[min(i + 1, grid.size - 1)], grid[max(i - 1, 0)]
        if hi_b > lo_b:
            res = optimize.minimize_scalar(misfit, bounds=(lo_b, hi_b), method="bounded",
                                           options={"xatol": 1e-12})
            if res.fun <= values[i]:
                e_inf = float(np.clip(res.x, 0.0, hi))
        log_b, c, j = _least_squares_line(log_x, np.log(e - e_inf))
        return LearningCurveLaw("m2", {"b": float(np.exp(log_b)), "c": float(c),
                                       "e_inf": e_inf}, j)


class M3(_Estimator):
    """e = b (x^-1 + g)^-c with g >= 0 and c <= 0."""
    name = "m3"

    def _fit(self, x, e):
        log_e = np.log(e)

        def line(g):  # log e = log b - c log(1/x + g), with -c >= 0
            log_b, minus_c, j = _least_squares_line(np.log(1.0 / x + g), log_e)
            if minus_c < 0:  # the constrained optimum sits on c = 0
                log_b, minus_c = float(log_e.mean()), 0.0
                j = 0.5 * float(((log_e - log_b) ** 2).sum())
            return log_b, -minus_c, j

        # The paper's search: alternate least squares for (b, c) with a choice of g among the
        # values that put the law exactly through one point, (e_i / b)^(1 / -c) - 1 / x_i,
        # keeping the best non-negative one, from g = 0 until b stops moving.
        g = 0.0
        log_b, c, j = line(g)
        for _ in range(M3_MAX_ROUNDS):
            if c < 0:
                with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                    candidates = (e / np.exp(log_b)) ** (1.0 / -c) - 1.0 / x
                for cand in candidates[np.isfinite(candidates) & (candidates >= 0)]:
                    j_cand = line(float(cand))[2]
                    if j_cand < j:
                        g, j = float(cand), j_cand
            new_log_b, c, j = line(g)
            moved = abs(np.exp(new_log_b) - np.exp(log_b))
            log_b = new_log_b
            if moved < M3_STOP:
                break
        log_b, c, j = line(g)
        return LearningCurveLaw("m3", {"b": float(np.exp(log_b)), "c": float(c), "g": g}, j)


class M4(_Estimator):
    """(e - e_inf) / (e_0 - e)^alpha = b x^c, fitted by the paper's alternation (module doc).

    ``up_bound``: the largest the error can be (1 for error rates), bounding e_0 above by
    ``up_bound + 1e-3``; None for losses without one (log-perplexity, cross-entropy)."""
    name = "m4"

    def __init__(self, up_bound: Optional[float] = None):
        if up_bound is not None and not (np.isfinite(up_bound) and up_bound > 0):
            raise ValueError(f"up_bound: must be a finite number > 0 or None, got {up_bound!r}")
        self.up_bound = None if up_bound is None else float(up_bound)

    def _fit(self, x, e):
        lo_inf, hi_inf = 0.0, max(float(e.min()) - ERR_MARGIN, 0.0)
        lo_0 = float(e.max()) + ERR_MARGIN
        hi_0 = np.inf if self.up_bound is None else self.up_bound + ERR_MARGIN
        if hi_0 < lo_0:
            raise ValueError(f"up_bound: {self.up_bound!r} is below the largest error "
                             f"{float(e.max())!r}; allowed: None or >= max(e)")
        minus_log_x = -np.log(x)

        def coefficients(e_inf, e_0):  # NNLS for (-c, alpha) >= 0, the intercept free
            y = np.log(e - e_inf)
            a = np.stack([minus_log_x, np.log(e_0 - e)], axis=1)
            am, ym = a.mean(0), y.mean()
            (minus_c, alpha), _ = optimize.nnls(a - am, y - ym)
            log_b = ym - am @ np.array([minus_c, alpha])
            return log_b, -minus_c, alpha

        def misfit(z, log_b, c, alpha):  # z = (e_inf, e_0); returns value and gradient
            e_inf, e_0 = z
            r = np.log(e - e_inf) - alpha * np.log(e_0 - e) - log_b + c * minus_log_x
            grad = np.array([-(r / (e - e_inf)).sum(), -alpha * (r / (e_0 - e)).sum()])
            return 0.5 * float(r @ r), grad

        z = np.array([hi_inf, min(max(1.0, lo_0), hi_0)])
        bounds = [(lo_inf, hi_inf), (lo_0, None if self.up_bound is None else hi_0)]
        for _ in range(M4_MAX_ROUNDS):
            log_b, c, alpha = coefficients(*z)
            res = optimize.minimize(misfit, z, args=(log_b, c, alpha), jac=True,
                                    method="L-BFGS-B", bounds=bounds)
            if not res.fun <= misfit(z, log_b, c, alpha)[0]:
                break
            moved = float(np.max(np.abs(res.x - z)))
            z = np.clip(res.x, [lo_inf, lo_0], [hi_inf, hi_0])
            if moved < M4_TOL:
                break
        log_b, c, alpha = coefficients(*z)
        j = misfit(z, log_b, c, alpha)[0]
        return LearningCurveLaw("m4", {"b": float(np.exp(log_b)), "c": float(c),
                                       "alpha": float(alpha), "e_inf": float(z[0]),
                                       "e_0": float(z[1])}, j)


class DoubleSaturating(_Estimator):
    """e = a (x + d)^-b + c, the Scaling-ViT paper's law, by ``scaling.fit_power_law``.

    That fit takes errors in (0, 1); larger losses are divided by 2 max(e) first and a, c
    multiplied back, which leaves log residuals, b and d unchanged."""
    name = "double"

    def _fit(self, x, e):
        from vitlib.analysis.scaling import fit_power_law

        scale = 1.0 if e.max() < 1 else 2.0 * float(e.max())
        fit = fit_power_law(x, e / scale, form="double_saturating")
        p = fit.params
        params = {"a": float(p["a"] * scale), "b": float(p["b"]), "c": float(p["c"] * scale),
                  "d": float(p["d"])}
        return LearningCurveLaw("double", params, 0.5 * float(fit.residuals @ fit.residuals))


_CLASSES = {"m1": M1, "m2": M2, "m3": M3, "m4": M4, "double": DoubleSaturating}


def estimator(name: str, up_bound: Optional[float] = None) -> _Estimator:
    """The estimator called ``name`` (one of ``ESTIMATORS``); ``up_bound`` is M4's (ignored by
    the others)."""
    if name not in _CLASSES:
        raise ValueError(f"estimator: {name!r} is not allowed; choose one of {list(ESTIMATORS)}")
    return M4(up_bound) if name == "m4" else _CLASSES[name]()


def fit(x, e, name: str = "m4", up_bound: Optional[float] = None) -> LearningCurveLaw:
    """Fit the estimator ``name`` to the curve (x, e)."""
    return estimator(name, up_bound).fit(x, e)


def bootstrap(x, e, name: str = "m4", n: int = 200, seed: int = 0, level: float = 0.95,
              up_bound: Optional[float] = None) -> dict:
    """Percentile intervals {param: (lo, hi)} of estimator ``name`` (see ``_Estimator``)."""
    return estimator(name, up_bound).bootstrap(x, e, n=n, seed=seed, level=level)
