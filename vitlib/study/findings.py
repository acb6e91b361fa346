"""What a notebook found: checks of the code and claims of the paper, and FINDINGS.md.

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

``python -m vitlib.study.findings`` renders every ``*_findings.json`` of the ``cpu`` results into
FINDINGS.md at the repository root (``--check`` only compares); ``make reproduce`` refreshes it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from vitlib.files import write_bytes_atomic, write_json
from vitlib.study.provenance import source_state
from vitlib.study.results import committed_results_dir, findings_output, repo_root

VERDICTS = ("holds", "does not hold", "inconclusive")
REASONS = ("underpowered:", "not testable:")  # why an inconclusive verdict could not be otherwise


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

    def claim(self, statement: str, *, paper, measured, tolerance, verdict: str,
              noise=None, reason: Optional[str] = None, mde=None, **evidence) -> str:
        """Record the paper's ``statement`` re-tested here; never raises on the verdict.

        ``reason`` says why an ``inconclusive`` verdict could not be otherwise: it starts with
        ``underpowered:`` (``statistics.equivalence_power``) or ``not testable:``
        (``analysis.scaling.fit_testability``); FINDINGS.md counts such claims apart. ``mde`` is
        the smallest effect the comparison could detect (``k x`` its noise), shown beside the
        tolerance; ``statistics.paired_within(...).claim_fields()`` gives verdict, reason,
        noise and mde of a paired comparison at once."""
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
        if self.caveat:
            evidence.setdefault("caveat", self.caveat)
        self.claims.append({"statement": statement, "paper": paper, "measured": measured,
                            "tolerance": tolerance, "noise": noise, "mde": mde,
                            "verdict": verdict, **evidence})
        print(f"[claim {verdict.upper()}{f' ({reason})' if reason else ''}] {statement}")
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


# ---------------------------------------------------------------- FINDINGS.md

def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _cell(value) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _noise(value) -> str:
    return "n/a" if value is None else _cell(value)


def _power(claim: dict) -> str:
    """What a verdict rests on: its reason when it could not be otherwise, else whether it was
    read against noise (powered) or is a noiseless count or plan."""
    if claim.get("reason"):
        return claim["reason"]
    return "noiseless" if claim.get("noise") is None else "powered"


def _caveat(claim: dict) -> str:
    return f" *Caveat: {_cell(claim['caveat'])}.*" if claim.get("caveat") else ""


def load_findings(folder: Path) -> list[dict]:
    """Every ``*_findings.json`` in ``folder``, in notebook order."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*_findings.json"))]


def summarize(records: list[dict]) -> dict:
    """Counts of claims by verdict and of checks passed/failed over ``records``."""
    claims = [c for r in records for c in r.get("claims", [])]
    checks = [c for r in records for c in r.get("checks", [])]
    return {**{v: sum(c["verdict"] == v for c in claims) for v in VERDICTS},
            **{r.rstrip(":"): sum(str(c.get("reason", "")).startswith(r) for c in claims)
               for r in REASONS},
            "claims": len(claims), "checks": len(checks),
            "checks_failed": sum(not c["passed"] for c in checks)}


def summary_line(counts: dict) -> str:
    apart = [f"{counts.get(r.rstrip(':'), 0)} {r.rstrip(':')}" for r in REASONS
             if counts.get(r.rstrip(":"), 0)]
    why = f" ({', '.join(apart)})" if apart else ""
    return (f"{counts['claims']} claims of the paper: {counts['holds']} hold, "
            f"{counts['does not hold']} do not hold, {counts['inconclusive']} inconclusive{why}; "
            f"{counts['checks']} checks of the code: "
            f"{counts['checks'] - counts['checks_failed']} passed, {counts['checks_failed']} "
            f"failed")


def _source_text(source: Optional[dict]) -> str:
    if not source or not source.get("commit"):
        return "unknown commit"
    state = {True: "with uncommitted changes", False: "clean", None: "state unknown"}
    return f"commit {source['commit'][:10]} ({state[source.get('dirty')]})"


def render(records: list[dict], where: str) -> str:
    lines = ["# Findings", "",
             f"Generated by `python -m vitlib.study.findings` from the findings JSONs in `{where}`; "
             "do not edit by hand (`make reproduce` refreshes it).", "",
             "A **claim** is the paper's statement re-tested at this scale; its verdict never "
             "fails a notebook. A **check** must hold if the code is right; a failed check "
             "fails its notebook.", "",
             f"**Summary:** {summary_line(summarize(records))}.", ""]
    for record in records:
        counts = summarize([record])
        lines += [f"## {record['notebook']}", "",
                  f"Profile `{record['profile']}`, produced by "
                  f"{_source_text(record.get('source'))}. {summary_line(counts)}.", ""]
        if record.get("claims"):
            lines += ["| claim | paper says | measured here | noise (se) | detectable "
                      "(k x se) | tolerance (fixed beforehand) | verdict |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {_cell(c['statement'])}{_caveat(c)} | {_cell(c['paper'])} | "
                      f"{_cell(c['measured'])} | {_noise(c.get('noise'))} | "
                      f"{_noise(c.get('mde'))} | {_cell(c['tolerance'])} | **{c['verdict']}** "
                      f"({_cell(_power(c))}) |"
                      for c in record["claims"]]
        else:
            lines.append("No claims: every finding of this notebook is a check.")
        lines += ["", "Checks:", ""]
        lines += [f"- {'PASS' if c['passed'] else 'FAIL'}: {c['name']}" for c in record["checks"]]
        lines.append("")
    return "\n".join(lines)


def render_results(results: Path) -> str:
    """FINDINGS.md's text for ``results/figures/*_findings.json``."""
    folder = Path(results) / "figures"
    return render(load_findings(folder), _display(folder))


def write_findings_md(results: Path, output: Path) -> dict:
    """Render ``results``' findings into ``output``; returns the summary counts."""
    write_bytes_atomic(Path(output), render_results(results).encode())
    return summarize(load_findings(Path(results) / "figures"))


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(repo_root(path)))
    except (ValueError, FileNotFoundError):
        return str(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitlib.study.findings",
                                     description="Render FINDINGS.md from findings JSONs.")
    parser.add_argument("--results", type=Path, default=None,
                        help="results folder holding figures/*_findings.json "
                             "(default: the committed cpu results, results/)")
    parser.add_argument("--output", type=Path, default=None,
                        help="file to write (default: FINDINGS.md at the repository root for "
                             "results/, else RESULTS/FINDINGS.md)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the file differs from what it renders to")
    args = parser.parse_args(argv)
    results = args.results or committed_results_dir()
    if not (results / "figures").is_dir():
        print(f"error: --results: {results / 'figures'} is not a folder", file=sys.stderr)
        return 2
    output = args.output or findings_output(results)
    if args.check:
        current = output.read_text() if output.is_file() else None
        if current != render_results(results):
            print(f"{output} is out of date: run 'python -m vitlib.study.findings'", file=sys.stderr)
            return 1
        print(f"{output} is up to date")
        return 0
    print(f"wrote {output}: {summary_line(write_findings_md(results, output))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
