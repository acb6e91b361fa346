"""The statistics behind a verdict: paired differences over shared seeds, the smallest effect a
comparison can detect and hyper-parameters chosen inside their grid. (Whether a fitted law can
be tested is ``vitlib.analysis.scaling.fit_testability``, in the layer of the fits.)

Arms that share a seed share the initialisation and the data order, so the noise of their
difference is the spread of the per-seed differences (``paired_difference``), not the arms'
own spreads combined. A claim records the effect it could detect (``k * se``) beside its
tolerance: an equivalence claim whose tolerance is not above it can never hold
(``equivalence_power``). Two arms that are one arm (the same value on every seed) have nothing
to compare: such a comparison is ``inconclusive`` with a ``nothing to test:`` reason, never a
verdict. Every verdict carries its margin: how many standard errors the difference would have
to move for the verdict to change (``margin_in_se``); below 1 it is *fragile*.
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
    ties: tuple = ()  # every value scoring within ``tie`` of the best (the best included)

    @property
    def tied(self) -> bool:
        """The choice rests on a tie: another value scored within the tie margin."""
        return len(self.ties) > 1


def choose_inside_grid(score: Callable[[float], float], grid: Sequence[float], *,
                       factor: float, max_extensions: int = 3,
                       higher_is_better: bool = True, tie: float = 0.0) -> GridChoice:
    """The best value of ``grid`` by ``score`` (evaluated once per value), moved off the
    grid's edge: while the best is its smallest or largest value, the next point past that end
    (``/ factor`` or ``* factor``: a log grid) is evaluated and the choice made again, at most
    ``max_extensions`` times. ``interior`` says whether the final choice has neighbours on
    both sides; a claim resting on a choice that is not interior rests on an edge.

    ``score`` is typically a run's minival accuracy for that hyper-parameter (cached runs, so a
    re-run reads the same points back). ``tie`` is the minival noise: every value scoring within
    it of the best is a tie (``ties``), recorded so that a claim is tested at each tied value
    (or says which it took and why); exact ties always count."""
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
    if isinstance(tie, bool) or not isinstance(tie, (int, float)) or not tie >= 0:
        raise ValueError(f"tie: must be a number >= 0 (the minival noise), got {tie!r}")
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
    ties = tuple(v for v in ordered if sign * (scores[best] - scores[v]) <= tie)
    return GridChoice(best, scores, tuple(ordered), ordered[0] < best < ordered[-1],
                      tuple(extended), ties)


def overlapping_seeds(chose: Mapping[str, Sequence[int]],
                      tested: Mapping[str, Sequence[int]]) -> dict:
    """The seeds that both chose a hyper-parameter (``chose``: what was chosen -> its seeds)
    and test a claim (``tested``: claim -> its seeds), as ``{claim: {choice: [seeds]}}``; empty
    when the two are disjoint, as they must be."""
    overlap = {}
    for claim, seeds in tested.items():
        for choice, chosen_by in chose.items():
            both = sorted(set(int(s) for s in seeds) & set(int(s) for s in chosen_by))
            if both:
                overlap.setdefault(claim, {})[choice] = both
    return overlap


NOTHING_TO_TEST = "nothing to test:"
FRAGILE_BELOW_SE = 1.0  # a verdict this close to its threshold (in se) is fragile


def margin_in_se(kind: str, difference: float, se: float, k: float,
                 threshold: float) -> Optional[float]:
    """How far ``difference`` is from changing its verdict, in units of ``se``.

    ``kind='within'`` (``|d| + k se <= threshold`` holds, ``|d| - k se > threshold`` does not):
    the boundaries of ``|d|`` are ``threshold -/+ k se``. ``kind='greater'`` (``d - k se >
    threshold`` holds, ``d + k se <= threshold`` does not): the boundaries of ``d`` are
    ``threshold +/- k se``. A decided verdict's margin is its distance to the boundary that
    would undo it; an inconclusive one's, to the nearer boundary that would decide it.
    None when ``se`` is 0 (no noise: there is no margin to measure it in)."""
    if kind not in ("within", "greater"):
        raise ValueError(f"kind: {kind!r} is not allowed; choose 'within' or 'greater'")
    if not se > 0:
        return None
    x, lo, hi = ((abs(difference), threshold - k * se, threshold + k * se) if kind == "within"
                 else (difference, threshold - k * se, threshold + k * se))
    if kind == "within":
        if x <= lo:  # holds
            return (lo - x) / se
        if x > hi:  # does not hold
            return (x - hi) / se
    else:
        if x > hi:  # holds
            return (x - hi) / se
        if x <= lo:  # does not hold
            return (lo - x) / se
    return min(x - lo, hi - x) / se


def is_fragile(margin_se: Optional[float]) -> bool:
    return margin_se is not None and margin_se < FRAGILE_BELOW_SE


def _nothing_to_test(d: "PairedDifference") -> Optional[str]:
    if all(x == 0.0 for x in d.differences):
        return (f"{NOTHING_TO_TEST} the two arms give the same value on all {d.n} seeds (the "
                f"same arm, or arms that cannot differ); there is no difference to test")
    return None


@dataclasses.dataclass(frozen=True)
class PairedVerdict:
    """A claim's verdict from a paired comparison, with the numbers FINDINGS.md shows."""
    verdict: str
    reason: Optional[str]  # why an inconclusive verdict could not be otherwise (or None)
    difference: float  # mean over seeds of a - b
    noise: float  # its paired standard error
    mde: float  # the smallest difference this comparison detects: k x noise
    n: int  # seeds paired
    margin_se: Optional[float] = None  # how many se the difference must move to change the verdict

    @property
    def fragile(self) -> bool:
        return is_fragile(self.margin_se)

    def claim_fields(self) -> dict:
        """Keyword arguments of ``Findings.claim``: verdict, reason, noise, mde, margin and
        evidence (the verdict rests on paired seeds)."""
        return {"verdict": self.verdict, "reason": self.reason, "noise": self.noise,
                "mde": self.mde, "margin_se": self.margin_se, "basis": "paired seeds",
                "difference": self.difference, "seeds_paired": self.n}

    def part(self, label: str) -> dict:
        """This comparison as one part of a claim (``Findings.claim(parts=...)``)."""
        return {"label": label, "value": self.difference, "se": self.noise, "mde": self.mde,
                "verdict": self.verdict, "reason": self.reason, "margin_se": self.margin_se,
                "seeds_paired": self.n}


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
    nothing = _nothing_to_test(d)
    if nothing:
        return PairedVerdict("inconclusive", nothing, d.mean, d.se, mde, d.n, None)
    verdict = _verdict_within(d.mean, tolerance, mde)
    reason = equivalence_power(tolerance, d.se, k) if verdict == "inconclusive" else None
    return PairedVerdict(verdict, reason, d.mean, d.se, mde, d.n,
                         margin_in_se("within", d.mean, d.se, k, tolerance))


