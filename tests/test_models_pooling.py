"""Each pooling module equals a slow reference written from fidelity.md §4's formulas
(loops over videos, frames, clusters and channels) to 1e-6 in float64."""

import math

import pytest
import torch

from yt8m.models.gating import ContextGating
from yt8m.models.layers import l2_normalize
from yt8m.models.pooling import (
    DBoF,
    GatedDBoF,
    NetFV,
    NetRVLAD,
    NetVLAD,
    NetVLAGD,
    SoftDBoF,
    aggregate,
    aggregate_squares,
    global_normalize,
    intra_then_global_normalize,
)

B, N, D, K = 3, 5, 6, 4


def frames(seed: int = 0) -> torch.Tensor:
    return torch.randn(B, N, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def prepared(module: torch.nn.Module) -> torch.nn.Module:
    """float64, training mode, batch-norm affine parameters moved off their 1/0 start."""
    module = module.double().train()
    gen = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=gen, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen, dtype=torch.float64))
    return module


def matmul(rows: list[list[float]], w: torch.Tensor) -> list[list[float]]:
    w = w.tolist()
    return [[sum(r[i] * w[i][j] for i in range(len(r))) for j in range(len(w[0]))] for r in rows]


def batch_norm(rows: list[list[float]], bn: torch.nn.BatchNorm1d) -> list[list[float]]:
    """slim's batch norm in training: batch statistics over all rows, eps 1e-3."""
    cols = len(rows[0])
    mean = [sum(r[j] for r in rows) / len(rows) for j in range(cols)]
    var = [sum((r[j] - mean[j]) ** 2 for r in rows) / len(rows) for j in range(cols)]
    g, b = bn.weight.tolist(), bn.bias.tolist()
    return [
        [(r[j] - mean[j]) / math.sqrt(var[j] + 1e-3) * g[j] + b[j] for j in range(cols)]
        for r in rows
    ]


def softmax(row: list[float]) -> list[float]:
    e = [math.exp(v - max(row)) for v in row]
    return [v / sum(e) for v in e]


def l2n(vec: list[float]) -> list[float]:
    return [v / math.sqrt(max(sum(u * u for u in vec), 1e-12)) for v in vec]


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def assignments(x: torch.Tensor, assignment: torch.nn.Module) -> list[list[list[float]]]:
    """a[b][t][k] = softmax_k(BN(x W)) with statistics over all B*N frames."""
    rows = [x[b, t].tolist() for b in range(B) for t in range(N)]
    probs = [softmax(r) for r in batch_norm(matmul(rows, assignment.weight), assignment.after.norm)]
    return [[probs[b * N + t] for t in range(N)] for b in range(B)]


def vlad_reference(x, a, centers=None, gates=None) -> list[list[float]]:
    """V[d,k] = sum_t a_tk x_td - a_sum_k c_dk (or * sigmoid(G_kd)); intra, flatten d*K+k, L2."""
    out = []
    for b in range(B):
        v = [[0.0] * K for _ in range(D)]
        for k in range(K):
            a_sum = sum(a[b][t][k] for t in range(N))
            for d in range(D):
                v[d][k] = sum(a[b][t][k] * x[b, t, d].item() for t in range(N))
                if centers is not None:
                    v[d][k] -= a_sum * centers[d, k].item()
                if gates is not None:
                    v[d][k] *= sigmoid(gates[k, d].item())
        for k in range(K):
            column = l2n([v[d][k] for d in range(D)])
            for d in range(D):
                v[d][k] = column[d]
        out.append(l2n([v[d][k] for d in range(D) for k in range(K)]))
    return out


def check(module: torch.nn.Module, x: torch.Tensor, reference: list[list[float]]) -> None:
    got = module(x)
    assert got.shape == (B, module.output_size)
    torch.testing.assert_close(got, torch.tensor(reference, dtype=torch.float64), rtol=0, atol=1e-6)


def test_netvlad_matches_formula():
    x, m = frames(), prepared(NetVLAD(D, K))
    a = assignments(x, m.assignment)
    check(m, x, vlad_reference(x, a, centers=m.centers.detach()))


def test_netrvlad_has_no_centres():
    x, m = frames(), prepared(NetRVLAD(D, K))
    check(m, x, vlad_reference(x, assignments(x, m.assignment)))


def test_netvlagd_gates_each_cluster_channel():
    x, m = frames(), prepared(NetVLAGD(D, K))
    a = assignments(x, m.assignment)
    check(m, x, vlad_reference(x, a, gates=m.gate_weights.detach()))


