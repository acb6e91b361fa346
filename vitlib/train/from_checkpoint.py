"""Few-shot evaluation and fine-tuning of a converted checkpoint (big_vision / vision_transformer
``.npz``, timm ``.safetensors`` / ``.pth``), with the paper's protocols.

    python -m vitlib.train.from_checkpoint fewshot --from B_16.npz --dataset digits \\
        --image-size 224 [--shots 1 5 10 25]
    python -m vitlib.train.from_checkpoint finetune --from B_16.npz --dataset digits \\
        --workdir DIR --image-size 224 [--steps 500]

Images go through vitlib's preprocessing (uint8 -> [-1, 1], bilinear resize to
``--image-size``). A grey-scale dataset meets an RGB checkpoint by summing the patch kernel over
its input channels, which computes exactly what the RGB model does on the grey image repeated
in three channels. Fine-tuning is ``vitlib.train.finetune``'s recipe (new zero-initialised head,
SGD + momentum, cosine, no weight decay); the position embedding is resampled to the new grid.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vitlib.configs import base
from vitlib.data import datasets
from vitlib.data.augment import preprocess
from vitlib.evals import fewshot
from vitlib.models import ViT, ViTConfig
from vitlib.models.interop import load as load_checkpoint
from vitlib.models.variants import SHAPES
from vitlib.train.finetune import finetune_config, transfer_params
from vitlib.train.loop import fit


def adapt_channels(params: dict, channels: int) -> dict:
    """The patch kernel for ``channels`` input channels: 1 from 3 by summing (exact on grey
    images repeated in RGB); anything else must match."""
    kernel = np.asarray(params["embedding"]["kernel"])
    if kernel.shape[2] == channels:
        return params
    if channels != 1:
        raise ValueError(f"embedding/kernel: shape {kernel.shape} takes {kernel.shape[2]} "
                         f"channels; the dataset has {channels} (allowed: the same, or 1)")
    embedding = {**params["embedding"], "kernel": kernel.sum(axis=2, keepdims=True)}
    return {**params, "embedding": embedding}


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    x = preprocess(images)
    if x.shape[1:3] == (size, size):
        return x
    return np.asarray(jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "bilinear"))


def fewshot_checkpoint(path, dataset: str, *, variant: Optional[str] = None,
                       image_size: Optional[int] = None, num_heads: Optional[int] = None,
                       shots: Sequence[int] = fewshot.DEFAULT_SHOTS,
                       seeds: Sequence[int] = (0, 1, 2), split: str = "test",
                       data_dir: Optional[str] = None, batch_size: int = 256) -> dict:
    """``fewshot_eval``'s {K: {'mean', 'std', ...}} of the checkpoint's frozen pre-logits."""
    config, params = load_checkpoint(path, variant, image_size=image_size, num_heads=num_heads)
    if config.image_size is None:
        raise ValueError("image_size: the checkpoint does not store its resolution (sincos2d "
                         "position embedding); pass --image-size")
    train_x, train_y = datasets.load_split(dataset, "train", data_dir)
    test_x, test_y = datasets.load_split(dataset, split, data_dir)
    params = adapt_channels(params, train_x.shape[3])
    model = ViT(config.replace(num_classes=0))
    body = {k: v for k, v in params.items() if k != "head"}
    features = jax.jit(lambda x: model.apply({"params": body}, x)[1]["pre_logits"])
    extract = lambda x: fewshot.extract_features(  # noqa: E731
        features, x, batch_size, lambda b: _resize(b, config.image_size))
    return fewshot.fewshot_eval(extract(train_x), train_y, extract(test_x), test_y,
                                datasets.num_classes(dataset, data_dir), shots=tuple(shots),
                                seeds=tuple(seeds))


def run_config(model: ViTConfig) -> ml_collections.ConfigDict:
    """A training config whose ``model`` builds ``model``'s architecture."""
    config = base.get_config()
    name = model.variant.split("/")[0] if model.variant else next(iter(SHAPES))
    config.model.update(dict(
        variant=f"{name}/{model.patch_size}", width=model.width, depth=model.depth,
        mlp_dim=model.mlp_dim, num_heads=model.num_heads, pool_type=model.pool_type,
        posemb=model.posemb, representation_size=model.representation_size or 0,
        dtype=model.dtype, param_dtype=model.param_dtype, scan=model.scan,
        remat_policy=model.remat_policy))
    return config


def finetune_checkpoint(path, dataset: str, workdir, *, variant: Optional[str] = None,
                        num_heads: Optional[int] = None, steps: int = 500, lr: float = 0.01,
                        batch_size: int = 128, image_size: int = 0,
                        progress: bool = True) -> dict:
    """Fine-tune the checkpoint on ``dataset`` (``fit``'s result)."""
    model, pretrained = load_checkpoint(path, variant, num_heads=num_heads)
    train_x, _ = datasets.load_split(dataset, "train")
    pretrained = adapt_channels(pretrained, train_x.shape[3])
    config = finetune_config(run_config(model), dataset, steps, lr, batch_size, image_size)
    pretrained = jax.tree_util.tree_map(jnp.asarray, pretrained)
    return fit(config, workdir, init_params=lambda fresh: transfer_params(pretrained, fresh),
               progress=progress)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitlib.train.from_checkpoint",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("fewshot", "finetune"):
        p = sub.add_parser(name)
        p.add_argument("--from", dest="source", required=True, help=".npz / .safetensors / .pth")
        p.add_argument("--dataset", required=True, help="fashion_mnist | digits | TFDS name")
        p.add_argument("--variant", help="expected NAME/PATCH")
        p.add_argument("--num-heads", type=int, help="timm files do not store it")
        p.add_argument("--image-size", type=int, default=0, help="0: the checkpoint's")
    sub.choices["fewshot"].add_argument("--shots", type=int, nargs="+",
                                        default=list(fewshot.DEFAULT_SHOTS))
    sub.choices["fewshot"].add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ft = sub.choices["finetune"]
    ft.add_argument("--workdir", required=True)
    ft.add_argument("--steps", type=int, default=500)
    ft.add_argument("--lr", type=float, default=0.01)
    ft.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    if args.image_size < 0:
        parser.error(f"--image-size: must be >= 0, got {args.image_size}")
    try:
        if args.command == "fewshot":
            results = fewshot_checkpoint(args.source, args.dataset, variant=args.variant,
                                         image_size=args.image_size or None,
                                         num_heads=args.num_heads, shots=args.shots,
                                         seeds=args.seeds)
            print(json.dumps({f"{k}shot": {"mean": r["mean"], "std": r["std"]}
                              for k, r in results.items()}, indent=1))
        else:
            result = finetune_checkpoint(args.source, args.dataset, args.workdir,
                                         variant=args.variant, num_heads=args.num_heads,
                                         steps=args.steps, lr=args.lr,
                                         batch_size=args.batch_size, image_size=args.image_size)
            print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
