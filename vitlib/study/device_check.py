"""The MFU that ``make bench-accelerator`` measured on an accelerator, for ``--plan``: the median
over the device check's main rows (B/16, L/16, g/14 x both optimizers, remat and scan on, the
full profile's setting) that ran, from its newest full-size report
(``results/benchmarks/accelerator_<device>.json``) whose accelerator is the named one. Tiny
(CPU) reports never count."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import NamedTuple, Optional

BENCHMARKS = Path(__file__).resolve().parents[2] / "results" / "benchmarks"


class MeasuredMFU(NamedTuple):
    mfu: float
    rows: int  # main rows it is the median of
    source: str  # the report's path, device and date

    def note(self) -> str:
        return (f"MFU {self.mfu:.2f} measured: the median of {self.rows} main rows of "
                f"{self.source}")


def measured_mfu(accelerator: str, folder: Optional[Path] = None) -> Optional[MeasuredMFU]:
    """The measured MFU on ``accelerator`` (a ``vitlib.analysis.accelerators`` name), or None
    when no full-size device check of it is in ``folder`` (default ``BENCHMARKS``)."""
    found = []
    for path in sorted(Path(folder or BENCHMARKS).glob("accelerator_*.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # an unreadable report is no measurement
        if report.get("tiny") or report.get("device", {}).get("accelerator") != accelerator:
            continue
        mfus = [r["mfu"] for r in report.get("rows", [])
                if r.get("group") == "main" and r.get("mfu")]
        if mfus:
            found.append((report.get("date", ""), path, report["device"], mfus))
    if not found:
        return None
    date, path, device, mfus = max(found, key=lambda f: (f[0], str(f[1])))
    return MeasuredMFU(statistics.median(mfus), len(mfus),
                       f"{path.name} ({device.get('device_kind', '?')}, {date})")
