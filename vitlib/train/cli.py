"""``python -m vitlib.train``: train a ViT from a config.

    python -m vitlib.train --config quickstart --workdir /tmp/run [--set total_steps=500 ...]

Writes ``WORKDIR/metrics.jsonl``, orbax checkpoints under ``WORKDIR/checkpoints``, the run's
config and totals and, at the end, ``WORKDIR/result.json``. Running the same command again
resumes from the last checkpoint (or, for a finished run, prints its record); a workdir of
another config is refused unless --restart clears it. Ctrl-C or SIGTERM (preemption) stops at
the next step with a checkpoint. One process trains a workdir at a time: a second one stops at
once, naming the first; a lock left by a process of another host is broken only with
--break-lock. A file that cannot be written (disk full) stops the run; the same command resumes.

Several hosts: start the same command on every host with ``--coordinator HOST:PORT
--num_processes N --process_id I`` (or ``--distributed`` where JAX finds them itself: TPU VMs,
Slurm, ...), all with the same shared ``--workdir``. Each host reads only its rows of every
batch; the first process writes the run's files.
"""
from __future__ import annotations

import argparse
import json
import sys

from vitlib.configs import apply_overrides, load_config
from vitlib.train.interrupt import RunInterrupted
from vitlib.train.loop import NonFiniteLossError, fit


def start_distributed(args) -> None:
    """``jax.distributed.initialize`` from the CLI's flags, before anything touches a device."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and all(v is None for v in explicit):
        return
    if not args.distributed and any(v is None for v in explicit):
        raise ValueError("--coordinator, --num_processes and --process_id: give all three "
                         "(or --distributed where JAX detects them)")
    if args.num_processes is not None and args.num_processes < 1:
        raise ValueError(f"--num_processes: {args.num_processes} is not allowed; use >= 1")
    if args.process_id is not None and not 0 <= args.process_id < args.num_processes:
        raise ValueError(f"--process_id: {args.process_id} is not allowed; use 0.."
                         f"{args.num_processes - 1}")
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts talk via gloo
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)


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
    parser.add_argument("--break-lock", action="store_true",
                        help="take over WORKDIR's lock left by a process of another host that "
                             "no longer runs (says whose lock it breaks)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    hosts = parser.add_argument_group("several processes (jax.distributed)")
    hosts.add_argument("--distributed", action="store_true",
                       help="join a multi-process run that JAX configures itself (TPU VM, "
                            "Slurm, ...)")
    hosts.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0's coordination service")
    hosts.add_argument("--num_processes", type=int, help="number of processes in all")
    hosts.add_argument("--process_id", type=int, help="this process's index, 0..N-1")
    args = parser.parse_args(argv)
    try:
        start_distributed(args)
        config = apply_overrides(load_config(args.config), args.set)
        result = fit(config, args.workdir, progress=not args.no_progress, restart=args.restart,
                     break_lock=args.break_lock)
    except (ValueError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except RunInterrupted as err:
        print(err, file=sys.stderr)
        return 143 if err.reason.startswith("preempted") else 130  # 128 + SIGTERM / SIGINT
    except KeyboardInterrupt:
        print(f"interrupted; the newest checkpoint in {args.workdir} (if any) is kept: run the "
              f"same command again to resume", file=sys.stderr)
        return 130
    summary = {k: v for k, v in result.items() if k != "config"}
    print(json.dumps(summary, indent=1))
    return 0
