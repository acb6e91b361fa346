"""Train a ViT from a config: ``fit(config, workdir)`` and its CLI.

    python -m vitlib.train --config quickstart --workdir /tmp/run [--set total_steps=500 ...]

Writes ``WORKDIR/metrics.jsonl`` (one JSON record per log interval and per evaluation),
orbax checkpoints under ``WORKDIR/checkpoints`` and, at the end, ``WORKDIR/result.json``. Running
the same command again resumes from the last checkpoint and ends with the same parameters as an
uninterrupted run. A non-finite loss stops the run and keeps the last good checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import jax
import numpy as np
from tqdm import tqdm

from vitlib import datasets, fewshot
from vitlib.artifacts import write_bytes_atomic, write_json
from vitlib.checkpoints import Checkpointer
from vitlib.configs import apply_overrides, load_config
from vitlib.data import Augment, Prefetcher, eval_batches, preprocess, train_batch
from vitlib.models import ViT, vit_config
from vitlib.optim import lr_schedule, make_optimizer
from vitlib.sharding import (check_batch_size, make_mesh, replicated, shard_batch,
                             state_shardings)
from vitlib.steps import (TrainState, check_loss, init_state, make_eval_step, make_feature_fn,
                          make_train_step, micro_batches_for, params_sha256)


class NonFiniteLossError(RuntimeError):
    pass


def _check_config(config) -> None:
    for key in ("batch_size", "total_steps"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"{key}: must be a positive integer, got {config[key]!r}")
    for key in ("log_every", "eval_every", "checkpoint_every", "eval_batch_size", "image_size"):
        if not isinstance(config[key], int) or config[key] < 0:
            raise ValueError(f"{key}: must be an integer >= 0, got {config[key]!r}")
    micro_batches_for(config.batch_size, config.micro_batch_size, jax.device_count())
    check_loss(config.loss, config.label_smoothing)


def build_model(config, image_size: int, num_classes: int) -> ViT:
    m = config.model
    return ViT(vit_config(m.variant, image_size=image_size, num_classes=num_classes,
                          pool_type=m.pool_type, posemb=m.posemb,
                          representation_size=m.representation_size or None, dtype=m.dtype,
                          param_dtype=m.param_dtype, scan=m.scan, remat_policy=m.remat_policy))


def optimizer_config(config) -> dict:
    return {**config.optim.to_dict(), "total_steps": config.total_steps}


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


def accuracy(eval_step, params, images, labels, batch_size: int, mesh) -> float:
    correct = 0
    for batch in eval_batches(images, labels, batch_size):
        correct += int(eval_step(params, shard_batch(batch, mesh)))
    return correct / len(images)


def fit(config, workdir, init_params: Optional[Callable] = None, progress: bool = True) -> dict:
    """Train to ``config.total_steps`` (resuming from WORKDIR's last checkpoint) and evaluate.

    ``init_params(params) -> params`` replaces freshly initialised parameters (fine-tuning).
    """
    _check_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = config.data_dir or None
    train_x, train_y = datasets.load_split(config.dataset, config.train_split, data_dir)
    num_classes = datasets.num_classes(config.dataset, data_dir)
    image_size = config.image_size or train_x.shape[1]
    model = build_model(config, image_size, num_classes)
    tx = make_optimizer(optimizer_config(config))
    schedule = lr_schedule(optimizer_config(config))
    augment = Augment(**config.augment.to_dict())
    mesh = make_mesh()
    check_batch_size(config.batch_size, mesh)
    micro_batches = micro_batches_for(config.batch_size, config.micro_batch_size,
                                      mesh.devices.size)
    if config.eval_batch_size % mesh.devices.size:
        raise ValueError(f"eval_batch_size: {config.eval_batch_size} does not split over "
                         f"{mesh.devices.size} devices; allowed: a multiple of it")

    image_shape = (image_size, image_size, train_x.shape[3])
    make_state = lambda: init_state(model, tx, image_shape, config.seed)  # noqa: E731
    shardings = state_shardings(jax.eval_shape(make_state), mesh, fsdp=config.fsdp)
    checkpointer = Checkpointer(workdir / "checkpoints")
    start = checkpointer.latest_step() or 0
    if start:
        abstract = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            jax.eval_shape(make_state), shardings)
        state = checkpointer.restore(start, abstract)
        print(f"resumed from step {start} in {workdir}", flush=True)
    else:
        state = jax.jit(make_state, out_shardings=shardings)()
        if init_params is not None:
            state = state.replace(params=jax.device_put(init_params(state.params),
                                                        shardings.params))
    log = MetricsLog(workdir / "metrics.jsonl", start)

    step_fn = jax.jit(make_train_step(model, tx, config.loss, micro_batches,
                                      config.label_smoothing),
                      in_shardings=(shardings, None), out_shardings=(shardings, replicated(mesh)),
                      donate_argnums=0)
    eval_step = jax.jit(make_eval_step(model))
    feature_fn = jax.jit(make_feature_fn(
        model, micro_batches_for(config.eval_batch_size, 0, mesh.devices.size)))

    def evaluate(step: int, params) -> dict:
        record = {"step": step}
        for split in config.eval_splits:
            x, y = datasets.load_split(config.dataset, split, data_dir)
            record[f"{split}_accuracy"] = accuracy(eval_step, params, x, y,
                                                   config.eval_batch_size, mesh)
        if config.fewshot.dataset:
            record.update(fewshot_record(config, params, feature_fn))
        return record

    pending, last_flush, train_time, last_loss = [], start, 0.0, float("nan")
    make_batch = lambda s: train_batch(train_x, train_y, s, config.batch_size,  # noqa: E731
                                       config.seed, augment)
    prefetch = Prefetcher(make_batch, start, config.total_steps,
                          place=lambda batch: shard_batch(batch, mesh))
    bar = tqdm(total=config.total_steps, initial=start, disable=not progress, mininterval=1.0,
               desc="train", unit="step")
    interval_start = time.perf_counter()

    def flush(step: int) -> None:
        nonlocal pending, last_flush, train_time, last_loss, interval_start
        if not pending:
            return
        metrics = jax.device_get(pending)
        losses = np.array([m["loss"] for m in metrics])
        norms = np.array([m["param_norm"] for m in metrics])
        bad = np.flatnonzero(~np.isfinite(losses) | ~np.isfinite(norms))
        if bad.size:
            at = last_flush + int(bad[0]) + 1
            kept = checkpointer.latest_step()
            raise NonFiniteLossError(
                f"loss or parameters became non-finite at step {at} (loss {losses[bad[0]]}); "
                f"stopped. The last good checkpoint (step {kept}) is kept in {workdir}; "
                f"lower optim.lr or raise optim.schedule.warmup_steps and rerun.")
        elapsed = time.perf_counter() - interval_start
        train_time += elapsed
        last_loss = float(losses[-10:].mean())
        rate = len(metrics) * config.batch_size / elapsed
        log.write({"step": step, "train_loss": float(losses.mean()), "lr": float(schedule(step - 1)),
                   "grad_norm": float(np.mean([m["grad_norm"] for m in metrics])),
                   "images_per_s": rate})
        bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{rate:.0f}")
        pending, last_flush = [], step

    wall_start = time.perf_counter()
    last_record = {}
    try:
        for step, batch in prefetch:
            state, metrics = step_fn(state, batch)
            pending.append(metrics)
            done = step + 1
            bar.update(1)
            at_end = done == config.total_steps
            evals = at_end or (config.eval_every and done % config.eval_every == 0)
            ckpt = at_end or (config.checkpoint_every and done % config.checkpoint_every == 0)
            if evals or ckpt or (config.log_every and done % config.log_every == 0):
                flush(done)
                if ckpt:
                    checkpointer.save(done, state)
                if evals:
                    last_record = evaluate(done, state.params)
                    log.write(last_record)
                    bar.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in last_record.items()))
                interval_start = time.perf_counter()
    finally:
        prefetch.close()
        bar.close()
        checkpointer.close()

    if start == config.total_steps:  # nothing left to train: evaluate the restored model
        last_record = evaluate(start, state.params)
    steps_run = config.total_steps - start
    result = {
        "steps": config.total_steps,
        "steps_this_run": steps_run,
        "final_train_loss": last_loss,
        **{k: v for k, v in last_record.items() if k != "step"},
        "params_sha256": params_sha256(state.params),
        "wall_time_s": time.perf_counter() - wall_start,
        "images_per_s": steps_run * config.batch_size / train_time if train_time else None,
        "devices": len(jax.devices()),
        "config": config.to_dict(),
    }
    write_json(workdir / "result.json", result)
    return result


def fewshot_record(config, params, feature_fn) -> dict:
    """Few-shot accuracy of the frozen pre-logits on ``config.fewshot.dataset``."""
    name, data_dir = config.fewshot.dataset, config.data_dir or None
    train_x, train_y = datasets.load_split(name, "train", data_dir)
    test_x, test_y = datasets.load_split(name, "test", data_dir)
    extract = lambda x: fewshot.extract_features(  # noqa: E731
        lambda batch: feature_fn(params, batch), x, config.eval_batch_size, preprocess)
    results = fewshot.fewshot_eval(extract(train_x), train_y, extract(test_x), test_y,
                                   datasets.num_classes(name, data_dir),
                                   shots=config.fewshot.shots, seeds=config.fewshot.seeds)
    record = {}
    for k, r in results.items():
        record[f"fewshot_{name}_{k}shot"] = r["mean"]
        record[f"fewshot_{name}_{k}shot_std"] = r["std"]
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitlib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config name (vitlib/configs) or .py")
    parser.add_argument("--workdir", required=True, help="folder for metrics, checkpoints")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. total_steps=500, optim.lr=3e-3")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = apply_overrides(load_config(args.config), args.set)
        result = fit(config, args.workdir, progress=not args.no_progress)
    except (ValueError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = {k: v for k, v in result.items() if k != "config"}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
