"""Input transforms (fidelity.md §2): dequantize, zero padding, L2 over each frame's vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yt8m.data.features import L2Features, WillowFrames, dequantize, real_rows


def reference(frames: np.ndarray, num_frames: np.ndarray) -> np.ndarray:
    """fidelity.md §2 step by step in float64: dequantize the real frames, pad with zero
    rows, then TensorFlow's l2_normalize: x * rsqrt(max(sum(x^2), 1e-12))."""
    out = np.zeros(frames.shape, np.float64)
    for b, n in enumerate(num_frames):
        out[b, :n] = frames[b, :n] * (4 / 255) + (4 / 512 - 2)
    square_sum = (out**2).sum(-1, keepdims=True)
    return out / np.sqrt(np.maximum(square_sum, 1e-12))


def test_dequantize_maps_bytes_to_the_original_range():
    q = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)
    expected = [-2 + 4 / 512, -2 + 4 / 512 + 4 / 255, 128 * 4 / 255 + 4 / 512 - 2, 2 + 4 / 512]
    torch.testing.assert_close(dequantize(q), torch.tensor(expected, dtype=torch.float32))


def test_frame_inputs_match_the_reference_and_padding_stays_zero():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 5, 7), dtype=np.uint8)
    frames[1, 3:] = 200  # bytes in padding rows must not leak through
    num_frames = np.array([5, 3, 0])
    got = WillowFrames().all_frames(torch.from_numpy(frames), torch.from_numpy(num_frames))
    assert got.dtype == torch.float32 and got.shape == (3, 5, 7)
    np.testing.assert_allclose(got.numpy(), reference(frames, num_frames), rtol=1e-5, atol=1e-7)
    assert torch.all(got[1, 3:] == 0) and torch.all(got[2] == 0)
    torch.testing.assert_close(got[0].norm(dim=-1), torch.ones(5))


@pytest.mark.parametrize("cuts", [(4,), (1, 6), (2, 3, 5)])
def test_channel_blocks_are_normalised_by_the_whole_frame(cuts):
    """The pooling models transform each branch's channels on its own: the norm is still
    that of the whole 7-vector, and the blocks together are the whole-row transform."""
    frames = torch.randint(0, 256, (4, 6, 7), dtype=torch.uint8, generator=torch.Generator())
    real = real_rows(torch.tensor([6, 2, 0, 5]), 6)
    whole = WillowFrames().rows(frames, real)
    bounds = [0, *cuts, 7]
    parts = [frames[..., a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    before = frames.clone()
    got = WillowFrames()(parts, real)
    assert [p.shape[-1] for p in got] == [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    torch.testing.assert_close(torch.cat(got, -1), whole, rtol=1e-6, atol=1e-7)
    assert torch.equal(frames, before)  # the input is not modified


def test_frame_at_the_quantization_midpoint_is_not_divided_by_zero():
    # no byte dequantizes to exactly 0, but a tiny vector must follow the epsilon rule
    frames = torch.full((1, 2, 1), 127, dtype=torch.uint8)
    value = 127 * 4 / 255 + 4 / 512 - 2
    got = WillowFrames().all_frames(frames, torch.tensor([2]))
    expected = value / max(abs(value), 1e-6)
    torch.testing.assert_close(got, torch.full((1, 2, 1), expected))


def test_video_level_features_are_l2_normalised_and_not_modified_in_place():
    features = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    got = L2Features()(features)
    torch.testing.assert_close(got, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    assert features[0, 0] == 3.0
