"""Optimizer, learning-rate schedule and per-tensor clipping (fidelity.md §5)."""

import numpy as np
import pytest
import torch

from yt8m.flags import parse_flags
from yt8m.optim import (
    OptimizerError,
    build_optimizer,
    clip_per_tensor_,
    learning_rate,
    set_learning_rate,
)


def test_staircase_decay_counts_examples_of_the_configured_batch_size():
    # The seed's NetVLAD: batch 80, decay 0.8 every 4,000,000 examples.
    def lr(step: int) -> float:
        return learning_rate(step, 0.0002, 0.8, 80, 4_000_000)

    assert lr(0) == 0.0002
    assert lr(49_999) == 0.0002  # 3,999,920 examples seen
    assert lr(50_000) == pytest.approx(0.0002 * 0.8)  # exactly 4,000,000
    assert lr(99_999) == pytest.approx(0.0002 * 0.8)
    assert lr(100_000) == pytest.approx(0.0002 * 0.8**2)
    assert lr(700_000) == pytest.approx(0.0002 * 0.8**14)


def test_set_learning_rate_reaches_every_group():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0)
    set_learning_rate(optimizer, 0.25)
    assert [g["lr"] for g in optimizer.param_groups] == [0.25, 0.25]


def _params_with_grads(*grads: torch.Tensor) -> list[torch.nn.Parameter]:
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        params.append(p)
    return params


def test_clipping_is_per_tensor_not_global():
    big = torch.tensor([3.0, 4.0])  # norm 5
    small = torch.tensor([[0.3], [0.4]])  # norm 0.5
    params = _params_with_grads(big, small)
    params.append(torch.nn.Parameter(torch.zeros(1)))  # no gradient: skipped
    clip_per_tensor_(params, 1.0)
    torch.testing.assert_close(params[0].grad, big / 5.0)  # scaled to norm 1, same direction
    assert torch.equal(params[1].grad, small)  # under the limit: untouched (a global norm
    # of sqrt(25.25) would have shrunk it)
    assert params[2].grad is None


def test_clipping_to_another_norm_keeps_each_tensor_at_most_that_norm():
    torch.manual_seed(0)
    params = _params_with_grads(*(torch.randn(n) * s for n, s in [(10, 5), (7, 0.01), (3, 2)]))
    before = [p.grad.clone() for p in params]
    clip_per_tensor_(params, 0.5)
    for p, g in zip(params, before, strict=True):
        norm = g.norm().item()
        expected = g * 0.5 / max(norm, 0.5)
        torch.testing.assert_close(p.grad, expected)
        assert p.grad.norm().item() <= 0.5 + 1e-6


def test_adam_has_tensorflow_defaults():
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = build_optimizer(params, "AdamOptimizer", lr=0.0002)
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.999)
    assert group["eps"] == 1e-8
    assert group["lr"] == 0.0002
    assert group["weight_decay"] == 0


def test_adam_first_step_moves_each_weight_by_the_learning_rate():
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    optimizer = build_optimizer([p], "AdamOptimizer", lr=0.01)
    p.grad = torch.tensor([0.3, -2.0])
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.99, -0.99]))


def test_other_tensorflow_optimizers_and_unknown_names():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer(params, "GradientDescentOptimizer", 0.1), torch.optim.SGD)
    assert isinstance(build_optimizer(params, "AdagradOptimizer", 0.1), torch.optim.Adagrad)
    with pytest.raises(
        OptimizerError, match="--optimizer='AdamOptimiser'.*did you mean AdamOptimizer"
    ):
        build_optimizer(params, "AdamOptimiser", 0.1)


# ---- the optimizers' updates, against numpy transcriptions of TensorFlow 1's kernels ----

STEPS = 5


