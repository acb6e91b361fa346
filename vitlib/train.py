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
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np
from tqdm import tqdm

from vitlib import datasets, fewshot
from vitlib.artifacts import write_bytes_atomic, write_json
from vitlib.checkpoints import Checkpointer
from vitlib.configs import apply_overrides, load_config
from vitlib.data import (Augment, Prefetcher, eval_batches, nested_subset, preprocess,
                         train_batch)
from vitlib.models import ViT, vit_config
from vitlib.optim import compiled_part, make_sweepable_optimizer
from vitlib.sharding import (check_batch_size, make_mesh, replicated, shard_batch,
                             state_shardings)
from vitlib.steps import (CPU_EVAL_MICRO_BATCH, TrainState, check_loss, init_state,
                          make_eval_step, make_feature_fn, make_train_step, micro_batches_for,
                          params_sha256)


# Bump when a change alters the numbers an unchanged config produces (params_sha256, losses):
# cached sweep results carry it in their key, so old results are retrained instead of mixed in.
# 1: every run so far (lr, weight decay and the init seed as inputs of the compiled programs
#    left params_sha256 bitwise unchanged; tests/test_train.py holds fit to the optax chain).
NUMERICS_VERSION = 1
EVAL_SUBSET_SEED = 0  # which examples an intermediate evaluation on a subset uses


class NonFiniteLossError(RuntimeError):
    pass


def _check_config(config) -> None:
    for key in ("batch_size", "total_steps"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"{key}: must be a positive integer, got {config[key]!r}")
    for key in ("log_every", "eval_every", "checkpoint_every", "eval_batch_size", "image_size",
                "eval_subset"):
        if not isinstance(config[key], int) or config[key] < 0:
            raise ValueError(f"{key}: must be an integer >= 0, got {config[key]!r}")
    steps = config.checkpoint_steps
    if not isinstance(steps, (tuple, list)) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= config.total_steps
            for s in steps):
        raise ValueError(f"checkpoint_steps: {steps!r} is not allowed; use a tuple of integers "
                         f"in [1, total_steps={config.total_steps}]")
    splits = config.fewshot.eval_splits
    if (config.fewshot.dataset and (not isinstance(splits, (tuple, list)) or not splits
                                    or not set(splits) <= {"test", "minival"})):
        raise ValueError(f"fewshot.eval_splits: {splits!r} is not allowed; use a non-empty "
                         f"tuple of 'test' and/or 'minival'")
    micro_batches_for(config.batch_size, config.micro_batch_size, jax.device_count())
    check_loss(config.loss, config.label_smoothing)


def build_model(config, image_size: int, num_classes: int) -> ViT:
    m = config.model
    shape = {}
    for field in ("width", "depth", "mlp_dim", "num_heads"):
        value = m[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"model.{field}: must be an integer >= 0 (0 = the variant's), got "
                             f"{value!r}")
        if value:
            shape[field] = value
    return ViT(vit_config(m.variant, **shape, image_size=image_size, num_classes=num_classes,
                          pool_type=m.pool_type, posemb=m.posemb,
                          representation_size=m.representation_size or None, dtype=m.dtype,
                          param_dtype=m.param_dtype, scan=m.scan, remat_policy=m.remat_policy))


def optimizer_config(config) -> dict:
    return {**config.optim.to_dict(), "total_steps": config.total_steps}


def make_tx(config):
    """The run's optimizer: ``make_optimizer``'s chain with lr and weight decay as inputs."""
    return make_sweepable_optimizer(optimizer_config(config))


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


def eval_subset(images, labels, size: int):
    """A fixed random subset of ``size`` examples (the whole split if ``size`` is 0 or more)."""
    if not size or size >= len(images):
        return images, labels
    idx = np.sort(np.random.default_rng(EVAL_SUBSET_SEED).choice(len(images), size, False))
    return images[idx], labels[idx]


class Programs(NamedTuple):
    """The compiled functions of one model/optimizer structure, shared by every run of it."""
    mesh: Any
    shardings: Any
    init: Callable  # seed -> TrainState
    step: Callable  # (state, batch, hyperparams) -> (state, metrics)
    eval_step: Callable
    feature_fn: Callable


_PROGRAMS: dict = {}  # structure key -> Programs: a sweep in one process compiles once


