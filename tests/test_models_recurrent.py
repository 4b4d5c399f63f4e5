"""The recurrent models are TensorFlow's cells (docs/fidelity.md §4.4): checked against a
numpy transcription of GRUCell, BasicLSTMCell, MultiRNNCell and dynamic_rnn."""

import math

import numpy as np
import pytest
import torch

from yt8m.data.features import WillowFrames
from yt8m.models import frame_level as fl
from yt8m.models.recurrent import (
    BasicLSTMCell,
    GRUCell,
    RecurrentCheckpointError,
    StackedRNN,
)
from yt8m.models.sampling import sample_frames, sampling_base
from yt8m.optim import clip_per_tensor_

V = 5


# ---- numpy transcription of TensorFlow's cells (float64) -----------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def tf_gru_cell(x, state, p):
    """tf.nn.rnn_cell.GRUCell: returns (output, new state)."""
    h = state
    value = sigmoid(np.concatenate([x, h], 1) @ p["gates_kernel"] + p["gates_bias"])
    r, u = np.split(value, 2, axis=1)
    c = np.tanh(np.concatenate([x, r * h], 1) @ p["candidate_kernel"] + p["candidate_bias"])
    new_h = u * h + (1 - u) * c
    return new_h, new_h


def tf_basic_lstm_cell(x, state, p, forget_bias=1.0):
    """tf.nn.rnn_cell.BasicLSTMCell(state_is_tuple=False): state is [c, h]."""
    c, h = np.split(state, 2, axis=1)
    i, j, f, o = np.split(np.concatenate([x, h], 1) @ p["kernel"] + p["bias"], 4, axis=1)
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * np.tanh(j)
    new_h = np.tanh(new_c) * sigmoid(o)
    return new_h, np.concatenate([new_c, new_h], 1)


def tf_dynamic_rnn_final_state(cells, params, state_sizes, x, lengths):
    """dynamic_rnn(MultiRNNCell(cells, state_is_tuple=False), x, sequence_length=lengths)'s
    final state: past a video's length its state is copied through unchanged."""
    batch, steps, _ = x.shape
    states = [np.zeros((batch, size)) for size in state_sizes]
    for t in range(steps):
        alive = (t < lengths)[:, None]
        layer_input = x[:, t]
        for k, (cell, p) in enumerate(zip(cells, params, strict=True)):
            output, new_state = cell(layer_input, states[k], p)
            states[k] = np.where(alive, new_state, states[k])
            layer_input = output
    return np.concatenate(states, 1)


def reference(rnn: StackedRNN, x: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
    """The transcription's final state with `rnn`'s weights."""
    cells, params, sizes = [], [], []
    for cell in rnn.cells:
        params.append({n: t.detach().double().numpy() for n, t in cell.named_parameters()})
        lstm = isinstance(cell, BasicLSTMCell)
        cells.append(tf_basic_lstm_cell if lstm else tf_gru_cell)
        sizes.append(2 * cell.cells if lstm else cell.cells)
    return tf_dynamic_rnn_final_state(cells, params, sizes, x.double().numpy(), lengths.numpy())


def frames(lengths: list[int], steps: int = 7, width: int = 6, seed: int = 0):
    x = torch.randn(len(lengths), steps, width, generator=torch.Generator().manual_seed(seed))
    n = torch.tensor(lengths)
    return x * (torch.arange(steps) < n.unsqueeze(1)).unsqueeze(-1), n


def uint8_frames(lengths: list[int], steps: int = 7, width: int = 6, seed: int = 0):
    """The loader's uint8 frames (zero bytes after each length) and the model input that
    the models' default transform makes of them (fidelity.md §2)."""
    q = torch.randint(
        0, 256, (len(lengths), steps, width), generator=torch.Generator().manual_seed(seed)
    )
    n = torch.tensor(lengths)
    q = (q * (torch.arange(steps) < n.unsqueeze(1)).unsqueeze(-1)).to(torch.uint8)
    return q, n, WillowFrames().all_frames(q, n)


def stack(cell: type, layers: int, width: int = 6, cells: int = 5) -> StackedRNN:
    torch.manual_seed(0)
    stacked = StackedRNN([cell(width if k == 0 else cells, cells) for k in range(layers)])
    with torch.no_grad():  # biases away from their initial values, so each one is checked
        for p in stacked.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape) * 0.5)
    return stacked


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", [GRUCell, BasicLSTMCell])
def test_cells_equal_tensorflows_equations_over_variable_lengths(cell, layers):
    """docs/fidelity.md §4.4: one layer and two, lengths 7, 3, 1 and 0, to 1e-5."""
    rnn = stack(cell, layers)
    x, lengths = frames([7, 3, 1, 0])
    got = rnn(x, lengths)
    np.testing.assert_allclose(got.detach().numpy(), reference(rnn, x, lengths), atol=1e-5)
    assert (got[3] == 0).all()  # no frame: the zero initial state


