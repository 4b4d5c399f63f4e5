"""Optimizer, learning-rate schedule and per-tensor clipping (fidelity.md §5)."""

import pytest
import torch

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
