"""Figures the notebooks draw; each returns the matplotlib Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt


def params_vs_gflops(rows: list[dict], paper: bool = True):
    """Log-log scatter of params vs forward GFLOPs, one labelled point per variant.

    ``rows`` are dicts with ``variant``, ``params_m``, ``gflops`` and, if ``paper``,
    ``paper_params_m`` and ``paper_gflops`` (drawn as open circles).
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter([r["gflops"] for r in rows], [r["params_m"] for r in rows], s=30,
               label="vitlib (computed)", zorder=3)
    if paper:
        ax.scatter([r["paper_gflops"] for r in rows], [r["paper_params_m"] for r in rows], s=90,
                   facecolors="none", edgecolors="C3", label="paper Table 2", zorder=2)
    # Neighbouring variants sit close together; rotate label placement so names stay legible.
    placements = [((8, -14), "left"), ((8, 10), "left"), ((-8, 10), "right")]
    for i, r in enumerate(sorted(rows, key=lambda r: r["gflops"])):
        offset, align = placements[i % len(placements)]
        ax.annotate(r["variant"], (r["gflops"], r["params_m"]), textcoords="offset points",
                    xytext=offset, ha=align, fontsize=8,
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="0.4"))
    ax.set(xscale="log", yscale="log", xlabel="forward GFLOPs per image (224px)",
           ylabel="parameters (millions, no head)", title="ViT variants: size vs compute")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    return fig