@pytest.mark.parametrize("cell", [GRUCell, BasicLSTMCell])
def test_gradients_of_the_step_loop_are_exact(cell):
    """docs/fidelity.md §4.4: the step loop's backward pass (float64 finite differences)."""
    rnn = stack(cell, 2, width=3, cells=2).double()
    x, lengths = frames([4, 2, 0], steps=4, width=3)
    x = x.double().requires_grad_()
    params = tuple(rnn.parameters())

    def final_state(x, *weights):
        out = torch.func.functional_call(
            rnn, dict(zip([n for n, _ in rnn.named_parameters()], weights, strict=True)),
            (x, lengths),
        )  # fmt: skip
        return out

    assert torch.autograd.gradcheck(final_state, (x, *params))


def test_frames_after_the_length_do_not_matter():
    """docs/fidelity.md §3: the state is the one after the last real step."""
    rnn = stack(BasicLSTMCell, 2)
    x, lengths = frames([2, 7, 4])
    changed = x.clone()
    changed[0, 2:] = 100.0
    torch.testing.assert_close(rnn(x, lengths), rnn(changed, lengths), rtol=0, atol=0)


def model_representation(model, inputs, lengths, key=None) -> torch.Tensor:
    seen = []
    handle = model.classifier.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    model(inputs, lengths, key)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("cls", [fl.GruModel, fl.LstmModel])
def test_two_layer_models_give_the_originals_representation(cls, backward):
    """docs/fidelity.md §4.4: the full two-layer models' classifier input is TensorFlow's
    final state (``[c1, h1, c2, h2]`` / ``[h1, h2]``) after each video's last real frame,
    read forwards or backwards, to 1e-5; the loader's uint8 frames go through the model's
    own input transform (fidelity.md §2)."""
    torch.manual_seed(0)
    model = cls(V, 6, cells=5, layers=2, backward=backward)
    q, lengths, x = uint8_frames([7, 3, 1, 0], seed=1)
    got = model_representation(model, q, lengths)
    for b, n in enumerate(lengths.tolist()):
        video = x[b : b + 1, :n].flip(1) if backward else x[b : b + 1, :n]
        expected = reference(model.rnn, video, torch.tensor([n]))
        np.testing.assert_allclose(got[b : b + 1].detach().numpy(), expected, atol=1e-5)
    assert got.shape == (4, (4 if cls is fl.LstmModel else 2) * 5)


def test_lstm_random_frames_reads_iterations_frames_up_to_the_length():
    """docs/fidelity.md §3: `--lstm_random_sequence` reads `iterations` sampled frames."""
    torch.manual_seed(0)
    model = fl.LstmModel(V, 6, cells=4, layers=2, iterations=5, random_frames=True)
    q, lengths, x = uint8_frames([3, 7])
    got = model_representation(model, q, lengths, sampling_base(2))
    sampled = sample_frames(x, lengths, 5, random_frames=True, key=sampling_base(2))
    expected = reference(model.rnn, sampled, lengths.clamp_max(5))
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-5)


def test_parameters_are_the_originals_variables():
    """docs/fidelity.md §4.4, §7: per layer the original's variables, with their shapes and
    initial values: Glorot uniform kernels over ``[in + cells, gates * cells]``, GRU gate
    biases 1.0, every other bias 0 (the LSTM's forget 1.0 is a constant, not a bias)."""
    torch.manual_seed(0)
    lstm = fl.LstmModel(V, 9, cells=4, layers=2).rnn
    gru = fl.GruModel(V, 9, cells=4, layers=2).rnn
    shapes = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters()}  # noqa: E731
    assert shapes(lstm) == {
        "cells.0.kernel": (13, 16), "cells.0.bias": (16,),
        "cells.1.kernel": (8, 16), "cells.1.bias": (16,),
    }  # fmt: skip
    assert shapes(gru) == {
        "cells.0.gates_kernel": (13, 8), "cells.0.gates_bias": (8,),
        "cells.0.candidate_kernel": (13, 4), "cells.0.candidate_bias": (4,),
        "cells.1.gates_kernel": (8, 8), "cells.1.gates_bias": (8,),
        "cells.1.candidate_kernel": (8, 4), "cells.1.candidate_bias": (4,),
    }  # fmt: skip
    assert (lstm.cells[0].bias == 0).all() and (gru.cells[1].candidate_bias == 0).all()
    assert (gru.cells[0].gates_bias == 1).all()
    limit = math.sqrt(6 / (13 + 16))
    kernel = lstm.cells[0].kernel
    assert kernel.abs().max() <= limit and kernel.abs().max() > 0.8 * limit
    assert gru.cells[1].candidate_kernel.abs().max() <= math.sqrt(6 / (8 + 4))


