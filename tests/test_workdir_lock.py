"""One writer per workdir: a second process stops at once and writes nothing, a lock left by a
dead process is taken over, one from another host is broken only with --break-lock, two sweeps
over one runs folder train each run once, and a failed write (disk full) stops the run so that
the same call resumes to the parameters of an uninterrupted run."""
import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_cli import train_command

import vitlib.files
from vitlib.configs import apply_overrides, load_config
from vitlib.train import cli, loop
from vitlib.train.workdir import WorkdirWriteFailed

SETS = ["dataset=digits", "model.variant='Pico/7'", "batch_size=16", "eval_batch_size=100",
        "train_split='train'", "eval_splits=('minival',)", "log_every=1",
        "fewshot.dataset=''", "augment.flip=False", "augment.crop_padding=0",
        "optim.schedule.warmup_steps=2", "total_steps=8", "checkpoint_every=2"]
LOCK = "writer.lock"
NO_SPACE = os.strerror(errno.ENOSPC)


def _config(*sets):
    return apply_overrides(load_config("quickstart"), [*SETS, *sets])


def _listing(folder: Path) -> dict:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _train_losses(workdir: Path) -> list[int]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "train_loss" in r]


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run that every stopped and resumed run must end equal to."""
    return loop.fit(_config(), tmp_path_factory.mktemp("straight"), progress=False)


def test_a_second_writer_stops_at_once_writes_nothing_and_the_lock_goes_on_every_exit(
        tmp_path, straight):
    workdir, seen = tmp_path / "run", {}

    def second_writer(params):  # runs inside fit, while this process trains the workdir
        seen["before"] = _listing(workdir)
        start = time.perf_counter()
        seen["out"] = subprocess.run(train_command(workdir, SETS), capture_output=True,
                                     text=True, timeout=240)
        seen["seconds"], seen["after"] = time.perf_counter() - start, _listing(workdir)
        return params

    result = loop.fit(_config(), workdir, init_params=second_writer, progress=False)
    out = seen["out"]
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    line = _one_line(out.stdout + out.stderr)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in line
    assert "wait" in line and "another --workdir" in line
    assert seen["after"] == seen["before"]  # it wrote nothing
    assert result["params_sha256"] == straight["params_sha256"]
    assert _train_losses(workdir) == list(range(1, 9))
    assert not (workdir / LOCK).exists()  # released at the end

    for stop in (KeyboardInterrupt, RuntimeError):  # Ctrl-C and errors release it too
        def interrupted(params):
            assert str(os.getpid()) in (tmp_path / "stopped" / LOCK).read_text()
            raise stop()
        with pytest.raises(stop):
            loop.fit(_config(), tmp_path / "stopped", init_params=interrupted, progress=False)
        assert not (tmp_path / "stopped" / LOCK).exists()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_lock_left_by_a_dead_process_of_this_host_is_taken_over_with_a_notice(
        tmp_path, capsys, straight):
    pid = _dead_pid()
    tmp_path.joinpath(LOCK).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": pid, "started": "2025-01-01T00:00:00+00:00",
         "command": "python -m vitlib.train --config quickstart"}))
    result = loop.fit(_config(), tmp_path, progress=False)
    notice = _one_line("\n".join(line for line in capsys.readouterr().out.splitlines()
                                 if "lock" in line))
    assert f"took over the lock left by pid {pid} on host {socket.gethostname()}" in notice
    assert result["params_sha256"] == straight["params_sha256"]
    assert not (tmp_path / LOCK).exists()


def test_a_lock_from_another_host_is_refused_and_broken_only_with_break_lock(
        tmp_path, capsys, straight):
    owner = {"host": "gpu-node-7.example", "pid": 4242, "started": "2025-01-01T00:00:00+00:00",
             "command": "python -m vitlib.train --config quickstart"}
    tmp_path.joinpath(LOCK).write_text(json.dumps(owner))
    before = _listing(tmp_path)
    argv = ["--config", "quickstart", "--workdir", str(tmp_path), "--no-progress"]
    for item in SETS:
        argv += ["--set", item]
    assert cli.main(argv) == 1
    line = _one_line(capsys.readouterr().err)
    assert "pid 4242 on host gpu-node-7.example" in line and "--break-lock" in line
    assert _listing(tmp_path) == before  # nothing written, the lock untouched

    assert cli.main([*argv, "--break-lock"]) == 0
    broke = [line for line in capsys.readouterr().out.splitlines() if "lock" in line]
    assert len(broke) == 1 and "broke the lock of pid 4242 on host gpu-node-7.example" in broke[0]
    assert json.loads((tmp_path / "result.json").read_text())["params_sha256"] == \
        straight["params_sha256"]
    assert not (tmp_path / LOCK).exists()


SWEEP = """
import ast, json, sys, time
from pathlib import Path
from vitlib.configs import apply_overrides, load_config
from vitlib.study import experiments
root, ready, go = map(Path, sys.argv[1:4])
runs = ast.literal_eval(sys.argv[4])
ready.touch()
while not go.exists():
    time.sleep(0.01)
