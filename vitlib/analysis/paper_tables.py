"""The paper's own numbers, shipped with vitlib: Appendix F (few-shot) and G (ImageNet
fine-tune) for every (model, data size, steps) the paper trained, Table 2's GFLOPs, and the laws
printed in Figure 2's legend.

The model labels of Tables 5-13 and 14-22 are **inferred** (the captions were lost in the text
the tables were copied from); only Table 4 (g/14, G/14) names its models. ``paper_data/README.md``
explains the inference; ``LABELS_FIRM`` lists the labels that are firm or fairly firm.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

DATA_DIR = Path(__file__).parent / "paper_data"
BATCH = 4096  # the tables' steps are images seen / 4096
# Paper Table 2: forward GFLOPs per image at 224px.
TABLE2_GFLOPS = {"s/28": 0.7, "s/16": 2.2, "S/32": 2.3, "Ti/16": 2.5, "B/32": 8.7, "S/16": 9.2,
                 "B/28": 11.3, "B/16": 35.1, "L/16": 122.9, "g/14": 533.1, "G/14": 965.3}
# Figure 2's legend, C in TPUv3 core-days: E = c + a (C + d)^-b.
FIGURE2_LAWS = {"finetune": {"a": 0.26, "b": 0.35, "c": 0.09, "d": 0.01},
                "10shot": {"a": 0.63, "b": 0.32, "c": 0.12, "d": 0.52}}
LABELS_FIRM = ("g/14", "G/14", "L/16", "B/16", "Ti/16")
TABLES = {"fewshot": "appendix_f_fewshot.csv", "finetune": "appendix_g_finetune.csv"}
METRICS = {"fewshot": "inet10", "finetune": "imagenet"}  # the error Figure 2 plots


def load(which: str) -> pd.DataFrame:
    """Appendix F (``fewshot``) or G (``finetune``) with derived columns: ``gflops`` (Table 2),
    ``images_seen`` (steps x 4096), ``train_flops`` (3 x GFLOPs x 1e9 x images seen),
    ``error`` (1 - ImageNet 10-shot or fine-tune accuracy) and ``label_inferred``."""
    if which not in TABLES:
        raise ValueError(f"which: {which!r} is not allowed; choose one of {list(TABLES)}")
    table = pd.read_csv(DATA_DIR / TABLES[which])
    unknown = sorted(set(table["model"]) - set(TABLE2_GFLOPS))
    if unknown:
        raise ValueError(f"{TABLES[which]}: models {unknown} have no Table 2 GFLOPs")
    table["gflops"] = table["model"].map(TABLE2_GFLOPS)
    table["images_seen"] = table["steps"].astype(float) * BATCH
    table["train_flops"] = 3.0 * table["gflops"] * 1e9 * table["images_seen"]
    table["error"] = 1.0 - table[METRICS[which]] / 100.0
    table["label_inferred"] = ~table["model"].isin(LABELS_FIRM)
    return table
