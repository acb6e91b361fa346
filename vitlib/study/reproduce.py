"""Run every numbered notebook in order with papermill: ``make reproduce PROFILE=cpu``.

    python -m vitlib.study.reproduce [--profile cpu] [--only 01 04] [--set name=value ...]
    python -m vitlib.study.reproduce --profile full --plan [--accelerator h100 --devices 8]

Executed copies go to ``<results>/notebooks/``, stamped with the commit that ran them; figures
and tables are written by the notebooks themselves. Each notebook's time is printed beside its
budget (DESIGN.md section 4, cpu profile). The first failing notebook stops the run, named with
its failing cell. At the end the findings are rendered (FINDINGS.md at the repository root for
the cpu profile, ``<results>/FINDINGS.md`` for others) and summarised. Training runs are cached
under ``runs/<profile>/``, so an interrupted run picks up where it stopped.

``--set name=value`` sets a parameter of every notebook run (a Python literal, else a string),
as papermill does: ``--set data_dir=/data/tfds --set upstream=imagenet2012``.

``--plan`` trains nothing: for the ``full`` profile it prints each notebook's runs
(``vitlib.study.full_profile``) with their training FLOPs, device- and wall-hours on the named
accelerator at the stated utilisation, the per-device memory of each distinct compiled step
(``--no-memory`` skips the planner) and the totals. The accelerator, device count and
``full_study`` come from each notebook's parameters cell, unless ``--accelerator``,
``--devices`` or ``--set`` give them.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from vitlib.files import write_bytes_atomic
from vitlib.study.findings_report import summary_line, write_findings_md
from vitlib.study.profiles import CPU_BUDGET_MINUTES, CPU_TOTAL_BUDGET_MINUTES, PROFILES
from vitlib.study.provenance import machine_state, source_state
from vitlib.study.results import (COMMITTED_ENV, committed_results_dir, findings_output, repo_root,
                                  results_dir, runs_dir)


def numbered_notebooks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def parse_sets(items) -> dict:
    """``["name=value", ...]`` as notebook parameters: each value a Python literal, else the
    string itself; an item without ``=`` or a name that is not an identifier is an error."""
    parameters = {}
    for item in items or ():
        name, eq, text = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise ValueError(f"--set: {item!r} is not allowed; use name=value with a parameter "
                             f"name of the notebooks (e.g. data_dir=/data/tfds)")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        parameters[name.strip()] = _lists(value)
    if "profile" in parameters:
        raise ValueError("--set: profile is set by --profile")
    return parameters


def _lists(value):
    """Tuples as lists, at any depth: papermill writes a tuple parameter as its string."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def notebook_parameters(notebook: Path) -> dict:
    """The literal assignments of ``notebook``'s parameters cell (name -> value)."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    cell = next((c for c in cells if "parameters" in c.metadata.get("tags", [])), None)
    values = {}
    for node in ast.parse(cell.source if cell else "").body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # not a literal (e.g. the profile read from the environment)
    return values


def run_notebook(notebook: Path, output: Path, profile: str,
                 parameters: Optional[dict] = None) -> None:
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ["VITLIB_PROFILE"] = profile  # the kernel inherits it; cells see one profile
    source = source_state()
    cached = finished_runs(notebook.name[:2], profile)
    before = stamp_of(output)
    start = time.time()
    papermill.execute_notebook(str(notebook), str(output),
                               parameters={**(parameters or {}), "profile": profile},
                               kernel_name="python3", cwd=str(notebook.parent),
                               progress_bar=True)
    timing = dict(machine=machine_state(), wall_s=round(time.time() - start, 1),
                  runs_cached_at_start=cached,
                  runs_trained=finished_runs(notebook.name[:2], profile) - cached)
    carried = empty_cache_run(before, timing)
    stamp_source(output, source, **timing, **({"empty_cache_run": carried} if carried else {}))


def stamp_of(executed: Path) -> dict:
    """The ``vitlib`` stamp of an executed notebook ({} when there is none)."""
    try:
        return json.loads(Path(executed).read_text()).get("metadata", {}).get("vitlib", {})
    except (OSError, ValueError):
        return {}


def empty_cache_run(before: dict, now: dict) -> Optional[dict]:
    """The run from an empty cache that trained the runs a read-back just read: kept from the
    previous stamp (``before``) when this run trained nothing and read back exactly the runs
    that one trained, so a budget's evidence survives re-running a notebook from its cache."""
    if now["runs_trained"] or not now["runs_cached_at_start"]:
        return None
    first = before.get("empty_cache_run") or (
        before if before.get("runs_cached_at_start") == 0 and "wall_s" in before else None)
    if not first or first.get("runs_trained") != now["runs_cached_at_start"]:
        return None
    return {k: first[k] for k in ("source", "machine", "wall_s", "runs_trained") if k in first}


