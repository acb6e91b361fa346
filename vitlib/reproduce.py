"""Run every numbered notebook in order with papermill: ``make reproduce PROFILE=cpu``.

    python -m vitlib.reproduce [--profile cpu] [--only 01 04]

Executed copies go to ``<results>/notebooks/``; figures and tables are written by the notebooks
themselves. The first failing notebook stops the run, named with its failing cell.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from vitlib.artifacts import repo_root, results_dir
from vitlib.profiles import PROFILES


def numbered_notebooks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(notebook: Path, output: Path, profile: str) -> None:
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ["VITLIB_PROFILE"] = profile  # the kernel inherits it; cells see one profile
    papermill.execute_notebook(str(notebook), str(output), parameters={"profile": profile},
                               kernel_name="python3", cwd=str(notebook.parent),
                               progress_bar=True)


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitlib.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=os.environ.get("VITLIB_PROFILE", "cpu"),
                        choices=PROFILES)
    parser.add_argument("--only", nargs="*", default=None, metavar="NN",
                        help="run only notebooks whose number is listed (e.g. 01 04)")
    args = parser.parse_args(argv)

    notebooks = numbered_notebooks(repo_root() / "notebooks")
    if args.only:
        known = {p.name[:2] for p in notebooks}
        unknown = sorted(set(args.only) - known)
        if unknown:
            print(f"error: --only: no notebook numbered {unknown}; allowed: {sorted(known)}",
                  file=sys.stderr)
            return 2
        notebooks = [p for p in notebooks if p.name[:2] in args.only]
    out_dir = results_dir(args.profile) / "notebooks"
    for i, notebook in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {notebook.name} (profile {args.profile})", flush=True)
        start = time.time()
        try:
            run_notebook(notebook, out_dir / notebook.name, args.profile)
        except Exception as err:  # papermill raises its own error type for a failing cell
            what = f"{getattr(err, 'ename', type(err).__name__)}: " \
                   f"{getattr(err, 'evalue', err)}"
            where = failing_cell(err, notebook)
            print(f"\nFAILED: notebooks/{notebook.name}, {where}: {what}\n"
                  f"executed copy with the traceback: {out_dir / notebook.name}",
                  file=sys.stderr)
            return 1
        print(f"    done in {time.time() - start:.0f}s -> {out_dir / notebook.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
