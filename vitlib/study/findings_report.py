"""FINDINGS.md and the README's "results at a glance" block, rendered from the notebooks' saved
findings (``results/figures/*_findings.json``, written by ``vitlib.study.findings.Findings``).

``python -m vitlib.study.findings_report`` renders every ``*_findings.json``
of the ``cpu`` results into FINDINGS.md at the repository root and refreshes the README's
generated block (``--check`` only compares); ``make reproduce`` refreshes both.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from vitlib.files import write_bytes_atomic
from vitlib.study.findings import REASONS, SMOKE_NOTE, VERDICTS, claim_margin, format_value
from vitlib.study.profiles import CPU_BUDGET_MINUTES, CPU_TOTAL_BUDGET_MINUTES
from vitlib.study.results import committed_results_dir, findings_output, repo_root
from vitlib.study.statistics import is_fragile


def _cell(value) -> str:
    return format_value(value).replace("|", "\\|").replace("\n", " ")


def _noise(value) -> str:
    return "n/a" if value is None else _cell(value)


def _basis(claim: dict) -> str:
    """What a verdict rests on. Records written before ``basis`` existed are read as before:
    noise means paired seeds, none means no noise."""
    return claim.get("basis") or ("paired seeds" if claim.get("noise") is not None else "none")


def _margin(margin_se) -> str:
    if margin_se is None:
        return ""
    return f"margin {margin_se:.2g} se" + (", *fragile*" if is_fragile(margin_se) else "")


def _power(claim: dict) -> str:
    """What a verdict rests on, its margin to its threshold, and why an inconclusive verdict
    could not be otherwise."""
    basis = _basis(claim)
    words = ["no noise (a count, a plan or a formula)" if basis == "none" else basis]
    if claim_margin(claim) is not None:
        words.append(_margin(claim_margin(claim)))
    if claim.get("reason"):
        words.append(claim["reason"])
    return "; ".join(words)


def _part_line(p: dict) -> str:
    se = f" +/- {format_value(p['se'])} se" if p.get("se") is not None else ""
    mde = f" (detectable {format_value(p['mde'])})" if p.get("mde") is not None else ""
    margin = f", {_margin(p['margin_se'])}" if p.get("margin_se") is not None else ""
    reason = f" ({p['reason']})" if p.get("reason") else ""
    return f"{p['label']}: {format_value(p.get('value'))}{se}{mde} -> {p['verdict']}{margin}{reason}"


def _measured(claim: dict) -> str:
    text = _cell(claim["measured"])
    if claim.get("parts"):
        text += "".join(f"<br>part {i + 1}, {_cell(_part_line(p))}"
                        for i, p in enumerate(claim["parts"]))
    return text


def _verdict_cell(claim: dict) -> str:
    stage = f"{claim['stage']}: " if claim.get("stage") else ""
    text = f"{stage}**{claim['verdict']}** ({_cell(_power(claim))})"
    if claim.get("confirmation"):
        text += f"<br>confirmation: {_cell(claim['confirmation'])}"
    for old in claim.get("earlier") or []:
        seeds = f", seeds {format_value(old['seeds'])}" if old.get("seeds") is not None else ""
        commit = f", commit {str(old['commit'])[:10]}" if old.get("commit") else ""
        note = f" ({old['note']})" if old.get("note") else ""
        what = old.get("statement") or ""
        what = f" \"{what[:60].rstrip()}...\"" if len(what) > 60 else (f" \"{what}\"" if what else "")
        text += (f"<br>earlier, exploratory{commit}{seeds}:{_cell(what)} "
                 f"{old['verdict']}{_cell(note)}")
    return text


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
            "fragile": sum(is_fragile(claim_margin(c)) for c in claims),
            "claims": len(claims), "checks": len(checks),
            "checks_failed": sum(not c["passed"] for c in checks)}


def summary_line(counts: dict) -> str:
    apart = [f"{counts.get(r.rstrip(':'), 0)} {r.rstrip(':')}" for r in REASONS
             if counts.get(r.rstrip(":"), 0)]
    why = f" ({', '.join(apart)})" if apart else ""
    fragile = (f" ({counts['fragile']} of them fragile: within 1 se of changing)"
               if counts.get("fragile") else "")
    return (f"{counts['claims']} claims of the paper: {counts['holds']} hold, "
            f"{counts['does not hold']} do not hold, {counts['inconclusive']} inconclusive{why}"
            f"{fragile}; "
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
             f"Generated by `python -m vitlib.study.findings_report` from the findings JSONs in `{where}`; "
             "do not edit by hand (`make reproduce` refreshes it).", "",
             "A **claim** is the paper's statement re-tested at this scale; its verdict never "
             "fails a notebook. A **check** must hold if the code is right; a failed check "
             "fails its notebook.", "",
             f"**Summary:** {summary_line(summarize(records))}.", ""]
    if any(r.get("profile") == "smoke" for r in records):
        lines[2:2] = [f"**Smoke results** ({SMOKE_NOTE}): every verdict below comes from a "
                      "few steps of tiny models and means nothing about the paper.", ""]
    for record in records:
        counts = summarize([record])
        smoke = f" *{SMOKE_NOTE}.*" if record.get("profile") == "smoke" else ""
        lines += [f"## {record['notebook']}", "",
                  f"Profile `{record['profile']}`, produced by "
                  f"{_source_text(record.get('source'))}. {summary_line(counts)}.{smoke}", ""]
        if record.get("claims"):
            lines += ["| claim | paper says | measured here | noise (se) | detectable "
                      "(k x se) | tolerance (fixed beforehand) | verdict |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {_cell(c['statement'])}{_caveat(c)} | {_cell(c['paper'])} | "
                      f"{_measured(c)} | {_noise(c.get('noise'))} | "
                      f"{_noise(c.get('mde'))} | {_cell(c['tolerance'])} | {_verdict_cell(c)} |"
                      for c in record["claims"]]
        else:
            lines.append("No claims: every finding of this notebook is a check.")
        lines += ["", "Checks:", ""]
        lines += [f"- {'PASS' if c['passed'] else 'FAIL'}: {c['name']}" for c in record["checks"]]
        lines.append("")
    return "\n".join(lines)


README_BEGIN = ("<!-- BEGIN results at a glance: generated from results/figures/*_findings.json "
                "by `python -m vitlib.study.findings_report`; do not edit -->")
README_END = "<!-- END results at a glance -->"


def _title(claim: dict) -> str:
    if claim.get("title"):
        return claim["title"]
    head = claim["statement"].split(";")[0]
    return head if len(head) <= 140 else head[:137].rstrip() + "..."


def run_times(results: Path) -> dict:
    """{notebook: what its executed copy in ``results/notebooks/`` records of its run}: the
    wall seconds, the training runs it found cached at the start and those it trained
    (``reproduce``'s stamp; absent from notebooks executed before it was recorded)."""
    times = {}
    for path in sorted((Path(results) / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        stamp = json.loads(path.read_text()).get("metadata", {}).get("vitlib", {})
        if "wall_s" in stamp:
            times[path.stem] = {k: stamp.get(k) for k in ("wall_s", "runs_cached_at_start",
                                                          "runs_trained", "machine",
                                                          "empty_cache_run", "source")}
    return times


def _empty_cache_record(stamp: Optional[dict]) -> Optional[dict]:
    """The record of the run that trained every run from an empty cache: the stamp itself, or
    the earlier run a read-back keeps (``reproduce.empty_cache_run``); None if neither."""
    if stamp and not stamp.get("runs_cached_at_start"):
        return stamp
    return (stamp or {}).get("empty_cache_run")


def _run_time(stamp: Optional[dict], budget: Optional[int]) -> str:
    if not stamp:
        return "not recorded"
    minutes = f"{stamp['wall_s'] / 60:.1f} min"
    first = _empty_cache_record(stamp)
    if first is None:
        return (f"{minutes}, {stamp.get('runs_cached_at_start') or 0} runs read back, "
                f"{stamp.get('runs_trained') or 0} trained")
    of = f" of {budget}" if budget is not None else ""
    text = (f"{first['wall_s'] / 60:.1f}{of} min, empty run cache "
            f"({first.get('runs_trained') or 0} runs trained")
    if first is stamp:
        return text + ")"
    commit = ((first.get("source") or {}).get("commit") or "")[:7]
    return f"{text}{', at ' + commit if commit else ''}); read back in {minutes}"


def _total(records: list[dict], times: dict) -> str:
    """' All N notebooks from empty run caches, one at a time: X of Y min.' when every notebook
    has a cpu budget and a run from an empty cache."""
    firsts = [_empty_cache_record(times.get(r["notebook"])) for r in records]
    if not records or None in firsts or None in map(budget, records):
        return ""
    return (f" All {len(records)} notebooks from empty run caches, one at a time: "
            f"{sum(f['wall_s'] for f in firsts) / 60:.1f} of {CPU_TOTAL_BUDGET_MINUTES} min.")


def budget(record: dict) -> Optional[int]:
    """The notebook's cpu budget in minutes (``CPU_BUDGET_MINUTES``); None for other profiles."""
    return CPU_BUDGET_MINUTES.get(record["notebook"][:2]) if record["profile"] == "cpu" else None


def render_readme_block(records: list[dict], times: Optional[dict] = None) -> str:
    """The README's results at a glance, from the same records as FINDINGS.md so that no
    number about the results is typed by hand: the summary line, then one row per notebook
    (its profile and commit, its claims' verdicts, how many are fragile or confirmatory, its
    checks, and the run time its executed notebook records: ``run_times``)."""
    times = times or {}
    lines = [README_BEGIN, "", f"**{summary_line(summarize(records))}.**", "",
             "| notebook | profile, commit | claims: hold / do not hold / inconclusive | "
             "fragile (< 1 se) | confirmatory on fresh seeds | checks passed | "
             "run time of its budget |",
             "|---|---|---|---|---|---|---|"]
    for record in records:
        counts = summarize([record])
        claims = record.get("claims", [])
        source = (record.get("source") or {}).get("commit") or "unknown"
        confirmed = sum(c.get("stage") == "confirmatory" for c in claims)
        lines.append(f"| [{record['notebook']}](results/notebooks/{record['notebook']}.ipynb) | "
                     f"`{record['profile']}`, {source[:7]} | {counts['claims']}: "
                     f"{counts['holds']} / {counts['does not hold']} / {counts['inconclusive']}"
                     f" | {counts['fragile']} | {confirmed} | "
                     f"{counts['checks'] - counts['checks_failed']} of {counts['checks']} | "
                     f"{_run_time(times.get(record['notebook']), budget(record))} |")
    machines = sorted({f"{m['cpu']}, {m['cores']} cores" for t in times.values()
                       for m in ((t.get("empty_cache_run") or t).get("machine"),) if m})
    if machines:
        lines += ["", "Run times measured on: " + "; ".join(machines) + "." + _total(records, times)]
    lines += ["", "Every claim with its numbers, noise, margin and verdict: "
              "[FINDINGS.md](FINDINGS.md).", "", README_END]
    return "\n".join(lines)


def with_readme_block(readme: str, block: str) -> str:
    """``readme`` with the text between its results markers replaced by ``block``."""
    start, end = readme.find(README_BEGIN), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README: the markers of the generated results are missing; it needs "
                         f"a line {README_BEGIN!r} and, below it, {README_END!r}")
    return readme[:start] + block + readme[end + len(README_END):]


def render_results(results: Path) -> str:
    """FINDINGS.md's text for ``results/figures/*_findings.json``."""
    folder = Path(results) / "figures"
    return render(load_findings(folder), _display(folder))


def write_findings_md(results: Path, output: Path, readme: Optional[Path] = None) -> dict:
    """Render ``results``' findings into ``output`` (and ``readme``'s generated results block,
    when given); returns the summary counts."""
    records = load_findings(Path(results) / "figures")
    write_bytes_atomic(Path(output), render_results(results).encode())
    if readme is not None:
        text = with_readme_block(Path(readme).read_text(),
                                 render_readme_block(records, run_times(results)))
        write_bytes_atomic(Path(readme), text.encode())
    return summarize(records)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(repo_root(path)))
    except (ValueError, FileNotFoundError):
        return str(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitlib.study.findings_report",
                                     description="Render FINDINGS.md from findings JSONs.")
    parser.add_argument("--results", type=Path, default=None,
                        help="results folder holding figures/*_findings.json "
                             "(default: the committed cpu results, results/)")
    parser.add_argument("--output", type=Path, default=None,
                        help="file to write (default: FINDINGS.md at the repository root for "
                             "results/, else RESULTS/FINDINGS.md)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="README whose generated results block to refresh (default: the "
                             "repository's README.md for results/, none otherwise)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file differs from what it renders to")
    args = parser.parse_args(argv)
    results = args.results or committed_results_dir()
    if not (results / "figures").is_dir():
        print(f"error: --results: {results / 'figures'} is not a folder", file=sys.stderr)
        return 2
    output = args.output or findings_output(results)
    readme = args.readme
    if readme is None and args.results is None:
        readme = repo_root(results) / "README.md"
    expected = {output: render_results(results)}
    if readme is not None:
        if not readme.is_file():
            print(f"error: --readme: {readme} is not a file", file=sys.stderr)
            return 2
        block = render_readme_block(load_findings(results / "figures"), run_times(results))
        try:
            expected[readme] = with_readme_block(readme.read_text(), block)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.check:
        stale = [path for path, text in expected.items()
                 if (path.read_text() if path.is_file() else None) != text]
        for path in stale:
            print(f"{path} is out of date: run 'python -m vitlib.study.findings_report'",
                  file=sys.stderr)
        if not stale:
            print(" and ".join(str(path) for path in expected) + " up to date")
        return 1 if stale else 0
    for path, text in expected.items():
        write_bytes_atomic(path, text.encode())
    counts = summarize(load_findings(results / "figures"))
    print(f"wrote {' and '.join(str(path) for path in expected)}: {summary_line(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
