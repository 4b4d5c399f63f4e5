"""The seed's GRU and LSTM at full size against a float64 transcription of TensorFlow's cells.

For each (built from the seed README's own command line, fresh weights): a few videos of
random uint8 frames (through the model's input transform) with lengths 300, 211, 57 and 1 (the LSTM reads 150 sampled
frames, as its seed command says) go through the model in float32 and through the numpy
transcription of GRUCell / BasicLSTMCell / MultiRNNCell / dynamic_rnn that the tests use
(`tests/test_models_recurrent.py`) in float64. Printed: the largest difference of the
final states and of the predictions (the classifier run in float64 on both states), i.e.
the float32 rounding left (docs/fidelity.md §8). For the GRU also the size of the
difference the TensorFlow cell removed: PyTorch's GRU function (reset gate after the
recurrent product) with the same parameters, in float64.

Usage::

    .venv/bin/python bench/fidelity.py            # about a minute on 2 cores
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.seed import training_commands  # noqa: E402
from tests.test_models_recurrent import (  # noqa: E402
    reference,
    sigmoid,
    tf_dynamic_rnn_final_state,
)
from yt8m.flags import parse_flags  # noqa: E402
from yt8m.models import build_model  # noqa: E402
from yt8m.models.sampling import sampling_base  # noqa: E402

LENGTHS = [300, 211, 57, 1]


def pytorch_form_gru_cell(x, state, p):
    """PyTorch's/cuDNN's GRU with TensorFlow's parameters: ``r * (h W + b)`` form."""
    h = state
    rows = x.shape[1]
    gates = sigmoid(np.concatenate([x, h], 1) @ p["gates_kernel"] + p["gates_bias"])
    r, u = np.split(gates, 2, axis=1)
    kernel = p["candidate_kernel"]
    c = np.tanh(x @ kernel[:rows] + p["candidate_bias"] + r * (h @ kernel[rows:]))
    new_h = u * h + (1 - u) * c
    return new_h, new_h


def predictions(model: torch.nn.Module, state: np.ndarray) -> np.ndarray:
    classifier = model.classifier.double()
    with torch.no_grad():
        out = classifier(torch.from_numpy(state)).numpy()
    model.classifier.float()
    return out


def measure(name: str, argv: list[str]) -> None:
    flags = parse_flags([a for a in argv if "data_pattern" not in a], "train")
    torch.manual_seed(0)
    model = build_model(flags).eval()
    generator = torch.Generator().manual_seed(0)
    width = sum(size for _, size in flags.feature_list())
    lengths = torch.tensor(LENGTHS)
    frames = torch.randint(0, 256, (len(LENGTHS), 300, width), generator=generator)
    frames = (frames * (torch.arange(300) < lengths.unsqueeze(1)).unsqueeze(-1)).to(torch.uint8)
    if model.random_frames:  # the model's own sampling and input transform
        x = model.sample(frames, lengths, sampling_base(1))
        lengths = lengths.clamp_max(x.shape[1])
    else:
        x = model.input_transform.all_frames(frames, lengths)
    with torch.no_grad():
        ours = model.rnn(x, lengths).double().numpy()
    expected = reference(model.rnn, x, lengths)
    state_diff = np.abs(ours - expected).max()
    prob_diff = np.abs(predictions(model, ours) - predictions(model, expected)).max()
    print(
        f"{name}: {flags.model}, {x.shape[1]} rows; final state max |float32 - float64| "
        f"{state_diff:.2e} (max |state| {np.abs(expected).max():.2f}); predictions "
        f"max |difference| {prob_diff:.2e}",
        flush=True,
    )
    if flags.model == "GruModel":
        params = [
            {n: t.detach().double().numpy() for n, t in cell.named_parameters()}
            for cell in model.rnn.cells
        ]
        sizes = [cell.cells for cell in model.rnn.cells]
        cells = [pytorch_form_gru_cell] * len(sizes)
        other = tf_dynamic_rnn_final_state(
            cells, params, sizes, x.double().numpy(), lengths.numpy()
        )
        gap = np.abs(predictions(model, other) - predictions(model, expected)).max()
        print(
            f"{name}: PyTorch's GRU function with the same weights: final state max |difference| "
            f"{np.abs(other - expected).max():.2e}; predictions max |difference| {gap:.2e}",
            flush=True,
        )


def main() -> None:
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"date:    {datetime.datetime.now().isoformat(timespec='seconds')}")
    commands = training_commands()
    measure("gru", commands[5])
    measure("lstm", commands[6])


if __name__ == "__main__":
    main()