def test_clipping_treats_a_kernel_as_one_variable():
    """docs/fidelity.md §5.5: TensorFlow clips each variable on its own, and a layer's
    kernel is one variable holding the input rows and the recurrent rows. A gradient above
    the norm in the recurrent rows only scales the input rows too."""
    cell = GRUCell(3, 2)
    grad = torch.zeros(5, 4)
    grad[:3] = 0.01  # input rows: far below the norm on their own
    grad[3:, 0] = torch.tensor([3.0, 4.0])  # recurrent rows: norm 5
    cell.gates_kernel.grad = grad.clone()
    cell.gates_bias.grad = torch.full((4,), 0.1)  # its own variable: under the norm, kept
    clip_per_tensor_(cell.parameters(), 1.0)
    torch.testing.assert_close(cell.gates_kernel.grad, grad / grad.norm())
    assert cell.gates_kernel.grad[:3].abs().max() < 0.01
    assert (cell.gates_bias.grad == 0.1).all()


def test_recurrent_layers_compute_in_float32_under_autocast():
    """docs/fidelity.md §4.4: under bfloat16 autocast (``--amp``) the recurrence is float32."""
    rnn = stack(GRUCell, 2)
    x, lengths = frames([7, 3])
    expected = rnn(x, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rnn(x, lengths)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_checkpoint_of_pytorchs_layers_is_refused_naming_the_change():
    """docs/fidelity.md §4.4: a state dict of the models before the TensorFlow cells
    (PyTorch's nn.GRU tensors) fails with the reason, not a list of missing keys."""
    model = fl.GruModel(V, 6, cells=4, layers=2)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("rnn.")}
    gru = torch.nn.GRU(6, 4, num_layers=2)
    old.update({f"rnn.{k}": v for k, v in gru.state_dict().items()})
    with pytest.raises(RecurrentCheckpointError, match=r"rnn\.bias_hh_l0.*written before"):
        model.load_state_dict(old)
    model.load_state_dict(model.state_dict())  # today's checkpoints load


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", [fl.GruModel, fl.LstmModel])
def test_cuda_computes_the_same_function_as_the_cpu(cls):
    """docs/fidelity.md §4.4: the CUDA path is the original's function too (float32, TF32
    off), forward and gradients."""
    torch.manual_seed(0)
    model = cls(V, 6, cells=5, layers=2)
    x, lengths, _ = uint8_frames([7, 3, 1, 0], seed=3)
    results = []
    for device in ("cpu", "cuda"):
        model.zero_grad()
        on_device = model.to(device)
        p = on_device(x.to(device), lengths.to(device))
        p.sum().backward()
        grads = [q.grad.cpu() for q in on_device.parameters()]
        results.append((p.detach().cpu(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for cuda_grad, cpu_grad in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(cuda_grad, cpu_grad, rtol=1e-4, atol=1e-6)


def test_restoring_a_checkpoint_written_before_the_tensorflow_cells_is_a_clear_error(tmp_path):
    """docs/fidelity.md §4.4: `eval`, `infer` and a resumed `train` restore the model through
    its state dict, so an old GRU checkpoint ends in the project's one-line error."""
    from yt8m.checkpoint import restore_model, save_checkpoint
    from yt8m.flags import parse_flags
    from yt8m.models import build_model

    flags = parse_flags(
        ["--model=LstmModel", "--frame_features", "--lstm_cells=4", "--num_classes=5"]
    )
    state = {k: v for k, v in build_model(flags).state_dict().items() if not k.startswith("rnn.")}
    lstm = torch.nn.LSTM(1152, 4, num_layers=2)
    state.update({f"rnn.{k}": v for k, v in lstm.state_dict().items()})

    class Old(torch.nn.Module):
        def state_dict(self):  # noqa: D102 - the tensors of a model before this change
            return state

    save_checkpoint(tmp_path, 7, Old(), flags)
    with pytest.raises(RecurrentCheckpointError, match="written before GruModel and LstmModel"):
        restore_model(tmp_path, -1, flags, "cpu")


def test_compiled_models_run_the_steps_as_written():
    """docs/fidelity.md §4.4: `--compile` leaves the step loop eager (the same function)."""
    torch.manual_seed(0)
    model = fl.GruModel(V, 6, cells=4, layers=2)
    x, lengths, _ = uint8_frames([7, 3, 0])
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    torch.testing.assert_close(compiled(x, lengths), model(x, lengths), rtol=0, atol=0)
    traced = torch._dynamo.explain(model)(x, lengths)
    assert traced.op_count < 7 * 2  # fewer operations than steps: the loop is not traced
