"""linrongc/youtube-8m's scripts (`tests/data/linrongc/*.sh`, its command lines as written)
expanded by bash: each `python X.py ARGS` line as the argv it runs."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).parent / "data" / "linrongc"
NEXTVLAD_SCRIPT = SCRIPTS / "train_nextvlad_local.sh"
MIXTURE_SCRIPT = SCRIPTS / "train_mix_nextvlad_final_submission.sh"
COMMANDS = {"train.py": "train", "eval.py": "eval", "inference.py": "infer"}
# a `python` that prints its arguments NUL-separated, each command ended by \1
_RECORDER = "python() { printf '%s\\0' \"$@\"; printf '\\1\\0'; }\nmkdir() { :; }\n"


def expand(
    script: Path, paths: dict[str, str] | None = None, cwd: Path | None = None
) -> list[tuple[str, list[str]]]:
    """``[(command, argv), ...]`` of the script's `python train.py/eval.py/inference.py`
    lines, bash doing the expansion; `paths` replaces the values of its data-path
    variables (``datapath``, ``eval_path``, ``test_path``)."""
    text = script.read_text()
    for name, value in (paths or {}).items():
        text, count = re.subn(rf"^{name}=.*$", f"{name}={shlex.quote(value)}", text, flags=re.M)
        if count != 1:
            raise ValueError(f"{script} sets {name} {count} times")
    out = subprocess.run(
        ["bash", "-c", _RECORDER + text], cwd=cwd, capture_output=True, check=True
    ).stdout.decode()
    commands = []
    for record in out.split("\x01\x00")[:-1]:
        script_name, *argv = record.split("\x00")[:-1]
        commands.append((COMMANDS[script_name], argv))
    return commands


def training_argv(script: Path) -> list[str]:
    """The script's training command line without its data pattern."""
    (argv,) = [argv for name, argv in expand(script) if name == "train"]
    return [a for a in argv if not a.startswith("--train_data_pattern")]
