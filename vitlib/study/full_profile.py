"""The ``full`` profile's sizes: each notebook's experiment at the paper's protocol, scaled to
one accelerator host (8 GPUs or a TPU v4-8 / v5e-8; about five days on 8 x H100 at MFU 0.4),
and the run specs that ``--plan`` prices before anything trains (``python -m
vitlib.study.reproduce --profile full --plan``).

``STUDIES[nb]`` is what notebook ``nb``'s parameters cell reads in the full profile
(``study(nb, full_study)``), and ``runs_of(nb)`` the runs that notebook trains with those sizes
(a grid extended past an edge trains a few more), so the plan and the notebook cannot drift
apart. The data, recipe and few-shot suite of every run: ``vitlib.study.full_setup``
(ImageNet-21k at 224 px, or ImageNet-1k; batch 4096, bf16, MAP head, sigmoid loss).

- 02: B/32, Adam with bf16 momentum, a 5 x 5 (head, body) decay grid at 30k steps, the two
  compared cells over 2 more seeds, and the head axis (MAP and class token) in the paper's
  integrated range over 3 seeds, its two fixed arms (head = body, the paper's head decay) over 3
  fresh seeds.
- 03: S/16 at 20k / 40k / 80k steps: lr (and rsqrt's timescale) tuned on minival, then warmup +
  rsqrt and warmup + constant, each one run with 10% cooldowns branched at each length,
  against linear and cosine trained per length; 3 seeds.
- 04: B/16 under adam, adam_hp, adafactor_bv and stock adafactor, 20k steps (past Adafactor's
  0.999 cap at ~5.6k), lr per optimizer on minival, 3 seeds; the planner for the Table 2
  variants (no training).
- 05: Ti/16, S/16, B/16, L/16 x 3 nested data sizes, one run of each to 48k steps with 20%
  cooldowns branched for 15k / 30k / 60k; lr per model on minival; the data and
  sample-efficiency arms over seeds 1-3.
- 06: the fit maps (no training); resolution and patch together at 49 tokens (B/32@224,
  B/48@336, B/64@448) over 3 seeds, 30k steps; nine shapes around S/16, each trained for the
  centre's 30k-step training FLOPs, the two compared over 3 seeds.
"""
from __future__ import annotations

import copy
from typing import Optional

from vitlib.analysis.compute_plan import RunSpec
from vitlib.models.counting import count_flops
from vitlib.study.shape_study import SCALE_UPS, equal_compute_steps, shape_variants

BATCH = 4096
EVAL_OVERHEAD = 0.05  # evaluations and the few-shot suite every 10k steps, ~5% of training


def _spec(name: str, variant, steps: int, count: int = 1, **kw) -> RunSpec:
    kw.setdefault("optimizer", "adafactor_bv")
    kw.setdefault("pool_type", "map")
    kw.setdefault("remat", True)  # 512 images per device: without remat B/16's step needs ~156 GiB
    return RunSpec(name=name, variant=variant, batch_size=kw.pop("batch_size", BATCH),
                   steps=steps, count=count, eval_overhead=EVAL_OVERHEAD, num_classes=21843,
                   **kw)


def weight_decay(sizes: Optional[dict] = None) -> list[RunSpec]:
    """Notebook 02's runs: the head x body grid (MAP, seed 0), the two compared cells over the
    claims' seeds, the head axis per pool over its seeds (extensions not priced), and the axis's
    two fixed arms per pool over the claims' seeds."""
    s = sizes or study("02")
    g, a = s["grid"], s["axis"]

    def spec(name, part, count, pool="map"):
        return _spec(name, part["model"], part["steps"], count, optimizer="adam_hp",
                     batch_size=part["batch"], pool_type=pool)

    return [spec(f"{g['model']} head x body grid", g, len(g["decays"]) ** 2),
            spec(f"{g['model']} 2 cells x {len(g['claim_seeds'])} seeds", g,
                 2 * len(g["claim_seeds"])),
            *[spec(f"{a['model']} head axis, {pool}", a, len(a["heads"]) * len(a["seeds"]), pool)
              for pool in a["pools"]],
            *[spec(f"{a['model']} {len(a['arms'])} fixed arms, {pool}", a,
                   len(a["arms"]) * len(a["claim_seeds"]), pool) for pool in a["pools"]]]


