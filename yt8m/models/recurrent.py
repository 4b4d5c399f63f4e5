"""The original's recurrent layers: TensorFlow's cells, stacked and run over variable lengths.

The original builds ``tf.contrib.rnn.MultiRNNCell([cell] * layers, state_is_tuple=False)``
and runs it with ``tf.nn.dynamic_rnn(..., sequence_length=num_frames)`` (docs/fidelity.md
§4.4). The cells here are TensorFlow's, parameter for parameter:

* `BasicLSTMCell` (``forget_bias=1.0``): ``[i, j, f, o] = [x, h] @ kernel + bias``,
  ``c' = c * sigmoid(f + 1) + sigmoid(i) * tanh(j)``, ``h' = tanh(c') * sigmoid(o)``;
  state ``[c, h]``. The 1.0 is a constant, not a trained bias.
* `GRUCell`: ``[r, u] = sigmoid([x, h] @ gates_kernel + gates_bias)`` (gates bias 1.0
  initially), ``c = tanh([x, r * h] @ candidate_kernel + candidate_bias)``,
  ``h' = u * h + (1 - u) * c``: the reset gate multiplies the state *before* the
  recurrent product (PyTorch's and cuDNN's GRU multiply after it, another function).

Each kernel is one tensor of TensorFlow's shape ``[input + cells, gates * cells]`` (input
rows first) and each bias another, so the parameters are the original's variables one for
one: their number, their initialisation (Glorot uniform over the whole kernel) and the
per-variable gradient clipping of training (`yt8m.optim.clip_per_tensor_`) are the
original's.

`StackedRNN` walks the steps itself on every device: the inputs of all steps go through
one matrix product per kernel, then each step costs one product per kernel with the state
(the reason the CPU training step is tens of times faster than PyTorch's packed layers,
whose backward scatters every step into a full-size zero tensor). The state kept for a
video is the one after its last real step; a video of length 0 keeps the zero initial state.
Under autocast the layers compute in float32 (the state passes through up to 300 steps;
bfloat16 would round it at every one); their matrix products follow PyTorch's float32
settings, so TF32 is off unless the caller enables it. On the CPU the steps after every
video's end are skipped (one read of the lengths); on other devices every row is walked and
nothing waits for the device.
"""

from __future__ import annotations

import torch
from torch import nn

from yt8m.errors import YT8MError
from yt8m.models.layers import glorot_parameter

State = tuple[torch.Tensor, ...]
Kernels = tuple[torch.Tensor, ...]  # views of rows of a cell's kernels, one per kernel


class RecurrentCheckpointError(YT8MError):
    """A GRU/LSTM checkpoint written with PyTorch's layers, before the TensorFlow cells."""


class BasicLSTMCell(nn.Module):
    """TensorFlow's BasicLSTMCell(forget_bias=1.0, state_is_tuple=False).

    kernel ``[input_size + cells, 4 cells]`` (gates i, j, f, o), bias ``[4 cells]`` (zeros).
    State ``(c, h)``, each ``[B, cells]``; TensorFlow's concatenated state is ``[c, h]``.
    """

    def __init__(self, input_size: int, cells: int) -> None:
        super().__init__()
        self.input_size, self.cells = input_size, cells
        self.kernel = glorot_parameter(input_size + cells, 4 * cells)
        self.bias = nn.Parameter(torch.zeros(4 * cells))
        forget = torch.zeros(4 * cells)
        forget[2 * cells : 3 * cells] = 1.0  # the constant forget bias, added to f
        self.register_buffer("forget_bias", forget, persistent=False)

    def kernels(self) -> tuple[Kernels, Kernels]:
        """The kernel's input rows ``[input_size, 4 cells]`` and state rows ``[cells, 4 cells]``."""
        input_rows, state_rows = self.kernel.split([self.input_size, self.cells])
        return (input_rows,), (state_rows,)

    def project(self, x: torch.Tensor, input_rows: Kernels) -> tuple[torch.Tensor, ...]:
        """``x [N, input_size]`` -> ``x @ input rows + bias + forget [N, 4 cells]``."""
        return (torch.addmm(self.bias + self.forget_bias, x, input_rows[0]),)

    def initial_state(self, like: torch.Tensor) -> State:
        zeros = like.new_zeros(like.shape[0], self.cells)
        return zeros, zeros

    def step(self, projected: tuple[torch.Tensor, ...], state: State, state_rows: Kernels) -> State:
        """One step from the projected input ``[B, 4 cells]`` and ``(c, h)``: ``(c', h')``."""
        c, h = state
        gates = torch.addmm(projected[0], h, state_rows[0])
        i, j, f, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(j)
        return c, torch.tanh(c) * torch.sigmoid(o)


