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


def grouped_bars(rows: list[dict], x: str, group: str, value: str, ylabel: str, title: str,
                 hlines: dict | None = None, log: bool = False):
    """One bar per (x, group) of ``rows``; ``hlines`` {label: y} draws reference lines."""
    xs = list(dict.fromkeys(r[x] for r in rows))
    groups = list(dict.fromkeys(r[group] for r in rows))
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(xs)), 4.2))
    for i, g in enumerate(groups):
        heights = [next((r[value] for r in rows if r[x] == xv and r[group] == g), 0) for xv in xs]
        ax.bar([j + (i - (len(groups) - 1) / 2) * width for j in range(len(xs))], heights,
               width, label=str(g))
    for label, y in (hlines or {}).items():
        ax.axhline(y, color="0.3", ls="--", lw=1)
        ax.annotate(label, (len(xs) - 0.5, y), ha="right", va="bottom", fontsize=8)
    ax.set_xticks(range(len(xs)), xs)
    ax.set(ylabel=ylabel, title=title)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def training_curves(curves: dict, metrics: tuple[str, ...], title: str):
    """``curves[label][metric] = (steps, mean, std)``; one panel per metric."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4))
    axes = [axes] if len(metrics) == 1 else list(axes)
    for ax, metric in zip(axes, metrics):
        for label, per_metric in curves.items():
            steps, mean, std = per_metric[metric]
            ax.plot(steps, mean, label=label)
            ax.fill_between(steps, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], alpha=0.2)
        ax.set(xlabel="step", ylabel=metric.replace("_", " "))
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return fig