# The sizes of each notebook's full profile: what its parameters cell reads (through
# ``study``) and what its plan prices (``runs_of``), so the two cannot drift apart.
STUDIES = {
    # B/32 with Adam (bf16 momentum): the (head, body) decay grid at 30k steps of 4096 images
    # (sum lr 16.3, so raw 0.03 / 3.0 integrate to ~0.5 / ~49, near the paper's 0.7-1.8 /
    # 70-180), the best cells above and on or below the diagonal over 2 more seeds, and the
    # head axis (MAP and class token) at an integrated body decay of 1, heads 0.1-100
    # integrated, 3 seeds.
    "02": dict(lr=1e-3,
               grid=dict(model="B/32", batch=BATCH, steps=30_000,
                         decays=[0.003, 0.03, 0.3, 3.0, 30.0], claim_seeds=[1, 2],
                         draws=(0, 1, 2, 3, 4)),
               axis=dict(model="B/32", batch=BATCH, steps=30_000, body=1.0,
                         heads=[0.1, 1.0, 10.0, 100.0], seeds=[0, 1, 2], pools=("map", "tok"),
                         arms=[1.0, 100.0], claim_seeds=[3, 4, 5])),
    # S/16, Adam with bf16 momentum, warmup + each schedule: lr (and rsqrt's timescale) chosen
    # on minival at the middle length, then every length over 3 seeds (the cpu profile's
    # protocol at the paper's sizes).
    "03": dict(model="S/16", batch=BATCH, lengths=[20_000, 40_000, 80_000], warmup=4_000,
               lrs=[5e-4, 1e-3, 2e-3], timescales=[2_000, 10_000, 50_000], timescale_factor=5,
               seeds=[1, 2, 3], eval_every=5_000, eval_subset=10_000),  # seed 0 tunes
    # The memory study for every Table 2 variant (no training), the planner at the paper's 32
    # images per device with FSDP on the host's devices; the dynamics: B/16 with its 12 heads
    # under each optimizer, 20k steps (past Adafactor's 0.999 cap at update 5,624), lr per
    # optimizer on minival from lr_grids.
    "04": dict(state_variants=["Ti/16", "S/16", "B/16", "L/16", "g/14", "G/14"],
               plan_variants=["B/16", "L/16", "g/14", "G/14"], batch_per_device=32,
               token_variants={"/14": "G/14", "/16": "L/16"}, token_batch=32,
               reality=("B/16", 8),
               dynamics=dict(model="B/16", heads=12, steps=20_000, warmup=2_000,
                             cooldown=2_000, batch=BATCH, every=2_000, subset=10_000,
                             seeds=[0], claim_seeds=[1, 2, 3], max_extensions=2,
                             lr_grids={"adam": ([2.5e-4, 5e-4, 1e-3], 2),
                                       "adafactor_bv": ([2e-4, 4e-4, 8e-4], 2),
                                       "adafactor": ([3e-3, 1e-2, 3e-2], 3)})),
    # Ti/16 .. L/16 x three nested data sizes (fractions of the upstream's train split) x
    # lengths 15k / 30k / 60k (one main run each, 20% cooldown branches), Adafactor with the
    # paper's decoupled decay; lr per model on minival at the shortest length; the data and
    # sample-efficiency claims over seeds 1-3.
    "05": dict(models=["Ti/16", "S/16", "B/16", "L/16"], data_fractions=[0.1, 1.0],
               lengths=[15_000, 30_000, 60_000], batch=BATCH, lr_max_extensions=2,
               curve_lengths=[7_500, 10_000, 12_500, 15_000, 20_000, 25_000, 30_000, 40_000,
                              50_000, 60_000], curve_seeds=[1],
               larger_model="S/16", saturation_seeds=[1, 2, 3], larger_seeds=[1, 2],
               efficiency_seeds=[1, 2], optimizer="adafactor_bv",
               weight_decay=[("^head/", 3.0), (".*", 0.03)],
               lr_grid=[4e-4, 8e-4, 1.6e-3], cooldown_fraction=0.2),
    # The fit map (planner only) as the cpu profile's, plus the same shapes on the host's
    # accelerator at its batch per device; resolution and patch together at 49 tokens
    # (B/32@224, B/48@336, B/64@448) over 3 seeds; shapes around S/16 (heads of 32 channels) at
    # the centre's flattened ladder length, each trained for the centre's training FLOPs.
    "06": dict(grid=dict(depths=[8, 16, 24, 32, 48, 64, 100],
                         widths=[768, 1024, 1280, 1408, 1664, 2048, 2560],
                         paper=["B/14", "L/14", "g/14", "G/14"], temporaries=("G/14", 224),
                         image_size=224, remat=[False, True]),
               host_batch=BATCH,
               train=dict(batch=BATCH, steps=30_000, lr=1e-3, seeds=[0, 1, 2],
                          resolution_model="B", pairs=[(224, 32), (336, 48), (448, 64)],
                          centre=dict(width=384, depth=12, mlp_dim=1536), shapes="all",
                          shape_patch=16, ladder=[7_500, 15_000, 30_000], shape_seeds=[0],
                          shape_claim_seeds=[1, 2, 3])),
}


