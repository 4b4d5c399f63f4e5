"""The original's `python file_averaging.py ...`: runs `yt8m average` with the same flags."""

import sys

from yt8m.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("average", sys.argv[1:]))
