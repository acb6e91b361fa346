"""Train a ViT from a config: ``fit(config, workdir)``, read top to bottom as its four parts.

0. The workdir: a finished run of the same config is read back; one of another config is
   refused (``workdir.check_belongs``).
1. ``build_run``: the config checked, data, model, optimizer and compiled programs.
2. ``starting_state``: resume from WORKDIR's newest intact checkpoint, a branch point, or
   fresh.
3. ``train_loop``: the steps, with metrics logged, checkpoints saved and evaluations run at
   their intervals.
4. ``result_record``: the final evaluation and the whole run's timings, written to
   ``WORKDIR/result.json``.

Writes ``WORKDIR/metrics.jsonl`` (one JSON record per log interval and per evaluation), orbax
checkpoints under ``WORKDIR/checkpoints`` and the run's config and totals (``workdir``).
Running it again resumes from the last checkpoint and ends with the same parameters as an
uninterrupted run. A non-finite loss stops the run and keeps the last good checkpoint.

One process writes a workdir at a time (``workdir_lock``), and a file that cannot be written
(no space left, a read-only folder) stops the run with the checkpoints and records before it
kept (``WorkdirWriteFailed``), so that the same call resumes once it can write.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import jax
import numpy as np
from tqdm import tqdm

from vitlib.data.batches import Prefetcher
from vitlib.files import WriteFailed, append_line, write_bytes_atomic, write_json
from vitlib.train import workdir_lock
from vitlib.train.build import Run, build_run, check_config
from vitlib.train.evaluation import Evaluator
from vitlib.train.interrupt import RunInterrupted, stop_on_interrupt
from vitlib.train.resume import starting_state
from vitlib.train.sharding import host_rows, replicated, shard_local_rows
from vitlib.train.steps import params_sha256
from vitlib.train.workdir import (Progress, check_belongs, clear_run, finished_result, plain,
                                  prepare_workdir, read_progress, record_config,
                                  stopped_by_failed_write, write_progress)

# Bump when a change alters the numbers an unchanged config produces (params_sha256, losses):
# cached sweep results carry it in their key, so old results are retrained instead of mixed in.
# 1: every run so far (lr, weight decay and the init seed as inputs of the compiled programs
#    left params_sha256 bitwise unchanged; tests/test_train.py holds fit to the optax chain).
NUMERICS_VERSION = 1
# Steps dispatched but not yet computed. JAX dispatches asynchronously, so without a bound the
# loop runs far ahead of the device and a Ctrl-C or a log waits for all the queued steps; two in
# flight keep the device busy.
STEPS_IN_FLIGHT = 2


class NonFiniteLossError(RuntimeError):
    pass


def fit(config, workdir, init_params: Optional[Callable] = None, progress: bool = True,
        start_from: Optional[tuple] = None, restart: bool = False,
        break_lock: bool = False) -> dict:
    """Train to ``config.total_steps`` (resuming from WORKDIR's last checkpoint) and evaluate.

    A finished run of the same config is read back, its record untouched. A workdir holding a
    run of another config is refused (``WorkdirMismatch``, naming the keys that differ) unless
    ``restart`` clears it first. ``init_params(params) -> params`` replaces freshly initialised
    parameters (fine-tuning). ``start_from=(checkpoint_folder, step)`` starts a run without
    checkpoints of its own from another run's saved state (a cooldown branch): training
    continues at ``step`` with this config's schedule, seeing the batches a run from scratch
    would see from that step on. Ctrl-C stops at the next step with a checkpoint
    (``RunInterrupted``).

    While it trains, the workdir is locked to this process: another process training it stops
    at once (``workdir_lock.WorkdirBusy``), writing nothing; ``break_lock`` breaks a lock that
    a process of another host left. A file that cannot be written stops the run
    (``WorkdirWriteFailed``: which file, and why), with the checkpoints and records before it
    kept.
    """
    check_config(config)
    call_start = time.perf_counter()
    workdir, created = prepare_workdir(workdir)
    if not restart and (finished := _read_back(workdir, config)) is not None:
        return finished
    writer = (workdir_lock.hold(workdir, break_lock, release_on_sigterm=jax.process_count() == 1)
              if is_primary() else contextlib.nullcontext())  # one process writes the files
    try:
        with writer:
            return _train(config, workdir, created, call_start, init_params, progress,
                          start_from, restart)
    except WriteFailed as err:
        raise stopped_by_failed_write(workdir, err) from None


def _read_back(workdir: Path, config) -> Optional[dict]:
    finished = finished_result(workdir, config, NUMERICS_VERSION)
    if finished is not None:
        print(f"finished run read back from {workdir / 'result.json'} (--restart trains it "
              f"again)", flush=True)
    return finished


def _train(config, workdir: Path, created: bool, call_start: float, init_params, progress: bool,
           start_from, restart: bool) -> dict:
    """``fit``'s parts 0-4, as the workdir's one writer."""
    if restart and clear_run(workdir):
        print(f"restart: cleared the run in {workdir}", flush=True)
    elif (finished := _read_back(workdir, config)) is not None:  # finished by the last writer
        return finished
    check_belongs(workdir, config)
    try:
        run = build_run(config, workdir)
    except BaseException:
        if created:  # nothing trained: leave nothing behind
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        state, start, data_state = starting_state(run, init_params, start_from)
        if is_primary():
            record_config(workdir, config)
        totals = read_progress(workdir, start)
        evaluate = Evaluator(config, run.programs, run.mesh)
        totals.setup_time_s += time.perf_counter() - call_start
        clock = RunClock(call_start, totals.wall_time_s)
        state, last_record = train_loop(run, state, start, evaluate, totals, clock, progress,
                                        data_state)
        if start == config.total_steps:  # nothing left to train: evaluate the restored model
            eval_start = time.perf_counter()
            last_record = evaluate(start, state.params, final=True)
            totals.eval_time_s += time.perf_counter() - eval_start
    finally:
        run.close()
    totals.wall_time_s = clock.wall_time()
    result = result_record(config, start, state, last_record, totals)
    if is_primary():
        write_json(workdir / "result.json", result)
    return result


def is_primary() -> bool:
    """Whether this process writes the run's files (with several processes, the first)."""
    return jax.process_index() == 0


class RunClock:
    """Wall time of the whole run: earlier calls' total plus this call's time so far."""

    def __init__(self, call_start: float, earlier_wall_time: float):
        self.call_start, self.earlier = call_start, earlier_wall_time

    def wall_time(self) -> float:
        return self.earlier + time.perf_counter() - self.call_start


class MetricsLog:
    """Appends JSON records to metrics.jsonl; on resume, drops records past the restart step."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        if path.exists() and is_primary():
            kept = [line for line in path.read_text().splitlines()
                    if (step := _step_of(line)) is not None and step <= resume_step]
            write_bytes_atomic(path, "".join(line + "\n" for line in kept).encode())

    def write(self, record: dict) -> None:
        if not is_primary():
            return
        append_line(self.path, json.dumps(record))  # the whole line or nothing


def _step_of(line: str) -> Optional[int]:
    """The step of a metrics record; None for a line cut short (a write of an older vitlib that
    failed part way)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None


class StepMetrics:
    """The train steps' metrics since the last log record. ``flush(step)`` fetches them from the
    device, stops the run on a non-finite loss or parameter norm, logs their means with the
    step's lr and the images per second of the interval (timed from ``restart_clock``), and adds
    the interval to the run's totals."""

    def __init__(self, run: Run, log: MetricsLog, lrs: np.ndarray, start: int,
                 totals: Progress, bar):
        self.run, self.log, self.lrs, self.totals, self.bar = run, log, lrs, totals, bar
        self.pending: list = []
        self.last_flush = start
        self.bad_images = 0  # undecodable records skipped by the input pipeline so far
        self.interval_start = time.perf_counter()

    def add(self, metrics) -> None:
        self.pending.append(metrics)
        if len(self.pending) > STEPS_IN_FLIGHT:  # bound the async run-ahead (see STEPS_IN_FLIGHT)
            jax.block_until_ready(self.pending[-1 - STEPS_IN_FLIGHT]["loss"])

    def restart_clock(self) -> None:
        self.interval_start = time.perf_counter()

    def flush(self, step: int) -> None:
        if not self.pending:
            return
        metrics = jax.device_get(self.pending)
        losses = np.array([m["loss"] for m in metrics])
        norms = np.array([m["param_norm"] for m in metrics])
        bad = np.flatnonzero(~np.isfinite(losses) | ~np.isfinite(norms))
        if bad.size:
            at = self.last_flush + int(bad[0]) + 1
            kept = self.run.checkpointer.latest_step()
            raise NonFiniteLossError(
                f"loss or parameters became non-finite at step {at} (loss {losses[bad[0]]}); "
                f"stopped. The last good checkpoint (step {kept}) is kept in "
                f"{self.run.workdir}; lower optim.lr or raise optim.schedule.warmup_steps and "
                f"rerun with --restart.")
        elapsed = time.perf_counter() - self.interval_start
        self.totals.train_time_s += elapsed
        self.totals.steps_trained += len(metrics)
        self.totals.last_loss = float(losses[-10:].mean())
        rate = len(metrics) * self.run.config.batch_size / elapsed
        record = {"step": step, "train_loss": float(losses.mean()),
                  "lr": float(self.lrs[step - 1]),
                  "grad_norm": float(np.mean([m["grad_norm"] for m in metrics])),
                  "images_per_s": rate}
        if self.bad_images:
            record["bad_images_skipped"] = self.bad_images
        self.log.write(record)
        self.bar.set_postfix(loss=f"{self.totals.last_loss:.4f}", img_s=f"{rate:.0f}")
        self.pending, self.last_flush = [], step


def train_loop(run: Run, state, start: int, evaluate: Evaluator, totals: Progress,
               clock: RunClock, progress: bool, data_state: Optional[dict] = None):
    """Steps ``start .. total_steps - 1``; returns (state, the last evaluation record or {}).
    After a step that ends a log, eval or checkpoint interval (or is one of
    ``checkpoint_steps``), the metrics are flushed, then checkpoints saved (with the run's
    totals in progress.json and the input pipeline's state), then the evaluation run; the last
    step does all of them. Ctrl-C or SIGTERM stops at the next step boundary with a checkpoint
    (``RunInterrupted``). ``data_state``: the input's state saved with the checkpoint the run
    resumes from."""
    config = run.config
    log = MetricsLog(run.workdir / "metrics.jsonl", start)
    lrs = run.optimizer.lr_table(config.total_steps)
    weight_decay = jax.device_put(run.optimizer.weight_decay_rates(state.params),
                                  replicated(run.mesh))

    def place(item):
        batch, after = item
        skipped = int(batch.pop("bad_images", 0))
        return shard_local_rows(batch, run.mesh, config.batch_size), after, skipped
    stream = run.train_input.stream(start, config.total_steps,
                                    host_rows(config.batch_size, run.mesh), data_state)
    prefetch = Prefetcher(items=((s, (batch, after)) for s, batch, after in stream),
                          place=place)
    bar = tqdm(total=config.total_steps, initial=start, disable=not progress, mininterval=1.0,
               desc="train", unit="step")
    metrics_since_log = StepMetrics(run, log, lrs, start, totals, bar)
    keep = set(config.checkpoint_steps)
    last_record = {}
    try:
        with stop_on_interrupt() as stop:
            for step, (batch, data_state, skipped) in prefetch:
                metrics_since_log.bad_images += skipped
                state, metrics = run.programs.step(state, batch, {"lr": lrs[step],
                                                                  "weight_decay": weight_decay})
                metrics_since_log.add(metrics)
                done = step + 1
                bar.update(1)
                at_end = done == config.total_steps
                stopping = stop.preempted_at(done)  # read once: a later request waits a step
                evals = at_end or (config.eval_every and done % config.eval_every == 0)
                ckpt = (at_end or stopping
                        or (config.checkpoint_every and done % config.checkpoint_every == 0))
                if (evals or ckpt or done in keep
                        or (config.log_every and done % config.log_every == 0)):
                    metrics_since_log.flush(done)
                    checkpoint_start = time.perf_counter()
                    if ckpt:
                        run.checkpointer.save(done, state, data_state)
                    if done in keep:
                        run.branch_points.save(done, state, data_state)
                    eval_start = time.perf_counter()
                    totals.checkpoint_time_s += eval_start - checkpoint_start
                    if ckpt:
                        totals.wall_time_s = clock.wall_time()
                        if is_primary():
                            write_progress(run.workdir, done, totals,
                                           run.checkpointer.all_steps())
                    if stopping and not at_end:
                        raise RunInterrupted(done, run.workdir, stop.reason)
                    if evals:
                        last_record = evaluate(done, state.params, final=at_end)
                        log.write(last_record)
                        bar.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in last_record.items()))
                    metrics_since_log.restart_clock()
                    totals.eval_time_s += metrics_since_log.interval_start - eval_start
    finally:
        prefetch.close()
        close = getattr(stream, "close", None)
        if close is not None:  # grain's worker processes
            close()
        bar.close()
    return state, last_record


def result_record(config, start: int, state, last_record: dict, totals: Progress) -> dict:
    """What result.json holds: lengths, the final evaluation, the parameters' digest, the
    numerics version, the timings of the whole run (over every call that trained it) and the
    config."""
    return {
        "steps": config.total_steps,
        "steps_this_run": config.total_steps - start,
        "images_seen": config.total_steps * config.batch_size,
        "final_train_loss": totals.last_loss,
        **{k: v for k, v in last_record.items() if k != "step"},
        "params_sha256": params_sha256(state.params),
        "numerics_version": NUMERICS_VERSION,
        "wall_time_s": totals.wall_time_s,
        "setup_time_s": totals.setup_time_s,
        "train_time_s": totals.train_time_s,
        "eval_time_s": totals.eval_time_s,
        "checkpoint_time_s": totals.checkpoint_time_s,
        "images_per_s": (totals.steps_trained * config.batch_size / totals.train_time_s
                         if totals.train_time_s else None),
        "devices": len(jax.devices()),
        "config": plain(config),
    }