def study(notebook: str, overrides: Optional[dict] = None) -> dict:
    """The full profile's sizes of ``notebook``, with ``overrides`` (the parameters cell's
    ``full_study``; a CPU test shrinks every size with it) replacing some of them."""
    if notebook not in STUDIES:
        raise ValueError(f"notebook: {notebook!r} has no full profile sizes; allowed: "
                         f"{sorted(STUDIES)}")
    sizes = copy.deepcopy(STUDIES[notebook])
    if not isinstance(overrides or {}, dict):
        raise ValueError(f"full_study: {overrides!r} is not allowed; use a dict of sizes")
    unknown = sorted(set(overrides or {}) - set(sizes))
    if unknown:
        raise ValueError(f"full_study: {unknown} are not sizes of notebook {notebook}'s full "
                         f"profile; allowed: {sorted(sizes)}")
    return {**sizes, **copy.deepcopy(overrides or {})}


def _length(steps: int) -> str:
    return f"{steps // 1000}k" if steps % 1000 == 0 else str(steps)


def _cooldown(length: int, fraction: float = 0.1) -> int:
    return max(1, round(fraction * length))


def schedules(sizes: Optional[dict] = None) -> list[RunSpec]:
    """Notebook 03's runs: the lr / timescale grids at the middle length, then per seed the
    rsqrt and constant main runs with a cooldown branch per length, and linear and cosine
    trained per length. Grid extensions past an edge are not priced."""
    s = sizes or study("03")
    lengths, seeds, n_lrs = sorted(s["lengths"]), len(s["seeds"]), len(s["lrs"])
    tune, model = lengths[1], s["model"]

    def spec(name, steps, count):
        return _spec(name, model, steps, count, optimizer="adam_hp", batch_size=s["batch"])

    runs = [spec(f"{model} tune {kind} lr", tune, n_lrs)
            for kind in ("constant", "linear", "cosine")]
    runs.append(spec(f"{model} tune rsqrt lr x timescale", tune, n_lrs * len(s["timescales"])))
    for kind in ("linear", "cosine"):
        runs += [spec(f"{model} {kind} {_length(n)}", n, seeds) for n in lengths]
    for kind in ("rsqrt", "constant"):
        runs.append(spec(f"{model} {kind} main", lengths[-1] - _cooldown(lengths[-1]), seeds))
        runs += [spec(f"{model} {kind} cooldown@{_length(n)}", _cooldown(n), seeds)
                 for n in lengths]
    return runs


def memory(sizes: Optional[dict] = None) -> list[RunSpec]:
    """Notebook 04's training runs: each optimizer's starting lr grid on the choosing seed, then
    every optimizer (adam_hp at adam's lr) at its chosen lr on the claims' seeds (an lr tied on
    minival adds an arm, not priced). The planner's part (every Table 2 variant) trains
    nothing."""
    s = (sizes or study("04"))["dynamics"]
    model = {"num_heads": s["heads"]} if s["heads"] != 12 else {}

    def spec(name, opt, count):
        return _spec(name, s["model"], s["steps"], count, optimizer=opt, batch_size=s["batch"],
                     model=model)

    runs = [spec(f"{s['model']} {opt} lr grid", opt, len(grid))
            for opt, (grid, _) in s["lr_grids"].items()]
    runs += [spec(f"{s['model']} {opt} claim seeds", opt, len(s["claim_seeds"]))
             for opt in ("adam_hp", *s["lr_grids"])]
    return [r for r in runs if r.count]


