"""Fine-tune a trained ViT on another dataset, as in the paper's transfer protocol.

A new zero-initialised head; SGD with momentum 0.9, cosine schedule with a short warmup, global
gradient clipping at 1.0, no weight decay, no augmentation; optionally a new resolution, with
the learned position embedding resampled bilinearly to the new patch grid.

    python -m vitlib.train.finetune --from RUN_WORKDIR --dataset digits --workdir DIR [--steps 500]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections

from vitlib.configs import from_record
from vitlib.data import datasets
from vitlib.models.interop.common import resample_posemb
from vitlib.train.build import build_model, make_tx
from vitlib.train.checkpoints import Checkpointer
from vitlib.train.loop import fit
from vitlib.train.steps import init_state


def load_run(workdir) -> tuple[ml_collections.ConfigDict, dict]:
    """The config and final parameters of a finished ``fit`` run."""
    workdir = Path(workdir)
    result_file = workdir / "result.json"
    if not result_file.is_file():
        raise ValueError(f"from: {workdir} has no result.json; is it a finished training run?")
    config = from_record(json.loads(result_file.read_text())["config"])
    data_dir = config.data_dir or None
    images, _ = datasets.load_split(config.dataset, config.train_split, data_dir)
    size = config.image_size or images.shape[1]
    # The attention kernel changes no parameter: shapes from XLA's, which every backend has
    # (a run trained with cuDNN's loads on a CPU).
    shapes_config = ml_collections.ConfigDict(config.to_dict())
    shapes_config.model.attention = "xla"
    model = build_model(shapes_config, size, datasets.num_classes(config.dataset, data_dir))
    tx = make_tx(config).tx
    abstract = jax.eval_shape(lambda: init_state(model, tx, (size, size, images.shape[3]), 0))
    checkpointer = Checkpointer(workdir / "checkpoints")
    state = checkpointer.restore(checkpointer.latest_step(), abstract)
    checkpointer.close()
    return config, state.params


def transfer_params(pretrained: dict, fresh: dict) -> dict:
    """``fresh`` (new head, new grid) with every pretrained body parameter copied in."""
    def merge(pre, new, path=""):
        out = {}
        for key, value in new.items():
            if key == "head" and not path:  # the new task's zero-initialised classifier
                out[key] = value
            elif key == "pos_embedding" and pre[key].shape != value.shape:
                out[key] = resample_posemb(pre[key], value.shape[1]).astype(value.dtype)
            elif isinstance(value, dict):
                out[key] = merge(pre[key], value, f"{path}/{key}")
            else:
                out[key] = jnp.asarray(pre[key], value.dtype)
        return out
    return merge(pretrained, fresh)


def finetune_config(base: ml_collections.ConfigDict, dataset: str, steps: int, lr: float,
                    batch_size: int, image_size: int = 0,
                    warmup_steps: Optional[int] = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(base.to_dict())
    config.dataset, config.total_steps, config.batch_size = dataset, steps, batch_size
    config.image_size = image_size
    config.optim = ml_collections.ConfigDict(dict(
        optimizer="sgd", optimizer_kwargs=dict(momentum=0.9), lr=lr, grad_clip_norm=1.0,
        schedule=dict(kind="cosine", warmup_steps=steps // 20 if warmup_steps is None
                      else warmup_steps),
        weight_decay=[]))
    config.augment = ml_collections.ConfigDict(dict(crop_padding=0, flip=False))
    config.fewshot.dataset = ""
    config.eval_every, config.checkpoint_every = 0, 0
    return config


def finetune(from_workdir, dataset: str, workdir, steps: int = 500, lr: float = 0.01,
             batch_size: int = 128, image_size: int = 0, progress: bool = True) -> dict:
    """Fine-tune the run in ``from_workdir`` on ``dataset``; returns ``fit``'s result."""
    base, pretrained = load_run(from_workdir)
    config = finetune_config(base, dataset, steps, lr, batch_size, image_size)
    return fit(config, workdir, init_params=lambda fresh: transfer_params(pretrained, fresh),
               progress=progress)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitlib.train.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, help="finished training run")
    parser.add_argument("--dataset", required=True, help="fashion_mnist | digits | TFDS name")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=0, help="new resolution (0: native)")
    args = parser.parse_args(argv)
    try:
        result = finetune(args.source, args.dataset, args.workdir, args.steps, args.lr,
                          args.batch_size, args.image_size)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
