"""The CPU recurrence equals PyTorch's packed GRU/LSTM (fidelity.md §3: state after the
last real step of each video)."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from yt8m.models.recurrent import final_states


def _packed_reference(rnn, x, lengths):
    packed = pack_padded_sequence(x, lengths.clamp_min(1), batch_first=True, enforce_sorted=False)
    _, state = rnn(packed)
    keep = (lengths > 0).view(1, -1, 1).double()
    return tuple(s * keep for s in state) if isinstance(state, tuple) else state * keep


@pytest.mark.parametrize("kind", [nn.GRU, nn.LSTM])
def test_equals_packed_pytorch_layers(kind):
    torch.manual_seed(0)
    rnn = kind(6, 5, num_layers=2, batch_first=True).double()
    x = torch.randn(4, 7, 6, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 1, 0])
    ours = final_states(rnn, x, lengths)
    reference = _packed_reference(rnn, x, lengths)
    for a, b in zip(
        ours if kind is nn.LSTM else [ours],
        reference if kind is nn.LSTM else [reference],
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", [nn.GRU, nn.LSTM])
def test_frames_after_the_length_do_not_matter_and_gradients_match(kind):
    torch.manual_seed(1)
    rnn = kind(3, 4, num_layers=2, batch_first=True).double()
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([2, 5, 4])
    changed = x.clone()
    changed[0, 2:] = 100.0
    first = final_states(rnn, x, lengths)
    second = final_states(rnn, changed, lengths)
    flat = lambda s: torch.cat([t.flatten() for t in s]) if isinstance(s, tuple) else s.flatten()  # noqa: E731
    torch.testing.assert_close(flat(first), flat(second))
    flat(first).square().sum().backward()
    ours = [p.grad.clone() for p in rnn.parameters()]
    rnn.zero_grad()
    flat(_packed_reference(rnn, x, lengths)).square().sum().backward()
    for a, p in zip(ours, rnn.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-9, atol=1e-9)
