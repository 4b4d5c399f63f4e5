"""The original's optimisation (docs/fidelity.md §5): optimizer, learning-rate schedule, clipping.

* ``learning_rate(step, ...)``: staircase exponential decay by examples seen,
  ``base * decay ** floor(step * batch_size / decay_examples)``. Like the original,
  ``batch_size`` is the configured one (``--batch_size``), whatever a step really held,
  and ``step`` is the number of updates already applied (0 for the first update).
* ``clip_per_tensor_(parameters, max_norm)``: every gradient tensor on its own is
  scaled to L2 norm ``<= max_norm`` (TensorFlow's ``clip_by_norm`` per variable, as
  slim's ``create_train_op`` did), not one global norm over all of them. Every model's
  tensors are the original's variables (a recurrent layer's kernel, input and state rows
  together, is one tensor), so this is the original's clipping (docs/fidelity.md §5.5).
* ``build_optimizer(parameters, name, ...)``: ``--optimizer`` as the original's
  TensorFlow class name, each applying TensorFlow 1's own update (docs/fidelity.md §5.3):
  Adam as `TensorFlowAdam` (epsilon added to the uncorrected ``sqrt(v)``), Adagrad with
  accumulators from 0.1 and no epsilon, gradient descent as it is.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable

import torch

from yt8m.errors import YT8MError


class OptimizerError(YT8MError, ValueError):
    """An unknown or unsupported `--optimizer`."""


def learning_rate(
    step: int,
    base_learning_rate: float,
    decay: float,
    batch_size: int,
    decay_examples: float,
) -> float:
    """The staircase learning rate for the update made at `step` (0-based)."""
    periods = math.floor(step * batch_size / decay_examples)
    return base_learning_rate * decay**periods


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Use `value` for every parameter group's next update."""
    for group in optimizer.param_groups:
        group["lr"] = value


@torch.no_grad()
def clip_per_tensor_(parameters: Iterable[torch.Tensor], max_norm: float) -> None:
    """Scale each gradient `g` in place to ``g * max_norm / max(||g||, max_norm)``.

    A gradient with norm <= `max_norm` is left exactly as it is (its scale is 1).
    Parameters without a gradient are skipped. One fused kernel per step for the
    norms and one for the scaling, however many tensors there are; on the CPU, where
    reading the scales costs nothing, only the gradients whose scale is not 1 are
    scaled (a pass over the 1.1 GB hidden-layer gradient of the VLAD models saved).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch.stack(torch._foreach_norm(grads))
    scales = (max_norm / norms.clamp_min(max_norm)).to(grads[0].dtype)
    if grads[0].device.type != "cpu":
        torch._foreach_mul_(grads, list(scales.unbind()))
        return
    clipped = [(g, s) for g, s in zip(grads, scales.tolist(), strict=True) if not s >= 1.0]
    if clipped:
        torch._foreach_mul_([g for g, _ in clipped], [s for _, s in clipped])


class TensorFlowAdam(torch.optim.Adam):
    """TensorFlow's AdamOptimizer computed by PyTorch's fused Adam kernel.

    TensorFlow updates ``theta -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``:
    epsilon is added to the uncorrected ``sqrt(v)``. PyTorch adds its epsilon after the
    bias correction, ``sqrt(v) / sqrt(1 - b2^t) + eps'``; the two are the same update when
    ``eps' = eps / sqrt(1 - b2^t)``, which `step` sets before every step (docs/fidelity.md
    §5.3). Without it, a weight whose gradient is float noise (1e-8) moves by about half the
    learning rate per step instead of a few hundredths of it.

    ``t`` counts this optimizer's steps, as TensorFlow's shared beta powers do; every
    parameter of this project's models has a gradient at every step, so PyTorch's per-tensor
    step counts equal it. Both epsilons and ``t`` live in the parameter groups, so they
    travel with ``state_dict()``; a state written by plain `torch.optim.Adam` resumes too.
    """

    def __init__(
        self,
        parameters: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(parameters, lr=lr, betas=betas, eps=eps, fused=True)
        for group in self.param_groups:
            group["tensorflow_eps"] = eps
            group["tensorflow_steps"] = 0

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        for group in self.param_groups:
            if "tensorflow_steps" not in group:  # resumed from a plain torch.optim.Adam
                group["tensorflow_eps"] = group["eps"]
                group["tensorflow_steps"] = self._steps_taken(group)
            group["tensorflow_steps"] += 1
            correction = 1.0 - group["betas"][1] ** group["tensorflow_steps"]
            group["eps"] = group["tensorflow_eps"] / math.sqrt(correction)
        return super().step(closure)

    def _steps_taken(self, group: dict) -> int:
        """Steps already applied to `group`, read once from PyTorch's per-tensor counts."""
        counts = [int(self.state[p]["step"]) for p in group["params"] if "step" in self.state[p]]
        return max(counts, default=0)


def _adam(parameters: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    return TensorFlowAdam(parameters, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def _sgd(parameters: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=lr)


def _adagrad(parameters: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    # TensorFlow 1's ApplyAdagrad: accumulators from 0.1, ``var -= lr * g / sqrt(accum)``
    # without an epsilon (the accumulator is never below 0.1).
    return torch.optim.Adagrad(parameters, lr=lr, initial_accumulator_value=0.1, eps=0.0)


# `--optimizer` values: TensorFlow class names usable, as in the original, with a
# learning rate alone.
OPTIMIZERS = {
    "AdamOptimizer": _adam,
    "GradientDescentOptimizer": _sgd,
    "AdagradOptimizer": _adagrad,
}


def check_optimizer_name(name: str) -> None:
    """Raise `OptimizerError` for an `--optimizer` this project does not provide."""
    if name in OPTIMIZERS:
        return
    close = difflib.get_close_matches(name, list(OPTIMIZERS), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise OptimizerError(
        f"--optimizer={name!r} is not supported; {hint}choose one of {', '.join(OPTIMIZERS)}"
    )


def build_optimizer(
    parameters: Iterable[torch.Tensor], name: str, lr: float
) -> torch.optim.Optimizer:
    """The optimizer named by `--optimizer` over the trainable `parameters`."""
    check_optimizer_name(name)
    trainable = [p for p in parameters if p.requires_grad]
    return OPTIMIZERS[name](trainable, lr)
