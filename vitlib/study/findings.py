"""What a notebook found: checks of the code and claims of the paper, recorded.

Two kinds of finding, kept apart:

- a **check** must hold if the code is right (a memory ratio fixed by the shapes, an equality);
  a failed check fails the notebook.
- a **claim** is the paper's statement re-tested at this scale. Its verdict (``holds``,
  ``does not hold``, ``inconclusive``) is recorded with the paper's number or wording, the
  measured numbers, the noise and the tolerance fixed beforehand in the notebook's parameters
  cell. A claim never fails the notebook: one that does not reproduce here is a finding.

    findings = Findings("04_memory", profile)
    findings.check("Adam state is 2x the params", abs(r - 2) < 0.01, ratio=r)
    findings.claim("bf16 momentum does not change Adam's result", paper="no change",
                   measured={"adam": a, "adam_hp": b}, tolerance="|diff| <= 1 point",
                   noise=se, verdict=verdict_within(b - a, 0.01, se, k=2))
    findings.save(results_dir(profile) / "figures")
    findings.raise_if_failed()   # fails the notebook if a check failed

FINDINGS.md and the README's results block are rendered from the saved records by
``vitlib.study.findings_report`` (``python -m vitlib.study.findings_report``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

from vitlib.files import write_json
from vitlib.study.provenance import source_state
from vitlib.study.results import committed_results_dir
from vitlib.study.statistics import NOTHING_TO_TEST, is_fragile

VERDICTS = ("holds", "does not hold", "inconclusive")
# Why an inconclusive verdict could not be otherwise.
REASONS = ("underpowered:", "not testable:", NOTHING_TO_TEST)
# What a verdict rests on: seeds paired across arms, a bootstrap interval of a fit, curves paired
# across estimators, or no noise at all (a count, a plan, a formula).
BASES = ("paired seeds", "bootstrap interval", "paired curves", "none")
STAGES = ("exploratory", "confirmatory")
SMOKE_NOTE = "smoke profile: tests the code path only, says nothing about the paper"


def format_value(value) -> str:
    """A recorded value as text (4 significant digits, lists and dicts flattened)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(f"({format_value(v)})" if isinstance(v, (list, tuple))
                         else format_value(v) for v in value)
    return str(value)


class ClaimCheckFailed(AssertionError):
    """A check failed: the code (not the paper) is wrong somewhere."""


