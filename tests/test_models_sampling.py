"""Frame sampling inside the frame-level models (fidelity.md §3), drawn by a counter-based
hash of a sampling key (integer arithmetic: the same frames on every device)."""

import hashlib

import pytest
import torch

from yt8m.models.frame_level import SoftDbofModelLF
from yt8m.models.sampling import (
    KeyStream,
    evenly_spaced_indices,
    random_frame_indices,
    random_sequence_indices,
    sample_frames,
    sampling_base,
    step_key,
    uniform_words,
)


def numbered(num_frames: list[int], max_frames: int = 12) -> torch.Tensor:
    """``[B, T, 1]`` frames holding ``t + 1`` for real rows and 0 for padding rows."""
    steps = torch.arange(1, max_frames + 1, dtype=torch.float32)
    real = steps.unsqueeze(0) <= torch.tensor(num_frames).unsqueeze(1)
    return (steps * real).unsqueeze(-1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def key(seed: int = 0) -> torch.Tensor:
    return sampling_base(seed)


def test_random_frames_are_uniform_with_replacement_and_never_padding():
    num_frames = torch.tensor([5, 1, 12])
    index = random_frame_indices(num_frames, 20000, key())
    assert (index >= 0).all() and (index < num_frames.unsqueeze(1)).all()
    counts = torch.bincount(index[0], minlength=5).float()
    assert (counts - 4000).abs().max() < 300  # ~6 standard deviations
    assert (index[1] == 0).all()
    assert torch.bincount(index[2], minlength=12).min() > 1400
    # With replacement: 6 draws from 5 frames must repeat; draws are not sorted.
    few = random_frame_indices(torch.tensor([5]), 6, key(1))
    assert few.unique().numel() < 6
    assert not (index[2, 1:] >= index[2, :-1]).all()


def test_sampled_rows_are_real_frames():
    inputs = numbered([3, 7, 12])
    out = sample_frames(inputs, torch.tensor([3, 7, 12]), 50, random_frames=True, key=key())
    assert out.shape == (3, 50, 1)
    assert (out > 0).all()
    assert (out[0] <= 3).all() and (out[1] <= 7).all()


def test_video_without_frames_reads_row_zero():
    index = random_frame_indices(torch.tensor([0]), 4, key())
    assert (index == 0).all()
    index = random_sequence_indices(torch.tensor([0]), 4, key())
    assert (index == 0).all()


def test_the_key_makes_draws_reproducible():
    num_frames = torch.tensor([300, 17])
    a = random_frame_indices(num_frames, 30, key(7))
    b = random_frame_indices(num_frames, 30, key(7))
    c = random_frame_indices(num_frames, 30, key(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_sequence_is_consecutive_and_repeats_the_last_real_frame():
    index = random_sequence_indices(torch.tensor([3]), 6, key())
    assert index.tolist() == [[0, 1, 2, 2, 2, 2]]  # start 0 is the only one possible
    starts = random_sequence_indices(torch.tensor([10] * 4000), 4, key())
    assert ((starts[:, 1:] - starts[:, :-1]) == 1).all()
    counts = torch.bincount(starts[:, 0], minlength=7)
    assert counts.numel() == 7  # start in 0 .. num_frames - n
    assert counts.min() > 450  # uniform: ~571 each


def test_random_sequence_through_sample_frames():
    inputs = numbered([2, 12])
    out = sample_frames(inputs, torch.tensor([2, 12]), 4, random_frames=False, key=key())
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
    faithful = [model(inputs, num_frames, key(s)) for s in (1, 2)]
    assert not torch.equal(*faithful)  # the original samples at inference too
    model.deterministic_sampling = True
    assert torch.equal(model(inputs, num_frames, key(1)), model(inputs, num_frames, key(2)))
    model.train()
    assert not torch.equal(model(inputs, num_frames, key(1)), model(inputs, num_frames, key(2)))


# ---- the counter-based draws ------------------------------------------------------------

M32 = 2**32 - 1


def mix32_reference(h: int) -> int:
    """The hash in Python's unbounded integers (no tensor, no device)."""
    h ^= h >> 16
    h = (h * 0x45D9F3B) & M32
    h ^= h >> 16
    h = (h * 0x45D9F3B) & M32
    return h ^ (h >> 16)


def test_draws_are_exact_integer_arithmetic_so_every_device_draws_the_same():
    """The sampled indices are a function of integers computed without rounding or overflow
    (every intermediate below 2**63), here equal to the same function in Python's integers:
    a GPU, whose random generators differ from the CPU's, draws the same frames."""
    base = sampling_base(18447, rank=3)
    digest = hashlib.blake2b(b"18447,3,train", digest_size=8).digest()
    assert base.tolist() == [
        int.from_bytes(digest[:4], "little"),
        int.from_bytes(digest[4:], "little"),
    ]
    k = step_key(base, 2**33 + 5)
    k0 = mix32_reference(base[0].item() ^ 5)
    k1 = mix32_reference(base[1].item() ^ mix32_reference(2 ^ k0))
    assert k.tolist() == [k0, k1]
    num_frames = torch.tensor([300, 17, 1, 0])
    words = uniform_words(k, 4, 30)
    index = random_frame_indices(num_frames, 30, k)
    for b in range(4):
        row = mix32_reference((b + k0) & M32)
        for i in range(30):
            word = mix32_reference(mix32_reference(((i * 0x9E3779B9) & M32) ^ row) ^ k1)
            assert words[b, i] == word
            assert index[b, i] == (word * int(num_frames[b])) >> 32


def test_keys_take_any_seed_and_count_steps_on_a_tensor():
    """--seed of 18447 or more overflowed the old per-step generator seed; the key takes any
    integer. A step given as a tensor (the trainer counts steps on the device) keys alike."""
    for seed in (0, 18447, 2**70, -3):
        base = sampling_base(seed)
        assert base.dtype == torch.int64 and ((base >= 0) & (base <= M32)).all()
    base = sampling_base(5)
    assert torch.equal(step_key(base, 7), step_key(base, torch.tensor(7)))
    keys = {tuple(step_key(base, s).tolist()) for s in range(1000)}
    assert len(keys) == 1000
    assert not torch.equal(sampling_base(5, 0), sampling_base(5, 1))
    assert not torch.equal(sampling_base(5, 0, "train"), sampling_base(5, 0, "predict"))


@pytest.mark.parametrize("n", [1, 7, 300])
def test_draws_are_uniform_and_independent(n):
    """Counts per frame within 6 standard deviations of uniform; a draw says nothing of the
    next one in the video or of the same draw in the next video (pairs uniform too)."""
    draws = 120_000 // n
    index = random_frame_indices(torch.full((draws,), n), 1, key(1)).view(-1)
    counts = torch.bincount(index, minlength=n).double()
    expected = draws / n
    assert (counts - expected).abs().max() <= 6 * expected**0.5 + 1
    pairs = random_frame_indices(torch.full((400,), 10), 300, key(2))
    for first, second in ((pairs[:, :-1], pairs[:, 1:]), (pairs[:-1], pairs[1:])):
        joint = torch.bincount((first * 10 + second).reshape(-1), minlength=100).double()
        expected = first.numel() / 100
        assert (joint - expected).abs().max() <= 6 * expected**0.5


def test_a_key_stream_gives_each_steps_key_from_any_start():
    """The trainer's keys (blocks of KeyStream.BLOCK made at once) are step_key's, also when
    a resumed run starts inside a block."""
    base = sampling_base(4, rank=1)
    for start in (0, 1000, 1023):
        stream = KeyStream(base, start, "cpu")
        for step in range(start, start + 30):
            assert stream.next().tolist() == step_key(base, step).tolist()