def paired_greater(a, b, k: float = 2.0, margin: float = 0.0) -> PairedVerdict:
    """"``a`` exceeds ``b`` by more than ``margin``" on the per-seed differences: holds when
    ``d - k se > margin``, does not hold when ``d + k se <= margin``. A directional claim is
    powered by construction (its verdict states the se it was read at); ``mde`` says how large
    an effect it could have seen."""
    d = paired_difference(a, b)
    mde = minimal_detectable_effect(d.se, k)
    nothing = _nothing_to_test(d)
    if nothing:
        return PairedVerdict("inconclusive", nothing, d.mean, d.se, mde, d.n, None)
    if d.mean - mde > margin:
        verdict = "holds"
    elif d.mean + mde <= margin:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    return PairedVerdict(verdict, None, d.mean, d.se, mde, d.n,
                         margin_in_se("greater", d.mean, d.se, k, margin))


def paired_best_or_tied(reference, other, tie_margin: float, k: float = 2.0) -> PairedVerdict:
    """"``reference`` is best or tied with ``other``", on the per-seed differences
    ``other - reference``: ``does not hold`` when ``other`` is above beyond ``k se``; ``holds``
    when ``reference`` is above beyond ``k se``, or when the two are tied as an equivalence
    (``|d| + k se <= tie_margin``), a tie counting only when ``k se`` is below the margin
    fixed beforehand; otherwise ``inconclusive``, ``underpowered`` when no tie could have been
    shown at this noise. ``difference`` is ``other - reference``."""
    if not tie_margin > 0:
        raise ValueError(f"tie_margin: must be a number > 0, got {tie_margin!r}")
    above = paired_greater(other, reference, k)
    if above.reason or above.verdict != "inconclusive":
        verdict = {"holds": "does not hold", "does not hold": "holds"}.get(above.verdict,
                                                                            above.verdict)
        return dataclasses.replace(above, verdict=verdict)
    tie = paired_within(other, reference, tie_margin, k)
    if tie.verdict == "holds":
        return tie
    margins = [m for m in (above.margin_se, tie.margin_se) if m is not None]
    return dataclasses.replace(tie, verdict="inconclusive",
                               margin_se=min(margins) if margins else None)
