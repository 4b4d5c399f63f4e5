"""Checkpoints in `train_dir`: written atomically, loaded without executing code.

Layout of a train_dir::

    model.ckpt-STEP.pt   one per saved step (torch.save of plain tensors, numbers, strings)
    checkpoint.json      {"latest": "model.ckpt-STEP.pt", "step": STEP, "all": [...]}

A checkpoint file holds ``format``, ``step``, ``flags`` (the full flag table as a
JSON string), ``model`` (the state dict), ``optimizer`` (its state dict or None),
``training`` (random states and the loader position, see `yt8m.train`), with
``--ema_decay`` ``ema`` (the averaged state dict, `yt8m.ema`), and ``checksums`` (a
CRC32C of every tensor and value, the EMA's included, verified on load:
`yt8m.checkpoint_checksum`; a damaged file is a `CheckpointError`). It is
written to a temporary file, fsynced and renamed (`yt8m.atomic`), then the pointer
is rewritten the same way: a process killed at any moment leaves every
``model.ckpt-*.pt`` complete. `latest_checkpoint` takes the highest step present, so
a kill between the two renames only means the pointer lags by one checkpoint.
Loading uses ``torch.load(weights_only=True)``, which refuses anything but tensors
and plain containers.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yt8m.atomic import atomic_output
from yt8m.checkpoint_checksum import CHECKSUM_KEY, checksum_mismatch, payload_checksums
from yt8m.ema import prediction_state
from yt8m.errors import YT8MError
from yt8m.flags import Flags
from yt8m.models.registry import build_model

FORMAT_VERSION = 1
POINTER_NAME = "checkpoint.json"
_CHECKPOINT_RE = re.compile(r"^model\.ckpt-(\d+)\.pt$")

log = logging.getLogger(__name__)


class CheckpointError(YT8MError):
    """A checkpoint that is missing or unreadable; the message names the train_dir or file."""


@dataclass
class Checkpoint:
    """One loaded checkpoint file."""

    path: Path
    step: int
    flags: Flags
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    training_state: dict[str, Any]
    ema_state: dict[str, torch.Tensor] | None = None


def checkpoint_path(train_dir: str | Path, step: int) -> Path:
    """``train_dir/model.ckpt-STEP.pt``."""
    return Path(train_dir) / f"model.ckpt-{step}.pt"


def list_checkpoints(train_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in `train_dir`, by increasing step.

    A missing directory gives an empty list.
    """
    directory = Path(train_dir)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(train_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in `train_dir`, or None when there is none."""
    found = list_checkpoints(train_dir)
    return found[-1][1] if found else None


def save_checkpoint(
    train_dir: str | Path,
    step: int,
    model: nn.Module,
    flags: Flags,
    optimizer: torch.optim.Optimizer | None = None,
    training_state: dict[str, Any] | None = None,
    keep: int = 0,
    ema_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model.ckpt-STEP.pt`` atomically, then the pointer; keep the `keep` newest.

    `model` is the bare module (not a DDP or compiled wrapper). `keep` = 0 keeps all.
    `ema_state`: the EMA of the weights (`yt8m.ema`), if any. Returns the checkpoint's path.
    """
    path = checkpoint_path(train_dir, step)
    payload = {
        "format": FORMAT_VERSION,
        "step": int(step),
        "flags": json.dumps(flags.to_dict(), sort_keys=True),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "training": training_state or {},
    }
    if ema_state is not None:
        payload["ema"] = ema_state
    payload[CHECKSUM_KEY] = payload_checksums(payload)
    with atomic_output(path, binary=True) as out:
        torch.save(payload, out)
    steps = [s for s, _ in list_checkpoints(train_dir)]
    pointer = {"latest": path.name, "step": int(step), "all": steps}
    with atomic_output(Path(train_dir) / POINTER_NAME) as out:
        json.dump(pointer, out, indent=1)
    if keep > 0:
        for _, old in list_checkpoints(train_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def remove_checkpoints(train_dir: str | Path) -> None:
    """Delete every checkpoint, the pointer and leftover temporary files of `train_dir`."""
    directory = Path(train_dir)
    if not directory.is_dir():
        return
    for _, path in list_checkpoints(directory):
        path.unlink(missing_ok=True)
    (directory / POINTER_NAME).unlink(missing_ok=True)
    remove_stale_temporaries(directory)


def remove_stale_temporaries(train_dir: str | Path) -> None:
    """Delete temporary files that a killed writer left in `train_dir`."""
    directory = Path(train_dir)
    for pattern in (".model.ckpt-*.pt.tmp-*", f".{POINTER_NAME}.tmp-*"):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read one checkpoint file onto the CPU, refusing anything but plain data.

    Raises `CheckpointError` for a missing, unreadable, foreign or damaged file (one whose
    content does not match its checksums).
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # unpickling / zip errors: a damaged or foreign file
        raise CheckpointError(f"checkpoint {path} cannot be read: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is not a yt8m checkpoint of format {FORMAT_VERSION} "
            "(a file written by `yt8m train` was expected)"
        )
    damaged = checksum_mismatch(payload)
    if damaged:
        raise CheckpointError(
            f"checkpoint {path} is damaged: its {damaged} does not match the checksum "
            "written with it"
        )
    if CHECKSUM_KEY not in payload:
        log.warning("%s has no checksums (written before they existed): not verified", path)
    return Checkpoint(
        path=path,
        step=int(payload["step"]),
        flags=Flags.from_dict(json.loads(payload["flags"])),
        model_state=payload["model"],
        optimizer_state=payload["optimizer"],
        training_state=payload["training"],
        ema_state=payload.get("ema"),
    )


def _missing_dir_message(directory: Path) -> str:
    parent = directory.parent if str(directory.parent) else Path(".")
    siblings = [p.name for p in parent.iterdir() if p.is_dir()] if parent.is_dir() else []
    close = [n for n in siblings if n.startswith(directory.name) or directory.name.startswith(n)]
    close += [n for n in difflib.get_close_matches(directory.name, siblings, n=3) if n not in close]
    hint = f"; did you mean {', '.join(repr(str(parent / n)) for n in close)}?" if close else ""
    return f"train_dir {str(directory)!r} does not exist{hint}"


def find_checkpoint(train_dir: str | Path, check_point: int = -1) -> Path:
    """The checkpoint of step `check_point` in `train_dir` (-1: the latest).

    Raises `CheckpointError` naming the directory and what it holds: the steps it
    has, its files when it has no checkpoint, close directory names when it is missing.
    """
    directory = Path(train_dir)
    if not directory.is_dir():
        raise CheckpointError(_missing_dir_message(directory))
    found = list_checkpoints(directory)
    if not found:
        entries = sorted(p.name for p in directory.iterdir())
        listed = ", ".join(entries[:10]) + (", ..." if len(entries) > 10 else "")
        holds = f"it holds: {listed}" if entries else "it is empty"
        raise CheckpointError(
            f"no checkpoint (model.ckpt-STEP.pt) in train_dir {str(directory)!r}; {holds}"
        )
    if check_point < 0:
        return found[-1][1]
    for step, path in found:
        if step == check_point:
            return path
    steps = ", ".join(str(s) for s, _ in found)
    raise CheckpointError(
        f"train_dir {str(directory)!r} has no checkpoint of step {check_point} "
        f"(--check_point); it has steps {steps}"
    )


def warn_flag_differences(cli_flags: Flags, checkpoint: Checkpoint) -> None:
    """Log one warning per model flag the command line gave whose value differs from the
    checkpoint's (defaults nobody typed are not reported)."""
    for name, cli_value, saved_value in cli_flags.model_differences(checkpoint.flags):
        if not cli_flags.was_given(name):
            continue
        log.warning(
            "--%s=%s on the command line differs from %s in %s; the checkpoint's value is used",
            name,
            cli_value,
            saved_value,
            checkpoint.path,
        )


def _load_chosen(train_dir: str | Path, path: Path) -> Checkpoint:
    """`load_checkpoint(path)`; an unreadable one names ``--check_point=STEP`` and the
    other steps of `train_dir`."""
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        others = [str(step) for step, other in list_checkpoints(train_dir) if other != path]
        choice = f"steps present: {', '.join(others)}" if others else "it is the only one"
        raise CheckpointError(
            f"{err}; pick another checkpoint with --check_point=STEP ({choice})"
        ) from None


def restore_model(
    train_dir: str | Path,
    check_point: int,
    cli_flags: Flags,
    device: str | torch.device,
) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the model of a checkpoint from its own flags, weights loaded, in eval mode.

    `check_point` is a step or -1 for the latest; `train_dir` may also be a file written
    by `yt8m export`. The weights are the checkpoint's EMA when it has one, unless
    ``cli_flags.use_ema`` is False. Model flags of `cli_flags` that differ from the
    checkpoint's are reported with a warning, never used. An unreadable checkpoint is an
    error that names ``--check_point=STEP`` and the other steps present.
    """
    from yt8m.export import is_exported_model, load_exported_model  # it imports this module

    if is_exported_model(train_dir):
        checkpoint = load_exported_model(train_dir)
    else:
        checkpoint = _load_chosen(train_dir, find_checkpoint(train_dir, check_point))
    warn_flag_differences(cli_flags, checkpoint)
    model = build_model(checkpoint.flags)
    model.load_state_dict(prediction_state(checkpoint, cli_flags.use_ema))
    return model.to(device).eval(), checkpoint
