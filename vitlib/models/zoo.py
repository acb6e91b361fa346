"""The model zoo: shapes, parameter counts and GFLOPs of ViT variants, against paper Table 2.

    python -m vitlib.models.zoo                      # every Table 2 row at 224px
    python -m vitlib.models.zoo --image-size 384 g/14 G/14
    python -m vitlib.models.zoo --json B/16 Pico/4 --image-size 28

Counts use Table 2's convention: GAP pooling (no class token), no classifier head, 3 input
channels, forward FLOPs = 2 x multiply-adds including attention.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from vitlib.models import count_flops, count_params, num_patches, table2_variants, vit_config

# Paper Table 2 as printed: variant -> (params in millions, GFLOPs at 224px). Strings keep the
# printed digits, which bound the rounding of each entry.
PAPER_TABLE2: dict[str, tuple[str, str]] = {
    "s/28": ("5.4", "0.7"),
    "s/16": ("5.0", "2.2"),
    "S/32": ("22", "2.3"),
    "Ti/16": ("5.5", "2.5"),
    "B/32": ("87", "8.7"),
    "S/16": ("22", "9.2"),
    "B/28": ("87", "11.3"),
    "B/16": ("86", "35.1"),
    "L/16": ("303", "122.9"),
    "g/14": ("1011", "533.1"),
    "G/14": ("1843", "965.3"),
}
PARAMS_REL_TOL = 0.01
GFLOPS_REL_TOL = 0.02


def zoo_row(variant: str, image_size: int = 224) -> dict:
    """Shape and counts of one variant in Table 2's convention."""
    cfg = vit_config(variant, image_size=image_size, pool_type="gap", num_classes=0)
    return {
        "variant": cfg.variant,
        "width": cfg.width,
        "depth": cfg.depth,
        "mlp_dim": cfg.mlp_dim,
        "heads": cfg.num_heads,
        "patch": cfg.patch_size,
        "image_size": image_size,
        "tokens": num_patches(image_size, cfg.patch_size),
        "params": count_params(cfg),
        "gflops": count_flops(cfg) / 1e9,
    }


def printed_rounding(printed: str) -> float:
    """Half a unit of the last printed digit: '5.4' -> 0.05, '303' -> 0.5."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return 0.5 * 10.0 ** (-decimals)


def matches_paper(ours: float, printed: str, rel_tol: float) -> bool:
    """Within ``rel_tol`` of the printed value, beyond the rounding of its printed digits."""
    paper = float(printed)
    return abs(ours - paper) <= rel_tol * paper + printed_rounding(printed)


def compare_with_paper() -> list[dict]:
    """Every Table 2 row: our counts, the paper's, relative differences and a pass flag."""
    rows = []
    for variant in table2_variants():
        row = zoo_row(variant, 224)
        paper_params, paper_gflops = PAPER_TABLE2[variant]
        params_m = row["params"] / 1e6
        rows.append({
            **row,
            "params_m": params_m,
            "paper_params_m": float(paper_params),
            "params_diff_pct": 100 * (params_m / float(paper_params) - 1),
            "paper_gflops": float(paper_gflops),
            "gflops_diff_pct": 100 * (row["gflops"] / float(paper_gflops) - 1),
            "params_ok": matches_paper(params_m, paper_params, PARAMS_REL_TOL),
            "gflops_ok": matches_paper(row["gflops"], paper_gflops, GFLOPS_REL_TOL),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    header = f"{'variant':<9}{'width':>6}{'depth':>6}{'mlp':>6}{'heads':>6}{'patch':>6}" \
             f"{'tokens':>7}{'params':>15}{'GFLOPs':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['variant']:<9}{r['width']:>6}{r['depth']:>6}{r['mlp_dim']:>6}"
                     f"{r['heads']:>6}{r['patch']:>6}{r['tokens']:>7}{r['params']:>15,}"
                     f"{r['gflops']:>10.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.models.zoo",
        description="Width, depth, MLP, heads, patch, params and forward GFLOPs of ViT variants "
                    "(paper Table 2 convention: GAP, no head, 3 channels).")
    parser.add_argument("variants", nargs="*", metavar="VARIANT",
                        help="NAME/PATCH such as B/16 (default: every Table 2 row)")
    parser.add_argument("--image-size", type=int, default=224, help="square input size (224)")
    parser.add_argument("--json", action="store_true", help="print one JSON array")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = [zoo_row(v, args.image_size) for v in (args.variants or table2_variants())]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for w in {str(w.message) for w in caught}:
        print(f"warning: {w}", file=sys.stderr)
    try:
        print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
