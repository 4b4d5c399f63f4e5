"""The original's `python inference.py ...`: runs `yt8m infer` with the same flags."""

import sys

from yt8m.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("infer", sys.argv[1:]))
