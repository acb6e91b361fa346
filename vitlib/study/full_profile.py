"""The ``full`` profile's design: each notebook's experiment at the paper's protocol, scaled to
one accelerator host (8 GPUs or a TPU v4-8 / v5e-8) for about a week in all, as run specs that
``--plan`` prices before anything trains (``python -m vitlib.study.reproduce --profile full
--plan``).

Upstream is ImageNet-21k at 224 px (ImageNet-1k where 21k is absent), batch 4096, bf16 compute,
MAP head, few-shot on the paper's suite (``eval_overhead`` prices its evaluations). The design
is what the notebooks' ``full`` profiles are to run; until a notebook reads its runs from here,
the plan says so (``WIRED``).

- 02: B/32, a 4 x 4 grid of (head, body) decoupled decay in the paper's integrated range,
  30k steps; the chosen body decay's row repeated over 3 seeds; the class token, GAP and MAP at
  two head decays.
- 03: S/16 at 20k / 40k / 80k steps: warmup + rsqrt and warmup + constant, each one 80k run with
  10% cooldowns branched at each length, against linear and cosine trained per length; 3 seeds.
- 04: B/16 under adam, adam_hp, adafactor_bv and stock adafactor, 20k steps (past Adafactor's
  0.999 cap at ~5.6k), 3 seeds; the memory planner for every Table 2 variant (no training).
- 05: Ti/16, S/16, B/16, L/16 x 3 nested data sizes, one rsqrt run of 60k steps each with 10%
  cooldowns branched at 15k / 30k / 60k.
- 06: the fit map (no training); resolution and patch together at 49 tokens (B/32@224,
  B/48@336, B/64@448) over 3 seeds, 30k steps, and five shapes around S/16 over 2 seeds, each
  trained for the centre's 30k-step training FLOPs.
"""
from __future__ import annotations

import copy
from typing import Optional

from vitlib.analysis.compute_plan import RunSpec
from vitlib.models.counting import count_flops

BATCH = 4096
EVAL_OVERHEAD = 0.05  # evaluations and the few-shot suite every 10k steps, ~5% of training
WIRED: dict = {"02": False, "03": True, "04": True, "05": False, "06": False}


def _spec(name: str, variant, steps: int, count: int = 1, **kw) -> RunSpec:
    kw.setdefault("optimizer", "adafactor_bv")
    kw.setdefault("pool_type", "map")
    kw.setdefault("remat", True)  # 512 images per device: without remat B/16's step needs ~156 GiB
    return RunSpec(name=name, variant=variant, batch_size=kw.pop("batch_size", BATCH),
                   steps=steps, count=count, eval_overhead=EVAL_OVERHEAD, num_classes=21843,
                   **kw)


def _cooldowns(prefix: str, variant, lengths, count: int, fraction: float = 0.1, **kw):
    """Branches trained only for their cooldown (``fraction`` of each length)."""
    return [_spec(f"{prefix} cooldown@{n // 1000}k", variant, int(n * fraction), count, **kw)
            for n in lengths]


def weight_decay() -> list[RunSpec]:
    return [_spec("B/32 head x body grid", "B/32", 30_000, count=16),
            _spec("B/32 chosen row, seeds 1-2", "B/32", 30_000, count=4 * 2),
            *[_spec(f"B/32 {pool} head", "B/32", 30_000, count=2, pool_type=pool)
              for pool in ("tok", "gap")]]


# The sizes of each wired notebook's full profile: what its parameters cell reads (through
# ``study``) and what its plan prices (``runs_of``), so the two cannot drift apart.
STUDIES = {
    # S/16, Adam, warmup + each schedule: lr (and rsqrt's timescale) chosen on minival at the
    # middle length, then every length over 3 seeds (the cpu profile's protocol, paper sizes).
    "03": dict(model="S/16", batch=BATCH, lengths=[20_000, 40_000, 80_000], warmup=4_000,
               lrs=[5e-4, 1e-3, 2e-3], timescales=[2_000, 10_000, 50_000], timescale_factor=5,
               seeds=[0, 1, 2], eval_every=5_000, eval_subset=10_000),
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
                             seeds=[0, 1, 2], max_extensions=2,
                             lr_grids={"adam": ([2.5e-4, 5e-4, 1e-3], 2),
                                       "adafactor_bv": ([2e-4, 4e-4, 8e-4], 2),
                                       "adafactor": ([3e-3, 1e-2, 3e-2], 3)})),
}


def study(notebook: str, overrides: Optional[dict] = None) -> dict:
    """The full profile's sizes of ``notebook``, with ``overrides`` (the parameters cell's
    ``full_study``; a CPU test shrinks every size with it) replacing some of them."""
    if notebook not in STUDIES:
        raise ValueError(f"notebook: {notebook!r} has no wired full profile; wired: "
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
        return _spec(name, model, steps, count, optimizer="adam", batch_size=s["batch"])

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
    """Notebook 04's training runs: each optimizer's starting lr grid on seed 0, then every
    optimizer (adam_hp at adam's lr) at its chosen lr on the other seeds. The planner's part
    (every Table 2 variant) trains nothing."""
    s = (sizes or study("04"))["dynamics"]
    model = {"num_heads": s["heads"]} if s["heads"] != 12 else {}

    def spec(name, opt, count):
        return _spec(name, s["model"], s["steps"], count, optimizer=opt, batch_size=s["batch"],
                     model=model)

    runs = [spec(f"{s['model']} {opt} lr grid", opt, len(grid))
            for opt, (grid, _) in s["lr_grids"].items()]
    runs.append(spec(f"{s['model']} adam_hp", "adam_hp", len(s["seeds"])))
    runs += [spec(f"{s['model']} {opt} seeds", opt, len(s["seeds"]) - 1) for opt in s["lr_grids"]]
    return [r for r in runs if r.count]


def scaling() -> list[RunSpec]:
    lengths, sizes = (15_000, 30_000, 60_000), 3
    runs = []
    for variant in ("Ti/16", "S/16", "B/16", "L/16"):
        runs.append(_spec(f"{variant} main 60k", variant, max(lengths), sizes))
        runs += _cooldowns(variant, variant, lengths, sizes)
    return runs


def model_dimensions() -> list[RunSpec]:
    centre = {"width": 384, "depth": 12, "mlp_dim": 1536, "num_heads": 6}
    shapes = {"centre S/16": {}, "depth x1.5": {"depth": 18}, "width x1.5": {"width": 576,
                                                                          "num_heads": 9},
              "mlp x1.5": {"mlp_dim": 2304},
              "all x1.25": {"width": 480, "depth": 15, "mlp_dim": 1920, "num_heads": 8}}
    per_image = {name: count_flops(_spec(name, "S/16", 1, model={**centre, **change}).config())
                 for name, change in shapes.items()}  # the trained model, head included
    steps = 30_000  # the centre's; the other shapes train for its training FLOPs
    return [*[_spec(f"B/{p}@{size}", f"B/{p}", steps, 3, image_size=size)
              for p, size in ((32, 224), (48, 336), (64, 448))],
            *[_spec(f"shape {name}", "S/16",
                    round(steps * per_image["centre S/16"] / per_image[name]), 2,
                    model={**centre, **change})
              for name, change in shapes.items()]]


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
    if notebook in STUDIES:
        return NOTEBOOKS[notebook](study(notebook, sizes))
    if sizes:
        raise ValueError(f"full_study: notebook {notebook}'s full profile is not wired to "
                         f"sizes yet; wired: {sorted(STUDIES)}")
    return NOTEBOOKS[notebook]()