def scaling(sizes: Optional[dict] = None) -> list[RunSpec]:
    """Notebook 05's runs: each model's lr grid at the shortest length on the largest data, the
    learning curves (every model on the fewest and the most data over the curve seeds: a main
    run + a cooldown branch per curve length), the data arms (the smallest and the larger
    model, fewest and most data, over their seeds; a branch per length) and the
    sample-efficiency runs (every model at the shortest length over its seeds)."""
    s = sizes or study("05")
    fraction = s["cooldown_fraction"]

    def spec(name, model, steps, count):
        return _spec(name, model, steps, count, optimizer=s["optimizer"], batch_size=s["batch"])

    def families(name, model, count, lengths):
        lengths = sorted(lengths)
        cools = [_cooldown(n, fraction) for n in lengths]
        return [spec(f"{name} main", model, lengths[-1] - cools[-1], count),
                *[spec(f"{name} cooldown@{_length(n)}", model, c, count)
                  for n, c in zip(lengths, cools)]]

    lengths, runs = sorted(s["lengths"]), []
    for model in s["models"]:
        runs.append(spec(f"{model} lr grid", model, lengths[0], len(s["lr_grid"])))
        runs += families(f"{model} curves", model, 2 * len(s["curve_seeds"]), s["curve_lengths"])
    for model, seeds in ((s["models"][0], s["saturation_seeds"]),
                         (s["larger_model"], s["larger_seeds"])):
        runs += families(f"{model} data arms", model, 2 * len(seeds), lengths)
    runs += [spec(f"{model} efficiency", model, lengths[0], len(s["efficiency_seeds"]))
             for model in s["models"]]
    return runs


def model_dimensions(sizes: Optional[dict] = None) -> list[RunSpec]:
    """Notebook 06's runs: the resolution pairs over their seeds; the centre's doubling ladder
    (priced whole), every shape at the choosing seed and the two compared shapes at the claims',
    seeds,
    each for the centre's training FLOPs at the ladder's last length. The fit maps train
    nothing."""
    t = (sizes or study("06"))["train"]
    runs = [_spec(f"{t['resolution_model']}/{p}@{size}", f"{t['resolution_model']}/{p}",
                  t["steps"], len(t["seeds"]), optimizer="adam_hp", batch_size=t["batch"],
                  image_size=size)
            for size, p in t["pairs"]]
    variants = shape_variants(t["centre"], t["shapes"])
    base = f"S/{t['shape_patch']}"

    def spec(label, name, steps, count):
        return _spec(label, base, steps, count, optimizer="adam_hp", batch_size=t["batch"],
                     model=variants[name])

    per_image = {name: count_flops(spec(name, name, 1, 1).config()) for name in variants}
    ladder, centre_steps = t["ladder"], t["ladder"][-1]
    steps = {name: equal_compute_steps(centre_steps, per_image["centre"], per_image[name],
                                       t["batch"]) for name in variants}
    runs += [spec(f"centre ladder {_length(n)}", "centre", n, 1) for n in ladder[:-1]]
    runs += [spec(f"shape {name}", name, steps[name], 1) for name in variants]
    others = len(t["shape_claim_seeds"])  # all x1.25 and the best scale-up on the claims' seeds
    singles = [s for s in SCALE_UPS if s in variants]
    if others and "all x1.25" in variants and singles:
        runs.append(spec("shape all x1.25, claim seeds", "all x1.25", steps["all x1.25"], others))
        runs.append(spec(f"best scale-up, claim seeds (priced as {singles[0]}; a tie on minival "
                         "adds one, not priced)", singles[0], steps[singles[0]], others))
    return runs


NOTEBOOKS = {"02": weight_decay, "03": schedules, "04": memory, "05": scaling,
             "06": model_dimensions}


def runs_of(notebook: str, sizes: Optional[dict] = None) -> list[RunSpec]:
    """The ``full`` profile's training runs of notebook ``notebook`` ('02' .. '06'; '01' trains
    nothing); ``sizes`` replace sizes of a wired notebook's study (its ``full_study``)."""
    if notebook == "01":
        return []
    if notebook not in NOTEBOOKS:
        raise ValueError(f"notebook: {notebook!r} is not allowed; choose one of "
                         f"{['01', *NOTEBOOKS]}")
    return NOTEBOOKS[notebook](study(notebook, sizes))