results = [experiments.run_cached(apply_overrides(load_config("quickstart"), sets), root)
           for sets in runs]
print("RESULTS " + json.dumps([{k: r[k] for k in ("workdir", "cached", "params_sha256")}
                               for r in results]))
"""


def test_two_sweeps_side_by_side_train_each_run_once(tmp_path):
    runs = [[*SETS, "total_steps=4", f"seed={seed}"] for seed in (0, 1)]
    procs = []
    for i in range(2):
        procs.append(subprocess.Popen(
            [sys.executable, "-c", SWEEP, str(tmp_path / "runs"), str(tmp_path / f"ready{i}"),
             str(tmp_path / "go"), repr(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both start their sweeps at once
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in outs]
    results = [json.loads(next(line for line in out.splitlines() if line.startswith("RESULTS "))
                          [len("RESULTS "):]) for out, _ in outs]
    trained = sorted(r["workdir"] for rs in results for r in rs if not r["cached"])
    workdirs = sorted({r["workdir"] for rs in results for r in rs})
    assert len(workdirs) == 2 and trained == workdirs  # each run trained once, by one sweep
    assert any("waiting for run" in out for out, _ in outs)
    for a, b in zip(*results):
        assert a["workdir"] == b["workdir"] and a["params_sha256"] == b["params_sha256"]
    for workdir in map(Path, workdirs):
        assert _train_losses(workdir) == [1, 2, 3, 4]
        assert json.loads((workdir / "result.json").read_text())["steps"] == 4
        assert not (workdir / LOCK).exists()


def _fail_checkpoint_at_step_6(monkeypatch):
    """The data iterator's file of the step-6 checkpoint fails half-written: the state's arrays
    are already in orbax's temporary folder."""
    from orbax.checkpoint._src.handlers.json_checkpoint_handler import JsonCheckpointHandler
    original = JsonCheckpointHandler._save_fn

    async def save(self, item, directory):
        if Path(directory).parent.name.split(".")[0] == "6":
            path = Path(directory) / "metadata"
            path.write_text(json.dumps(item)[:5])
            raise OSError(errno.ENOSPC, NO_SPACE, str(path))
        return await original(self, item, directory)
    monkeypatch.setattr(JsonCheckpointHandler, "_save_fn", save)
    return "checkpoints/6"


def _fail_writes_of(name: str, marker: bytes):
    def fail(monkeypatch):
        original = vitlib.files._write_all

        def write(fd, data, path):
            if Path(path).name == name and marker in data:
                original(fd, data[:len(data) // 2], path)  # half of it reaches the disk
                raise OSError(errno.ENOSPC, NO_SPACE)
            original(fd, data, path)
        monkeypatch.setattr(vitlib.files, "_write_all", write)
        return name
    return fail


@pytest.mark.parametrize("fail, kept", [
    (_fail_checkpoint_at_step_6, [2, 4]),
    (_fail_writes_of("metrics.jsonl", b'"step": 5,'), [2, 4]),
    (_fail_writes_of("result.json", b'"params_sha256"'), [6, 8]),
], ids=["checkpoint", "metrics_line", "result"])
def test_a_failed_write_stops_the_run_keeps_what_was_written_and_the_run_resumes(
        tmp_path, monkeypatch, straight, fail, kept):
    with monkeypatch.context() as patch:
        path = fail(patch)
        with pytest.raises(WorkdirWriteFailed) as stopped:
            loop.fit(_config(), tmp_path, progress=False)
    message = _one_line(str(stopped.value))
    assert f"could not write {tmp_path / path}" in message and NO_SPACE in message
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                  if p.name.isdigit()) == kept
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # every record whole
    assert not (tmp_path / "result.json").exists()
    assert not (tmp_path / LOCK).exists()

    resumed = loop.fit(_config(), tmp_path, progress=False)  # the same call, space again
    assert resumed["params_sha256"] == straight["params_sha256"]
    assert _train_losses(tmp_path) == list(range(1, 9))
