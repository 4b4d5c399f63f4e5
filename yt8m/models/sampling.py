"""Frame sampling inside the frame-level models (fidelity.md §3).

The original draws frames in training AND inference:

* random frames: ``index = floor(U[0,1) * num_frames)`` per draw, with replacement;
  never a padding row unless the video has no frame at all (then row 0, a zero row);
* random sequence: ``start = floor(U * (max(num_frames - n, 0) + 1))``,
  ``index = min(start + i, num_frames - 1)``: past the end the last real frame repeats.

`evenly_spaced_indices` is this project's optional deterministic evaluation mode.

The draws come from a counter-based hash, not a random generator: a **sampling key**
(int64 ``[2]``, two 32-bit words, on the inputs' device) and the draw's position (video
row b, draw i) give a 32-bit word ``w``, and ``U * m`` is computed as ``(w * m) >> 32``. Every
step is integer arithmetic whose intermediate values stay below 2**63, so the same key draws
the same frames on a CPU and on a GPU, and torch.compile traces the draws without a graph
break. The trainer derives one key per step from (seed, rank, step) with `sampling_base`
and `step_key` (`KeyStream`: the keys of a thousand steps at a time, made on the device);
`random_key` draws a key when none is given.
"""

from __future__ import annotations

import hashlib

import torch

MASK32 = 0xFFFFFFFF
_MULTIPLIER = 0x45D9F3B  # < 2**27: a 32-bit word times it stays below 2**59
_GOLDEN = 0x9E3779B9  # spreads the draw counter over the 32 bits


def mix32(h: torch.Tensor) -> torch.Tensor:
    """A bijective avalanche hash of 32-bit words held in int64 (values in [0, 2**32))."""
    h = h ^ (h >> 16)
    h = (h * _MULTIPLIER) & MASK32
    h = h ^ (h >> 16)
    h = (h * _MULTIPLIER) & MASK32
    return h ^ (h >> 16)


def sampling_base(seed: int, rank: int = 0, purpose: str = "train") -> torch.Tensor:
    """int64 ``[2]`` (CPU): the key words of one rank's stream of keys, from any integers
    (Python's, so no seed overflows); `purpose` separates training from prediction."""
    digest = hashlib.blake2b(f"{seed},{rank},{purpose}".encode(), digest_size=8).digest()
    return torch.tensor(
        [int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")]
    )


def step_key(base: torch.Tensor, step: torch.Tensor | int) -> torch.Tensor:
    """The key of step `step` of the stream `base`: int64 ``[2]``; for an int64 tensor of
    steps ``[n]`` on base's device, their keys ``[2, n]``."""
    step = torch.as_tensor(step, dtype=torch.int64, device=base.device)
    first = mix32(base[0] ^ (step & MASK32))
    second = mix32(base[1] ^ mix32(((step >> 32) & MASK32) ^ first))
    return torch.stack([first, second])


def random_key(device: torch.device | str = "cpu") -> torch.Tensor:
    """A key drawn from torch's generator of `device` (when a caller gives none)."""
    return torch.randint(0, MASK32 + 1, (2,), dtype=torch.int64, device=device)


def uniform_words(key: torch.Tensor, rows: int, n: int) -> torch.Tensor:
    """int64 ``[rows, n]`` of independent uniform 32-bit words: draw i of video row b."""
    row = torch.arange(rows, device=key.device).unsqueeze(1)
    draw = torch.arange(n, device=key.device).unsqueeze(0)
    row_words = mix32((row + key[0]) & MASK32)
    return mix32(mix32(((draw * _GOLDEN) & MASK32) ^ row_words) ^ key[1])


def _scaled(words: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """``floor(U * bound)`` for U = words / 2**32 (bound >= 0 and below 2**31)."""
    return (words * bound) >> 32


def random_frame_indices(
    num_frames: torch.Tensor, n: int, key: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, n]`` int64 indices drawn uniformly (with replacement) from each video's frames;
    a frame-less video reads row 0."""
    key = random_key(num_frames.device) if key is None else key
    words = uniform_words(key, num_frames.shape[0], n)
    return _scaled(words, num_frames.unsqueeze(1).clamp_min(0))


def random_sequence_indices(
    num_frames: torch.Tensor, n: int, key: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, n]`` consecutive indices from a random start, repeating the last real frame."""
    key = random_key(num_frames.device) if key is None else key
    words = uniform_words(key, num_frames.shape[0], 1)
    last = (num_frames.unsqueeze(1) - 1).clamp_min(0)
    starts = _scaled(words, (num_frames.unsqueeze(1) - n).clamp_min(0) + 1)
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
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, n]`` frame indices: evenly spaced if asked, else random frames or a random
    sequence, from each video's first ``min(num_frames, max_frames)`` rows."""
    num_frames = num_frames.clamp(0, max_frames)
    if evenly_spaced:
        return evenly_spaced_indices(num_frames, n)
    if random_frames:
        return random_frame_indices(num_frames, n, key)
    return random_sequence_indices(num_frames, n, key)


def sample_frames(
    inputs: torch.Tensor,
    num_frames: torch.Tensor,
    n: int,
    *,
    random_frames: bool,
    evenly_spaced: bool = False,
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, n, D]`` sampled frames of ``inputs [B, T, D]`` (see `sample_indices`)."""
    index = sample_indices(
        num_frames.to(inputs.device),
        n,
        inputs.shape[1],
        random_frames=random_frames,
        evenly_spaced=evenly_spaced,
        key=key,
    )
    return gather_frames(inputs, index)


class KeyStream:
    """The keys of one stream, step after step: `next` returns ``step_key(base, step)`` for
    step `start`, `start` + 1, ... The keys of `BLOCK` steps are computed at once on the
    device (from a range, so nothing is copied from the host); a step takes a view."""

    BLOCK = 1024

    def __init__(self, base: torch.Tensor, start: int, device: torch.device | str) -> None:
        self.base = base.to(device)
        self.step = start
        self._block: torch.Tensor | None = None  # int64 [2, BLOCK]

    def next(self) -> torch.Tensor:
        offset = self.step % self.BLOCK
        if self._block is None or offset == 0:
            steps = torch.arange(self.BLOCK, device=self.base.device) + (self.step - offset)
            self._block = step_key(self.base, steps)
        self.step += 1
        return self._block[:, offset]
