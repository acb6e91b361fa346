"""Figures the notebooks draw; each returns the matplotlib Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter


def plain_log_ticks(axis, subs=(1.0, 2.0, 3.0, 5.0)) -> None:
    """A log axis labelled in plain numbers at ``subs`` x 10^k (0.2, 0.3, 0.5, 1, 2, ...)
    instead of matplotlib's 2x10^-1: error rates and GiB read as they are. Axes spanning
    several decades want fewer ``subs`` (``(1,)``)."""
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def axis_label(key: str) -> str:
    """A result key as an axis label: 'fewshot_digits_10shot_error' -> 'digits 10-shot error'."""
    return key.replace("fewshot_", "").replace("shot", "-shot").replace("_", " ")


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
    ax.margins(x=0.12, y=0.15)  # room for the labels of the smallest and largest variants
    plain_log_ticks(ax.xaxis, subs=(1.0,))
    plain_log_ticks(ax.yaxis, subs=(1.0, 3.0))
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
        plain_log_ticks(ax.yaxis)
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


def _model_colours(models: list) -> dict:
    cmap = plt.get_cmap("viridis")
    return {m: cmap(i / max(len(models) - 1, 1)) for i, m in enumerate(models)}


MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9}


def _size_key(size) -> float:
    """Sorts data sizes given as numbers or as the paper writes them ("30M", "3B")."""
    if isinstance(size, str) and size[-1:] in _SUFFIX:
        return float(size[:-1]) * _SUFFIX[size[-1]]
    return float(size)


def _data_sizes(rows: list[dict], data: str) -> list:
    return sorted({r[data] for r in rows}, key=_size_key)


def compute_vs_error(ax, rows: list[dict], model: str, data: str, compute: str, error: str,
                     fit=None, band=None, frontier=None, title: str = "",
                     xlabel: str = "training FLOPs", ylabel: str = "", reference=None,
                     note: str = ""):
    """Figure 2's panel: error vs compute on log-log axes, colour = model (in the order rows
    first name them), marker = data size (smallest first), the same (model, data) joined
    across lengths; ``frontier`` (compute, error) of the Pareto frontier circled; ``fit``
    (compute, error) drawn as a line and ``band`` (compute, lo, hi) shaded; ``reference``
    (compute, error, label) another law drawn dotted (e.g. the paper's printed one); ``note``
    a line of text under the axes (what a label in the legend means)."""
    models = list(dict.fromkeys(r[model] for r in rows))
    datas = _data_sizes(rows, data)
    colours = _model_colours(models)
    for m in models:
        for j, dsize in enumerate(datas):
            pts = sorted((r[compute], r[error]) for r in rows if r[model] == m and r[data] == dsize)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "-", color=colours[m], alpha=0.5, lw=0.8)
                ax.scatter(xs, ys, color=colours[m], marker=MARKERS[j % len(MARKERS)], s=18,
                           zorder=3)
    if band is not None:
        ax.fill_between(band[0], band[1], band[2], color="0.5", alpha=0.25, lw=0,
                        label="bootstrap band")
    if fit is not None:
        ax.plot(fit[0], fit[1], "k--", lw=1.2, label="fitted law (frontier)")
    if reference is not None:
        ax.plot(reference[0], reference[1], ":", color="C3", lw=1.6, label=reference[2])
    if note:
        ax.annotate(note, (0, 0), xytext=(0, -34), xycoords="axes fraction",
                    textcoords="offset points", fontsize=7, va="top")
    if frontier is not None:
        ax.scatter(frontier[0], frontier[1], s=70, facecolors="none", edgecolors="k", lw=0.8,
                   zorder=4, label="Pareto frontier")
    for m in models:
        ax.scatter([], [], color=colours[m], label=str(m))
    for j, dsize in enumerate(datas):
        ax.scatter([], [], color="0.3", marker=MARKERS[j % len(MARKERS)], label=f"data {dsize}")
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel or axis_label(error),
           title=title)
    plain_log_ticks(ax.yaxis)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return ax


def best_per_group(ax, rows: list[dict], model: str, data: str, error: str, title: str = ""):
    """The "data bottleneck" panel: each model's best error per data size (x: data size)."""
    models = list(dict.fromkeys(r[model] for r in rows))
    datas = _data_sizes(rows, data)
    colours = _model_colours(models)
    for m in models:
        ys = [min((r[error] for r in rows if r[model] == m and r[data] == d), default=None)
              for d in datas]
        xs = [i for i, y in enumerate(ys) if y is not None]
        ax.plot(xs, [ys[i] for i in xs], "o-", color=colours[m], label=str(m))
    ax.set_xticks(range(len(datas)), [str(d) for d in datas])
    ax.set(xlabel="training data size", ylabel=f"best {axis_label(error)}", title=title,
           yscale="log")
    plain_log_ticks(ax.yaxis)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def error_vs_images(ax, rows: list[dict], model: str, images: str, error: str,
                    models: list, title: str = ""):
    """Figure 3's panel: error vs images seen for ``models``."""
    colours = _model_colours(models)
    for m in models:
        pts = sorted((r[images], r[error]) for r in rows if r[model] == m)
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "o-", color=colours[m], label=str(m))
    ax.set(xscale="log", yscale="log", xlabel="images seen", ylabel=axis_label(error),
           title=title)
    plain_log_ticks(ax.yaxis)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def decay_heatmap(ax, values, heads: list, bodies: list, title: str, marks: dict = None,
                  integral: float = None):
    """Figure 5's panel: ``values[i][j]`` (in %) at body decay ``bodies[i]`` (rows, bottom to
    top) and head decay ``heads[j]`` (columns); cells where head == body outlined dashed (the
    diagonal); ``marks`` {label: (head, body)} outlines those cells in colour, inside the cell
    so no number is covered. With ``integral`` (the run's sum of learning rates) each tick also
    shows the integrated decay ``wd x integral``, the quantity the decay acts through."""
    import numpy as np
    from matplotlib.patches import Rectangle

    values = np.asarray(values, float)
    image = ax.imshow(values, origin="lower", cmap="viridis", aspect="auto")
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(bodies)):
        for j in range(len(heads)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="black" if values[i, j] > middle else "white")
            if heads[j] == bodies[i]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2,
                                       edgecolor="white", linestyle="--"))
    styles = (("red", "-"), ("orange", ":"), ("magenta", "-."), ("cyan", "--"))
    for n, ((label, (head, body)), (colour, line)) in enumerate(zip((marks or {}).items(),
                                                                     styles)):
        if head in heads and body in bodies:
            inset = 0.08 + 0.07 * n  # nested, never on the cell's border
            ax.add_patch(Rectangle((heads.index(head) - 0.5 + inset,
                                    bodies.index(body) - 0.5 + inset), 1 - 2 * inset,
                                   1 - 2 * inset, fill=False, lw=2.2, edgecolor=colour,
                                   linestyle=line, label=label, zorder=3))

    def tick(value):
        return f"{value:g}" if integral is None else f"{value:g}\n({value * integral:.2g})"

    ax.set_xticks(range(len(heads)), [tick(h) for h in heads])
    ax.set_yticks(range(len(bodies)), [tick(b) for b in bodies])
    suffix = "" if integral is None else " (integrated: wd x sum lr)"
    ax.set(xlabel=f"head weight decay{suffix}", ylabel=f"body weight decay{suffix}", title=title)
    if marks:  # below the axes: inside, it would hide a cell's value
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22 if integral else -0.14),
                  ncol=len(marks), fontsize=7, frameon=False)
    ax.figure.colorbar(image, ax=ax, fraction=0.046)