@pytest.mark.parametrize("couple", [True, False])
def test_netfv_matches_formula(couple):
    x, m = frames(), prepared(NetFV(D, K, couple_weights=couple, coupling_factor=0.3))
    a = assignments(x, m.assignment)
    c = 0.3 * m.assignment.weight.detach() if couple else m.centers.detach()
    s = m.covar_weights.detach() ** 2 + 1e-6
    reference = []
    for b in range(B):
        fv1 = [[0.0] * K for _ in range(D)]
        fv2 = [[0.0] * K for _ in range(D)]
        for k in range(K):
            a_sum = sum(a[b][t][k] for t in range(N))
            for d in range(D):
                ax = sum(a[b][t][k] * x[b, t, d].item() for t in range(N))
                ax2 = sum(a[b][t][k] * x[b, t, d].item() ** 2 for t in range(N))
                ckd, skd = c[d, k].item(), s[d, k].item()
                fv1[d][k] = (ax - a_sum * ckd) / skd
                fv2[d][k] = (ax2 - 2 * ckd * ax + a_sum * ckd**2) / skd**2 - a_sum
        for k in range(K):
            column = l2n([fv1[d][k] for d in range(D)])
            for d in range(D):
                fv1[d][k] = column[d]
        flat1 = l2n([fv1[d][k] for d in range(D) for k in range(K)])
        flat2 = l2n([fv2[d][k] for d in range(D) for k in range(K)])
        reference.append(flat1 + flat2)
    check(m, x, reference)
    assert (m.centers is None) == couple


@pytest.mark.parametrize("max_pool", [False, True])
def test_soft_dbof_matches_formula(max_pool):
    x, m = frames(), prepared(SoftDBoF(D, K, max_pool=max_pool))
    a = assignments(x, m.assignment)
    reference = []
    for b in range(B):
        row = l2n([sum(a[b][t][k] for t in range(N)) for k in range(K)])
        if max_pool:
            row += l2n([max(a[b][t][k] for t in range(N)) for k in range(K)])
        reference.append(row)
    check(m, x, reference)


def test_gated_dbof_matches_formula():
    x, m = frames(), prepared(GatedDBoF(D, K))
    a = assignments(x, m.assignment)
    peaks = [l2n([max(a[b][t][k] for t in range(N)) for k in range(K)]) for b in range(B)]
    logits = batch_norm(matmul(matmul(peaks, m.dim_red), m.gate.weight), m.gate.after.norm)
    reference = []
    for b in range(B):
        sums = [sum(a[b][t][k] for t in range(N)) for k in range(K)]
        reference.append(l2n([sigmoid(logits[b][k]) * sums[k] for k in range(K)]))
    check(m, x, reference)


@pytest.mark.parametrize("activation", ["relu", "glu"])
def test_dbof_matches_formula(activation):
    x, m = frames(), prepared(DBoF(D, 2 * K, activation))
    rows = [x[b, t].tolist() for b in range(B) for t in range(N)]
    h = batch_norm(matmul(rows, m.logits.weight), m.logits.after.norm)
    if activation == "relu":
        h = [[min(max(v, 0.0), 6.0) for v in r] for r in h]
    else:
        h = [[r[j] * sigmoid(r[K + j]) for j in range(K)] for r in h]
    channels = len(h[0])
    reference = []
    for b in range(B):
        video = h[b * N : (b + 1) * N]
        mean = l2n([sum(r[j] for r in video) / N for j in range(channels)])
        peak = l2n([max(r[j] for r in video) for j in range(channels)])
        reference.append(mean + peak)
    check(m, x, reference)


