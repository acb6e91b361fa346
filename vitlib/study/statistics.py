"""The statistics behind a verdict: paired differences over shared seeds, the smallest effect a
comparison can detect and hyper-parameters chosen inside their grid. (Whether a fitted law can
be tested is ``vitlib.analysis.scaling.fit_testability``, in the layer of the fits.)

Arms that share a seed share the initialisation and the data order, so the noise of their
difference is the spread of the per-seed differences (``paired_difference``), not the arms'
own spreads combined. A claim records the effect it could detect (``k * se``) beside its
tolerance: an equivalence claim whose tolerance is not above it can never hold
(``equivalence_power``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean over seeds of a - b
    se: float  # its standard error: std of the per-seed differences (ddof 1) / sqrt(n)
    n: int
    differences: tuple

    def minimal_detectable_effect(self, k: float = 2.0) -> float:
        return minimal_detectable_effect(self.se, k)


def _per_seed(a, b) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise ValueError("a, b: give both as {seed: value} or both as sequences")
        if set(a) != set(b):
            raise ValueError(f"a, b: the arms must share their seeds; only in a: "
                             f"{sorted(set(a) - set(b))}, only in b: {sorted(set(b) - set(a))}")
        seeds = sorted(a)
        a, b = [a[s] for s in seeds], [b[s] for s in seeds]
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a, b: need one value per seed in each arm, got shapes {a.shape} and "
                         f"{b.shape}")
    if len(a) < 2:
        raise ValueError(f"a, b: a paired standard error needs at least 2 seeds, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a, b: values must be finite")
    return a, b


def paired_difference(a, b) -> PairedDifference:
    """Mean and paired standard error of ``a - b`` over the seeds the two arms share.

    ``a`` and ``b`` are the arms' per-seed values: ``{seed: value}`` dicts (matched by seed) or
    sequences in the same seed order."""
    a, b = _per_seed(a, b)
    d = a - b
    return PairedDifference(float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d),
                            tuple(float(x) for x in d))


def minimal_detectable_effect(se: float, k: float = 2.0) -> float:
    """The smallest difference a comparison with standard error ``se`` tells from zero at
    ``k`` standard errors."""
    if not (se >= 0 and k >= 0):
        raise ValueError(f"se, k: must be numbers >= 0, got {se!r}, {k!r}")
    return k * se


def equivalence_power(tolerance: float, se: float, k: float = 2.0) -> Optional[str]:
    """None when "agree within ``tolerance``" can hold at this noise, else the reason it
    cannot: ``|d| + k se <= tolerance`` needs ``tolerance > k se``."""
    mde = minimal_detectable_effect(se, k)
    if tolerance > mde:
        return None
    return (f"underpowered: the tolerance {tolerance:.3g} is not above k x se = {k:g} x "
            f"{se:.3g} = {mde:.3g}; more seeds would be needed")


@dataclasses.dataclass(frozen=True)
class GridChoice:
    best: float
    scores: dict  # every value evaluated -> its score
    grid: tuple  # the values evaluated, sorted (the starting grid and its extensions)
    interior: bool  # the best value has evaluated neighbours on both sides
    extended: tuple  # the values added past an end of the starting grid


def choose_inside_grid(score: Callable[[float], float], grid: Sequence[float], *,
                       factor: float, max_extensions: int = 3,
                       higher_is_better: bool = True) -> GridChoice:
    """The best value of ``grid`` by ``score`` (evaluated once per value), moved off the
    grid's edge: while the best is its smallest or largest value, the next point past that end
    (``/ factor`` or ``* factor``: a log grid) is evaluated and the choice made again, at most
    ``max_extensions`` times. ``interior`` says whether the final choice has neighbours on
    both sides; a claim resting on a choice that is not interior rests on an edge.

    ``score`` is typically a run's minival accuracy for that hyper-parameter (cached runs, so a
    re-run reads the same points back)."""
    values = sorted(float(v) for v in grid)
    if len(values) < 3 or len(set(values)) != len(values):
        raise ValueError(f"grid: need at least 3 distinct values, got {list(grid)!r}")
    if not factor > 1:
        raise ValueError(f"factor: must be > 1 (the step past an end), got {factor!r}")
    if isinstance(max_extensions, bool) or not isinstance(max_extensions, int) \
            or max_extensions < 0:
        raise ValueError(f"max_extensions: must be an integer >= 0, got {max_extensions!r}")
    if values[0] <= 0:
        raise ValueError(f"grid: a log grid needs positive values, got {values[0]!r}")
    sign = 1.0 if higher_is_better else -1.0
    scores = {v: float(score(v)) for v in values}
    extended = []
    while True:
        ordered = sorted(scores)
        best = max(ordered, key=lambda v: sign * scores[v])
        at_low, at_high = best == ordered[0], best == ordered[-1]
        if not (at_low or at_high) or len(extended) >= max_extensions:
            break
        new = ordered[0] / factor if at_low else ordered[-1] * factor
        scores[new] = float(score(new))
        extended.append(new)
    ordered = sorted(scores)
    return GridChoice(best, scores, tuple(ordered), ordered[0] < best < ordered[-1],
                      tuple(extended))


@dataclasses.dataclass(frozen=True)
class PairedVerdict:
    """A claim's verdict from a paired comparison, with the numbers FINDINGS.md shows."""
    verdict: str
    reason: Optional[str]  # why an inconclusive verdict could not be otherwise (or None)
    difference: float  # mean over seeds of a - b
    noise: float  # its paired standard error
    mde: float  # the smallest difference this comparison detects: k x noise
    n: int  # seeds paired

    def claim_fields(self) -> dict:
        """Keyword arguments of ``Findings.claim``: verdict, reason, noise, mde and evidence."""
        return {"verdict": self.verdict, "reason": self.reason, "noise": self.noise,
                "mde": self.mde, "difference": self.difference, "seeds_paired": self.n}


def _verdict_within(difference: float, tolerance: float, spread: float) -> str:
    if abs(difference) + spread <= tolerance:
        return "holds"
    if abs(difference) - spread > tolerance:
        return "does not hold"
    return "inconclusive"


def paired_within(a, b, tolerance: float, k: float = 2.0) -> PairedVerdict:
    """"``a`` and ``b`` agree within ``tolerance``" as an equivalence test on the per-seed
    differences: holds when ``|d| + k se <= tolerance``, does not hold when
    ``|d| - k se > tolerance``. An inconclusive verdict whose tolerance is not above
    ``k se`` says so (``underpowered: ...``): no outcome could have made it hold."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance: must be a number >= 0, got {tolerance!r}")
    d = paired_difference(a, b)
    mde = minimal_detectable_effect(d.se, k)
    verdict = _verdict_within(d.mean, tolerance, mde)
    reason = equivalence_power(tolerance, d.se, k) if verdict == "inconclusive" else None
    return PairedVerdict(verdict, reason, d.mean, d.se, mde, d.n)


def paired_greater(a, b, k: float = 2.0, margin: float = 0.0) -> PairedVerdict:
    """"``a`` exceeds ``b`` by more than ``margin``" on the per-seed differences: holds when
    ``d - k se > margin``, does not hold when ``d + k se <= margin``. A directional claim is
    powered by construction (its verdict states the se it was read at); ``mde`` says how large
    an effect it could have seen."""
    d = paired_difference(a, b)
    mde = minimal_detectable_effect(d.se, k)
    if d.mean - mde > margin:
        verdict = "holds"
    elif d.mean + mde <= margin:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    return PairedVerdict(verdict, None, d.mean, d.se, mde, d.n)