def schedules_figure(curves: dict, schedules: dict, finals: list[dict], metric: str,
                     title: str):
    """Figure 7's layout: ``metric`` vs step above (``curves[label] = (steps, values)``, the
    long runs; ``finals`` rows {label, step, value, std} as markers with error bars: branches
    and references at their lengths), learning rate vs step below (``schedules[label] =
    (steps, lr)``). Labels sharing a prefix before ':' share a colour; lr curves labelled
    ``<family>:main`` are solid, the others (branches, runs per length) dashed."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    families = list(dict.fromkeys(label.split(":")[0]
                                  for label in [*curves, *schedules, *(r["label"] for r in finals)]))
    colour = {f: f"C{i}" for i, f in enumerate(families)}
    for label, (steps, values) in curves.items():
        top.plot(steps, values, color=colour[label.split(":")[0]], alpha=0.5, lw=1)
    for family in families:
        rows = [r for r in finals if r["label"].split(":")[0] == family]
        if rows:
            top.errorbar([r["step"] for r in rows], [r["value"] for r in rows],
                         yerr=[r.get("std", 0.0) for r in rows], fmt="o", capsize=3,
                         color=colour[family], label=family)
    top.set(ylabel=metric, title=title)
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    for label, (steps, lr) in schedules.items():
        bottom.plot(steps, lr, color=colour[label.split(":")[0]], lw=1,
                    linestyle="-" if label.endswith(":main") else "--")
    bottom.plot([], [], color="0.3", lw=1, linestyle="-", label="main run (one per family)")
    bottom.plot([], [], color="0.3", lw=1, linestyle="--",
                label="cooldown branch / run of one length")
    bottom.set(xlabel="step", ylabel="learning rate")
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def fit_blocks(ax, cells: list[dict], columns: list, rows: list, settings: list[str],
               title: str, marked: tuple = ()):
    """Figure 8's panel: one block per shape at (``column``, ``row``) of ``cells`` (dicts with
    ``column``, ``row``, ``label``, ``first`` = index into ``settings`` of the first setting in
    which the shape fits or None, ``speed`` in (0, 1] = relative images/s, and optionally
    ``undecided`` = the plan's fit turns on XLA:CPU's buffer assignment, not on the model);
    colour = that setting, shade = speed, grey = fits in none, hatched = undecided; labels in
    ``marked`` outlined in red."""
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch, Rectangle

    colours = [to_rgb(f"C{i}") for i in range(len(settings))]
    for cell in cells:
        x, y = columns.index(cell["column"]), rows.index(cell["row"])
        if cell["first"] is None:
            face = (0.85, 0.85, 0.85)
        else:  # slower shapes are paler
            base, shade = colours[cell["first"]], 0.25 + 0.75 * float(cell["speed"])
            face = tuple(1 - shade * (1 - c) for c in base)
        edge = "red" if cell["label"] in marked else "white"
        ax.add_patch(Rectangle((x - 0.45, y - 0.45), 0.9, 0.9, facecolor=face, edgecolor=edge,
                               lw=2.5 if edge == "red" else 1,
                               hatch="///" if cell.get("undecided") else None))
        if cell["label"] in marked:
            ax.text(x, y, cell["label"], ha="center", va="center", fontsize=7)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xticks(range(len(columns)), [str(c) for c in columns], fontsize=8)
    ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=8)
    ax.set(xlabel="width", ylabel="depth", title=title)
    shown = {cell["first"] for cell in cells}
    handles = [Patch(color=c, label=f"fits from: {s}")
               for i, (c, s) in enumerate(zip(colours, settings)) if i in shown]
    if None in shown:
        handles.append(Patch(color=(0.85, 0.85, 0.85), label="fits in none"))
    pale = tuple(1 - 0.25 * (1 - c) for c in colours[0])
    handles += [Patch(facecolor=colours[0], label="fastest (most images/s)"),
                Patch(facecolor=pale, label="paler = slower (images/s from the step's FLOPs)")]
    if any(cell.get("undecided") for cell in cells):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="///",
                             label="fit decided by XLA:CPU's buffer assignment\n"
                                   "(the planner cannot test it)"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1),
              title="XLA:CPU plan of one device", title_fontsize=7)


def learning_curve_fits(curves: dict, laws: dict, estimators: list, titles: dict,
                        cols: int = 6, xlabel: str = "examples seen", ylabel: str = "error"):
    """One panel per learning curve: its fitted points (black), the points extrapolated to
    (grey, on a shaded span) and each estimator's law fitted on the first part.
    ``curves``: {key: (x_fit, e_fit, x_test, e_test)}; ``laws``: {key: {estimator: an object
    with ``predict(x)``, or None where the fit failed}}; ``titles``: {key: panel title}."""
    keys = list(curves)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        xf, ef, xt, et = curves[key]
        if len(xt):
            ax.axvspan(min(xt), max(xt), color="0.92")
        ax.plot(xf, ef, ".", color="k", ms=3)
        ax.plot(xt, et, ".", color="0.6", ms=2)
        grid = np.geomspace(min(xf), max([*xf, *xt]), 80)
        for name in estimators:
            law = laws[key].get(name)
            if law is not None:
                ax.plot(grid, law.predict(grid), lw=1, label=name)
        ax.set(xscale="log", yscale="log", title=titles[key])
        ax.title.set_fontsize(9)
        # Few decades per panel: plain labels (0.4, 5000) that do not run into each other.
        span = np.log10(max([*xf, *xt]) / min(xf))
        plain_log_ticks(ax.xaxis, subs=(1.0,) if span > 2 else (1.0, 2.0, 5.0))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.tick_params(labelsize=7, which="both")
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    if any(law is not None for per in laws.values() for law in per.values()):
        axes.flat[0].legend(fontsize=7)
    fig.supxlabel(xlabel)
    fig.supylabel(ylabel)
    fig.tight_layout()
    return fig