def finished_runs(number: str, profile: str) -> int:
    """Finished training runs cached for notebook ``number`` (its folders ``NN_*`` in the
    profile's run folder): 0 before a run from an empty cache."""
    folder = runs_dir(profile)
    return sum(1 for _ in folder.glob(f"{number}_*/**/result.json")) if folder.is_dir() else 0


def stamp_source(executed: Path, source: dict, **timing) -> None:
    """Record in the executed notebook's metadata which code produced it and, in ``timing``,
    on which machine, how long it ran and how many of its training runs were read back or
    trained (the evidence behind a budget: a run from an empty cache has
    ``runs_cached_at_start`` 0)."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.metadata["vitlib"] = {"source": source, **timing}
    write_bytes_atomic(executed, nbformat.writes(nb).encode())


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def budget_note(name: str, seconds: float, profile: str) -> str:
    budget = CPU_BUDGET_MINUTES.get(name[:2]) if profile == "cpu" else None
    if budget is None:
        return f"{_minutes(seconds)}"
    over = "  OVER BUDGET" if seconds > 60 * budget else ""
    return f"{_minutes(seconds)} (budget {budget} min){over}"


def failing_cell(err: Exception, notebook: Path) -> str:
    """'cell 3 (In [4]): first line', numbered as in the notebook as written."""
    source = getattr(err, "source", None)
    if source is None:
        return "before any cell ran"
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    number = next((i + 1 for i, c in enumerate(cells) if c.source == source), "?")
    first_line = (source.strip().splitlines() or [""])[0][:80]
    return f"cell {number} (In [{getattr(err, 'exec_count', '?')}]): {first_line!r}"


def print_plan(args) -> int:
    """The ``--plan`` output: each notebook's plan, then the whole profile's totals."""
    from vitlib.analysis.compute_plan import plan
    from vitlib.study import full_profile

    if args.profile == "cpu":
        return print_cpu_plan(args)
    if args.profile != "full":
        print(f"--plan: the {args.profile} profile has no plan (its runs take seconds); plans "
              f"exist for --profile full and --profile cpu", file=sys.stderr)
        return 2
    notebooks = sorted(full_profile.NOTEBOOKS)
    if args.only:
        unknown = sorted(set(args.only) - set(notebooks) - {"01"})
        if unknown:
            print(f"error: --only: no full-profile plan for {unknown}; allowed: "
                  f"{['01', *notebooks]}", file=sys.stderr)
            return 2
        notebooks = [n for n in notebooks if n in args.only]
    everything, hosts, mfus, plans = [], set(), {}, {}
    several = len(notebooks) > 1  # assumptions once, after the grand total
    try:
        sets = parse_sets(args.set)
        for notebook in notebooks:
            accelerator, devices, runs = _notebook_plan(notebook, args, sets)
            if accelerator not in mfus:
                mfus[accelerator] = _plan_mfu(args.mfu, accelerator)
            hosts.add((accelerator, devices))
            everything += runs
            print(f"== notebook {notebook}", flush=True)
            plans[notebook] = plan(runs, accelerator, devices, mfus[accelerator],
                                   memory=not args.no_memory)
            print(plans[notebook].table(assumptions=not several), flush=True)
        if several:
            accelerator, devices = sorted(hosts)[0]
            mixed = (f" (notebooks name {len(hosts)} hosts; priced on the first)"
                     if len(hosts) > 1 else "")
            whole = plan(everything, accelerator, devices, mfus[accelerator], memory=False)
            print(f"== the whole full profile{mixed}", flush=True)
            print(grand_total(plans, whole))
            print("\nAssumptions (every notebook's):")
            print("\n".join(f"- {a}" for a in next(iter(plans.values())).assumptions))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def print_cpu_plan(args) -> int:
    """The cpu profile's ``--plan``: per notebook, its cached runs priced and estimated on this
    CPU beside their measured training times (``vitlib.study.measured_plan``)."""
    from vitlib.analysis.cpu_estimate import comparison_table
    from vitlib.study.measured_plan import cpu_plan

    notebooks = numbered_notebooks(repo_root() / "notebooks")
    if args.only:
        notebooks = [p for p in notebooks if p.name[:2] in args.only]
    for notebook in notebooks:
        folder = runs_dir("cpu") / notebook.stem
        print(f"== notebook {notebook.name[:2]} ({folder})", flush=True)
        if not any(folder.glob("*/result.json")):
            print(f"no finished runs cached; its measured time from an empty run cache is in "
                  f"docs/profiles.md (budget {CPU_BUDGET_MINUTES.get(notebook.name[:2])} min)")
            continue
        try:
            report = cpu_plan(folder)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(comparison_table(report))
        print(f"{report['runs']} runs: estimated {report['estimated_total_s'] / 60:.1f} min of "
              f"training on this CPU, measured {report['measured_total_s'] / 60:.1f} min "
              f"(training only; compiles, evaluations and few-shot come on top)", flush=True)
    return 0


def grand_total(plans: dict, whole) -> str:
    """One line per notebook's plan and the whole profile's total (``whole``)."""
    rows = [(f"notebook {n}", p.totals) for n, p in plans.items()] + [("total", whole.totals)]
    lines = [f"{'':12s}  {'runs':>5s}  {'FLOPs':>9s}  {'device-h':>9s}  {'wall-h':>7s}  "
             f"{'wall-days':>9s}"]
    for name, t in rows:
        if name == "total":
            lines.append("-" * len(lines[0]))
        lines.append(f"{name:12s}  {t['runs']:5d}  {t['flops']:9.3g}  {t['device_hours']:9,.1f}  "
                     f"{t['wall_hours']:7,.1f}  {t['wall_hours'] / 24:9.2f}")
    return (f"{whole.devices} x {whole.accelerator.label} at MFU {whole.mfu:.2f}"
            f"{' (assumed)' if whole.mfu_assumed else ''}, runs one after another:\n"
            + "\n".join(lines))


def _plan_mfu(given, accelerator: str):
    """The MFU ``--plan`` prices ``accelerator`` at: ``--mfu``, else the one ``make
    bench-accelerator`` measured there (``vitlib.study.device_check``), else None (the
    assumption); prints which."""
    from vitlib.analysis.accelerators import DEFAULT_MFU
    from vitlib.study import device_check

    if given is not None:
        print(f"{accelerator}: MFU {given:.2f} given (--mfu)", flush=True)
        return given
    measured = device_check.measured_mfu(accelerator)
    if measured:
        print(f"{accelerator}: {measured.note()}", flush=True)
        return measured.mfu
    print(f"{accelerator}: MFU {DEFAULT_MFU:.2f} assumed: no device check of {accelerator} in "
          f"{device_check.BENCHMARKS} (make bench-accelerator on one writes it)", flush=True)
    return None


def _notebook_plan(notebook: str, args, sets: dict) -> tuple:
    """(accelerator, devices, runs) of ``notebook``'s full profile: its parameters cell, then
    ``--set``, then ``--accelerator`` / ``--devices``."""
    from vitlib.study import full_profile

    found = [p for p in numbered_notebooks(repo_root() / "notebooks") if p.name[:2] == notebook]
    params = {**(notebook_parameters(found[0]) if found else {}), **sets}
    accelerator = args.accelerator or params.get("accelerator", "h100")
    devices = args.devices or params.get("devices", 8)
    return accelerator, devices, full_profile.runs_of(notebook, params.get("full_study") or None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitlib.study.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=os.environ.get("VITLIB_PROFILE", "cpu"),
                        choices=PROFILES)
    parser.add_argument("--only", nargs="*", default=None, metavar="NN",
                        help="run only notebooks whose number is listed (e.g. 01 04)")
    plan_args = parser.add_argument_group("--plan: the cost of a profile, before it trains")
    plan_args.add_argument("--plan", action="store_true", help="print the plan; train nothing")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a notebook parameter for every notebook (repeatable; a Python "
                             "literal, else a string)")
    plan_args.add_argument("--accelerator", default=None,
                           help="a name of vitlib.analysis.accelerators (h100, a100, tpuv4, "
                                "tpuv5e, ...); default: each notebook's parameter")
    plan_args.add_argument("--devices", type=int, default=None,
                           help="devices of the host; default: each notebook's parameter")
    plan_args.add_argument("--mfu", type=float, default=None,
                           help="model FLOPs utilisation (default: accelerators.DEFAULT_MFU)")
    plan_args.add_argument("--no-memory", action="store_true",
                           help="skip the per-device memory of the compiled steps")
    args = parser.parse_args(argv)
    if args.plan:
        return print_plan(args)

    notebooks = numbered_notebooks(repo_root() / "notebooks")
    if args.only:
        known = {p.name[:2] for p in notebooks}
        unknown = sorted(set(args.only) - known)
        if unknown:
            print(f"error: --only: no notebook numbered {unknown}; allowed: {sorted(known)}",
                  file=sys.stderr)
            return 2
        notebooks = [p for p in notebooks if p.name[:2] in args.only]
    try:
        parameters = parse_sets(args.set)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.profile == "cpu":  # the one way to (re)write the committed results/
        os.environ[COMMITTED_ENV] = "1"
    out_dir = results_dir(args.profile) / "notebooks"
    total_start = time.time()
    for i, notebook in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {notebook.name} (profile {args.profile})", flush=True)
        start = time.time()
        try:
            run_notebook(notebook, out_dir / notebook.name, args.profile, parameters)
        except KeyboardInterrupt:
            print(f"\ninterrupted in notebooks/{notebook.name}; run the same command again: "
                  f"finished training runs are read back from runs/{args.profile}/",
                  file=sys.stderr)
            return 130
        except Exception as err:  # papermill raises its own error type for a failing cell
            what = f"{getattr(err, 'ename', type(err).__name__)}: " \
                   f"{getattr(err, 'evalue', err)}"
            where = failing_cell(err, notebook)
            print(f"\nFAILED: notebooks/{notebook.name}, {where}: {what}\n"
                  f"executed copy with the traceback: {out_dir / notebook.name}",
                  file=sys.stderr)
            return 1
        print(f"    done in {budget_note(notebook.name, time.time() - start, args.profile)}"
              f" -> {out_dir / notebook.name}", flush=True)
    total = time.time() - total_start
    budget = f" (budget {CPU_TOTAL_BUDGET_MINUTES} min for all)" if args.profile == "cpu" else ""
    print(f"all {len(notebooks)} notebook(s) in {_minutes(total)}{budget}")
    results = results_dir(args.profile)
    target = findings_output(results)
    if (results / "figures").is_dir():
        # The README carries the generated results of the committed results/ only (a results
        # folder elsewhere, e.g. VITLIB_RESULTS_DIR outside any checkout, has no README).
        readme = None
        if results.resolve() == committed_results_dir().resolve():
            readme = repo_root(results) / "README.md"
            readme = readme if readme.is_file() else None
        counts = write_findings_md(results, target, readme)
        print(f"findings ({target}): {summary_line(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