def _gradient_kinds() -> dict[str, np.ndarray]:
    """``[STEPS, 6]`` gradients per kind: ordinary, float noise (1e-8), zero, and mixed."""
    rng = np.random.default_rng(0)
    ordinary = rng.normal(size=(STEPS, 6))
    mixed = ordinary.copy()
    mixed[2:] = 0.0  # gradients that stop: the moments carry the update on
    mixed[:, 0] = 1e-8
    return {
        "ordinary": ordinary,
        "tiny": 1e-8 * rng.normal(size=(STEPS, 6)),
        "zero": np.zeros((STEPS, 6)),
        "mixed": mixed,
    }


LEARNING_RATES = [0.01, 0.01, 0.008, 0.008, 0.0064]  # staircase changes between steps


def tensorflow_adam(theta, grads, lrs, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """TensorFlow 1's ApplyAdam kernel, step by step (float64)."""
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        alpha = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)
        m = m + (g - m) * (1 - beta1)
        v = v + (g * g - v) * (1 - beta2)
        theta = theta - m * alpha / (np.sqrt(v) + epsilon)
    return theta


def tensorflow_adagrad(theta, grads, lrs, initial_accumulator=0.1):
    """TensorFlow 1's ApplyAdagrad kernel: ``accum += g^2; var -= lr * g / sqrt(accum)``."""
    accum = np.full_like(theta, initial_accumulator)
    for g, lr in zip(grads, lrs, strict=True):
        accum = accum + g * g
        theta = theta - lr * g / np.sqrt(accum)
    return theta


def tensorflow_gradient_descent(theta, grads, lrs):
    """TensorFlow's ApplyGradientDescent: ``var -= lr * g``."""
    for g, lr in zip(grads, lrs, strict=True):
        theta = theta - lr * g
    return theta


def _run(name: str, grads: np.ndarray, theta0: np.ndarray, resume_after: int | None = None):
    """`STEPS` updates of `build_optimizer(name)` in float64; optionally rebuilt from its
    state dict after `resume_after` steps, as a resumed training run is."""
    p = torch.nn.Parameter(torch.from_numpy(theta0.copy()))
    optimizer = build_optimizer([p], name, LEARNING_RATES[0])
    for step, (g, lr) in enumerate(zip(grads, LEARNING_RATES, strict=True)):
        if step == resume_after:
            state = optimizer.state_dict()
            optimizer = build_optimizer([p], name, lr)
            optimizer.load_state_dict(state)
        set_learning_rate(optimizer, lr)
        p.grad = torch.from_numpy(g.copy())
        optimizer.step()
    return p.detach().numpy()


TRANSCRIPTIONS = {
    "AdamOptimizer": tensorflow_adam,
    "AdagradOptimizer": tensorflow_adagrad,
    "GradientDescentOptimizer": tensorflow_gradient_descent,
}


@pytest.mark.parametrize("kind", sorted(_gradient_kinds()))
@pytest.mark.parametrize("name", sorted(TRANSCRIPTIONS))
def test_updates_equal_tensorflows_kernels_for_five_steps(name, kind):
    """docs/fidelity.md §5.3: each `--optimizer` applies TensorFlow's own update (Adam:
    epsilon added to the uncorrected sqrt(v)), to 1e-7 of the distance moved."""
    grads = _gradient_kinds()[kind]
    theta0 = np.random.default_rng(1).normal(size=6)
    expected = TRANSCRIPTIONS[name](theta0, grads, LEARNING_RATES) - theta0
    np.testing.assert_allclose(_run(name, grads, theta0) - theta0, expected, rtol=1e-7, atol=0)
    resumed = _run(name, grads, theta0, resume_after=2)
    np.testing.assert_allclose(resumed - theta0, expected, rtol=1e-7, atol=0)


