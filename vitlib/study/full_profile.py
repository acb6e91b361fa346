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

from vitlib.analysis.compute_plan import RunSpec
from vitlib.models.counting import count_flops

BATCH = 4096
EVAL_OVERHEAD = 0.05  # evaluations and the few-shot suite every 10k steps, ~5% of training
WIRED: dict = {"02": False, "03": False, "04": False, "05": False, "06": False}


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


def schedules() -> list[RunSpec]:
    lengths, seeds = (20_000, 40_000, 80_000), 3
    runs = []
    for kind in ("linear", "cosine"):
        runs += [_spec(f"S/16 {kind} {n // 1000}k", "S/16", n, seeds) for n in lengths]
    for kind in ("rsqrt", "constant"):
        runs.append(_spec(f"S/16 {kind} main 80k", "S/16", max(lengths), seeds))
        runs += _cooldowns(f"S/16 {kind}", "S/16", lengths, seeds)
    return runs


def memory() -> list[RunSpec]:
    return [_spec(f"B/16 {opt}", "B/16", 20_000, 3, optimizer=opt)
            for opt in ("adam", "adam_hp", "adafactor_bv", "adafactor")]


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


def runs_of(notebook: str) -> list[RunSpec]:
    """The ``full`` profile's training runs of notebook ``notebook`` ('02' .. '06'; '01' trains
    nothing)."""
    if notebook == "01":
        return []
    if notebook not in NOTEBOOKS:
        raise ValueError(f"notebook: {notebook!r} is not allowed; choose one of "
                         f"{['01', *NOTEBOOKS]}")
    return NOTEBOOKS[notebook]()
