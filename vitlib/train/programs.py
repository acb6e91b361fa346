"""The compiled functions of one model/optimizer structure (init, train step, eval step,
features), built once per process and shared by every run of that structure."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from vitlib.models import ViT
from vitlib.optim.chain import compiled_part
from vitlib.train.sharding import make_mesh, replicated, state_shardings
from vitlib.train.steps import (CPU_EVAL_MICRO_BATCH, init_state, make_eval_step, make_feature_fn,
                                make_train_step, micro_batches_for)


class Programs(NamedTuple):
    mesh: Any
    shardings: Any
    init: Callable  # seed -> TrainState
    step: Callable  # (state, batch, hyperparams) -> (state, metrics)
    eval_step: Callable
    feature_fn: Callable
    eval_slice: int = 0  # examples per forward slice of the eval programs (0: whole batches)


_PROGRAMS: dict = {}  # structure key -> Programs: a sweep in one process compiles once


def programs_for(config, model: ViT, tx, image_shape: tuple) -> Programs:
    """The jitted init/step/eval of ``config``'s structure, built once per process.

    Only what is compiled in enters the key: the model, the optimizer's compiled part, loss,
    batch split and sharding. Learning rate, schedule, weight decay, seed and lengths are
    inputs, so runs differing only in them share the programs (and JAX's disk cache)."""
    mesh = make_mesh()
    micro_batches = micro_batches_for(config.batch_size, config.micro_batch_size,
                                      mesh.devices.size)
    key = (model.config, image_shape, compiled_part(config.optim.to_dict()), config.loss,
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
        eval_slice = config.eval_batch_size // eval_micro_batches
        _PROGRAMS[key] = Programs(
            mesh, shardings, jax.jit(make_state, out_shardings=shardings), step,
            jax.jit(make_eval_step(model, eval_micro_batches, eval_slice)),
            jax.jit(make_feature_fn(model, eval_micro_batches, eval_slice)), eval_slice)
    return _PROGRAMS[key]