def programs_for(config, model: ViT, tx, image_shape: tuple) -> Programs:
    """The jitted init/step/eval of ``config``'s structure, built once per process.

    Only what is compiled in enters the key: the model, the optimizer's compiled part, loss,
    batch split and sharding. Learning rate, schedule, weight decay, seed and lengths are
    inputs, so runs differing only in them share the programs (and JAX's disk cache)."""
    mesh = make_mesh()
    micro_batches = micro_batches_for(config.batch_size, config.micro_batch_size,
                                      mesh.devices.size)
    key = (model.config, image_shape, compiled_part(optimizer_config(config)), config.loss,
           config.label_smoothing, micro_batches, config.eval_batch_size, config.fsdp,
           tuple(d.id for d in mesh.devices.flat))
    if key not in _PROGRAMS:
        make_state = lambda seed: init_state(model, tx, image_shape, seed)  # noqa: E731
        shardings = state_shardings(jax.eval_shape(make_state, 0), mesh, fsdp=config.fsdp)
        step = jax.jit(make_train_step(model, tx, config.loss, micro_batches,
                                       config.label_smoothing),
                       in_shardings=(shardings, None, None),
                       out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
        eval_micro_batches = micro_batches_for(config.eval_batch_size, 0, mesh.devices.size,
                                               per_device=CPU_EVAL_MICRO_BATCH)
        _PROGRAMS[key] = Programs(
            mesh, shardings, jax.jit(make_state, out_shardings=shardings), step,
            jax.jit(make_eval_step(model, eval_micro_batches)),
            jax.jit(make_feature_fn(model, eval_micro_batches)))
    return _PROGRAMS[key]


def fit(config, workdir, init_params: Optional[Callable] = None, progress: bool = True,
        start_from: Optional[tuple] = None) -> dict:
    """Train to ``config.total_steps`` (resuming from WORKDIR's last checkpoint) and evaluate.

    ``init_params(params) -> params`` replaces freshly initialised parameters (fine-tuning).
    ``start_from=(checkpoint_folder, step)`` starts a run without checkpoints of its own from
    another run's saved state (a cooldown branch): training continues at ``step`` with this
    config's schedule, seeing the batches a run from scratch would see from that step on.
    """
    _check_config(config)
    setup_start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = config.data_dir or None
    train_x, train_y = nested_subset(
        *datasets.load_split(config.dataset, config.train_split, data_dir), config.train_examples)
    num_classes = datasets.num_classes(config.dataset, data_dir)
    image_size = config.image_size or train_x.shape[1]
    model = build_model(config, image_size, num_classes)
    optimizer = make_tx(config)
    augment = Augment(**config.augment.to_dict())
    mesh = make_mesh()
    check_batch_size(config.batch_size, mesh)
    if config.eval_batch_size % mesh.devices.size:
        raise ValueError(f"eval_batch_size: {config.eval_batch_size} does not split over "
                         f"{mesh.devices.size} devices; allowed: a multiple of it")

    image_shape = (image_size, image_size, train_x.shape[3])
    programs = programs_for(config, model, optimizer.tx, image_shape)
    shardings = programs.shardings
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        jax.eval_shape(programs.init, 0), shardings)
    checkpointer = Checkpointer(workdir / "checkpoints")
    branch_points = Checkpointer(workdir / "branch_points", max_to_keep=None) \
        if config.checkpoint_steps else None
    start = checkpointer.latest_step() or 0
    if start:
        state = checkpointer.restore(start, abstract)
        print(f"resumed from step {start} in {workdir}", flush=True)
    elif start_from is not None:
        state, start = restore_branch_point(start_from, abstract, config.total_steps)
        print(f"started from step {start} of {start_from[0]}", flush=True)
    else:
        state = programs.init(config.seed)
        if init_params is not None:
            state = state.replace(params=jax.device_put(init_params(state.params),
                                                        shardings.params))
    log = MetricsLog(workdir / "metrics.jsonl", start)
    lrs = optimizer.lr_table(config.total_steps)
    weight_decay = jax.device_put(optimizer.weight_decay_rates(state.params), replicated(mesh))

    eval_sets = {split: datasets.load_split(config.dataset, split, data_dir)
                 for split in config.eval_splits}
    subsets = {split: eval_subset(*xy, config.eval_subset) for split, xy in eval_sets.items()}

    def evaluate(step: int, params, final: bool) -> dict:
        record = {"step": step}
        for split, (x, y) in (eval_sets if final else subsets).items():
            record[f"{split}_accuracy"] = accuracy(programs.eval_step, params, x, y,
                                                   config.eval_batch_size, mesh)
        if not final and config.eval_subset:
            record["eval_examples"] = {split: len(x) for split, (x, _) in subsets.items()}
        if config.fewshot.dataset:
            record.update(fewshot_record(config, params, programs.feature_fn))
        return record

    pending, last_flush, train_time, last_loss = [], start, 0.0, float("nan")
    eval_time = checkpoint_time = 0.0
    make_batch = lambda s: train_batch(train_x, train_y, s, config.batch_size,  # noqa: E731
                                       config.seed, augment)
    prefetch = Prefetcher(make_batch, start, config.total_steps,
                          place=lambda batch: shard_batch(batch, mesh))
    bar = tqdm(total=config.total_steps, initial=start, disable=not progress, mininterval=1.0,
               desc="train", unit="step")
    setup_time = time.perf_counter() - setup_start
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
        log.write({"step": step, "train_loss": float(losses.mean()), "lr": float(lrs[step - 1]),
                   "grad_norm": float(np.mean([m["grad_norm"] for m in metrics])),
                   "images_per_s": rate})
        bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{rate:.0f}")
        pending, last_flush = [], step

    wall_start = time.perf_counter()
    keep = set(config.checkpoint_steps)
    last_record = {}
    try:
        for step, batch in prefetch:
            state, metrics = programs.step(state, batch, {"lr": lrs[step],
                                                          "weight_decay": weight_decay})
            pending.append(metrics)
            done = step + 1
            bar.update(1)
            at_end = done == config.total_steps
            evals = at_end or (config.eval_every and done % config.eval_every == 0)
            ckpt = at_end or (config.checkpoint_every and done % config.checkpoint_every == 0)
            if evals or ckpt or done in keep or (config.log_every and done % config.log_every == 0):
                flush(done)
                checkpoint_start = time.perf_counter()
                if ckpt:
                    checkpointer.save(done, state)
                if done in keep:
                    branch_points.save(done, state)
                eval_start = time.perf_counter()
                checkpoint_time += eval_start - checkpoint_start
                if evals:
                    last_record = evaluate(done, state.params, final=at_end)
                    log.write(last_record)
                    bar.write(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in last_record.items()))
                interval_start = time.perf_counter()
                eval_time += interval_start - eval_start
    finally:
        prefetch.close()
        bar.close()
        checkpointer.close()
        if branch_points is not None:
            branch_points.close()

    if start == config.total_steps:  # nothing left to train: evaluate the restored model
        last_record = evaluate(start, state.params, final=True)
    steps_run = config.total_steps - start
    result = {
        "steps": config.total_steps,
        "steps_this_run": steps_run,
        "images_seen": config.total_steps * config.batch_size,
        "final_train_loss": last_loss,
        **{k: v for k, v in last_record.items() if k != "step"},
        "params_sha256": params_sha256(state.params),
        "numerics_version": NUMERICS_VERSION,
        "wall_time_s": time.perf_counter() - wall_start + setup_time,
        "setup_time_s": setup_time,
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "checkpoint_time_s": checkpoint_time,
        "images_per_s": steps_run * config.batch_size / train_time if train_time else None,
        "devices": len(jax.devices()),
        "config": config.to_dict(),
    }
    write_json(workdir / "result.json", result)
    return result


