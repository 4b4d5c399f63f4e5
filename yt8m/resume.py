"""Where `yt8m train` resumes: the newest good checkpoint, and only when it can resume exactly.

* A checkpoint that cannot be read (damaged, cut short, foreign) is renamed aside to
  ``model.ckpt-STEP.pt.damaged`` (kept, no longer a checkpoint), with a warning naming it,
  and training resumes from the newest one that loads. When none loads, nothing is renamed
  and the error lists them all.
* The data position and the learning-rate schedule of a resumed run count batches of the
  checkpoint's ``--batch_size``; another batch size is refused with the ways to go on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from yt8m.checkpoint import Checkpoint, CheckpointError, list_checkpoints, load_checkpoint
from yt8m.errors import YT8MError
from yt8m.flags import Flags

log = logging.getLogger("yt8m.train")

DAMAGED_SUFFIX = ".damaged"


class ResumeError(YT8MError):
    """A train_dir that cannot be resumed as asked; the message says how to go on."""


def _set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint out of the checkpoints' name pattern, never over a file."""
    aside = path.with_name(path.name + DAMAGED_SUFFIX)
    number = 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}{DAMAGED_SUFFIX}-{number}")
    path.rename(aside)
    return aside


def newest_good_checkpoint(train_dir: str | Path) -> Checkpoint | None:
    """The newest checkpoint of `train_dir` that loads, or None when there is none.

    Newer ones that fail to load are renamed aside, each with a warning. Raises
    `ResumeError` when checkpoints exist and none of them loads (nothing is renamed).
    """
    damaged: list[tuple[Path, str]] = []
    for _, path in reversed(list_checkpoints(train_dir)):
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as err:
            damaged.append((path, str(err)))
            continue
        for bad, reason in damaged:
            aside = _set_aside(bad)
            log.warning(
                "%s; resuming from %s (step %d) instead; the damaged file is kept as %s",
                reason,
                checkpoint.path,
                checkpoint.step,
                aside,
            )
        return checkpoint
    if damaged:
        reasons = "; ".join(reason for _, reason in damaged)
        raise ResumeError(
            f"no checkpoint of train_dir {str(train_dir)!r} can be read ({reasons}); nothing "
            "was changed: --start_new_model starts over (it deletes them), or move them away"
        )
    return None


def check_resumable(flags: Flags, checkpoint: Checkpoint) -> None:
    """Refuse a resume that could not continue exactly; warn where the run will differ."""
    trained = checkpoint.flags
    if flags.batch_size != trained.batch_size:
        raise ResumeError(
            f"{checkpoint.path} was trained to step {checkpoint.step} with "
            f"--batch_size={trained.batch_size}; its data position and learning-rate "
            f"schedule count batches of that size, so --batch_size={flags.batch_size} cannot "
            f"resume it: resume with --batch_size={trained.batch_size}, or train anew with "
            "another --train_dir (or --start_new_model, which deletes these checkpoints)"
        )
    if flags.seed != trained.seed:
        log.warning(
            "--seed=%d differs from %d in %s: the resumed run reads the data in another order "
            "(some videos again, some not at all in this epoch)",
            flags.seed,
            trained.seed,
            checkpoint.path,
        )
