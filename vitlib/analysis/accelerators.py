"""Named accelerators: peak dense bf16 FLOP/s and memory per device, and compute budgets in
device-days / device-hours turned into FLOPs.

A budget of ``N <name>-days`` is ``N x 86,400 s x peak x MFU`` FLOPs, where MFU (model FLOPs
utilisation) is the fraction of the dense bf16 peak that training actually reaches. MFU is an
**assumption**: ``DEFAULT_MFU`` = 0.4 unless the caller passes ``mfu``. The FLOPs counted are
vitlib's training FLOPs (3 x forward FLOPs per image x images seen, ``scaling.training_flops``),
so a run's device time is its training FLOPs / (peak x MFU).

The paper's Figure 2 measures compute in **TPUv3 core-days**. vitlib has no other conversion
from FLOPs to core-days: notebook 05 fits the Figure-2 laws with FLOPs as the unit, and only
*fits* the conversion of the printed laws (``scaling.best_unit_log_rmse``: about 1.9e18 FLOPs
per core-day for 10-shot, 1.2e18 for fine-tune, i.e. an implied MFU of 0.35 and 0.23 of a core's
peak). ``tpuv3-core`` here is one TensorCore (half a chip, 61.5 TFLOP/s, 16 GiB):
at MFU 0.4 one core-day is 61.5e12 x 86,400 x 0.4 = 2.13e18 FLOPs.

Peaks are dense (no structured sparsity) bf16 matrix-unit peaks from the vendors' pages:
- H100 SXM: 1,979 TFLOP/s bf16 *with* 2:4 sparsity, "1/2 lower without" -> 989 dense; 80 GB
  (NVIDIA H100 Tensor Core GPU datasheet).
- A100 80GB SXM: 312 TFLOP/s bf16 dense (624 sparse); 80 GB HBM2e (NVIDIA A100 datasheet).
- TPU v4: 275 TFLOP/s bf16 per chip (two TensorCores); 32 GiB HBM2 per chip
  (cloud.google.com/tpu/docs/v4).
- TPU v5e: 197 TFLOP/s bf16 per chip (one TensorCore); 16 GB HBM2 per chip
  (cloud.google.com/tpu/docs/v5e).
- TPU v3: 123 TFLOP/s bf16 per chip, two TensorCores per chip; 32 GiB HBM2 per chip, 16 GiB per
  core (cloud.google.com/tpu/docs/v3). Per core: 61.5 TFLOP/s, 16 GiB.
"""
from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_MFU = 0.4  # assumed model FLOPs utilisation (fraction of the dense bf16 peak)
GB, GIB = 1e9, 2.0 ** 30
SECONDS = {"days": 86_400.0, "hours": 3_600.0}  # unit suffixes of "<name>-days" / "-hours"


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str  # the key of ACCELERATORS, used in units: "<name>-days"
    label: str  # printable: "H100", "TPUv3-core"
    description: str
    peak_flops: float  # dense bf16 FLOP/s of one device (chip, or core for tpuv3-core)
    memory_bytes: float  # memory of one device
    source: str

    def flops_per_second(self, mfu: float | None = None) -> float:
        """Sustained FLOP/s of one device at ``mfu`` (default ``DEFAULT_MFU``)."""
        return self.peak_flops * _check_mfu(mfu)


ACCELERATORS = {a.name: a for a in (
    Accelerator("h100", "H100", "NVIDIA H100 SXM (80 GB)", 989e12, 80 * GB,
                "NVIDIA H100 datasheet: bf16 1,979 TFLOP/s with sparsity, half without"),
    Accelerator("a100", "A100", "NVIDIA A100 80GB SXM", 312e12, 80 * GB,
                "NVIDIA A100 datasheet: bf16 312 TFLOP/s dense (624 with sparsity)"),
    Accelerator("tpuv4", "TPUv4", "Google TPU v4 chip (2 TensorCores)", 275e12, 32 * GIB,
                "cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16 per chip, 32 GiB HBM2"),
    Accelerator("tpuv5e", "TPUv5e", "Google TPU v5e chip (1 TensorCore)", 197e12, 16 * GB,
                "cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16 per chip, 16 GB HBM2"),
    Accelerator("tpuv3", "TPUv3", "Google TPU v3 chip (2 TensorCores)", 123e12, 32 * GIB,
                "cloud.google.com/tpu/docs/v3: 123 TFLOP/s bf16 per chip, 32 GiB HBM2"),
    Accelerator("tpuv3-core", "TPUv3-core",
                "one TensorCore of a TPU v3 chip (the paper's Figure 2 unit)", 123e12 / 2, 16 * GIB,
                "cloud.google.com/tpu/docs/v3: 123 TFLOP/s per chip / 2 cores; 16 GiB per core"),
)}


