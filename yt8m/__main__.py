"""`python -m yt8m ...` (also what `torchrun -m yt8m ...` runs)."""

from yt8m.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