class GRUCell(nn.Module):
    """TensorFlow's GRUCell.

    gates_kernel ``[input_size + cells, 2 cells]`` (r, u), gates_bias ``[2 cells]`` (ones),
    candidate_kernel ``[input_size + cells, cells]``, candidate_bias ``[cells]`` (zeros).
    State ``(h,)``, ``[B, cells]``.
    """

    def __init__(self, input_size: int, cells: int) -> None:
        super().__init__()
        self.input_size, self.cells = input_size, cells
        self.gates_kernel = glorot_parameter(input_size + cells, 2 * cells)
        self.gates_bias = nn.Parameter(torch.ones(2 * cells))
        self.candidate_kernel = glorot_parameter(input_size + cells, cells)
        self.candidate_bias = nn.Parameter(torch.zeros(cells))

    def kernels(self) -> tuple[Kernels, Kernels]:
        """Both kernels' input rows, then both kernels' state rows."""
        sizes = [self.input_size, self.cells]
        gates_input, gates_state = self.gates_kernel.split(sizes)
        candidate_input, candidate_state = self.candidate_kernel.split(sizes)
        return (gates_input, candidate_input), (gates_state, candidate_state)

    def project(self, x: torch.Tensor, input_rows: Kernels) -> tuple[torch.Tensor, ...]:
        """``x [N, input_size]`` -> the input's share of the gates and of the candidate."""
        return (
            torch.addmm(self.gates_bias, x, input_rows[0]),
            torch.addmm(self.candidate_bias, x, input_rows[1]),
        )

    def initial_state(self, like: torch.Tensor) -> State:
        return (like.new_zeros(like.shape[0], self.cells),)

    def step(self, projected: tuple[torch.Tensor, ...], state: State, state_rows: Kernels) -> State:
        """One step from the projected inputs ``([B, 2 cells], [B, cells])`` and ``(h,)``."""
        (h,) = state
        gates = torch.sigmoid(torch.addmm(projected[0], h, state_rows[0]))
        reset, update = gates.chunk(2, 1)
        candidate = torch.tanh(torch.addmm(projected[1], reset * h, state_rows[1]))
        return (candidate + update * (h - candidate),)


class StackedRNN(nn.Module):
    """``MultiRNNCell(cells, state_is_tuple=False)`` run by ``dynamic_rnn`` with lengths.

    ``forward(x [B, T, D], lengths int64 [B] in [0, T]) -> [B, state size]``: the final
    state of every layer after each video's last real step, concatenated in layer order
    (LSTM: ``[c1, h1, c2, h2, ...]``; GRU: ``[h1, h2, ...]``), as the original's state.
    """

    def __init__(self, cells: list[nn.Module]) -> None:
        super().__init__()
        self.cells = nn.ModuleList(cells)
        self.register_load_state_dict_pre_hook(_refuse_pytorch_layers)

    # Under torch.compile the steps run as written: traced, 300 steps of two layers would be
    # thousands of operations to compile (the rest of the model is compiled as usual).
    @torch.compiler.disable
    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self._final_states(x, lengths)

    def _final_states(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":  # steps after every video's end change nothing
            x = x[:, : max(int(lengths.max()), 1)]
        batch, steps = x.shape[0], x.shape[1]
        last = (lengths.clamp(1, steps) - 1).view(1, batch, 1)
        has_frames = (lengths > 0).view(batch, 1).to(x.dtype)
        finals = []
        layer_input, time_major = x.reshape(batch * steps, -1), False
        for cell in self.cells:
            # Each kernel split once per forward: its gradient is assembled once from the
            # input rows' and the state rows' (summed over all steps), not per step.
            input_rows, state_rows = cell.kernels()
            per_step = [
                p.view(steps, batch, -1).unbind(0)
                if time_major
                else p.view(batch, steps, -1).unbind(1)
                for p in cell.project(layer_input, input_rows)
            ]
            state = cell.initial_state(x)
            states = []
            for projected in zip(*per_step, strict=True):
                state = cell.step(projected, state, state_rows)
                states.append(state)
            stacked = [torch.stack(part, 0) for part in zip(*states, strict=True)]  # [T, B, H]
            finals += [_at_last_step(part, last) * has_frames for part in stacked]
            layer_input, time_major = stacked[-1].view(steps * batch, -1), True  # h of each step
        return torch.cat(finals, 1)


def _at_last_step(per_step: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """per_step ``[T, B, H]`` -> the row of each video's last step ``[B, H]``."""
    index = last.expand(1, per_step.shape[1], per_step.shape[2])
    return per_step.gather(0, index).squeeze(0)


def _refuse_pytorch_layers(
    module: nn.Module, state_dict: dict, prefix: str, *_: object, **__: object
) -> None:
    """A state dict with PyTorch's nn.GRU/nn.LSTM tensors is one written before the
    TensorFlow cells: its parameters are not the original's (two biases per gate, and for
    the GRU another function), so it is refused with the reason rather than a key list."""
    old = sorted(
        k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "cells.")
    )
    if old:
        raise RecurrentCheckpointError(
            f"the checkpoint's recurrent layers are PyTorch's ({old[0]} and {len(old) - 1} "
            "more tensors): it was written before GruModel and LstmModel became TensorFlow's "
            "GRUCell and BasicLSTMCell (one kernel and one bias per gate, the original's GRU "
            "function; docs/fidelity.md §4.4) and cannot be loaded; train the model again "
            "(yt8m train --start_new_model)"
        )
