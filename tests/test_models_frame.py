"""Frame-level models: batch-norm statistics, recurrent lengths, gradients, initialisers,
the input transform of the rows they read (fidelity.md §2, §3, §4).

Most tests feed float frames that are already model inputs, through `Given` (a transform
that passes the rows on); `test_models_transform_only_the_rows_they_read` checks the
loader's uint8 frames through the default transform against that.
"""

import math

import pytest
import torch

from yt8m.data.features import FrameTransform, WillowFrames
from yt8m.models import frame_level as fl
from yt8m.models.classifiers import ClassifierSpec
from yt8m.models.sampling import sample_frames, sampling_base

V = 5
SIZES = (6, 3)  # a small "rgb" and "audio"
GATED_MOE = ClassifierSpec(prob_gating=True, l2_penalty=1e-3)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def key(seed: int = 0) -> torch.Tensor:
    """A frame-sampling key."""
    return sampling_base(seed)


class Given(FrameTransform):
    """The rows as they are: the test hands the model its float input frames."""

    def forward(self, parts, real):
        return list(parts)


def given(model: torch.nn.Module) -> torch.nn.Module:
    """`model` reading float frames that are already model inputs."""
    model.input_transform = Given()
    return model


def batch(num_frames: list[int], max_frames: int = 10, width: int = 9, seed: int = 0):
    """Float frames with random real rows and zero padding rows, as a transform gives them."""
    x = torch.randn(len(num_frames), max_frames, width, generator=gen(seed))
    lengths = torch.tensor(num_frames)
    x = x * (torch.arange(max_frames).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    return x, lengths


def tiny_models(add_batch_norm: bool = True, transform: bool = False) -> dict[str, torch.nn.Module]:
    """The pooling models in miniature, reading float input frames (`Given`), or with their
    own transform of uint8 frames when `transform`."""
    torch.manual_seed(0)
    common = {"iterations": 7, "add_batch_norm": add_batch_norm}
    models = {
        "netvlad": fl.NetVLADModelLF(
            V, SIZES, cluster_size=4, hidden_size=8, relu=False, gating=True,
            gating_remove_diag=True, classifier=GATED_MOE, **common,
        ),
        "rvlad": fl.NetVLADModelLF(
            V, SIZES, cluster_size=4, hidden_size=8, variant="lightvlad", **common
        ),
        "vlagd": fl.NetVLADModelLF(V, SIZES, cluster_size=4, hidden_size=8, variant="vlagd", **common),
        "netfv": fl.NetFVModelLF(
            V, SIZES, cluster_size=4, hidden_size=8, relu=False, gating=True,
            couple_weights=False, classifier=GATED_MOE, **common,
        ),
        "netfv_coupled": fl.NetFVModelLF(V, SIZES, cluster_size=4, hidden_size=8, **common),
        "gated_dbof": fl.GatedDbofModelLF(
            V, SIZES, cluster_size=16, hidden_size=8, relu=False, max_pool=True, **common
        ),
        "soft_dbof": fl.SoftDbofModelLF(V, SIZES, cluster_size=16, hidden_size=8, **common),
        "dbof_lf_glu": fl.DbofModelLF(
            V, SIZES, cluster_size=16, hidden_size=8, activation="glu", **common
        ),
        "dbof_lf_relu": fl.DbofModelLF(V, SIZES, cluster_size=16, hidden_size=8, **common),
        "dbof": fl.DbofModel(V, 9, cluster_size=16, hidden_size=8, pooling="average", **common),
    }  # fmt: skip
    return models if transform else {name: given(m) for name, m in models.items()}


def test_input_batch_norm_uses_all_sampled_frames_with_slim_settings():
    model = tiny_models()["netvlad"].train()
    x, lengths = batch([3, 10, 6])
    sampled = sample_frames(x, lengths, 7, random_frames=True, key=key(4)).reshape(-1, 9)
    model(x, lengths, key(4))
    norm = model.input_norm
    assert norm.eps == 1e-3 and norm.momentum == 0.001 and norm.affine
    torch.testing.assert_close(norm.running_mean, 0.001 * sampled.mean(0))
    torch.testing.assert_close(norm.running_var, 0.999 + 0.001 * sampled.var(0))
    assert not torch.allclose(norm.running_mean, 0.001 * x.reshape(-1, 9).mean(0))
    # Each branch normalised on its own equals one batch norm over all channels, sliced.
    model.input_norm.reset_running_stats()
    video, audio = model.sampled_parts(x, lengths, key(4), [(0, 6), (6, 9)])
    full = torch.nn.functional.batch_norm(
        sampled, None, None, norm.weight, norm.bias, training=True, eps=1e-3
    ).view(3, 7, 9)
    torch.testing.assert_close(model.branch_norm(video, 0, 6), full[..., :6])
    torch.testing.assert_close(model.branch_norm(audio, 6, 9), full[..., 6:])


def test_evaluation_uses_the_running_statistics():
    model = tiny_models()["soft_dbof"].eval()
    x, lengths = batch([10, 10])
    with torch.no_grad():
        model.input_norm.running_mean.fill_(0.5)
    before = model(x, lengths, key(1))
    with torch.no_grad():
        model.input_norm.running_mean.fill_(-0.5)
    assert not torch.allclose(before, model(x, lengths, key(1)))
    assert model.input_norm.num_batches_tracked == 0


@pytest.mark.parametrize("add_batch_norm", [True, False])
def test_gradients_reach_every_parameter(add_batch_norm):
    x, lengths = batch([3, 10, 6, 1])
    for name, model in tiny_models(add_batch_norm).items():
        p = model.train()(x, lengths, key())
        assert p.shape == (4, V) and ((p >= 0) & (p <= 1)).all(), name
        (p.log().sum() + model.regularization_loss()).backward()
        for pname, param in model.named_parameters():
            assert param.grad is not None, f"{name}: {pname}"
            assert param.grad.abs().sum() > 0, f"{name}: {pname} has a zero gradient"


def test_without_batch_norm_biases_replace_every_batch_norm():
    model = tiny_models(add_batch_norm=False)["netvlad"]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms == [model.classifier.prob_gate_norm]  # the MoE's own, as in the original
    assert model.input_norm is None and model.hidden.after.bias is not None


def test_original_initialisers():
    model = fl.NetVLADModelLF(V, (400, 100), cluster_size=64, hidden_size=300, relu=False)
    pool = model.video_pooling
    assert abs(pool.assignment.weight.std().item() - 1 / math.sqrt(400)) < 0.003
    assert abs(pool.centers.std().item() - 1 / math.sqrt(400)) < 0.003
    assert abs(model.hidden.weight.std().item() - 1 / math.sqrt(64)) < 0.003  # K, not fan-in
    assert abs(model.hidden.after.bias.std().item() - 0.01) < 0.003
    fv = fl.NetFVModelLF(V, (400, 100), cluster_size=64, hidden_size=30).video_pooling
    assert abs(fv.covar_weights.mean().item() - 1.0) < 0.003


def test_frame_level_logistic_averages_real_frames():
    model = given(fl.FrameLevelLogisticModel(V, 9).double())
    x, lengths = batch([3, 10, 0])
    x = x.double()
    expected = torch.stack([x[0, :3].mean(0), x[1].mean(0), torch.zeros(9, dtype=torch.float64)])
    torch.testing.assert_close(model(x, lengths), model.classifier(expected))


# ---- recurrent models: the state after each video's last real step -------------------


def classifier_input(model: torch.nn.Module, x, lengths, generator=None) -> torch.Tensor:
    seen = []
    handle = model.classifier.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    model(x, lengths, generator)
    handle.remove()
    return seen[0]


def reference_states(rnn: torch.nn.RNNBase, frames: torch.Tensor, lstm: bool) -> torch.Tensor:
    """Run the RNN step by step over exactly `frames` and concatenate the final states."""
    _, state = rnn(frames.unsqueeze(0))
    if lstm:
        h, c = state
        return torch.cat([t for layer in range(rnn.num_layers) for t in (c[layer, 0], h[layer, 0])])
    return state[:, 0].reshape(-1)


@pytest.mark.parametrize("lstm", [True, False])
@pytest.mark.parametrize("backward", [False, True])
def test_recurrent_state_is_taken_after_the_last_real_step(lstm, backward):
    cls = fl.LstmModel if lstm else fl.GruModel
    model = given(cls(V, 9, cells=4, layers=2, backward=backward).double())
    x, lengths = batch([3, 10, 0, 1])
    x = x.double()
    x[0, 3:] = 7.0  # junk after the end must not matter
    got = classifier_input(model, x, lengths)
    for b, n in enumerate(lengths.tolist()):
        if n == 0:
            assert (got[b] == 0).all()
            continue
        frames = x[b, :n].flip(0) if backward else x[b, :n]
        torch.testing.assert_close(got[b], reference_states(model.rnn, frames, lstm))


def test_lstm_random_frames_reads_iterations_frames_up_to_the_length():
    model = fl.LstmModel(V, 9, cells=4, layers=2, iterations=6, random_frames=True)
    model = given(model.double())
    x, lengths = batch([3, 10])
    x = x.double()
    got = classifier_input(model, x, lengths, key(2))
    sampled = sample_frames(x, lengths, 6, random_frames=True, key=key(2))
    torch.testing.assert_close(got[0], reference_states(model.rnn, sampled[0, :3], True))
    torch.testing.assert_close(got[1], reference_states(model.rnn, sampled[1], True))


def test_recurrent_initialisers_match_tensorflow_cells():
    lstm = fl.LstmModel(V, 9, cells=4, layers=2).rnn
    assert lstm.bias_ih_l0.tolist() == [0.0] * 4 + [1.0] * 4 + [0.0] * 8  # i, f, g, o
    assert (lstm.bias_hh_l1 == 0).all()
    assert lstm.weight_ih_l0.abs().max() <= math.sqrt(6 / (9 + 4 + 16))
    gru = fl.GruModel(V, 9, cells=4, layers=2).rnn
    assert gru.bias_ih_l0.tolist() == [1.0] * 8 + [0.0] * 4  # r, z gates 1, candidate 0
    assert gru.weight_hh_l1[8:].abs().max() <= math.sqrt(6 / (4 + 4 + 4))


# ---- the input transform: uint8 rows in, only the rows read are transformed -----------


def uint8_batch(num_frames: list[int], max_frames: int = 10, width: int = 9, seed: int = 0):
    """Loader-like uint8 frames: random real rows, zero bytes after each video's length."""
    q = torch.randint(0, 256, (len(num_frames), max_frames, width), generator=gen(seed))
    lengths = torch.tensor(num_frames)
    real = torch.arange(max_frames).unsqueeze(0) < lengths.unsqueeze(1)
    return (q * real.unsqueeze(-1)).to(torch.uint8), lengths


def all_models(transform: bool) -> dict[str, torch.nn.Module]:
    models = tiny_models(transform=transform)
    torch.manual_seed(1)
    models.update(
        logistic=fl.FrameLevelLogisticModel(V, 9),
        gru=fl.GruModel(V, 9, cells=4, layers=2, backward=True),
        lstm_random=fl.LstmModel(V, 9, cells=4, layers=2, iterations=6, random_frames=True),
    )
    if not transform:
        for name in ("logistic", "gru", "lstm_random"):
            given(models[name])
    return models


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_models_transform_only_the_rows_they_read(mode):
    """fidelity.md §2: the model input is every frame dequantized and L2-normalised, padding
    rows 0. Sampling the uint8 rows and transforming them (per branch, one norm over all
    channels) gives what transforming every frame and sampling the result gives."""
    q, lengths = uint8_batch([3, 10, 0, 1, 7])
    frames = WillowFrames().all_frames(q, lengths)
    assert frames.dtype == torch.float32 and (frames[2] == 0).all()
    own, reference = all_models(transform=True), all_models(transform=False)
    for name, model in own.items():
        assert isinstance(model.input_transform, WillowFrames), name
        getattr(model, mode)()
        getattr(reference[name], mode)()
        torch.testing.assert_close(
            model(q, lengths, key(5)), reference[name](frames, lengths, key(5)), msg=name
        )