@pytest.mark.parametrize("remove_diag", [False, True])
def test_context_gating_matches_formula(remove_diag):
    h = torch.randn(B, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    m = prepared(ContextGating(D, remove_diag=remove_diag))
    w = m.weight.detach()
    gates = matmul(h.tolist(), w)
    if remove_diag:
        gates = [
            [g[j] - w[j, j].item() * h[i, j].item() for j in range(D)] for i, g in enumerate(gates)
        ]
    gates = batch_norm(gates, m.after.norm)
    reference = [[h[i, j].item() * sigmoid(gates[i][j]) for j in range(D)] for i in range(B)]
    torch.testing.assert_close(
        m(h), torch.tensor(reference, dtype=torch.float64), rtol=0, atol=1e-6
    )


def test_zero_clusters_stay_finite():
    """tf.nn.l2_normalize floors the squared norm at 1e-12: an all-zero input gives zeros."""
    m = prepared(NetRVLAD(D, K))
    out = m(torch.zeros(B, N, D, dtype=torch.float64))
    assert torch.isfinite(out).all() and (out == 0).all()


def test_vlad_normalisation_gradient_matches_autograd_of_the_two_steps():
    """The hand-written backward of the intra + global normalisation, also at the 1e-6
    floor (an all-zero cluster, a tiny cluster, a tiny video)."""
    v = torch.randn(3, D, K, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    v[0, :, 1] = 0
    v[1, :, 2] *= 1e-7
    v[2] *= 1e-8
    v.requires_grad_()
    grad = torch.randn(3, D * K, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def two_steps(t):
        per_cluster = t / torch.linalg.vector_norm(t, dim=1, keepdim=True).clamp_min(1e-6)
        flat = per_cluster.reshape(3, -1)
        return flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True).clamp_min(1e-6)

    expected = torch.autograd.grad(two_steps(v), v, grad)[0]
    got = torch.autograd.grad(intra_then_global_normalize(v), v, grad)[0]
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())
    smooth = torch.randn(2, D, K, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(intra_then_global_normalize, (smooth,))


def test_hand_written_backwards_pass_gradcheck():
    """`aggregate` (x^T a with x's gradient in x's layout) and the global normalisation."""
    x = torch.randn(2, N, D, dtype=torch.float64, requires_grad=True)
    a = torch.rand(2, N, K, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(aggregate, (x, a))
    assert torch.autograd.gradcheck(aggregate_squares, (x, a))
    torch.testing.assert_close(aggregate(x, a), torch.einsum("btd,btk->bdk", x, a))
    torch.testing.assert_close(aggregate_squares(x, a), torch.einsum("btd,btk->bdk", x * x, a))
    v = torch.randn(2, D, K, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(global_normalize, (v,))
    torch.testing.assert_close(global_normalize(v), l2_normalize(v.reshape(2, -1), dim=1))


# ---- autocast (--amp): the hand-written Functions as autograd's own ops would run -------


def _under_bf16_autocast(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """fn's float32 output and its inputs' gradients, forward under CPU bfloat16 autocast
    and backward outside it (as the trainer runs them)."""
    leaves = [t.detach().float().requires_grad_() for t in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(*leaves)
    out.float().mul(torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    return out.float(), [t.grad for t in leaves]


@pytest.mark.parametrize(
    "custom, plain",
    [
        (aggregate, lambda x, a: torch.bmm(x.transpose(1, 2), a)),
        (aggregate_squares, lambda x, a: torch.bmm(x.square().transpose(1, 2), a)),
    ],
    ids=["aggregate", "aggregate_squares"],
)
def test_aggregations_under_autocast_run_as_the_plain_matmul_would(custom, plain):
    """Under `--amp` (bfloat16 autocast) the Functions' forward and backward are bfloat16
    matmuls, as autograd's bmm: outputs and gradients equal the plain ops' under autocast
    (fidelity is float32's; the backward used to fail: "expected scalar type Float")."""
    x, a = frames(3), torch.rand(B, N, K, generator=torch.Generator().manual_seed(4))
    out, grads = _under_bf16_autocast(custom, x, a)
    expected, expected_grads = _under_bf16_autocast(plain, x, a)
    assert all(g.dtype == torch.float32 for g in grads)  # each input's own dtype
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2 * want.abs().max().item())


def test_normalisation_under_autocast_is_float32():
    v = torch.randn(2, D, K, generator=torch.Generator().manual_seed(7))
    out, (grad,) = _under_bf16_autocast(intra_then_global_normalize, v.bfloat16())
    expected, (expected_grad,) = _under_bf16_autocast(
        lambda t: intra_then_global_normalize(t.float()), v.bfloat16()
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


@pytest.mark.parametrize("module", [NetVLAD, NetRVLAD, NetVLAGD, NetFV], ids=lambda m: m.__name__)
def test_vlad_and_fv_train_under_autocast_close_to_float32(module):
    """A forward + backward under CPU bfloat16 autocast: every gradient within 5% (relative
    L2 norm of the difference) of float32's: bfloat16 keeps 8 bits of mantissa."""
    torch.manual_seed(0)
    m = module(D, K).train()
    x = frames(8).float()
    results = []
    for amp in (False, True):
        m.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = m(x)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
        out.float().mul(weights).sum().backward()  # (the output has norm 1: not its square)
        results.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for name, grad in results[1].items():
        reference = results[0][name]
        assert torch.isfinite(grad).all(), name
        assert (grad - reference).norm() <= 0.05 * reference.norm(), name
