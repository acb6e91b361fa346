"""Explicit checks of the paper's claims, recorded as a findings JSON beside the figures.

    findings = Findings("01_model_zoo", profile)
    findings.check("params match Table 2", all(ok), detail=rows)
    findings.save(results_dir(profile) / "figures")
    findings.raise_if_failed()   # fails the notebook, naming each failed claim
"""
from __future__ import annotations

from pathlib import Path

from vitlib.artifacts import write_json


class ClaimCheckFailed(AssertionError):
    pass


class Findings:
    def __init__(self, notebook: str, profile: str):
        self.notebook = notebook
        self.profile = profile
        self.checks: list[dict] = []

    def check(self, claim: str, passed: bool, **evidence) -> bool:
        """Record whether ``claim`` holds, with the numbers that show it."""
        self.checks.append({"claim": claim, "passed": bool(passed), **evidence})
        print(f"[{'PASS' if passed else 'FAIL'}] {claim}")
        return bool(passed)

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.checks if not c["passed"]]

    def save(self, folder: Path) -> Path:
        return write_json(Path(folder) / f"{self.notebook}_findings.json", {
            "notebook": self.notebook, "profile": self.profile,
            "all_passed": not self.failed, "checks": self.checks})

    def raise_if_failed(self) -> None:
        if self.failed:
            names = "; ".join(c["claim"] for c in self.failed)
            raise ClaimCheckFailed(f"{len(self.failed)} claim check(s) failed: {names}")
