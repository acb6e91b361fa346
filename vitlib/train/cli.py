"""``python -m vitlib.train``: train a ViT from a config.

    python -m vitlib.train --config quickstart --workdir /tmp/run [--set total_steps=500 ...]

Writes ``WORKDIR/metrics.jsonl``, orbax checkpoints under ``WORKDIR/checkpoints``, the run's
config and totals and, at the end, ``WORKDIR/result.json``. Running the same command again
resumes from the last checkpoint (or, for a finished run, prints its record); a workdir of
another config is refused unless --restart clears it. Ctrl-C stops at the next step with a
checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys

from vitlib.configs import apply_overrides, load_config
from vitlib.train.interrupt import RunInterrupted
from vitlib.train.loop import NonFiniteLossError, fit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitlib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config name (vitlib/configs) or .py")
    parser.add_argument("--workdir", required=True, help="folder for metrics, checkpoints")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. total_steps=500, optim.lr=3e-3")
    parser.add_argument("--restart", action="store_true",
                        help="delete the run in WORKDIR (checkpoints, metrics, result) and "
                             "train afresh")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = apply_overrides(load_config(args.config), args.set)
        result = fit(config, args.workdir, progress=not args.no_progress, restart=args.restart)
    except (ValueError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except RunInterrupted as err:
        print(err, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"interrupted; the newest checkpoint in {args.workdir} (if any) is kept: run the "
              f"same command again to resume", file=sys.stderr)
        return 130
    summary = {k: v for k, v in result.items() if k != "config"}
    print(json.dumps(summary, indent=1))
    return 0
