"""The original's `python train.py ...`: runs `yt8m train` with the same flags."""

import sys

from yt8m.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("train", sys.argv[1:]))
