"""Kill and resume on the device: ``fit`` (``python -m vitlib.train``, default backend) trains a
small model straight through, and again in a process killed with SIGKILL mid-run and started
anew in the same workdir; the resumed run must end with the straight run's parameters
(``params_sha256``, bit for bit). Part of ``benchmarks/accelerator.py``'s device check.

On a GPU the runs ask XLA for deterministic ops (``--xla_gpu_deterministic_ops``): without it
two straight runs can already differ in their last bits, and the check would test nothing.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Digits (bundled with scikit-learn: no download on any host), a CPU-sized ViT.
SETS = ["dataset=digits", "model.variant='Pico/7'", "batch_size=32", "eval_batch_size=200",
        "train_split='train'", "eval_splits=('test',)", "log_every=1", "fewshot.dataset=''",
        "optim.schedule.warmup_steps=2", "augment.crop_padding=0", "augment.flip=False"]
# steps, checkpoint_every, kill once this step is logged: a GPU runs the steps fast, so it
# trains longer to be killed between checkpoints rather than after the end.
SIZES = {"tiny": (40, 5, 17), "full": (400, 50, 220)}


def _command(workdir: Path, steps: int, every: int) -> list[str]:
    cmd = [sys.executable, "-m", "vitlib.train", "--config", "quickstart", "--workdir",
           str(workdir), "--no-progress"]
    for item in [*SETS, f"total_steps={steps}", f"checkpoint_every={every}"]:
        cmd += ["--set", item]
    return cmd


def _last_step(workdir: Path) -> int:
    metrics = workdir / "metrics.jsonl"
    if not metrics.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines()
             if line.strip().endswith("}")]
    return max(steps, default=0)


def _sha(workdir: Path):
    path = workdir / "result.json"
    return json.loads(path.read_text())["params_sha256"] if path.exists() else None


def kill_and_resume(size: str, gpu: bool, timeout: float = 900) -> dict:
    """The straight run's and the resumed run's parameter hashes, the step the kill came
    after, and ``same_parameters``; ``error`` where a run failed or could not be killed
    mid-run."""
    steps, every, kill_after = SIZES[size]
    env = dict(os.environ)
    if gpu:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
    out = {"steps": steps, "checkpoint_every": every, "model": "Pico/7", "dataset": "digits"}
    with tempfile.TemporaryDirectory() as folder:
        straight, killed = Path(folder) / "straight", Path(folder) / "killed"
        run = subprocess.run(_command(straight, steps, every), capture_output=True, text=True,
                             timeout=timeout, env=env)
        if run.returncode:
            return {**out, "error": f"straight run: exit {run.returncode}: {run.stderr[-600:]}"}
        proc = subprocess.Popen(_command(killed, steps, every), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and _last_step(killed) < kill_after:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        out["killed_after_step"] = _last_step(killed)
        if (killed / "result.json").exists() or out["killed_after_step"] >= steps:
            return {**out, "error": "the run finished before it could be killed"}
        resumed = subprocess.run(_command(killed, steps, every), capture_output=True,
                                 text=True, timeout=timeout, env=env)
        if resumed.returncode:
            return {**out, "error": f"resumed run: exit {resumed.returncode}: "
                                    f"{resumed.stderr[-600:]}"}
        out.update(resumed_from_checkpoint="resumed from step" in resumed.stdout + resumed.stderr,
                   straight_sha256=_sha(straight), resumed_sha256=_sha(killed))
    out["same_parameters"] = bool(out["straight_sha256"]
                                  and out["straight_sha256"] == out["resumed_sha256"]
                                  and out["resumed_from_checkpoint"])
    return out


def markdown(check: dict) -> list[str]:
    lines = ["", "## Kill and resume", ""]
    if "error" in check:
        return lines + [f"Failed: {check['error'][-300:]}"]
    return lines + [
        f"`fit` trained {check['model']} on {check['dataset']} for {check['steps']} steps "
        f"(a checkpoint every {check['checkpoint_every']}) straight, and again killed "
        f"(SIGKILL) after step {check['killed_after_step']} and resumed: parameters "
        f"{'identical' if check['same_parameters'] else 'DIFFERENT'} "
        f"(sha256 {check['straight_sha256'][:12]} vs {check['resumed_sha256'][:12]})."]
