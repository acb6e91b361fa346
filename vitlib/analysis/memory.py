"""``python -m vitlib.analysis.memory``: the memory of a ViT's parameters and optimizer state
(``state_memory``, from shapes) or of its whole compiled training step (``step_memory``).

    python -m vitlib.analysis.memory --variant G/14 --optimizer adafactor_bv [--json]
    python -m vitlib.analysis.memory --variant G/14 --optimizer adafactor_bv --batch-per-device 32 \
        --devices 8 --fsdp --remat --compiled --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from vitlib.analysis.state_memory import OPTIMIZER_NAMES, optimizer_memory
from vitlib.analysis.step_memory import compiled_plan


def _gib(n: int) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.analysis.memory",
        description="Bytes of parameters and optimizer state of a ViT, from shapes only.")
    parser.add_argument("--variant", required=True, help="NAME/PATCH, e.g. G/14")
    parser.add_argument("--optimizer", required=True, choices=OPTIMIZER_NAMES)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=0,
                        help="classifier size (default 0: no head, as in paper Table 2)")
    parser.add_argument("--scan", action="store_true",
                        help="stacked (scanned) encoder parameters; changes Adafactor factoring")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    compiled = parser.add_argument_group("compiled training step (--compiled)")
    compiled.add_argument("--compiled", action="store_true",
                          help="plan the whole compiled train step per device")
    compiled.add_argument("--batch-per-device", type=int, default=32)
    compiled.add_argument("--devices", type=int, default=1, help="virtual CPU devices (mesh)")
    compiled.add_argument("--fsdp", action="store_true", help="shard params/state over devices")
    compiled.add_argument("--remat", action="store_true", help="rematerialise encoder blocks")
    compiled.add_argument("--dtype", default="float32", help="compute dtype (bfloat16, ...)")
    args = parser.parse_args(argv)
    unused = [f"--{name.replace('_', '-')}" for name in ("fsdp", "remat") if getattr(args, name)]
    unused += [f"--{name.replace('_', '-')}" for name, default in
               (("batch_per_device", 32), ("devices", 1), ("dtype", "float32"))
               if getattr(args, name) != default]
    if unused and not args.compiled:
        print(f"error: {', '.join(unused)}: only used with --compiled (the compiled step's "
              f"plan); add --compiled, or drop them for the optimizer-state report",
              file=sys.stderr)
        return 2
    if not args.compiled:
        return _report(lambda: optimizer_memory(args.variant, args.optimizer, args.image_size,
                                                args.num_classes, scan=args.scan),
                       args.json, _render_state)
    for field in ("batch_per_device", "devices"):
        if getattr(args, field) < 1:
            print(f"error: --{field.replace('_', '-')}: must be >= 1, got "
                  f"{getattr(args, field)}", file=sys.stderr)
            return 2
    # Virtual devices must be requested before JAX's CPU backend starts.
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    return _report(lambda: compiled_plan(args.variant, args.optimizer, args.batch_per_device,
                                         args.devices, args.fsdp, args.remat, args.image_size,
                                         args.num_classes or 1000, args.dtype),
                   args.json, _render_plan)


def _report(compute, as_json: bool, render) -> int:
    try:
        report = compute()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(report, indent=1) if as_json else render(report))
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _render_state(r: dict) -> str:
    return "\n".join([
        f"{r['variant']} with {r['optimizer']}: {r['num_params']:,} parameters",
        f"  parameters       {_gib(r['param_bytes']):>12}  {r['param_bytes_by_dtype']}",
        f"  optimizer state  {_gib(r['opt_state_bytes']):>12}  {r['opt_state_bytes_by_dtype']}",
        f"  state / params   {r['opt_state_over_params']:>8.3f}x"])


def _render_plan(p: dict) -> str:
    lines = [f"{p['variant']} / {p['optimizer']}: {p['devices']} devices x "
             f"{p['batch_per_device']} images, fsdp={p['fsdp']}, remat={p['remat']}"]
    for key in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "total_bytes"):
        lines.append(f"  {key:15s} {_gib(p[key]):>12} per device")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
