"""Convert ViT checkpoints between big_vision / vision_transformer ``.npz`` and timm.

    python -m vitlib.models.convert --from B_16.npz --to B_16.safetensors
    python -m vitlib.models.convert --from vit_s16.safetensors --to s16_384.npz \\
        --variant S/16 --image-size 384
    python -m vitlib.models.convert --from runs/quickstart --to quickstart.safetensors

``--from`` may be a training workdir: its last checkpoint (or ``--step N``), the model read off
its parameters, the variant name from the config it recorded.

The format comes from each suffix (``.npz``: big_vision; ``.safetensors``, ``.pth``, ``.pt``,
``.bin``: timm ``VisionTransformer`` state dict) or ``--from-format`` / ``--to-format``. The ViT
config is read off the checkpoint; every option given must agree with it (a mismatch is an error
that names the key, the shape found and the shape expected), except ``--image-size``, to which
the position embedding is resampled. Prints the config, and for a timm output the arguments of
the timm ``VisionTransformer`` that computes the same function.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from vitlib.models.interop import (FORMATS, format_of, is_workdir, load, load_workdir, save,
                                   timm_kwargs)
from vitlib.models.interop import checkpoint_steps as interop_steps
from vitlib.models.variants import POOL_TYPES, POSEMB_TYPES, parse_variant


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _variant(text: str) -> str:
    try:
        parse_variant(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments in one line (``--help`` shows the usage), not the usage first."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="python -m vitlib.models.convert", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True,
                   help="checkpoint to read: a file, or a training workdir")
    p.add_argument("--step", type=_positive, help="workdir: the checkpoint step (default: last)")
    p.add_argument("--to", dest="target", required=True, help="checkpoint to write")
    p.add_argument("--from-format", choices=FORMATS, help="default: from the suffix")
    p.add_argument("--to-format", choices=FORMATS, help="default: from the suffix")
    p.add_argument("--variant", type=_variant, help="expected NAME/PATCH, e.g. B/16")
    p.add_argument("--num-heads", type=_positive,
                   help="head count (timm files do not store it; needed for unnamed shapes)")
    p.add_argument("--image-size", type=_positive,
                   help="resolution to load at (resamples the position embedding)")
    p.add_argument("--pool-type", choices=POOL_TYPES, help="expected pooling")
    p.add_argument("--posemb", choices=POSEMB_TYPES, help="expected position embedding")
    p.add_argument("--num-classes", type=int, help="expected classes (0: no head)")
    p.add_argument("--prefix", help="npz key prefix of the model, e.g. params/img/")
    p.add_argument("--scan", action="store_true", help="npz output: one scanned encoderblock")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="npz output: store arrays in this dtype (bfloat16 as big_vision does)")
    p.add_argument("--force", action="store_true", help="overwrite --to if it exists")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    source, target = Path(args.source), Path(args.target)
    workdir = is_workdir(source)
    try:
        if not workdir:
            format_of(source, args.from_format)
        to_format = format_of(target, args.to_format)
    except ValueError as err:
        p.error(str(err))
    if not workdir and not source.is_file():
        p.error(f"--from: {source} is neither a checkpoint file nor a training workdir (one "
                f"with checkpoints/)" if source.exists() else f"--from: {source} does not exist")
    if args.step is not None and not workdir:
        p.error("--step: only for a training workdir --from")
    if workdir and (args.from_format or args.prefix):
        p.error("--from-format / --prefix: only for a checkpoint file --from")
    if target.resolve() == source.resolve():
        p.error("--to: must differ from --from")
    if target.exists() and not args.force:
        p.error(f"--to: {target} exists; pass --force to overwrite it")
    if args.num_classes is not None and args.num_classes < 0:
        p.error(f"--num-classes: must be >= 0, got {args.num_classes}")
    if to_format == "timm" and (args.scan or args.dtype):
        p.error("--scan / --dtype: only for an npz output")
    overrides = {k: v for k, v in dict(num_heads=args.num_heads, image_size=args.image_size,
                                       pool_type=args.pool_type, posemb=args.posemb,
                                       num_classes=args.num_classes).items() if v is not None}
    try:
        if workdir:
            config, params = load_workdir(source, args.step, args.variant, **overrides)
        else:
            config, params = load(source, args.variant, format=args.from_format,
                                  prefix=args.prefix, **overrides)
        save(params, config, target, format=args.to_format, scan=args.scan, dtype=args.dtype)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report = {"wrote": str(target), "config": dataclasses.asdict(config)}
    if workdir:
        report["from_step"] = args.step or max(interop_steps(source))
    if to_format == "timm":
        report["timm_kwargs"] = timm_kwargs(config)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
