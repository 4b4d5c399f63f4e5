"""Frame sampling inside the frame-level models (fidelity.md §3)."""

import torch

from yt8m.models.frame_level import SoftDbofModelLF
from yt8m.models.sampling import (
    evenly_spaced_indices,
    random_frame_indices,
    random_sequence_indices,
    sample_frames,
)


def numbered(num_frames: list[int], max_frames: int = 12) -> torch.Tensor:
    """``[B, T, 1]`` frames holding ``t + 1`` for real rows and 0 for padding rows."""
    steps = torch.arange(1, max_frames + 1, dtype=torch.float32)
    real = steps.unsqueeze(0) <= torch.tensor(num_frames).unsqueeze(1)
    return (steps * real).unsqueeze(-1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_frames_are_uniform_with_replacement_and_never_padding():
    num_frames = torch.tensor([5, 1, 12])
    index = random_frame_indices(num_frames, 20000, gen())
    assert (index >= 0).all() and (index < num_frames.unsqueeze(1)).all()
    counts = torch.bincount(index[0], minlength=5).float()
    assert (counts - 4000).abs().max() < 300  # ~6 standard deviations
    assert (index[1] == 0).all()
    assert torch.bincount(index[2], minlength=12).min() > 1400
    # With replacement: 6 draws from 5 frames must repeat; draws are not sorted.
    few = random_frame_indices(torch.tensor([5]), 6, gen(1))
    assert few.unique().numel() < 6
    assert not (index[2, 1:] >= index[2, :-1]).all()


def test_sampled_rows_are_real_frames():
    inputs = numbered([3, 7, 12])
    out = sample_frames(inputs, torch.tensor([3, 7, 12]), 50, random_frames=True, generator=gen())
    assert out.shape == (3, 50, 1)
    assert (out > 0).all()
    assert (out[0] <= 3).all() and (out[1] <= 7).all()


def test_video_without_frames_reads_row_zero():
    index = random_frame_indices(torch.tensor([0]), 4, gen())
    assert (index == 0).all()
    index = random_sequence_indices(torch.tensor([0]), 4, gen())
    assert (index == 0).all()


def test_generator_makes_draws_reproducible():
    num_frames = torch.tensor([300, 17])
    a = random_frame_indices(num_frames, 30, gen(7))
    b = random_frame_indices(num_frames, 30, gen(7))
    c = random_frame_indices(num_frames, 30, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_sequence_is_consecutive_and_repeats_the_last_real_frame():
    index = random_sequence_indices(torch.tensor([3]), 6, gen())
    assert index.tolist() == [[0, 1, 2, 2, 2, 2]]  # start 0 is the only one possible
    starts = random_sequence_indices(torch.tensor([10] * 4000), 4, gen())
    assert ((starts[:, 1:] - starts[:, :-1]) == 1).all()
    counts = torch.bincount(starts[:, 0], minlength=7)
    assert counts.numel() == 7  # start in 0 .. num_frames - n
    assert counts.min() > 450  # uniform: ~571 each


def test_random_sequence_through_sample_frames():
    inputs = numbered([2, 12])
    out = sample_frames(inputs, torch.tensor([2, 12]), 4, random_frames=False, generator=gen())
    assert out[0, :, 0].tolist() == [1, 2, 2, 2]
    steps = out[1, :, 0]
    assert ((steps[1:] - steps[:-1]) == 1).all()


def test_evenly_spaced_spreads_the_real_frames():
    assert evenly_spaced_indices(torch.tensor([10]), 5).tolist() == [[0, 2, 4, 6, 8]]
    assert evenly_spaced_indices(torch.tensor([2]), 4).tolist() == [[0, 0, 1, 1]]


def test_deterministic_option_applies_to_evaluation_only():
    torch.manual_seed(0)
    model = SoftDbofModelLF(3, (4, 2), iterations=8, cluster_size=16, hidden_size=4, relu=False)
    model.eval()
    frames = torch.randint(0, 256, (2, 12, 6), generator=gen(9)) * (numbered([9, 4]) > 0)
    inputs = frames.to(torch.uint8)
    num_frames = torch.tensor([9, 4])
    faithful = [model(inputs, num_frames, gen(s)) for s in (1, 2)]
    assert not torch.equal(*faithful)  # the original samples at inference too
    model.deterministic_sampling = True
    assert torch.equal(model(inputs, num_frames, gen(1)), model(inputs, num_frames, gen(2)))
    model.train()
    assert not torch.equal(model(inputs, num_frames, gen(1)), model(inputs, num_frames, gen(2)))
