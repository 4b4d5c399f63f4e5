"""Frame sampling inside the frame-level models (fidelity.md §3).

The original draws frames in training AND inference:

* random frames: ``index = floor(U[0,1) * num_frames)`` per draw, with replacement;
  never a padding row unless the video has no frame at all (then row 0, a zero row);
* random sequence: ``start = floor(U * (max(num_frames - n, 0) + 1))``,
  ``index = min(start + i, num_frames - 1)``: past the end the last real frame repeats.

`evenly_spaced_indices` is this project's optional deterministic evaluation mode.
All functions take ``inputs [B, T, D]`` and ``num_frames`` int64 ``[B]`` and return
``[B, n, D]`` (a fresh contiguous tensor).
"""

from __future__ import annotations

import torch


def random_frame_indices(
    num_frames: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[B, n]`` int64 indices drawn uniformly (with replacement) from each video's frames."""
    u = torch.rand(num_frames.shape[0], n, generator=generator, device=num_frames.device)
    index = (u * num_frames.unsqueeze(1).to(u.dtype)).long()
    # float32 rounding can reach num_frames for U close to 1; a frame-less video reads row 0.
    return torch.minimum(index, (num_frames.unsqueeze(1) - 1).clamp_min(0))


def random_sequence_indices(
    num_frames: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[B, n]`` consecutive indices from a random start, repeating the last real frame."""
    u = torch.rand(num_frames.shape[0], 1, generator=generator, device=num_frames.device)
    last = (num_frames.unsqueeze(1) - 1).clamp_min(0)
    starts = (u * ((num_frames.unsqueeze(1) - n).clamp_min(0) + 1).to(u.dtype)).long()
    offsets = torch.arange(n, device=num_frames.device).unsqueeze(0)
    return torch.minimum(starts + offsets, last)


def evenly_spaced_indices(num_frames: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, n]`` indices ``floor(i * num_frames / n)``: the video's frames spread evenly."""
    offsets = torch.arange(n, device=num_frames.device).unsqueeze(0)
    index = offsets * num_frames.unsqueeze(1) // n
    return torch.minimum(index, (num_frames.unsqueeze(1) - 1).clamp_min(0))


def gather_frames(
    inputs: torch.Tensor, index: torch.Tensor, start: int = 0, stop: int | None = None
) -> torch.Tensor:
    """Rows ``inputs[b, index[b, i], start:stop]`` as a contiguous ``[B, n, stop - start]``,
    with one flat index_select (a channel range costs no extra copy)."""
    batch, max_frames, width = inputs.shape
    rows = index + torch.arange(batch, device=index.device).unsqueeze(1) * max_frames
    channels = inputs.reshape(batch * max_frames, width)[:, start:stop]
    return channels.index_select(0, rows.reshape(-1)).view(batch, index.shape[1], -1)


def sample_indices(
    num_frames: torch.Tensor,
    n: int,
    max_frames: int,
    *,
    random_frames: bool,
    evenly_spaced: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``[B, n]`` frame indices: evenly spaced if asked, else random frames or a random
    sequence, from each video's first ``min(num_frames, max_frames)`` rows."""
    num_frames = num_frames.clamp(0, max_frames)
    if evenly_spaced:
        return evenly_spaced_indices(num_frames, n)
    if random_frames:
        return random_frame_indices(num_frames, n, generator)
    return random_sequence_indices(num_frames, n, generator)


def sample_frames(
    inputs: torch.Tensor,
    num_frames: torch.Tensor,
    n: int,
    *,
    random_frames: bool,
    evenly_spaced: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``[B, n, D]`` sampled frames of ``inputs [B, T, D]`` (see `sample_indices`)."""
    index = sample_indices(
        num_frames.to(inputs.device),
        n,
        inputs.shape[1],
        random_frames=random_frames,
        evenly_spaced=evenly_spaced,
        generator=generator,
    )
    return gather_frames(inputs, index)