def _check_nonnegative(field: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{field}: must be a number >= 0, got {value!r}")
    return float(value)


def verdict_within(difference: float, tolerance: float, noise: float, k: float = 2.0) -> str:
    """Verdict of "the two agree within ``tolerance``", as an equivalence test.

    ``holds`` when ``|difference| + k * noise <= tolerance`` (agreement beyond the noise);
    ``does not hold`` when ``|difference| - k * noise > tolerance`` (disagreement beyond it);
    otherwise ``inconclusive``. ``noise`` is the standard error of ``difference``.
    """
    tolerance = _check_nonnegative("tolerance", tolerance)
    spread = _check_nonnegative("k", k) * _check_nonnegative("noise", noise)
    if abs(difference) + spread <= tolerance:
        return "holds"
    if abs(difference) - spread > tolerance:
        return "does not hold"
    return "inconclusive"


def verdict_greater(difference: float, noise: float, k: float = 2.0, margin: float = 0.0) -> str:
    """Verdict of "A exceeds B by more than ``margin``", ``difference = A - B``.

    ``holds`` when ``difference - k * noise > margin``; ``does not hold`` when
    ``difference + k * noise <= margin``; otherwise ``inconclusive``.
    """
    spread = _check_nonnegative("k", k) * _check_nonnegative("noise", noise)
    if difference - spread > margin:
        return "holds"
    if difference + spread <= margin:
        return "does not hold"
    return "inconclusive"


def verdict_of(holds: bool) -> str:
    """The verdict of a claim measured without noise (a planner's number, a count)."""
    return "holds" if holds else "does not hold"


def verdict_all(*verdicts: str) -> str:
    """Verdict of a claim made of parts that must all hold: ``does not hold`` if any part
    does not, ``holds`` if every part does, else ``inconclusive``."""
    for verdict in verdicts:
        if verdict not in VERDICTS:
            raise ValueError(f"verdicts: {verdict!r} is not allowed; each is one of "
                             f"{list(VERDICTS)}")
    if not verdicts:
        raise ValueError("verdicts: at least one is needed")
    if "does not hold" in verdicts:
        return "does not hold"
    return "holds" if all(v == "holds" for v in verdicts) else "inconclusive"


def pooled_std(groups) -> tuple[float, int]:
    """Seed noise: the pooled standard deviation of repeated measurements, ``sqrt(sum of
    squared deviations from each group's mean / (n - number of groups))`` over the groups
    (lists of values of one setting) that have at least two values; and those degrees of
    freedom. (nan, 0) when no group is repeated."""
    squares, dof = 0.0, 0
    for values in groups:
        values = np.asarray(values, float)
        if values.ndim != 1:
            raise ValueError(f"groups: each must be a flat list of values, got {values!r}")
        if len(values) >= 2:
            squares += float(((values - values.mean()) ** 2).sum())
            dof += len(values) - 1
    return (float(np.sqrt(squares / dof)), dof) if dof else (float("nan"), 0)


def part(label: str, value, verdict: str, *, se=None, mde=None, margin_se=None,
         reason: Optional[str] = None, **evidence) -> dict:
    """One part of a claim as a record (for parts that are not a ``PairedVerdict``: a count,
    a fit's parameter against its interval)."""
    return {"label": label, "value": value, "se": se, "mde": mde, "verdict": verdict,
            "reason": reason, "margin_se": margin_se, **evidence}


def margin_of_parts(verdict: str, parts: list) -> Optional[float]:
    """How far a claim made of parts (``verdict_all``) is from changing, in se: a claim that
    holds changes when its weakest part does (the smallest margin); one that does not hold only
    when every failing part does (the largest margin among them); an inconclusive one when its
    nearest open part is decided (the smallest margin among them). None without margins."""
    if verdict == "holds":
        margins = [p.get("margin_se") for p in parts]
        pick = min
    else:
        margins = [p.get("margin_se") for p in parts if p["verdict"] == verdict]
        pick = max if verdict == "does not hold" else min
    margins = [m for m in margins if m is not None]
    return pick(margins) if margins else None


def claim_margin(claim: dict) -> Optional[float]:
    """The margin a claim's verdict rests on: derived from its parts when it has parts, else
    as recorded."""
    if claim.get("parts"):
        return margin_of_parts(claim["verdict"], claim["parts"])
    return claim.get("margin_se")


def _without_prefix(reason: str) -> str:
    for prefix in REASONS:
        if reason.startswith(prefix):
            return reason[len(prefix):].strip()
    return reason


def _check_parts(parts) -> list:
    if not isinstance(parts, (list, tuple)) or not parts:
        raise ValueError(f"parts: must be a non-empty list of part records, got {parts!r}")
    labels = []
    for i, p in enumerate(parts):
        if not isinstance(p, dict) or not isinstance(p.get("label"), str) or not p["label"]:
            raise ValueError(f"parts[{i}]: needs a non-empty 'label', got {p!r}")
        if p.get("verdict") not in VERDICTS:
            raise ValueError(f"parts[{i}] ({p['label']}): verdict {p.get('verdict')!r} is not "
                             f"one of {list(VERDICTS)}")
        labels.append(p["label"])
    if len(set(labels)) != len(labels):
        raise ValueError(f"parts: labels must be unique, got {labels}")
    return [dict(p) for p in parts]


EXPLORATORY_DIR = "exploratory"  # results/exploratory/: findings whose protocol was then changed


def earlier_verdict(notebook: str, statement_start: str, *, seeds=None,
                    note: Optional[str] = None, results: Optional[Path] = None) -> dict:
    """The verdict an earlier protocol gave, for ``Findings.claim(earlier=[...])``: read from
    the findings JSON kept verbatim in ``results/exploratory/`` (the committed record before the
    protocol changed), the claim whose statement starts with ``statement_start``; with the
    commit that produced it, the seeds it rested on and a note on what changed."""
    folder = Path(results or committed_results_dir()) / EXPLORATORY_DIR
    path = folder / f"{notebook}_findings.json"
    if not path.is_file():
        raise FileNotFoundError(f"notebook: no earlier findings of {notebook!r} in {folder}")
    record = json.loads(path.read_text())
    matches = [c for c in record["claims"] if c["statement"].startswith(statement_start)]
    if len(matches) != 1:
        raise ValueError(f"statement_start: {statement_start!r} matches {len(matches)} claims "
                         f"of {path.name}; it must match exactly one")
    claim = matches[0]
    return {"verdict": claim["verdict"], "statement": claim["statement"],
            "commit": (record.get("source") or {}).get("commit"),
            "seeds": list(seeds) if seeds is not None else None, "note": note}


class Findings:
    def __init__(self, notebook: str, profile: str, caveat: Optional[str] = None):
        """``caveat``: what every claim of this notebook must carry (e.g. an upstream that
        differs from the paper's: ``FullSetup.caveat()``)."""
        self.notebook = notebook
        self.profile = profile
        self.caveat = caveat
        self.source = source_state()  # the code as the notebook starts, not as it ends
        self.checks: list[dict] = []
        self.claims: list[dict] = []

    def check(self, name: str, passed: bool, **evidence) -> bool:
        """Record whether ``name`` (something that must hold if the code is right) holds."""
        self.checks.append({"name": name, "passed": bool(passed), **evidence})
        print(f"[check {'PASS' if passed else 'FAIL'}] {name}")
        return bool(passed)

    def claim(self, statement: str, *, paper, measured, tolerance,
              verdict: Optional[str] = None, noise=None, reason: Optional[str] = None, mde=None,
              parts: Optional[list] = None, basis: Optional[str] = None,
              margin_se: Optional[float] = None, title: Optional[str] = None,
              stage: Optional[str] = None, earlier: Optional[list] = None,
              **evidence) -> str:
        """Record the paper's ``statement`` re-tested here; never raises on the verdict.

        ``reason`` says why an ``inconclusive`` verdict could not be otherwise: it starts with
        ``underpowered:`` (``statistics.equivalence_power``) or ``not testable:``
        (``analysis.scaling.fit_testability``); FINDINGS.md counts such claims apart. ``mde`` is
        the smallest effect the comparison could detect (``k x`` its noise), shown beside the
        tolerance; ``statistics.paired_within(...).claim_fields()`` gives verdict, reason,
        noise and mde of a paired comparison at once.

        ``parts``: a claim made of comparisons is a list of records, one per part, in the order
        they are read (``PairedVerdict.part(label)``, or ``part(...)``): label, value, se,
        detectable effect, verdict, margin; the claim's verdict is ``verdict_all`` of theirs
        unless given. ``basis``: what the verdict rests on (``BASES``; by default paired seeds
        when there is noise, else none). ``margin_se``: how many se the verdict is from
        changing (the smallest of its parts' by default); below 1 it is shown as fragile.
        ``title``: a short name for the README's summary. ``stage``: ``confirmatory`` for a
        protocol decided again on fresh seeds, ``exploratory`` for one whose protocol was
        changed after its results were seen; ``earlier``: the verdicts it replaces, each
        ``{"verdict", "seeds", "commit", "note"}``."""
        if parts is not None:
            parts = _check_parts(parts)
            if verdict is None:
                verdict = verdict_all(*(p["verdict"] for p in parts))
            if margin_se is None:
                margin_se = margin_of_parts(verdict, parts)
            open_parts = [p for p in parts if p["verdict"] == "inconclusive"]
            if (reason is None and verdict == "inconclusive" and open_parts
                    and all(str(p.get("reason") or "").startswith(REASONS) for p in open_parts)):
                # Every open part says why it could not be decided: so does the claim.
                first = next(r for r in REASONS if open_parts[0]["reason"].startswith(r))
                reason = first + " " + "; ".join(
                    f"{p['label']}: {_without_prefix(p['reason'])}" for p in open_parts)
            if basis is None and noise is None and any(p.get("se") is not None for p in parts):
                basis = "paired seeds"
        if verdict not in VERDICTS:
            raise ValueError(f"verdict: {verdict!r} is not allowed; choose one of "
                             f"{list(VERDICTS)}")
        if reason is not None:
            if verdict != "inconclusive" or not reason.startswith(REASONS):
                raise ValueError(f"reason: {reason!r} is not allowed with verdict {verdict!r}; "
                                 f"a reason goes with 'inconclusive' and starts with one of "
                                 f"{list(REASONS)}")
            evidence["reason"] = reason
        for field, value in (("statement", statement), ("paper", paper),
                             ("measured", measured), ("tolerance", tolerance)):
            if value is None or value == "":
                raise ValueError(f"{field}: a claim needs it (got {value!r})")
        if basis is None:
            basis = "paired seeds" if noise is not None else "none"
        if basis not in BASES:
            raise ValueError(f"basis: {basis!r} is not allowed; choose one of {list(BASES)}")
        if stage is not None and stage not in STAGES:
            raise ValueError(f"stage: {stage!r} is not allowed; choose one of {list(STAGES)}")
        for i, old in enumerate(earlier or []):
            if not isinstance(old, dict) or old.get("verdict") not in VERDICTS:
                raise ValueError(f"earlier[{i}]: needs a 'verdict' in {list(VERDICTS)}, got "
                                 f"{old!r}")
        if margin_se is not None and not (isinstance(margin_se, (int, float))
                                          and math.isfinite(margin_se)):
            raise ValueError(f"margin_se: must be a finite number or None, got {margin_se!r}")
        if self.caveat:
            evidence.setdefault("caveat", self.caveat)
        record = {"statement": statement, "paper": paper, "measured": measured,
                  "tolerance": tolerance, "noise": noise, "mde": mde, "verdict": verdict,
                  "basis": basis, "margin_se": margin_se, **evidence}
        for key, value in (("parts", parts), ("title", title), ("stage", stage),
                           ("earlier", earlier)):
            if value is not None:
                record[key] = value
        self.claims.append(record)
        smoke = f" [{SMOKE_NOTE}]" if self.profile == "smoke" else ""
        fragile = " (fragile)" if is_fragile(margin_se) else ""
        print(f"[claim {verdict.upper()}{f' ({reason})' if reason else ''}{fragile}] "
              f"{statement}{smoke}")
        for p in parts or []:
            print(f"    part {p['label']}: {format_value(p.get('value'))} -> {p['verdict']}{smoke}")
        return verdict

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.checks if not c["passed"]]

    def save(self, folder: Path) -> Path:
        return write_json(Path(folder) / f"{self.notebook}_findings.json", {
            "notebook": self.notebook, "profile": self.profile, "source": self.source,
            "all_checks_passed": not self.failed, "checks": self.checks,
            "claims": self.claims})

    def raise_if_failed(self) -> None:
        if self.failed:
            names = "; ".join(c["name"] for c in self.failed)
            raise ClaimCheckFailed(f"{len(self.failed)} check(s) failed: {names}")

