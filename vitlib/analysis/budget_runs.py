"""The runs a budget advice reads (``vitlib.analysis.advice``): the paper's Appendix F / G
tables, or a user's own runs (a CSV or DataFrame: model, data size, images seen or steps,
error), validated, with training FLOPs from the zoo's count where they are not given."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from vitlib.analysis import paper_tables, scaling

METRICS = {"10shot": "fewshot", "finetune": "finetune"}  # metric -> paper_tables.load(which)


def _size_count(value) -> Optional[float]:
    """'30M' -> 3e7, '3B' -> 3e9, 1e6 -> 1e6; None when not a size."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value) if value > 0 else None
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KkMmBbGg]?)\s*", str(value))
    if not match:
        return None
    scale = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}[match.group(2).lower()]
    try:
        return float(match.group(1)) * scale
    except ValueError:
        return None


def _cell(frame: pd.DataFrame, column: str, i: int):
    value = frame[column].iloc[i]
    return value.item() if isinstance(value, np.generic) else value


def _numbers(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where}: column {column!r}, row {i}: {_cell(frame, column, i)!r} is "
                         f"not a finite number")
    return values


def _positive(values: np.ndarray, column: str, where: str) -> np.ndarray:
    bad = np.flatnonzero(values <= 0)
    if bad.size:
        raise ValueError(f"{where}: column {column!r}, row {int(bad[0])}: must be > 0, got "
                         f"{float(values[bad[0]])!r}")
    return values


def load_runs(runs) -> pd.DataFrame:
    """A user's runs (a CSV path or a DataFrame) checked and put in ``advise``'s columns.

    Needs a model column (``model`` or ``variant``), the images seen (``images_seen``, or
    ``steps`` and ``batch``) and the error (``error`` in (0, 1), or ``accuracy`` in (0, 1)).
    Optional: ``train_flops`` (training FLOPs of the run; by default 3 x the zoo's forward FLOPs
    per image x images seen, which needs a zoo variant such as "B/16" and the columns
    ``image_size`` (default 224), ``in_channels`` (3) and ``num_classes`` (0)), and
    ``data_size`` (the training set's size, e.g. 54000 or "300M").
    """
    if isinstance(runs, (str, Path)):
        path = Path(runs)
        if not path.is_file():
            raise FileNotFoundError(f"runs: no file at {str(path)!r}")
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ValueError(f"runs: {str(path)!r} is not a readable CSV ({err})") from None
        where = str(path)
    elif isinstance(runs, pd.DataFrame):
        frame, where = runs.reset_index(drop=True), "runs (DataFrame)"
    else:
        raise TypeError(f"runs: expected a CSV path or a pandas DataFrame, got "
                        f"{type(runs).__name__}")
    columns = set(frame.columns)
    model_col = "model" if "model" in columns else "variant" if "variant" in columns else None
    missing = []
    if model_col is None:
        missing.append("model (or variant)")
    if "images_seen" not in columns and not {"steps", "batch"} <= columns:
        missing.append("images_seen (or steps and batch)")
    if "error" not in columns and "accuracy" not in columns:
        missing.append("error (or accuracy)")
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; found {sorted(map(str, columns))}")
    if frame.empty:
        raise ValueError(f"{where}: has no rows")
    if "images_seen" in columns:
        images = _positive(_numbers(frame, "images_seen", where), "images_seen", where)
    else:
        images = (_positive(_numbers(frame, "steps", where), "steps", where)
                  * _positive(_numbers(frame, "batch", where), "batch", where))
    if "error" in columns:
        error, column = _numbers(frame, "error", where), "error"
    else:
        error, column = 1.0 - _numbers(frame, "accuracy", where), "accuracy"
    bad = np.flatnonzero((error <= 0) | (error >= 1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where}: column {column!r}, row {i}: {_cell(frame, column, i)!r} "
                         f"gives an error outside (0, 1); give fractions, not percentages")
    models = frame[model_col].astype(str).str.strip()
    if "train_flops" in columns:
        flops = _positive(_numbers(frame, "train_flops", where), "train_flops", where)
    else:
        flops = np.empty(len(frame))
        options = {"image_size": 224, "in_channels": 3, "num_classes": 0}
        settings = {k: (_numbers(frame, k, where).astype(int) if k in columns
                        else np.full(len(frame), v)) for k, v in options.items()}
        for i, model in enumerate(models):
            try:
                per_image = float(scaling.training_flops(
                    model, int(settings["image_size"][i]), 1.0,
                    in_channels=int(settings["in_channels"][i]),
                    num_classes=int(settings["num_classes"][i])))
            except ValueError as err:
                raise ValueError(f"{where}: row {i}: {err} (or give a train_flops column)") \
                    from None
            flops[i] = per_image * images[i]
    data_size = frame["data_size"] if "data_size" in columns else pd.Series([None] * len(frame))
    return pd.DataFrame({"model": models, "images_seen": images, "train_flops": flops,
                         "error": error, "data_size": data_size.to_numpy(dtype=object),
                         "label_inferred": False, "source": where})


def _paper_runs(metric: str) -> pd.DataFrame:
    table = paper_tables.load(METRICS[metric])
    return pd.DataFrame({"model": table["model"], "images_seen": table["images_seen"],
                         "train_flops": table["train_flops"], "error": table["error"],
                         "data_size": table["data_size"].to_numpy(dtype=object),
                         "label_inferred": table["label_inferred"], "source": "paper"})


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric: {metric!r} is not allowed; choose one of {list(METRICS)}")


def runs_for(metric: str = "10shot", runs=None, with_paper: bool = False) -> pd.DataFrame:
    """The runs ``advise`` fits: the paper's table for ``metric`` when ``runs`` is None, else the
    user's ``runs`` (``load_runs``), plus the paper's when ``with_paper`` (runs of the same model
    name are then pooled)."""
    _check_metric(metric)
    if runs is None:
        return _paper_runs(metric)
    mine = load_runs(runs)
    return pd.concat([_paper_runs(metric), mine], ignore_index=True) if with_paper else mine