def test_pytorchs_own_adam_moves_float_noise_by_a_large_part_of_the_learning_rate():
    """docs/fidelity.md §8 (Adam): the difference that `AdamOptimizer` removes. A gradient
    of float noise (1e-8) moves a weight by about half the learning rate in PyTorch's form,
    by about 3% of it in TensorFlow's."""
    grads = _gradient_kinds()["tiny"]
    theta0 = np.zeros(6)
    p = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    plain = torch.optim.Adam([p], lr=0.01, eps=1e-8)
    p.grad = torch.from_numpy(grads[0].copy())
    plain.step()
    pytorch_move = np.abs(p.detach().numpy()).max()
    tensorflow_move = np.abs(tensorflow_adam(theta0, grads[:1], [0.01])).max()
    ours = np.abs(_run("AdamOptimizer", grads, theta0)).max()
    assert pytorch_move > 0.3 * 0.01
    assert tensorflow_move < 0.05 * 0.01
    assert ours < 5 * 0.05 * 0.01  # five steps of TensorFlow's size, not of PyTorch's


def test_adam_state_of_plain_pytorch_adam_resumes_at_its_step():
    """docs/fidelity.md §5.3: a checkpoint written before `TensorFlowAdam` (PyTorch's Adam,
    epsilon 1e-8 in its groups) resumes with TensorFlow's epsilon for the step it is at."""
    p = torch.nn.Parameter(torch.ones(3))
    plain = torch.optim.Adam([p], lr=0.01, eps=1e-8, fused=True)
    for _ in range(2):
        p.grad = torch.ones(3)
        plain.step()
    resumed = build_optimizer([p], "AdamOptimizer", 0.01)
    resumed.load_state_dict(plain.state_dict())
    p.grad = torch.ones(3)
    resumed.step()
    group = resumed.param_groups[0]
    assert group["tensorflow_steps"] == 3
    assert group["eps"] == pytest.approx(1e-8 / (1 - 0.999**3) ** 0.5, rel=1e-12)


# ---- the training step clips by the original's variables ---------------------------------

STEP_MODELS = {
    "gru": ["--model=GruModel", "--gru_cells=3"],
    "lstm": ["--model=LstmModel", "--lstm_cells=3", "--lstm_random_sequence", "--iterations=4"],
    "netvlad": ["--model=NetVLADModelLF", "--netvlad_cluster_size=4", "--netvlad_hidden_size=3"],
}


@pytest.mark.parametrize("model", sorted(STEP_MODELS))
def test_the_training_step_clips_every_variable_on_its_own(model):
    """docs/fidelity.md §5.5: `train.training_step` clips each gradient tensor on its own,
    and every tensor is one of the original's variables (a recurrent kernel's input and
    state rows together). With a clip norm far below every gradient's, each gradient ends
    at exactly that norm: a kernel's as a whole (its two row blocks clipped apart would
    leave it up to sqrt(2) times the norm)."""
    from yt8m.models import build_model
    from yt8m.models.sampling import sampling_base
    from yt8m.objective import Objective
    from yt8m.train import training_step

    flags = parse_flags(
        [
            *STEP_MODELS[model],
            "--frame_features",
            "--feature_names=rgb,audio",
            "--feature_sizes=4,2",
            "--num_classes=5",
            "--clip_gradient_norm=1e-6",
            "--optimizer=GradientDescentOptimizer",
        ],
        "train",
    )
    torch.manual_seed(0)
    net = build_model(flags)
    lengths = torch.tensor([7, 3, 1])
    frames = torch.randint(0, 256, (3, 7, 6), generator=torch.Generator().manual_seed(0))
    real = (torch.arange(7) < lengths.unsqueeze(1)).unsqueeze(-1)
    batch = {
        "inputs": (frames * real).to(torch.uint8),
        "num_frames": lengths,
        "labels": torch.eye(5, dtype=torch.bool)[[0, 3, 4]],
    }
    optimizer = build_optimizer(net.parameters(), flags.optimizer, 0.0)
    objective = Objective(flags, torch.device("cpu"))
    training_step(net, net, optimizer, objective, flags, batch, sampling_base(0), 0.0)
    norms = {name: p.grad.norm().item() for name, p in net.named_parameters()}
    for name, norm in norms.items():
        assert norm == pytest.approx(1e-6, rel=1e-5), name
    if model != "netvlad":
        kernels = [name for name in norms if name.startswith("rnn.") and "kernel" in name]
        assert len(kernels) == (2 if model == "lstm" else 4)
