"""Train a ViT from a config: ``fit(config, workdir)``, read top to bottom as its four parts.

1. ``build_run``: the config checked, data, model, optimizer and compiled programs.
2. ``starting_state``: resume from WORKDIR's last checkpoint, a branch point, or fresh.
3. ``train_loop``: the steps, with metrics logged, checkpoints saved and evaluations run at
   their intervals.
4. ``result_record``: the final evaluation and timings, written to ``WORKDIR/result.json``.

Writes ``WORKDIR/metrics.jsonl`` (one JSON record per log interval and per evaluation) and
orbax checkpoints under ``WORKDIR/checkpoints``. Running it again resumes from the last
checkpoint and ends with the same parameters as an uninterrupted run. A non-finite loss stops
the run and keeps the last good checkpoint.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np
from tqdm import tqdm

from vitlib.data.batches import Prefetcher, train_batch
from vitlib.files import write_bytes_atomic, write_json
from vitlib.train.build import Run, build_run, check_config
from vitlib.train.evaluation import Evaluator
from vitlib.train.resume import starting_state
from vitlib.train.sharding import replicated, shard_batch
from vitlib.train.steps import params_sha256

# Bump when a change alters the numbers an unchanged config produces (params_sha256, losses):
# cached sweep results carry it in their key, so old results are retrained instead of mixed in.
# 1: every run so far (lr, weight decay and the init seed as inputs of the compiled programs
#    left params_sha256 bitwise unchanged; tests/test_train.py holds fit to the optax chain).
NUMERICS_VERSION = 1


class NonFiniteLossError(RuntimeError):
    pass


def fit(config, workdir, init_params: Optional[Callable] = None, progress: bool = True,
        start_from: Optional[tuple] = None) -> dict:
    """Train to ``config.total_steps`` (resuming from WORKDIR's last checkpoint) and evaluate.

    ``init_params(params) -> params`` replaces freshly initialised parameters (fine-tuning).
    ``start_from=(checkpoint_folder, step)`` starts a run without checkpoints of its own from
    another run's saved state (a cooldown branch): training continues at ``step`` with this
    config's schedule, seeing the batches a run from scratch would see from that step on.
    """
    check_config(config)
    setup_start = time.perf_counter()
    run = build_run(config, workdir)
    state, start = starting_state(run, init_params, start_from)
    evaluate = Evaluator(config, run.programs, run.mesh)
    setup_time = time.perf_counter() - setup_start
    outcome = train_loop(run, state, start, evaluate, progress)
    if start == config.total_steps:  # nothing left to train: evaluate the restored model
        outcome = outcome._replace(last_record=evaluate(start, outcome.state.params, final=True))
    result = result_record(config, start, outcome, setup_time,
                           wall_time=time.perf_counter() - setup_start)
    write_json(run.workdir / "result.json", result)
    return result


class MetricsLog:
    """Appends JSON records to metrics.jsonl; on resume, drops records past the restart step."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resume_step]
            write_bytes_atomic(path, "".join(line + "\n" for line in kept).encode())

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class StepMetrics:
    """The train steps' metrics since the last log record. ``flush(step)`` fetches them from the
    device, stops the run on a non-finite loss or parameter norm, and logs their means with the
    step's lr and the images per second of the interval (timed from ``restart_clock``)."""

    def __init__(self, run: Run, log: MetricsLog, lrs: np.ndarray, start: int, bar):
        self.run, self.log, self.lrs, self.bar = run, log, lrs, bar
        self.pending: list = []
        self.last_flush = start
        self.train_time = 0.0  # seconds spent in logged intervals: training, not eval or saving
        self.last_loss = float("nan")  # mean of the last 10 logged steps' losses
        self.interval_start = time.perf_counter()

    def add(self, metrics) -> None:
        self.pending.append(metrics)

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
                f"rerun.")
        elapsed = time.perf_counter() - self.interval_start
        self.train_time += elapsed
        self.last_loss = float(losses[-10:].mean())
        rate = len(metrics) * self.run.config.batch_size / elapsed
        self.log.write({"step": step, "train_loss": float(losses.mean()),
                        "lr": float(self.lrs[step - 1]),
                        "grad_norm": float(np.mean([m["grad_norm"] for m in metrics])),
                        "images_per_s": rate})
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}", img_s=f"{rate:.0f}")
        self.pending, self.last_flush = [], step


