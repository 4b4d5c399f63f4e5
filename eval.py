"""The original's `python eval.py ...`: runs `yt8m eval` with the same flags."""

import sys

from yt8m.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("eval", sys.argv[1:]))