def _check_mfu(mfu: float | None) -> float:
    if mfu is None:
        return DEFAULT_MFU
    if isinstance(mfu, bool) or not isinstance(mfu, (int, float)) or not 0 < mfu <= 1:
        raise ValueError(f"mfu: must be a fraction in (0, 1] of the peak FLOP/s, got {mfu!r}")
    return float(mfu)


def accelerator(name: str) -> Accelerator:
    """The accelerator called ``name`` (case-insensitive), e.g. "h100", "tpuv3-core"."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in ACCELERATORS:
        raise ValueError(f"accelerator: {name!r} is not known; choose one of {list(ACCELERATORS)}")
    return ACCELERATORS[key]


def device_seconds(flops, name: str, devices: int = 1, mfu: float | None = None):
    """Wall-clock seconds that ``flops`` take on ``devices`` devices ``name`` at ``mfu``
    (default ``DEFAULT_MFU``), assuming the work splits evenly. Works on arrays of flops."""
    acc = accelerator(name)
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1:
        raise ValueError(f"devices: must be an integer >= 1, got {devices!r}")
    f = np.asarray(flops, dtype=float)
    if np.any(~np.isfinite(f)) or np.any(f < 0):
        raise ValueError(f"flops: must be finite and >= 0, got {flops!r}")
    seconds = f / (acc.flops_per_second(mfu) * int(devices))
    return float(seconds) if seconds.ndim == 0 else seconds


def units() -> list[str]:
    """Every unit ``flops_of_budget`` accepts."""
    return ["flops"] + [f"{name}-{suffix}" for name in ACCELERATORS for suffix in SECONDS]


def parse_unit(unit: str) -> tuple[Accelerator | None, float]:
    """(accelerator, seconds per unit) of ``unit``; (None, 1.0) for "flops"."""
    key = unit.strip().lower() if isinstance(unit, str) else None
    if key == "flops":
        return None, 1.0
    if key is not None:
        for suffix, seconds in SECONDS.items():
            name = key[:-len(suffix) - 1]
            if key.endswith("-" + suffix) and name in ACCELERATORS:
                return ACCELERATORS[name], seconds
    raise ValueError(f"unit: {unit!r} is not allowed; use 'flops' or '<accelerator>-days' / "
                     f"'<accelerator>-hours' with accelerator one of {list(ACCELERATORS)} "
                     f"(e.g. 'h100-days', 'tpuv3-core-days')")


def flops_per_unit(unit: str, mfu: float | None = None) -> float:
    """FLOPs in one ``unit``: 1 for "flops", else seconds x peak x MFU of one device."""
    acc, seconds = parse_unit(unit)
    return 1.0 if acc is None else seconds * acc.flops_per_second(mfu)


def flops_of_budget(amount, unit: str, mfu: float | None = None):
    """Training FLOPs in a budget of ``amount`` ``unit`` ("flops", "h100-days",
    "tpuv3-core-days", "a100-hours", ...) at ``mfu`` (default ``DEFAULT_MFU``; ignored for
    "flops"). ``amount`` must be finite and > 0; works on arrays."""
    per_unit = flops_per_unit(unit, mfu)
    a = np.asarray(amount, dtype=float)
    if a.size == 0 or np.any(~np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"budget: must be finite and > 0, got {amount!r}")
    flops = a * per_unit
    return float(flops) if flops.ndim == 0 else flops


def budget_of_flops(flops, unit: str, mfu: float | None = None):
    """The inverse of ``flops_of_budget``: ``flops`` expressed in ``unit`` at ``mfu``."""
    per_unit = flops_per_unit(unit, mfu)
    f = np.asarray(flops, dtype=float)
    if np.any(~np.isfinite(f)) or np.any(f < 0):
        raise ValueError(f"flops: must be finite and >= 0, got {flops!r}")
    amount = f / per_unit
    return float(amount) if amount.ndim == 0 else amount


def unit_label(unit: str) -> str:
    """A short printable name of ``unit`` ("TPUv3-core-days", "H100-days", "FLOPs")."""
    acc, seconds = parse_unit(unit)
    if acc is None:
        return "FLOPs"
    suffix = next(s for s, v in SECONDS.items() if v == seconds)
    return f"{acc.label}-{suffix}"