def restore_branch_point(start_from: tuple, abstract, total_steps: int):
    """(state, step) saved at ``step`` in ``folder`` (a run's ``branch_points``); clear errors
    for a missing folder, a step without a checkpoint, or a step at or past ``total_steps``."""
    folder, step = Path(start_from[0]), start_from[1]
    if not isinstance(step, int) or not 0 < step < total_steps:
        raise ValueError(f"start_from step: {step!r} is not allowed; use 0 < step < "
                         f"total_steps ({total_steps})")
    if not folder.is_dir():
        raise ValueError(f"start_from: {folder} does not exist")
    source = Checkpointer(folder, max_to_keep=None)
    try:
        saved = source.all_steps()
        if step not in saved:
            raise ValueError(f"start_from: no checkpoint at step {step} in {folder}; saved "
                             f"steps: {saved}")
        return source.restore(step, abstract), step
    finally:
        source.close()


def fewshot_record(config, params, feature_fn) -> dict:
    """Few-shot accuracy of the frozen pre-logits on ``config.fewshot.dataset``: the probes
    are fit on shots drawn from its train split and scored on each of ``fewshot.eval_splits``
    (keys ``fewshot_digits_10shot`` for test, ``fewshot_digits_minival_10shot`` for minival,
    the split on which notebooks choose hyper-parameters)."""
    name, data_dir = config.fewshot.dataset, config.data_dir or None
    extract = lambda x: fewshot.extract_features(  # noqa: E731
        lambda batch: feature_fn(params, batch), x, config.eval_batch_size, preprocess)
    train_x, train_y = datasets.load_split(name, "train", data_dir)
    train_features = extract(train_x)
    record = {}
    for split in config.fewshot.eval_splits:
        eval_x, eval_y = datasets.load_split(name, split, data_dir)
        results = fewshot.fewshot_eval(train_features, train_y, extract(eval_x), eval_y,
                                       datasets.num_classes(name, data_dir),
                                       shots=config.fewshot.shots, seeds=config.fewshot.seeds)
        prefix = f"fewshot_{name}_" + ("" if split == "test" else f"{split}_")
        for k, r in results.items():
            record[f"{prefix}{k}shot"] = r["mean"]
            record[f"{prefix}{k}shot_std"] = r["std"]
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
