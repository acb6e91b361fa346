"""The command line of ``python -m vitlib.train`` that the tests run in subprocesses."""
import sys


def train_command(workdir, sets) -> list[str]:
    cmd = [sys.executable, "-m", "vitlib.train", "--config", "quickstart", "--workdir",
           str(workdir), "--no-progress"]
    for item in sets:
        cmd += ["--set", item]
    return cmd
