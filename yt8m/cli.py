"""The `yt8m` command: one subcommand per job, each a `main(argv) -> int` in its module."""

from __future__ import annotations

import importlib
import os
import sys

from yt8m import __version__
from yt8m.errors import YT8MError

# subcommand -> ("module:function", one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("yt8m.data.synthetic:main", "write a synthetic dataset in the real TFRecord format"),
    "inspect": ("yt8m.data.inspect:main", "print what the reader sees in TFRecord files"),
    "train": ("yt8m.train:main", "train a model (the original's train.py flags)"),
    "eval": ("yt8m.evaluate:main", "evaluate checkpoints: GAP, mAP, Hit@1, PERR"),
    "infer": ("yt8m.inference:main", "write a Kaggle submission CSV from a checkpoint"),
    "average": ("yt8m.ensemble:average_main", "average prediction CSVs (file_averaging.py)"),
    "ensemble": ("yt8m.ensemble:ensemble_main", "fit ensemble weights that maximise GAP"),
    "demo": ("yt8m.demo:main", "the whole WILLOW pipeline on synthetic data"),
    "score-segments": ("yt8m.segments.score:main", "MAP@K of a 2019 segment submission"),
    "average-checkpoints": ("yt8m.checkpoint_average:main", "average checkpoints of one run"),
    "export": ("yt8m.export:main", "weights + flags in one .safetensors file (--max_bytes)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items())
    return (
        f"usage: yt8m COMMAND [flags]\n\ncommands:\n{rows}\n\n"
        "`yt8m COMMAND --help` lists a command's flags; `yt8m --version` the versions."
    )


def version() -> str:
    """This package's version, and torch's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        torch_version = installed("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return f"yt8m {__version__} (torch {torch_version}, Python {sys.version.split()[0]})"


def run_command(command: str, argv: list[str]) -> int:
    """Run one subcommand; a `YT8MError` becomes a one-line message and its exit status
    (2, or the error's own `exit_status`: 130/143 for a training stopped by SIGINT/SIGTERM)."""
    target, _ = COMMANDS[command]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(argv) or 0)
    except YT8MError as err:
        print(f"yt8m {command}: error: {err}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print(f"yt8m {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `yt8m ... | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 141


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("--version", "-V", "version"):
        print(version())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"yt8m: unknown command '{command}'{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_command(command, rest)