class LoopOutcome(NamedTuple):
    state: Any
    last_record: dict  # the last evaluation record ({} if none ran)
    last_loss: float
    train_time: float
    eval_time: float
    checkpoint_time: float


def train_loop(run: Run, state, start: int, evaluate: Evaluator, progress: bool) -> LoopOutcome:
    """Steps ``start .. total_steps - 1``. After a step that ends a log, eval or checkpoint
    interval (or is one of ``checkpoint_steps``), the metrics are flushed, then checkpoints
    saved, then the evaluation run; the last step does all of them."""
    config = run.config
    log = MetricsLog(run.workdir / "metrics.jsonl", start)
    lrs = run.optimizer.lr_table(config.total_steps)
    weight_decay = jax.device_put(run.optimizer.weight_decay_rates(state.params),
                                  replicated(run.mesh))
    prefetch = Prefetcher(
        lambda s: train_batch(run.train_x, run.train_y, s, config.batch_size, config.seed,
                              run.augment),
        start, config.total_steps, place=lambda batch: shard_batch(batch, run.mesh))
    bar = tqdm(total=config.total_steps, initial=start, disable=not progress, mininterval=1.0,
               desc="train", unit="step")
    metrics_since_log = StepMetrics(run, log, lrs, start, bar)
    keep = set(config.checkpoint_steps)
    last_record, eval_time, checkpoint_time = {}, 0.0, 0.0
    try:
        for step, batch in prefetch:
            state, metrics = run.programs.step(state, batch, {"lr": lrs[step],
                                                              "weight_decay": weight_decay})
            metrics_since_log.add(metrics)
            done = step + 1
            bar.update(1)
            at_end = done == config.total_steps
            evals = at_end or (config.eval_every and done % config.eval_every == 0)
            ckpt = at_end or (config.checkpoint_every and done % config.checkpoint_every == 0)
            if evals or ckpt or done in keep or (config.log_every and done % config.log_every == 0):
                metrics_since_log.flush(done)
                checkpoint_start = time.perf_counter()
                if ckpt:
                    run.checkpointer.save(done, state)
                if done in keep:
                    run.branch_points.save(done, state)
                eval_start = time.perf_counter()
                checkpoint_time += eval_start - checkpoint_start
                if evals:
                    last_record = evaluate(done, state.params, final=at_end)
                    log.write(last_record)
                    bar.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in last_record.items()))
                metrics_since_log.restart_clock()
                eval_time += metrics_since_log.interval_start - eval_start
    finally:
        prefetch.close()
        bar.close()
        run.checkpointer.close()
        if run.branch_points is not None:
            run.branch_points.close()
    return LoopOutcome(state, last_record, metrics_since_log.last_loss,
                       metrics_since_log.train_time, eval_time, checkpoint_time)


def result_record(config, start: int, outcome: LoopOutcome, setup_time: float,
                  wall_time: float) -> dict:
    """What result.json holds: lengths, the final evaluation, the parameters' digest, the
    numerics version, timings and the config."""
    steps_run = config.total_steps - start
    return {
        "steps": config.total_steps,
        "steps_this_run": steps_run,
        "images_seen": config.total_steps * config.batch_size,
        "final_train_loss": outcome.last_loss,
        **{k: v for k, v in outcome.last_record.items() if k != "step"},
        "params_sha256": params_sha256(outcome.state.params),
        "numerics_version": NUMERICS_VERSION,
        "wall_time_s": wall_time,
        "setup_time_s": setup_time,
        "train_time_s": outcome.train_time,
        "eval_time_s": outcome.eval_time,
        "checkpoint_time_s": outcome.checkpoint_time,
        "images_per_s": (steps_run * config.batch_size / outcome.train_time
                         if outcome.train_time else None),
        "devices": len(jax.devices()),
        "config": config.to_dict(),
    }
