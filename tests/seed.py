"""The seed's command lines, from the repository's own copy (`tests/data/seed_commands.txt`)."""

from __future__ import annotations

import shlex
from pathlib import Path

SEED_COMMANDS = Path(__file__).resolve().parent / "data" / "seed_commands.txt"


def _commands(script: str) -> list[list[str]]:
    """Every `python SCRIPT ...` line of the seed, split as a shell would, without `python SCRIPT`."""
    lines = [ln.strip() for ln in SEED_COMMANDS.read_text().splitlines()]
    prefix = f"python {script}"
    return [shlex.split(ln)[2:] for ln in lines if ln.split()[:2] == prefix.split()]


def training_commands() -> list[list[str]]:
    """The seven `python train.py` commands of the seed README, in its order."""
    return _commands("train.py")


def inference_commands() -> list[list[str]]:
    """The seven `python inference.py` commands, in the seed file's order."""
    return _commands("inference.py")


def flag_value(argv: list[str], name: str) -> str:
    """The value of `--name=value` in a seed command line."""
    for arg in argv:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    raise KeyError(name)
