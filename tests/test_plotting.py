"""Figures say what they show: plain tick labels on log axes, legends that list only what is
drawn and never cover a value."""
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vitlib.study import plotting  # noqa: E402


def _labels(axis, fig):
    fig.canvas.draw()
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_log_error_axes_read_as_plain_numbers():
    fig, ax = plt.subplots()
    rows = [{"model": m, "data": d, "flops": f, "error": e}
            for m, d, f, e in [("a", 10, 1e10, 0.6), ("a", 10, 1e11, 0.35), ("b", 10, 1e12, 0.15)]]
    plotting.compute_vs_error(ax, rows, "model", "data", "flops", "error")
    labels = _labels(ax.yaxis, fig)
    assert labels and all("10^" not in t and "times" not in t for t in labels), labels
    assert set(labels) <= {"0.1", "0.2", "0.3", "0.5", "1"}, labels
    assert plotting.axis_label("fewshot_digits_10shot_error") == "digits 10-shot error"


def test_heatmap_legend_sits_outside_the_cells():
    fig, ax = plt.subplots()
    plotting.decay_heatmap(ax, [[1.0, 2.0], [3.0, 4.0]], [0.1, 1.0], [0.1, 1.0], "t",
                           marks={"chosen": (0.1, 1.0), "paper": (1.0, 0.1)})
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 <= ax.get_window_extent().y0  # below the axes, over no cell


def test_heatmap_marks_sit_inside_their_cells_and_ticks_show_integrated_decay():
    fig, ax = plt.subplots()
    heads, bodies = [0.1, 1.0, 10.0], [0.1, 1.0]
    plotting.decay_heatmap(ax, np.ones((2, 3)), heads, bodies, "t", integral=0.5,
                           marks={"chosen": (10.0, 1.0), "other": (10.0, 1.0)})
    marked = [p for p in ax.patches if p.get_label() in ("chosen", "other")]
    assert len(marked) == 2
    for patch in marked:  # cell (column 2, row 1) spans x in [1.5, 2.5], y in [0.5, 1.5]
        x, y, w, h = patch.get_x(), patch.get_y(), patch.get_width(), patch.get_height()
        assert 1.5 < x and x + w < 2.5 and 0.5 < y and y + h < 1.5
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0.1\n(0.05)", "1\n(0.5)", "10\n(5)"]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    ticks = max(t.get_window_extent().y0 for t in ax.get_xticklabels())
    assert legend.y1 <= min(t.get_window_extent().y0 for t in ax.get_xticklabels()) <= ticks


def test_fit_map_legend_lists_only_the_settings_drawn_and_explains_the_shade():
    fig, ax = plt.subplots()
    cells = [{"column": 1, "row": 1, "label": "x", "first": 0, "speed": 1.0},
             {"column": 2, "row": 1, "label": "y", "first": None, "speed": 0.5}]
    plotting.fit_blocks(ax, cells, [1, 2], [1], ["first", "second", "third"], "t")
    legend = ax.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:2] == ["fits from: first", "fits in none"]
    # The shade has swatches of its own: the full colour and a paler one.
    assert texts[2:] == ["fastest (most images/s)",
                         "paler = slower (images/s from the step's FLOPs)"]
    full, pale = legend.legend_handles[2].get_facecolor(), legend.legend_handles[3].get_facecolor()
    assert all(p >= f for p, f in zip(pale[:3], full[:3])) and pale[:3] != full[:3]


def test_fit_map_hatches_the_shapes_whose_fit_the_planner_cannot_decide():
    fig, ax = plt.subplots()
    cells = [{"column": 1, "row": 1, "label": "G/14", "first": None, "speed": 0.5,
              "undecided": True},
             {"column": 2, "row": 1, "label": "y", "first": 0, "speed": 1.0}]
    plotting.fit_blocks(ax, cells, [1, 2], [1], ["first"], "t")
    hatches = [patch.get_hatch() for patch in ax.patches]
    assert hatches == ["///", None]
    assert any("buffer assignment" in t.get_text() for t in ax.get_legend().get_texts())


def test_schedules_figure_explains_its_line_styles():
    fig = plotting.schedules_figure({"rsqrt:main": ([0, 1], [0.5, 0.6])},
                                    {"rsqrt:main": ([0, 1], [1e-3, 1e-3]),
                                     "rsqrt:150": ([0, 1], [1e-3, 0.0])},
                                    [{"label": "rsqrt:150", "step": 1, "value": 0.6}], "acc", "t")
    texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any("main run" in t for t in texts) and any("branch" in t for t in texts)


def test_figure2_panel_draws_a_reference_law_and_a_note():
    fig, ax = plt.subplots()
    rows = [{"m": "A", "d": 1, "c": 1.0, "e": 0.5}, {"m": "A", "d": 1, "c": 10.0, "e": 0.3}]
    plotting.compute_vs_error(ax, rows, "m", "d", "c", "e", reference=([1, 10], [0.6, 0.4], "printed"),
                              note="(inferred): label inferred")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["printed"].get_ydata()) == [0.6, 0.4] and lines["printed"].get_linestyle() == ":"
    assert any(t.get_text() == "(inferred): label inferred" for t in ax.texts)


class _Law:
    def __init__(self, b, c):
        self.b, self.c = b, c

    def predict(self, x):
        return self.b * np.asarray(x, float) ** self.c


def test_learning_curve_fits_shade_the_extrapolated_part_and_draw_each_fitted_law():
    x = np.geomspace(1e3, 1e4, 10)
    e = 3.0 * x ** -0.2
    curves = {"a": (x[:7], e[:7], x[7:], e[7:]), "b": (x[:7], e[:7], x[7:], e[7:])}
    laws = {"a": {"m1": _Law(3.0, -0.2), "m2": None}, "b": {"m1": None, "m2": None}}
    fig = plotting.learning_curve_fits(curves, laws, ["m1", "m2"], {"a": "A", "b": "B"}, cols=3)
    axes = fig.axes
    assert [ax.get_title() for ax in axes[:2]] == ["A", "B"] and not axes[2].axison
    span = axes[0].patches[0]  # the shaded span covers exactly the extrapolated x
    assert span.get_x() == x[7] and span.get_x() + span.get_width() == pytest.approx(x[-1])
    labelled = [line.get_label() for line in axes[0].get_lines() if not line.get_label().startswith("_")]
    assert labelled == ["m1"] and not [ln for ln in axes[1].get_lines()
                                       if not ln.get_label().startswith("_")]
    for label in _labels(axes[0].xaxis, fig) + _labels(axes[0].yaxis, fig):
        assert "10^" not in label and "times" not in label, label
