"""A workdir belongs to one run: resuming it under another config is refused, a finished run is
read back untouched, a damaged checkpoint falls back to the previous one, Ctrl-C stops at a
step with a checkpoint, and the records are valid JSON that cover the whole run."""
import json
import shutil
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_cli import train_command

from vitlib.configs import apply_overrides, load_config
from vitlib.train import fit
from vitlib.train.resume import CheckpointError
from vitlib.train.workdir import WorkdirMismatch

SMALL = ["dataset=digits", "model.variant='Atto/7'", "batch_size=32", "eval_batch_size=200",
         "train_split='train'", "eval_splits=('test',)", "log_every=5", "fewshot.dataset=''",
         "optim.schedule.warmup_steps=2", "total_steps=20", "checkpoint_every=5"]
RSQRT = ["optim.schedule.kind='rsqrt'", "optim.schedule.timescale=5"]


def config(*sets):
    return apply_overrides(load_config("quickstart"), [*SMALL, *sets])


def strict_json(path: Path) -> dict:
    def refuse(name):
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 20-step run: the reference the other runs must end equal to."""
    workdir = tmp_path_factory.mktemp("straight")
    return fit(config(), workdir, progress=False), workdir


def test_a_finished_run_is_read_back_and_its_files_untouched(straight, capsys):
    result, workdir = straight
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in workdir.iterdir()
              if p.is_file()}
    again = fit(config(), workdir, progress=False)
    assert "read back" in capsys.readouterr().out
    assert again == json.loads(json.dumps(result))  # as stored: tuples are lists
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in workdir.iterdir()
            if p.is_file()} == before


def test_records_are_strict_json_readable_by_others(straight):
    _, workdir = straight
    for name in ("result.json", "config.json", "progress.json"):
        strict_json(workdir / name)
        mode = (workdir / name).stat().st_mode & 0o777
        assert mode & 0o044 == 0o044 & ~_umask(), (name, oct(mode))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_resuming_under_another_config_is_refused_with_the_differing_keys(straight):
    _, workdir = straight
    with pytest.raises(WorkdirMismatch) as err:
        fit(config("optim.lr=1e-3", "model.variant='Femto/7'"), workdir, progress=False)
    message = str(err.value)
    assert "model.variant: 'Atto/7' (workdir) -> 'Femto/7' (requested)" in message
    assert "optim.lr: 0.002 (workdir) -> 0.001 (requested)" in message
    assert "--restart" in message and "another --workdir" in message
    # the cosine schedule depends on the length: the trained steps' lr would change
    with pytest.raises(WorkdirMismatch, match="total_steps 20 -> 30 changes the learning rates"):
        fit(config("total_steps=30"), workdir, progress=False)


def test_restart_clears_the_run_and_trains_the_new_config(straight, tmp_path):
    result, _ = straight
    fit(config("optim.lr=1e-3"), tmp_path, progress=False)
    again = fit(config(), tmp_path, progress=False, restart=True)
    assert again["params_sha256"] == result["params_sha256"]
    assert strict_json(tmp_path / "config.json")["optim"]["lr"] == 0.002


def test_a_length_free_schedule_extends_to_the_longer_run(tmp_path, capsys):
    longer = fit(config(*RSQRT, "total_steps=30"), tmp_path / "longer", progress=False)
    fit(config(*RSQRT), tmp_path / "extended", progress=False)
    first = strict_json(tmp_path / "extended" / "progress.json")["20"]
    extended = fit(config(*RSQRT, "total_steps=30"), tmp_path / "extended", progress=False)
    assert "had the same learning rates" in capsys.readouterr().out
    assert extended["params_sha256"] == longer["params_sha256"]
    assert extended["steps"] == 30 and extended["steps_this_run"] == 10
    # the whole run's images over the whole run's train time
    assert extended["images_per_s"] == pytest.approx(
        30 * 32 / extended["train_time_s"])
    assert extended["train_time_s"] > first["train_time_s"]
    assert extended["wall_time_s"] > first["wall_time_s"]


def _data_files(checkpoint: Path):
    return [p for p in checkpoint.rglob("*") if p.is_file() and p.parent.name == "d"
            and "ocdbt" in str(p)]


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(straight, tmp_path, capsys):
    result, _ = straight
    workdir = tmp_path / "run"
    fit(config("total_steps=15"), workdir, progress=False)  # checkpoints at 10 and 15
    (workdir / "result.json").unlink()  # as if killed right after the last save
    (workdir / "config.json").write_text((workdir / "config.json").read_text())
    for f in _data_files(workdir / "checkpoints" / "15"):
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    cfg = config("total_steps=15")
    resumed = fit(cfg, workdir, progress=False)
    out = capsys.readouterr().out
    assert "checkpoint at step 15" in out and "unreadable" in out
    assert "resumed from step 10" in out
    assert resumed["steps_this_run"] == 5
    reference = fit(cfg, tmp_path / "reference", progress=False)
    assert resumed["params_sha256"] == reference["params_sha256"]

    (workdir / "result.json").unlink()
    for step in ("10", "15"):
        for f in _data_files(workdir / "checkpoints" / step):
            f.write_bytes(b"")
    with pytest.raises(CheckpointError, match="none of the checkpoints.*--restart"):
        fit(cfg, workdir, progress=False)


def _command(workdir, *sets):
    return train_command(workdir, [*SMALL, *sets])


def test_ctrl_c_stops_at_a_step_with_a_checkpoint_and_resumes_to_the_same_result(tmp_path):
    sets = [*RSQRT, "total_steps=3000", "checkpoint_every=0", "log_every=1"]
    workdir = tmp_path / "run"
    proc = subprocess.Popen(_command(workdir, *sets), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "run the same command again to resume" in err
    step = int(err.split("interrupted at step ")[1].split(":")[0])
    assert 3 <= step < 3000
    assert [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()] == [str(step)]
    assert max(json.loads(line)["step"] for line in metrics.read_text().splitlines()) == step
    # rsqrt does not depend on the length: resume to a nearby end, as a straight run of it
    short = config(*RSQRT, f"total_steps={step + 7}", "checkpoint_every=0")
    resumed = fit(short, workdir, progress=False)
    assert resumed["params_sha256"] == fit(short, tmp_path / "straight", progress=False)[
        "params_sha256"]
    with pytest.raises(WorkdirMismatch, match="past the requested total_steps"):
        fit(config(*RSQRT, f"total_steps={step}"), workdir, progress=False)


def test_user_errors_name_the_field_and_leave_nothing_behind(tmp_path):
    bad = {"seed=-1": "seed: must be an integer >= 0, got -1",
           "dataset='fashion_mnst'": "did you mean 'fashion_mnist'",
           "total_steps=1": "optim.schedule.warmup_steps + optim.schedule.cooldown_steps",
           "optim.lr=-1.0": "optim.lr: must be a positive number"}
    for item, expected in bad.items():
        workdir = tmp_path / item.split("=")[0]
        out = subprocess.run(_command(workdir, item), capture_output=True, text=True, timeout=300)
        assert out.returncode == 1 and expected in out.stderr, (item, out.stderr[-2000:])
        assert len(out.stderr.strip().splitlines()) <= 2, out.stderr
        assert not workdir.exists(), item
    afile = tmp_path / "a_file"
    afile.write_text("")
    out = subprocess.run(_command(afile), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and f"workdir: {afile} is a file" in out.stderr


def test_finetune_rejects_bad_inputs_before_creating_its_workdir(straight, tmp_path):
    _, pretrained = straight
    for args, expected in ((["--lr", "-1"], "optim.lr"), (["--dataset", "digitz"], "digits")):
        cmd = [sys.executable, "-m", "vitlib.train.finetune", "--from", str(pretrained),
               "--dataset", "digits", "--workdir", str(tmp_path / "ft"), "--steps", "5", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 1 and expected in out.stderr, out.stderr[-2000:]
        assert not (tmp_path / "ft").exists()


def test_cli_output_piped_into_head_and_options_that_need_another(tmp_path):
    zoo = subprocess.run(f"{sys.executable} -m vitlib.models.zoo --json | head -1", shell=True,
                         capture_output=True, text=True, timeout=120)
    assert zoo.stdout == "[\n" and "Error" not in zoo.stderr, zoo.stderr
    memory = subprocess.run([sys.executable, "-m", "vitlib.analysis.memory", "--variant", "B/16",
                             "--optimizer", "adam", "--fsdp"], capture_output=True, text=True,
                            timeout=120)
    assert memory.returncode == 2 and "--fsdp: only used with --compiled" in memory.stderr


def test_a_run_stopped_after_a_branch_point_resumes_from_it_and_saves_it_again(straight, tmp_path,
                                                                               capsys):
    result, _ = straight
    cfg = config("checkpoint_steps=(10,)", "checkpoint_every=0")
    workdir = tmp_path / "run"
    fit(cfg, workdir, progress=False)
    # As if killed after the branch point at 10 was saved, before any checkpoint of its own.
    (workdir / "result.json").unlink()
    for step in (workdir / "checkpoints").iterdir():
        shutil.rmtree(step)
    capsys.readouterr()
    resumed = fit(cfg, workdir, progress=False)
    assert "resumed from step 10 (a branch point)" in capsys.readouterr().out
    assert resumed["steps_this_run"] == 10
    assert resumed["params_sha256"] == result["params_sha256"]

    # A branch point that cannot be read: the run trains from the start and saves it again.
    (workdir / "result.json").unlink()
    for step in (workdir / "checkpoints").iterdir():
        shutil.rmtree(step)
    for f in _data_files(workdir / "branch_points" / "10"):
        f.write_bytes(b"")
    again = fit(cfg, workdir, progress=False)
    assert again["steps_this_run"] == 20
    assert again["params_sha256"] == result["params_sha256"]
    assert sorted(p.name for p in (workdir / "branch_points").iterdir()) == ["10"]
