"""The seed's command lines, read from the seed files themselves (`../shared/seed`)."""

from __future__ import annotations

import shlex
from pathlib import Path

SEED_DIR = Path(__file__).resolve().parents[2] / "shared" / "seed"
TRAINING_README = SEED_DIR / "000_d69411fad4bd33e5.txt"
INFERENCE_COMMANDS = SEED_DIR / "inference-commands.txt"


def _commands(path: Path, script: str) -> list[list[str]]:
    """Every `python SCRIPT ...` line of `path`, split as a shell would, without `python SCRIPT`."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    prefix = f"python {script} "
    return [shlex.split(ln)[2:] for ln in lines if ln.startswith(prefix)]


def training_commands() -> list[list[str]]:
    """The seven `python train.py` commands of the seed README, in its order."""
    return _commands(TRAINING_README, "train.py")


def inference_commands() -> list[list[str]]:
    """The seven `python inference.py` commands, in the file's order."""
    return _commands(INFERENCE_COMMANDS, "inference.py")


def flag_value(argv: list[str], name: str) -> str:
    """The value of `--name=value` in a seed command line."""
    for arg in argv:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    raise KeyError(name)
