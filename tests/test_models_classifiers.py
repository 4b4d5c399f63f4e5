"""MoE and Logistic classifiers (fidelity.md §4, §5): layout, gating, regularisation, init."""

import math

import pytest
import torch

from yt8m.errors import YT8MError
from yt8m.models.classifiers import ClassifierSpec, Logistic, MoE

B, IN, V = 4, 5, 3


def inputs() -> torch.Tensor:
    return torch.randn(B, IN, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def moe_reference(x, gate_logits, expert_logits, m) -> list[list[float]]:
    """Class-major columns: gate c*(m+1)+i (i = m is the dummy), expert c*m+i."""
    out = []
    for b in range(x.shape[0]):
        row = []
        for c in range(V):
            g = [gate_logits[b, c * (m + 1) + i].item() for i in range(m + 1)]
            e = [math.exp(v - max(g)) for v in g]
            row.append(
                sum(e[i] / sum(e) * sigmoid(expert_logits[b, c * m + i].item()) for i in range(m))
            )
        out.append(row)
    return out


@pytest.mark.parametrize("m", [1, 2, 3])
def test_moe_is_class_major_with_a_dummy_expert(m):
    x = inputs()
    moe = MoE(IN, V, num_mixtures=m).double()
    expected = moe_reference(
        x, x @ moe.gate_weights[0], x @ moe.expert_weights + moe.expert_bias, m
    )
    torch.testing.assert_close(moe(x), torch.tensor(expected, dtype=torch.float64))


def test_dummy_expert_can_silence_a_class():
    moe = MoE(IN, V, num_mixtures=2).double()
    x = torch.ones(1, IN, dtype=torch.float64)
    with torch.no_grad():
        moe.gate_weights[0].zero_()
        moe.gate_weights[0][:, 1 * 3 + 2] = 100.0  # class 1's dummy column
        moe.expert_weights.zero_()
    p = moe(x)
    assert p[0, 1] < 1e-30
    torch.testing.assert_close(p[0, 0].item(), 2 / 3 * 0.5)  # two of three gates, sigmoid(0)


def test_low_rank_gating_goes_through_rank_r():
    x = inputs()
    moe = MoE(IN, V, num_mixtures=2, low_rank_gating=2).double()
    w1, w2 = moe.gate_weights
    assert w1.shape == (IN, 2) and w2.shape == (2, V * 3)
    expected = moe_reference(x, x @ w1 @ w2, x @ moe.expert_weights + moe.expert_bias, 2)
    torch.testing.assert_close(moe(x), torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("source", ["prob", "input"])
@pytest.mark.parametrize("remove_diag", [False, True])
def test_probability_gating(source, remove_diag):
    x = torch.randn(B, V + 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    moe = MoE(V + 2, V, prob_gating=True, prob_gating_input=source, remove_diag=remove_diag)
    moe = moe.double().train()
    with torch.no_grad():
        moe.prob_gate_norm.weight.uniform_(0.5, 1.5)
        moe.prob_gate_norm.bias.normal_()
    plain = moe_reference(x, x @ moe.gate_weights[0], x @ moe.expert_weights + moe.expert_bias, 2)
    p = torch.tensor(plain, dtype=torch.float64)
    wp = moe.prob_gate_weights.detach()
    assert wp.shape == ((V, V) if source == "prob" else (V + 2, V))
    gates = (p if source == "prob" else x) @ wp
    if remove_diag:
        gates = gates - torch.stack([wp[j, j] for j in range(V)]) * p
    mean, var = gates.mean(0), gates.var(0, unbiased=False)  # batch statistics, eps 1e-3
    normed = (gates - mean) / torch.sqrt(
        var + 1e-3
    ) * moe.prob_gate_norm.weight + moe.prob_gate_norm.bias
    torch.testing.assert_close(moe(x), p * torch.sigmoid(normed))


def test_regularization_covers_gate_and_expert_weights_only():
    moe = MoE(IN, V, l2_penalty=0.25, prob_gating=True, low_rank_gating=2)
    with torch.no_grad():
        moe.expert_bias.fill_(3.0)
    expected = 0.25 * 0.5 * sum((w**2).sum() for w in (*moe.gate_weights, moe.expert_weights))
    torch.testing.assert_close(moe.regularization_loss(), expected)
    logistic = Logistic(IN, V, l2_penalty=0.5)
    torch.testing.assert_close(logistic.regularization_loss(), 0.25 * (logistic.weight**2).sum())


def test_logistic_is_sigmoid_of_affine():
    x = inputs()
    logistic = Logistic(IN, V).double()
    torch.testing.assert_close(logistic(x), torch.sigmoid(x @ logistic.weight + logistic.bias))


def test_glorot_initialisation():
    moe = MoE(400, 100, num_mixtures=2)
    limit = math.sqrt(6 / (400 + 300))
    w = moe.gate_weights[0]
    assert w.abs().max() <= limit and w.abs().max() > 0.95 * limit
    assert abs(w.std().item() - limit / math.sqrt(3)) < 0.02 * limit
    assert (moe.expert_bias == 0).all()


def test_bad_settings_are_errors():
    with pytest.raises(YT8MError, match="moe_prob_gating_input"):
        MoE(IN, V, prob_gating=True, prob_gating_input="probs")
    with pytest.raises(YT8MError, match="moe_num_mixtures"):
        MoE(IN, V, num_mixtures=0)
    with pytest.raises(YT8MError, match="video_level_classifier_model"):
        ClassifierSpec(name="SvmModel").build(IN, V)


def test_probabilities_stay_float32_under_autocast_without_bfloat16_ties():
    """--amp: a Logistic head runs in float32 (the same probabilities as without autocast),
    the MoE's sigmoids and softmax read float32 logits. In bfloat16 (8-bit mantissa) the
    500 probabilities below take about 250 values: top-k confidences tie."""
    torch.manual_seed(0)
    x = torch.randn(10, 64)
    logistic, moe = Logistic(64, 50), MoE(64, 50, prob_gating=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coarse = torch.sigmoid(torch.addmm(logistic.bias, x, logistic.weight))  # as it was
        amp_logistic, amp_moe = logistic(x), moe(x)
    assert coarse.dtype == torch.bfloat16 and coarse.unique().numel() < 0.6 * coarse.numel()
    torch.testing.assert_close(amp_logistic, logistic(x), rtol=0, atol=0)
    for p in (amp_logistic, amp_moe):
        assert p.dtype == torch.float32
        assert p.unique().numel() >= 0.99 * p.numel()
    torch.testing.assert_close(amp_moe, moe(x), rtol=0.05, atol=0.01)
