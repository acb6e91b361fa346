"""What to train for a compute budget: which model, how many images, and how sure.

    python -m vitlib.analysis.advice --budget 50 --unit h100-days [--mfu 0.4] \
        [--metric 10shot|finetune] [--runs results.csv [--with-paper]] [--n-boot 100] [--json]

Answers from runs: by default the paper's own (Appendix F, ImageNet 10-shot error, or Appendix G,
ImageNet fine-tune error; ``paper_tables``), or a CSV of the user's runs, or both. Compute is
vitlib's training FLOPs (3 x forward FLOPs per image x images seen, as
``scaling.training_flops``; for the paper's runs, Table 2's GFLOPs); a budget given in
device-days is turned into FLOPs by ``accelerators.flops_of_budget`` at an assumed MFU.

For a budget C, ``advise`` reports:

- **The frontier law.** The double-saturating law E = a (C + d)^-b + c fitted to the Pareto
  frontier of all runs (``scaling.pareto_frontier``, ``scaling.fit_power_law``), its prediction
  at C and a percentile bootstrap interval (``scaling.bootstrap_fit`` over the frontier's
  points, as notebook 05 does), and the reasons the fit cannot be trusted
  (``scaling.testability``), if any. This is the best error any model of the family is expected
  to reach with C.
- **The model.** For each model, its own frontier (its runs that none of its other runs beats
  with less compute, across data sizes and lengths) is fitted with the saturating law
  E_m(C) = a_m C^-b_m + c_m (small models saturate at c_m). A model is *within reach* of C when
  C lies inside its runs' compute range widened by ``reach`` (default 3x) at both ends; a
  model needs ``MIN_MODEL_POINTS`` frontier runs to be fitted. The recommended model is the
  within-reach model with the lowest E_m(C) (if none is within reach, the lowest of all fitted
  models, with a note). Its images seen are C / (training FLOPs per image) and its steps are
  images / 4096 (the paper's batch); the data size is that of its frontier run nearest to C.
  The ``TOP_CANDIDATES`` best models are bootstrapped (their frontier points resampled) for an
  interval of E_m(C) and ``p_best``: the fraction of joint replicates in which the model has the
  lowest E_m(C) among those candidates.
- **The data around C.** The runs nearest to C in log compute, and the extrapolation factor of
  C beyond the data's compute range (1 inside; C / largest run above; smallest run / C below).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Optional, Sequence

import numpy as np

from vitlib.analysis import accelerators, paper_tables, scaling
from vitlib.analysis.budget_runs import METRICS, _check_metric, _size_count, runs_for

METRIC_NAMES = {"10shot": "ImageNet 10-shot error", "finetune": "ImageNet fine-tune error",
                "runs": "the error column of the given runs"}
PAPER_SOURCES = {"10shot": "paper Appendix F", "finetune": "paper Appendix G"}
BATCH = paper_tables.BATCH  # steps are reported at the paper's batch, 4096
LAW_FORM = "double_saturating"  # the frontier
MODEL_FORM = "saturating"  # each model's own runs
MIN_MODEL_POINTS = 4  # frontier runs a model needs for its saturating fit (3 parameters)
TOP_CANDIDATES = 3  # models bootstrapped for intervals and p_best
NEAREST = 5  # runs shown around the budget (plus the frontier runs just below and above it)
FRONTIER_AROUND = 2  # frontier runs shown on each side of the budget
DEFAULT_REACH = 3.0
CLI_N_BOOT = 100  # the CLI's default: a few seconds on 2 cores


# ---------------------------------------------------------------- runs

# ---------------------------------------------------------------- the answer

@dataclasses.dataclass
class Advice:
    """The answer for one budget (see the module docstring for every definition)."""
    budget_flops: float
    metric: str  # "10shot" / "finetune" (a paper table is used), or "runs" (only the user's)
    source: str  # where the runs came from
    runs: int
    level: float  # of every interval
    n_boot: int
    seed: int
    # The frontier law at the budget.
    predicted_error: float
    error_lo: float
    error_hi: float
    law: dict  # a, b, c, d of E = a (C + d)^-b + c, C in FLOPs
    law_log_rmse: float
    frontier_points: int
    not_testable: list  # scaling.testability's reasons; empty when the fit can be read
    replicates_ok: int
    # Where the budget lies.
    data_compute_range: tuple  # (smallest, largest) training FLOPs of the runs
    extrapolation: float  # 1 inside the range; else how many times beyond it
    extrapolation_side: Optional[str]  # None, "above" or "below"
    # The model.
    model: Optional[str]
    model_error: Optional[float]
    model_error_lo: Optional[float]
    model_error_hi: Optional[float]
    model_p_best: Optional[float]
    flops_per_image: Optional[float]  # training FLOPs per image (3 x forward)
    images: Optional[float]  # images seen = budget / flops_per_image
    steps: Optional[float]  # images / 4096
    data_size: Optional[str]  # of the model's frontier run nearest to the budget
    epochs: Optional[float]  # images / data_size, where the size is known
    reach: float
    models: list  # one dict per model
    nearest_runs: list  # the runs nearest to the budget in log compute, and the frontier
    # runs just below and above it, by compute
    notes: list

    @property
    def extrapolated(self) -> bool:
        return self.extrapolation > 1.0

    def to_dict(self) -> dict:
        """Plain JSON-ready data (NaN and infinities become None)."""
        return _plain(dataclasses.asdict(self)) | {"extrapolated": self.extrapolated}

    def summary(self) -> dict:
        """One flat row (for a DataFrame of several budgets)."""
        return {"budget_flops": self.budget_flops, "predicted_error": self.predicted_error,
                "error_lo": self.error_lo, "error_hi": self.error_hi, "model": self.model,
                "model_error": self.model_error, "model_p_best": self.model_p_best,
                "images": self.images, "steps": self.steps, "data_size": self.data_size,
                "extrapolation": self.extrapolation}

    def table(self, unit: str = "tpuv3-core-days", mfu: Optional[float] = None) -> str:
        """A readable report, compute shown in ``unit`` at ``mfu`` (and in FLOPs)."""
        label = accelerators.unit_label(unit)
        mfu_used = accelerators.DEFAULT_MFU if mfu is None else mfu

        def in_unit(flops):
            return accelerators.budget_of_flops(flops, unit, mfu)
        pct = f"{self.level:.0%}"
        budget = (f"{self.budget_flops:.3g} training FLOPs" if label == "FLOPs" else
                  f"{_g(in_unit(self.budget_flops))} {label} = {self.budget_flops:.3g} training "
                  f"FLOPs (MFU {mfu_used:g})")
        lines = [f"Budget: {budget}",
                 f"Metric: {METRIC_NAMES.get(self.metric, self.metric)}; runs: {self.source} "
                 f"({self.runs} runs, "
                 f"{self.frontier_points} on the frontier)",
                 f"Frontier law (C in FLOPs): E = {self.law['c']:.4f} + {self.law['a']:.4g} "
                 f"(C + {self.law['d']:.3g})^-{self.law['b']:.4f}   log-RMSE "
                 f"{self.law_log_rmse:.3f}",
                 f"Best error expected at this budget (frontier law): "
                 f"{_f(self.predicted_error)} [{_f(self.error_lo)}, {_f(self.error_hi)}] "
                 f"({pct} bootstrap, {self.replicates_ok}/{self.n_boot} resamples)"]
        lo, hi = self.data_compute_range
        where = (f"inside the runs' compute range ({_g(in_unit(lo))} .. {_g(in_unit(hi))} {label})"
                 if not self.extrapolated else
                 f"EXTRAPOLATED {self.extrapolation:.3g}x {self.extrapolation_side} the runs' "
                 f"compute range ({_g(in_unit(lo))} .. {_g(in_unit(hi))} {label})")
        lines.append(f"Budget is {where}")
        if self.model is None:
            lines.append("Model: none (no model has enough runs to fit)")
        else:
            inferred = any(m["model"] == self.model and m["label_inferred"] for m in self.models)
            lines += [f"Model: {self.model}{' (label inferred)' if inferred else ''}: predicted "
                      f"error {_f(self.model_error)} [{_f(self.model_error_lo)}, "
                      f"{_f(self.model_error_hi)}], lowest in {_pct(self.model_p_best)} of "
                      f"resamples",
                      f"  images seen {self.images:.3g} = {self.steps:,.0f} steps at batch "
                      f"{BATCH} ({self.flops_per_image:.3g} training FLOPs per image)"
                      + (f"; data size of its nearest frontier run {self.data_size}"
                         if self.data_size else "")
                      + (f" ({self.epochs:.2g} epochs)" if self.epochs else "")]
        if self.model is not None:
            # The model's own law is fitted on that model's runs around the budget; the frontier
            # law is a smooth envelope over every model's runs, so where the two differ the
            # former is what training that model gives.
            lines.append(f"Answer: train {self.model} for {self.images:.3g} images: expected "
                         f"{METRIC_NAMES.get(self.metric, self.metric)} "
                         f"{_f(self.model_error)} [{_f(self.model_error_lo)}, "
                         f"{_f(self.model_error_hi)}] (its own law; the frontier law above is "
                         f"the envelope over all models and only a guide)")
        if "paper" in self.source:
            lines.append("Upstream data assumed: the paper's JFT-3B and its 30M, 300M and 1B "
                         "subsets (Appendix F/G); other upstream data or recipes change every "
                         "number here")
        header = ["model", "runs", "front", f"compute range ({label})", "pred. error",
                  f"{pct} interval", "p_best", "best run <= budget", "reach x", "candidate"]
        rows = []
        for m in self.models:
            interval = (f"[{_f(m['error_lo'])}, {_f(m['error_hi'])}]"
                        if m["error_lo"] is not None else "")
            rows.append([m["model"] + ("*" if m["label_inferred"] else ""), str(m["runs"]),
                         str(m["frontier_points"]),
                         f"{_g(in_unit(m['compute_lo']))} .. {_g(in_unit(m['compute_hi']))}",
                         _f(m["predicted_error"]), interval,
                         _pct(m["p_best"]) if m["p_best"] is not None else "",
                         _f(m["best_error_within_budget"]), f"{m['reach_factor']:.3g}",
                         "yes" if m["candidate"] else f"no: {m['reason']}"])
        inferred_mark = ("; * label inferred" if any(m["label_inferred"] for m in self.models)
                         else "")
        lines += ["", f"Per model (saturating law on its own frontier runs; candidate = within "
                      f"{self.reach:g}x of its runs' compute range){inferred_mark}:"]
        lines += _columns(header, rows)
        header = ["model", "data size", "steps@4096", f"compute ({label})", "x budget", "error",
                  "frontier"]
        rows = [[r["model"], str(r["data_size"] or ""), f"{r['steps']:,.0f}",
                 _g(in_unit(r["train_flops"])), f"{r['compute_ratio']:.3g}", _f(r["error"]),
                 "yes" if r["on_frontier"] else ""] for r in self.nearest_runs]
        lines += ["", "Runs nearest to the budget, and the frontier runs just below and "
                      "above it:"] + _columns(header, rows)
        if self.notes:
            lines += ["", "Notes:"] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _f(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _g(x) -> str:
    return f"{x:.3g}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _columns(header: list, rows: list) -> list:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


# ---------------------------------------------------------------- fitting

def _check_budgets(budgets) -> np.ndarray:
    b = np.atleast_1d(np.asarray(budgets, dtype=float))
    if b.ndim != 1 or b.size == 0 or np.any(~np.isfinite(b)) or np.any(b <= 0):
        raise ValueError(f"budget_flops: every budget must be finite and > 0 FLOPs, got "
                         f"{budgets!r}")
    return b


def _reach_factor(budget: float, lo: float, hi: float) -> float:
    return max(lo / budget, budget / hi, 1.0)


def advise_many(budgets: Sequence[float], metric: str = "10shot", runs=None,
                with_paper: bool = False, n_boot: int = 200, seed: int = 0,
                level: float = 0.9, reach: float = DEFAULT_REACH) -> list[Advice]:
    """``advise`` for several budgets (training FLOPs) at once: the fits are shared."""
    budgets = _check_budgets(budgets)
    _check_metric(metric)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot: must be an integer >= 1, got {n_boot!r}")
    if not isinstance(reach, (int, float)) or not reach >= 1:
        raise ValueError(f"reach: must be a factor >= 1, got {reach!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    frame = runs_for(metric, runs, with_paper)
    c, e = frame["train_flops"].to_numpy(float), frame["error"].to_numpy(float)
    front = scaling.pareto_frontier(c, e)
    k = len(scaling.PARAMS[LAW_FORM])
    if front.size < k:
        raise ValueError(f"runs: the frontier has {front.size} runs; the {LAW_FORM} law needs "
                         f"at least {k}")
    boot = scaling.bootstrap_fit(c[front], e[front], LAW_FORM, n_boot=n_boot, seed=seed,
                                 at=budgets, level=level)
    law = boot["fit"]
    not_testable = scaling.testability(law, boot["intervals"])
    on_front = np.zeros(c.size, dtype=bool)
    on_front[front] = True

    # Each model's own frontier and saturating law.
    fpi = frame["train_flops"].to_numpy(float) / frame["images_seen"].to_numpy(float)
    per_model = {}
    order = sorted(frame["model"].unique(),
                   key=lambda m: (float(np.median(fpi[frame["model"].to_numpy() == m])), m))
    for i, m in enumerate(order):
        idx = np.flatnonzero(frame["model"].to_numpy() == m)
        mf = idx[scaling.pareto_frontier(c[idx], e[idx])]
        info = {"idx": idx, "front": mf, "fit": None, "reason": "", "order": i,
                "flops_per_image": float(np.median(fpi[idx])),
                "label_inferred": bool(frame["label_inferred"].to_numpy()[idx].any())}
        if np.unique(c[mf]).size < MIN_MODEL_POINTS:
            info["reason"] = (f"{np.unique(c[mf]).size} frontier run(s), needs "
                              f"{MIN_MODEL_POINTS} to fit")
        else:
            try:
                info["fit"] = scaling.fit_power_law(c[mf], e[mf], MODEL_FORM)
            except RuntimeError as err:
                info["reason"] = f"fit failed ({err})"
        per_model[m] = info

    # Which models each budget's candidates are; bootstrap the union of the top ones once.
    choices = []
    for budget in budgets:
        scored = []
        for m, info in per_model.items():
            if info["fit"] is None:
                continue
            rf = _reach_factor(budget, c[info["idx"]].min(), c[info["idx"]].max())
            scored.append((float(info["fit"].predict(budget)), rf <= reach, m))
        within = sorted((s for s in scored if s[1]), key=lambda s: s[0])
        pool = within if within else sorted(scored, key=lambda s: s[0])
        choices.append(([s[2] for s in pool[:TOP_CANDIDATES]], bool(within)))
    bootstrapped = {}
    for m in sorted({m for top, _ in choices for m in top}, key=lambda m: per_model[m]["order"]):
        info = per_model[m]
        mb = scaling.bootstrap_fit(c[info["front"]], e[info["front"]], MODEL_FORM, n_boot=n_boot,
                                   seed=seed + 1 + info["order"], at=budgets, level=level)
        s = mb["samples"]
        if mb["replicates_ok"]:
            bootstrapped[m] = scaling.predict(
                MODEL_FORM, {p: s[p][:, None] for p in scaling.PARAMS[MODEL_FORM]},
                budgets[None, :])  # replicates x budgets
    tail = 100 * (1 - level) / 2

    source = (PAPER_SOURCES[metric] if runs is None else
              f"{frame['source'].iloc[-1]}" + (f" + {PAPER_SOURCES[metric]}" if with_paper
                                               else ""))
    advice = []
    for j, budget in enumerate(budgets):
        top, any_within = choices[j]
        draws = {m: bootstrapped[m][:, j] for m in top if m in bootstrapped}
        p_best = {}
        if draws:
            r = min(v.size for v in draws.values())
            stacked = np.stack([draws[m][:r] for m in draws])
            winners = np.argmin(stacked, axis=0)
            p_best = {m: float(np.mean(winners == i)) for i, m in enumerate(draws)}
        models = []
        for m, info in per_model.items():
            idx = info["idx"]
            lo, hi = float(c[idx].min()), float(c[idx].max())
            rf = _reach_factor(budget, lo, hi)
            within_budget = e[idx][c[idx] <= budget]
            fit = info["fit"]
            reason = info["reason"] or (f"budget {rf:.3g}x outside its runs' compute range"
                                        if rf > reach else "")
            candidate = fit is not None and (rf <= reach or not any_within)
            band = (np.percentile(draws[m], [tail, 100 - tail]) if m in draws else None)
            models.append({
                "model": m, "runs": int(idx.size), "frontier_points": int(info["front"].size),
                "compute_lo": lo, "compute_hi": hi, "flops_per_image": info["flops_per_image"],
                "law": ({p: fit.params[p] for p in scaling.PARAMS[MODEL_FORM]}
                        if fit is not None else None),
                "predicted_error": float(fit.predict(budget)) if fit is not None else None,
                "error_lo": float(band[0]) if band is not None else None,
                "error_hi": float(band[1]) if band is not None else None,
                "p_best": p_best.get(m),
                "best_error_within_budget": (float(within_budget.min()) if within_budget.size
                                             else None),
                "reach_factor": rf, "candidate": bool(candidate), "reason": reason,
                "label_inferred": info["label_inferred"]})
        notes = []
        chosen = top[0] if top else None
        fields = dict(model=None, model_error=None, model_error_lo=None, model_error_hi=None,
                      model_p_best=None, flops_per_image=None, images=None, steps=None,
                      data_size=None, epochs=None)
        if chosen is not None:
            row = next(r for r in models if r["model"] == chosen)
            info = per_model[chosen]
            near = info["front"][np.argmin(np.abs(np.log(c[info["front"]] / budget)))]
            size = frame["data_size"].to_numpy(dtype=object)[near]
            size = None if size is None or (isinstance(size, float) and math.isnan(size)) \
                else str(size)
            count = _size_count(size)
            images = budget / info["flops_per_image"]
            fields = dict(model=chosen, model_error=row["predicted_error"],
                          model_error_lo=row["error_lo"], model_error_hi=row["error_hi"],
                          model_p_best=row["p_best"], flops_per_image=info["flops_per_image"],
                          images=images, steps=images / BATCH, data_size=size,
                          epochs=images / count if count else None)
            if not any_within:
                notes.append(f"no model's runs come within {reach:g}x of the budget: the model "
                             f"choice extrapolates each model's own law "
                             f"({row['reach_factor']:.3g}x for {chosen})")
            elif row["reach_factor"] > 1:
                notes.append(f"{chosen}'s own runs stop {row['reach_factor']:.3g}x short of the "
                             f"budget: its error is extrapolated from its law")
            if row["p_best"] is not None and row["p_best"] < 0.5:
                notes.append(f"the choice is uncertain: {chosen} is best in only "
                             f"{row['p_best']:.0%} of the resamples")
            if info["label_inferred"]:
                notes.append(f"{chosen}'s model label is inferred (paper_data/README.md)")
        lo_all, hi_all = float(c.min()), float(c.max())
        factor = _reach_factor(budget, lo_all, hi_all)
        side = None if factor <= 1 else ("above" if budget > hi_all else "below")
        if side:
            notes.append(f"the budget is {factor:.3g}x {side} the runs' compute range: the "
                         f"frontier law is extrapolated")
        if not_testable:
            notes.append("the frontier fit cannot be read: " + "; ".join(not_testable))
        nearest = set(np.argsort(np.abs(np.log(c / budget)), kind="stable")[:NEAREST].tolist())
        nearest |= set(front[c[front] <= budget][-FRONTIER_AROUND:].tolist())
        nearest |= set(front[c[front] > budget][:FRONTIER_AROUND].tolist())
        nearest = sorted(nearest, key=lambda i: (c[i], e[i]))
        sizes = frame["data_size"].to_numpy(dtype=object)
        nearest_runs = [{"model": str(frame["model"].iloc[i]),
                         "data_size": None if sizes[i] is None or (isinstance(sizes[i], float)
                                                                   and math.isnan(sizes[i]))
                         else str(sizes[i]),
                         "images_seen": float(frame["images_seen"].iloc[i]),
                         "steps": float(frame["images_seen"].iloc[i]) / BATCH,
                         "train_flops": float(c[i]), "compute_ratio": float(c[i] / budget),
                         "error": float(e[i]), "on_frontier": bool(on_front[i])}
                        for i in nearest]
        advice.append(Advice(
            budget_flops=float(budget), metric=metric if runs is None or with_paper else "runs",
            source=source, runs=int(c.size),
            level=level, n_boot=n_boot, seed=seed,
            predicted_error=float(law.predict(budget)), error_lo=float(boot["band_lo"][j]),
            error_hi=float(boot["band_hi"][j]), law=dict(law.params),
            law_log_rmse=law.log_rmse, frontier_points=int(front.size),
            not_testable=list(not_testable), replicates_ok=int(boot["replicates_ok"]),
            data_compute_range=(lo_all, hi_all), extrapolation=factor, extrapolation_side=side,
            reach=float(reach), models=models, nearest_runs=nearest_runs, notes=notes,
            **fields))
    return advice


def advise(budget_flops: float, metric: str = "10shot", runs=None, n_boot: int = 200,
           seed: int = 0, *, with_paper: bool = False, level: float = 0.9,
           reach: float = DEFAULT_REACH) -> Advice:
    """Which model and how many images for ``budget_flops`` training FLOPs, with the frontier
    law's predicted error and its bootstrap interval (see the module docstring).

    ``metric``: "10shot" or "finetune" (the paper's table used when ``runs`` is None or
    ``with_paper``). ``runs``: a CSV path or DataFrame of the user's runs
    (``budget_runs.load_runs``).
    Convert a budget in device-days with ``accelerators.flops_of_budget``.
    """
    if isinstance(budget_flops, (list, tuple, np.ndarray)):
        raise ValueError(f"budget_flops: one budget expected (use advise_many for several), got "
                         f"{budget_flops!r}")
    return advise_many([budget_flops], metric, runs, with_paper=with_paper, n_boot=n_boot,
                       seed=seed, level=level, reach=reach)[0]


# ---------------------------------------------------------------- CLI

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.analysis.advice",
        description="Which ViT and how many images for a compute budget, from the paper's runs "
                    "(Appendix F / G) or your own: the frontier law's predicted error with a "
                    "bootstrap interval, the best model, and the runs around the budget.")
    parser.add_argument("--budget", type=float, nargs="+", required=True,
                        help="one or more budgets, in --unit")
    parser.add_argument("--unit", default="tpuv3-core-days",
                        help="'flops' or '<accelerator>-days' / '-hours'; accelerators: "
                             f"{', '.join(accelerators.ACCELERATORS)} (default tpuv3-core-days, "
                             "the paper's Figure 2 unit)")
    parser.add_argument("--mfu", type=float, default=None,
                        help=f"assumed model FLOPs utilisation (default "
                             f"{accelerators.DEFAULT_MFU})")
    parser.add_argument("--metric", default="10shot",
                        help=f"which paper table: {' or '.join(METRICS)} (default 10shot)")
    parser.add_argument("--runs", default=None,
                        help="CSV of your runs: model (or variant), images_seen (or steps and "
                             "batch), error (or accuracy), optional train_flops, data_size")
    parser.add_argument("--with-paper", action="store_true",
                        help="fit your runs together with the paper's (same metric)")
    parser.add_argument("--n-boot", type=int, default=CLI_N_BOOT,
                        help=f"bootstrap resamples (default {CLI_N_BOOT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2
    bad = [b for b in args.budget if not (math.isfinite(b) and b > 0)]
    if bad:
        return fail(f"--budget: must be finite and > 0, got {bad[0]:g}")
    if args.with_paper and args.runs is None:
        return fail("--with-paper: only used with --runs (the paper's runs are the default)")
    if args.n_boot < 1:
        return fail(f"--n-boot: must be >= 1, got {args.n_boot}")
    try:
        budgets = accelerators.flops_of_budget(np.asarray(args.budget), args.unit, args.mfu)
        advice = advise_many(budgets, args.metric, args.runs, with_paper=args.with_paper,
                             n_boot=args.n_boot, seed=args.seed, level=args.level)
    except (ValueError, FileNotFoundError) as err:
        message = str(err)
        for field in ("unit", "mfu", "metric", "runs", "level"):  # name the CLI's flag
            if message.startswith(f"{field}:"):
                message = f"--{field}{message[len(field):]}"
        return fail(message)
    mfu = accelerators.DEFAULT_MFU if args.mfu is None else args.mfu
    if args.json:
        print(json.dumps({"unit": args.unit, "mfu": mfu,
                          "advice": [dict(a.to_dict(), budget=amount)
                                     for a, amount in zip(advice, args.budget)]},
                         allow_nan=False))
    else:
        print(("\n\n" + "=" * 80 + "\n\n").join(a.table(args.unit, args.mfu) for a in advice))
    return 0


if __name__ == "__main__":
    sys.exit(main())
