"""Frame-level models (fidelity.md §3, §4): the WILLOW models and the starter's.

Every model: ``forward(inputs [B, T, D], num_frames int64 [B], key=None) ->
probabilities [B, num_classes]`` with ``inputs`` the loader's uint8 frames (zero rows after
``num_frames``). Each model owns its input transform (``input_transform``, a
`yt8m.data.features.FrameTransform`, the WILLOW input by default): a sampling model gathers
the uint8 rows it samples and transforms only those, a model reading every row transforms
them all. Frames are sampled inside, in training and evaluation alike (`sampling.py`), drawn
by the sampling ``key`` (int64 ``[2]`` on the inputs' device; a random one when None); with
``deterministic_sampling = True`` evaluation mode takes evenly spaced frames instead. ``feature_sizes`` lists the concatenated
features (``(1024, 128)`` for rgb, audio): the first is the "video" branch, the rest
together the "audio" branch (omitted when there is no second feature).

Without batch norm (``add_batch_norm=False``) every batch norm of the pooling,
hidden and gating layers becomes a learned bias and the input batch norm is
skipped (the original's no-batch-norm path could not run; fidelity.md §4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from yt8m.data.features import FrameTransform, WillowFrames
from yt8m.errors import YT8MError
from yt8m.models.classifiers import ClassifierSpec, Logistic
from yt8m.models.gating import ContextGating
from yt8m.models.layers import HiddenLayer, batch_norm, glorot_uniform_
from yt8m.models.pooling import (
    ClusterLogits,
    DBoF,
    GatedDBoF,
    NetFV,
    NetRVLAD,
    NetVLAD,
    NetVLAGD,
    SoftDBoF,
)
from yt8m.models.recurrent import final_states
from yt8m.models.sampling import gather_frames, sample_indices

MOE = ClassifierSpec()  # the original's default --video_level_classifier_model


class FrameLevelModel(nn.Module):
    """Frame sampling, the input transform and the classifier's regularisation, shared by
    the models below."""

    def __init__(
        self,
        iterations: int,
        sample_random_frames: bool,
        input_transform: FrameTransform | None = None,
    ) -> None:
        super().__init__()
        self.iterations = iterations
        self.sample_random_frames = sample_random_frames
        self.deterministic_sampling = False
        self.input_transform = input_transform if input_transform is not None else WillowFrames()
        self.classifier: nn.Module

    def sample_indices(
        self,
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None,
    ) -> torch.Tensor:
        """``[B, iterations]`` indices of the frames to read (fidelity.md §3)."""
        return sample_indices(
            num_frames.to(inputs.device),
            self.iterations,
            inputs.shape[1],
            random_frames=self.sample_random_frames,
            evenly_spaced=self.deterministic_sampling and not self.training,
            key=key,
        )

    def sampled_parts(
        self,
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None,
        bounds: list[tuple[int, int]],
    ) -> list[torch.Tensor]:
        """The sampled frames, transformed, as one float32 ``[B, iterations, stop - start]``
        per channel range ``(start, stop)`` of `bounds` (consecutive, together all D
        channels): the uint8 rows are gathered per range, then transformed together."""
        index = self.sample_indices(inputs, num_frames, key)
        real = index < num_frames.to(index.device).clamp(0, inputs.shape[1]).unsqueeze(1)
        parts = [gather_frames(inputs, index, start, stop) for start, stop in bounds]
        return self.input_transform(parts, real)

    def sample(
        self,
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None,
    ) -> torch.Tensor:
        """``[B, iterations, D]`` sampled frames, transformed."""
        return self.sampled_parts(inputs, num_frames, key, [(0, inputs.shape[-1])])[0]

    def regularization_loss(self) -> torch.Tensor:
        """``l2 * 0.5 * sum ||W||^2`` over the classifier's gate and expert weights."""
        return self.classifier.regularization_loss()


def _split(feature_sizes: Sequence[int]) -> tuple[int, int]:
    """``(video, audio)`` channel counts: the first feature, then all the others."""
    return feature_sizes[0], sum(feature_sizes[1:])


class PoolingModel(FrameLevelModel):
    """Input batch norm, one pooling module per branch, hidden layer, optional Context
    Gating, classifier. The named models below only choose the pooling modules."""

    def __init__(
        self,
        *,
        num_classes: int,
        feature_sizes: Sequence[int],
        video_pooling: nn.Module,
        audio_pooling: nn.Module | None,
        iterations: int,
        sample_random_frames: bool,
        add_batch_norm: bool,
        hidden_size: int | None,
        hidden_std: float,
        relu: bool,
        gating: bool,
        gating_remove_diag: bool,
        classifier: ClassifierSpec,
    ) -> None:
        super().__init__(iterations, sample_random_frames)
        self.video_pooling = video_pooling
        self.audio_pooling = audio_pooling
        self.video_size = feature_sizes[0]
        self.input_norm = batch_norm(sum(feature_sizes)) if add_batch_norm else None
        pooled = video_pooling.output_size + (audio_pooling.output_size if audio_pooling else 0)
        self.hidden = None
        if hidden_size is not None:
            self.hidden = HiddenLayer(
                pooled, hidden_size, hidden_std, add_batch_norm and relu, relu
            )
            pooled = hidden_size
        self.gating = ContextGating(pooled, gating_remove_diag, add_batch_norm) if gating else None
        self.classifier = classifier.build(pooled, num_classes)

    def branch_norm(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The input batch norm of channels ``start:stop`` of the sampled frames ``x`` (a
        contiguous ``[B, N, stop - start]``). The norm is per channel, so normalising each
        branch on its own equals normalising all channels (statistics over all B*N
        sampled frames) and slicing, without a full-width copy or gradient."""
        norm = self.input_norm
        if norm is None:
            return x
        if self.training and start == 0:
            norm.num_batches_tracked.add_(1)
        out = F.batch_norm(
            x.view(-1, stop - start),
            norm.running_mean[start:stop],
            norm.running_var[start:stop],
            norm.weight[start:stop],
            norm.bias[start:stop],
            self.training,
            norm.momentum,
            norm.eps,
        )
        return out.view(x.shape)

    def forward(
        self,
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        width = inputs.shape[-1]
        bounds = [(0, self.video_size)]
        if self.audio_pooling is not None:
            bounds.append((self.video_size, width))
        frames = self.sampled_parts(inputs, num_frames, key, bounds)
        pooled = self.video_pooling(self.branch_norm(frames[0], 0, self.video_size))
        if self.audio_pooling is not None:
            audio = self.audio_pooling(self.branch_norm(frames[1], self.video_size, width))
            pooled = torch.cat([pooled, audio], dim=1)
        h = self.hidden(pooled) if self.hidden is not None else pooled
        if self.gating is not None:
            h = self.gating(h)
        return self.classifier(h)


class NetVLADModelLF(PoolingModel):
    """NetVLAD (or NetRVLAD with ``variant="lightvlad"``, NetVLAGD with ``"vlagd"``) over
    the video (K clusters) and audio (K/2) frames, hidden layer, optional Context Gating
    (``gating_remove_diag`` honoured), classifier. Hidden weights N(0, 1/K)."""

    VARIANTS = {"netvlad": NetVLAD, "lightvlad": NetRVLAD, "vlagd": NetVLAGD}

    def __init__(
        self,
        num_classes: int,
        feature_sizes: Sequence[int] = (1024, 128),
        *,
        iterations: int = 30,
        sample_random_frames: bool = True,
        cluster_size: int = 64,
        hidden_size: int = 1024,
        add_batch_norm: bool = True,
        relu: bool = True,
        gating: bool = False,
        gating_remove_diag: bool = False,
        variant: str = "netvlad",
        classifier: ClassifierSpec = MOE,
    ) -> None:
        pool = self.VARIANTS[variant]
        video, audio = _split(feature_sizes)
        super().__init__(
            num_classes=num_classes,
            feature_sizes=feature_sizes,
            video_pooling=pool(video, cluster_size, add_batch_norm),
            audio_pooling=pool(audio, cluster_size // 2, add_batch_norm) if audio else None,
            iterations=iterations,
            sample_random_frames=sample_random_frames,
            add_batch_norm=add_batch_norm,
            hidden_size=hidden_size,
            hidden_std=1 / math.sqrt(cluster_size),
            relu=relu,
            gating=gating,
            gating_remove_diag=gating_remove_diag,
            classifier=classifier,
        )


class NetFVModelLF(PoolingModel):
    """NetFV over video (K clusters) and audio (K/2), hidden layer, optional Context
    Gating (the original's NetFV ignores ``--gating_remove_diag``), classifier."""

    def __init__(
        self,
        num_classes: int,
        feature_sizes: Sequence[int] = (1024, 128),
        *,
        iterations: int = 30,
        sample_random_frames: bool = True,
        cluster_size: int = 64,
        hidden_size: int = 2048,
        add_batch_norm: bool = True,
        relu: bool = True,
        gating: bool = False,
        couple_weights: bool = True,
        coupling_factor: float = 0.01,
        classifier: ClassifierSpec = MOE,
    ) -> None:
        video, audio = _split(feature_sizes)

        def fv(size: int, clusters: int) -> nn.Module:
            return NetFV(size, clusters, add_batch_norm, couple_weights, coupling_factor)

        super().__init__(
            num_classes=num_classes,
            feature_sizes=feature_sizes,
            video_pooling=fv(video, cluster_size),
            audio_pooling=fv(audio, cluster_size // 2) if audio else None,
            iterations=iterations,
            sample_random_frames=sample_random_frames,
            add_batch_norm=add_batch_norm,
            hidden_size=hidden_size,
            hidden_std=1 / math.sqrt(cluster_size),
            relu=relu,
            gating=gating,
            gating_remove_diag=False,
            classifier=classifier,
        )


class GatedDbofModelLF(PoolingModel):
    """Gated DBoF over video (K clusters), Soft-DBoF over audio (K/8, optional max-pool
    branch), hidden layer unless ``fc_dimred=False``, classifier (no Context Gating)."""

    def __init__(
        self,
        num_classes: int,
        feature_sizes: Sequence[int] = (1024, 128),
        *,
        iterations: int = 30,
        sample_random_frames: bool = True,
        cluster_size: int = 16384,
        hidden_size: int = 2048,
        add_batch_norm: bool = True,
        relu: bool = True,
        fc_dimred: bool = True,
        max_pool: bool = False,
        classifier: ClassifierSpec = MOE,
    ) -> None:
        video, audio = _split(feature_sizes)
        super().__init__(
            num_classes=num_classes,
            feature_sizes=feature_sizes,
            video_pooling=GatedDBoF(video, cluster_size, add_batch_norm),
            audio_pooling=(
                SoftDBoF(audio, cluster_size // 8, add_batch_norm, max_pool) if audio else None
            ),
            iterations=iterations,
            sample_random_frames=sample_random_frames,
            add_batch_norm=add_batch_norm,
            hidden_size=hidden_size if fc_dimred else None,
            hidden_std=1 / math.sqrt(cluster_size),
            relu=relu,
            gating=False,
            gating_remove_diag=False,
            classifier=classifier,
        )


class SoftDbofModelLF(PoolingModel):
    """Soft-DBoF over video (K clusters) and audio (K/8), optional max-pool branches,
    hidden layer unless ``fc_dimred=False``, classifier."""

    def __init__(
        self,
        num_classes: int,
        feature_sizes: Sequence[int] = (1024, 128),
        *,
        iterations: int = 30,
        sample_random_frames: bool = True,
        cluster_size: int = 16384,
        hidden_size: int = 2048,
        add_batch_norm: bool = True,
        relu: bool = True,
        fc_dimred: bool = True,
        max_pool: bool = False,
        classifier: ClassifierSpec = MOE,
    ) -> None:
        video, audio = _split(feature_sizes)

        def soft(size: int, clusters: int) -> nn.Module:
            return SoftDBoF(size, clusters, add_batch_norm, max_pool)

        super().__init__(
            num_classes=num_classes,
            feature_sizes=feature_sizes,
            video_pooling=soft(video, cluster_size),
            audio_pooling=soft(audio, cluster_size // 8) if audio else None,
            iterations=iterations,
            sample_random_frames=sample_random_frames,
            add_batch_norm=add_batch_norm,
            hidden_size=hidden_size if fc_dimred else None,
            hidden_std=1 / math.sqrt(cluster_size),
            relu=relu,
            gating=False,
            gating_remove_diag=False,
            classifier=classifier,
        )


class DbofModelLF(PoolingModel):
    """DBoF (ReLU6 or GLU, mean + max pooling) over video (K) and audio (K/8), hidden
    layer, classifier. With GLU the projections have 2K and 2K/8 channels, as in the
    original (which also uses 1/sqrt(2K) for the hidden weights)."""

    def __init__(
        self,
        num_classes: int,
        feature_sizes: Sequence[int] = (1024, 128),
        *,
        iterations: int = 30,
        sample_random_frames: bool = True,
        cluster_size: int = 16384,
        hidden_size: int = 2048,
        add_batch_norm: bool = True,
        relu: bool = True,
        activation: str = "relu",
        classifier: ClassifierSpec = MOE,
    ) -> None:
        video, audio = _split(feature_sizes)
        clusters = 2 * cluster_size if activation == "glu" else cluster_size

        def dbof(size: int, k: int) -> nn.Module:
            return DBoF(size, k, activation, add_batch_norm)

        super().__init__(
            num_classes=num_classes,
            feature_sizes=feature_sizes,
            video_pooling=dbof(video, clusters),
            audio_pooling=dbof(audio, clusters // 8) if audio else None,
            iterations=iterations,
            sample_random_frames=sample_random_frames,
            add_batch_norm=add_batch_norm,
            hidden_size=hidden_size,
            hidden_std=1 / math.sqrt(clusters),
            relu=relu,
            gating=False,
            gating_remove_diag=False,
            classifier=classifier,
        )


class DbofModel(FrameLevelModel):
    """The starter's DBoF: input batch norm, ``relu6(BN(x W))`` over all D channels
    (K clusters), max or average over the sampled frames, hidden layer with batch norm
    (a bias without) and ReLU6, classifier. Hidden weights N(0, 1/K)."""

    def __init__(
        self,
        num_classes: int,
        feature_size: int = 1152,
        *,
        iterations: int = 30,
        sample_random_frames: bool = True,
        cluster_size: int = 8192,
        hidden_size: int = 1024,
        add_batch_norm: bool = True,
        pooling: str = "max",
        classifier: ClassifierSpec = MOE,
    ) -> None:
        super().__init__(iterations, sample_random_frames)
        if pooling not in ("max", "average"):
            raise YT8MError(f"--dbof_pooling_method={pooling!r}: expected 'max' or 'average'")
        self.input_norm = batch_norm(feature_size) if add_batch_norm else None
        self.clusters = ClusterLogits(feature_size, cluster_size, add_batch_norm)
        self.pooling = pooling
        self.hidden = HiddenLayer(
            cluster_size, hidden_size, 1 / math.sqrt(cluster_size), add_batch_norm, relu6=True
        )
        self.classifier = classifier.build(hidden_size, num_classes)

    def forward(
        self,
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.sample(inputs, num_frames, key)
        if self.input_norm is not None:
            x = self.input_norm(x.view(-1, x.shape[-1])).view(x.shape)
        h = F.relu6(self.clusters(x)).view(x.shape[0], x.shape[1], -1)
        pooled = h.amax(1) if self.pooling == "max" else h.mean(1)
        return self.classifier(self.hidden(pooled))


class FrameLevelLogisticModel(FrameLevelModel):
    """The starter's logistic regression on the average of each video's real frames
    (sum of all rows / num_frames; no sampling). L2 penalty 1e-8 on its weights.
    A video without frames averages to zeros."""

    def __init__(self, num_classes: int, feature_size: int = 1152) -> None:
        super().__init__(iterations=0, sample_random_frames=True)
        self.classifier = Logistic(feature_size, num_classes, l2_penalty=1e-8)

    def forward(
        self,
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        frames = self.input_transform.all_frames(inputs, num_frames)
        counts = num_frames.to(frames.device, frames.dtype).clamp_min(1).unsqueeze(1)
        return self.classifier(frames.sum(1) / counts)


def reverse_sequences(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """tf.reverse_sequence: reverse the first ``lengths[b]`` rows of each ``x[b]``,
    leave the rest. ``[B, T, D] -> [B, T, D]``."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    last = lengths.unsqueeze(1) - 1
    index = torch.where(steps <= last, last - steps, steps)
    return gather_frames(x, index)


class RecurrentModel(FrameLevelModel):
    """A stack of recurrent layers reading each video up to its length; the final states
    of every layer, concatenated, feed the classifier."""

    def __init__(
        self,
        rnn: nn.RNNBase,
        state_size: int,
        num_classes: int,
        iterations: int,
        random_frames: bool,
        backward: bool,
        classifier: ClassifierSpec,
    ) -> None:
        super().__init__(iterations, sample_random_frames=True)
        self.rnn = rnn
        self.random_frames = random_frames
        self.backward = backward
        self.classifier = classifier.build(state_size, num_classes)

    def final_states(self, state: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        inputs: torch.Tensor,
        num_frames: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        lengths = num_frames.to(inputs.device).clamp(0, inputs.shape[1])
        if self.random_frames:
            x = self.sample(inputs, lengths, key)
            lengths = lengths.clamp_max(x.shape[1])
        else:
            x = self.input_transform.all_frames(inputs, lengths)
        if self.backward:
            x = reverse_sequences(x, lengths)
        # A video with no frame keeps the zero initial state, as TensorFlow's dynamic_rnn.
        representation = self.final_states(final_states(self.rnn, x, lengths))
        return self.classifier(representation)


def _layer_sizes(rnn: nn.RNNBase) -> list[tuple[int, int]]:
    """``(input size, hidden size)`` of each layer."""
    return [
        (rnn.input_size if layer == 0 else rnn.hidden_size, rnn.hidden_size)
        for layer in range(rnn.num_layers)
    ]


class LstmModel(RecurrentModel):
    """WILLOW's LSTM: `layers` x `cells` LSTM, forget-gate bias +1, representation the
    concatenated final states ``[c1, h1, c2, h2, ...]`` (2 * layers * cells).

    With ``random_frames`` (``--lstm_random_sequence``) it reads `iterations` random
    frames, else all rows; each video is read up to ``min(num_frames, rows)``.
    TensorFlow's BasicLSTMCell has one bias per layer; PyTorch's LSTM a second one
    (bias_hh, kept at 0 initially): +4*cells trainable parameters per layer (the seed's
    2 x 1024 LSTM: 113,902,808 in TensorFlow, 113,911,000 here). The kernels are Glorot
    uniform over TensorFlow's ``[in + cells, 4 cells]`` kernel shape; the +1 forget bias is
    bias_ih's initial value (TensorFlow adds a constant 1 to a zero bias: same function).
    """

    def __init__(
        self,
        num_classes: int,
        feature_size: int = 1152,
        *,
        cells: int = 1024,
        layers: int = 2,
        iterations: int = 30,
        random_frames: bool = False,
        backward: bool = False,
        classifier: ClassifierSpec = MOE,
    ) -> None:
        rnn = nn.LSTM(feature_size, cells, num_layers=layers, batch_first=True)
        super().__init__(
            rnn, 2 * layers * cells, num_classes, iterations, random_frames, backward, classifier
        )
        for layer, (size, hidden) in enumerate(_layer_sizes(rnn)):
            for name in ("weight_ih", "weight_hh"):
                glorot_uniform_(getattr(rnn, f"{name}_l{layer}"), size + hidden, 4 * hidden)
            with torch.no_grad():
                getattr(rnn, f"bias_hh_l{layer}").zero_()
                bias = getattr(rnn, f"bias_ih_l{layer}").zero_()
                bias[hidden : 2 * hidden] = 1.0  # PyTorch's gate order: i, f, g, o

    def final_states(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h, c = state  # [layers, B, cells] each
        return torch.stack([c, h], dim=1).permute(2, 0, 1, 3).reshape(h.shape[1], -1)


class GruModel(RecurrentModel):
    """WILLOW's GRU: `layers` x `cells` GRU, representation ``[h1, h2, ...]`` (layers * cells).

    With ``random_frames`` (``--gru_random_sequence``) it reads `iterations` random
    frames, else all rows (the seed's GRU: all 300); each video is read up to its length.
    Differences from TensorFlow's GRUCell, accepted by fidelity.md §7: PyTorch applies
    the reset gate after the candidate's recurrent matmul (``r * (W h + b)`` instead of
    ``W (r * h)``), and carries a second bias (bias_hh, initially 0): +3*cells trainable
    parameters per layer (the seed's 2 x 1200 GRU: 73,715,832 in TensorFlow, 73,723,032
    here). Initialisation as TensorFlow's: Glorot uniform over the ``[in + cells, 2 cells]``
    gate and ``[in + cells, cells]`` candidate kernels, gate biases 1, candidate bias 0.
    """

    def __init__(
        self,
        num_classes: int,
        feature_size: int = 1152,
        *,
        cells: int = 1024,
        layers: int = 2,
        iterations: int = 30,
        random_frames: bool = False,
        backward: bool = False,
        classifier: ClassifierSpec = MOE,
    ) -> None:
        rnn = nn.GRU(feature_size, cells, num_layers=layers, batch_first=True)
        super().__init__(
            rnn, layers * cells, num_classes, iterations, random_frames, backward, classifier
        )
        for layer, (size, hidden) in enumerate(_layer_sizes(rnn)):
            for name in ("weight_ih", "weight_hh"):
                weight = getattr(rnn, f"{name}_l{layer}")  # rows: r, z (gates), n (candidate)
                glorot_uniform_(weight[: 2 * hidden], size + hidden, 2 * hidden)
                glorot_uniform_(weight[2 * hidden :], size + hidden, hidden)
            with torch.no_grad():
                getattr(rnn, f"bias_hh_l{layer}").zero_()
                bias = getattr(rnn, f"bias_ih_l{layer}").zero_()
                bias[: 2 * hidden] = 1.0

    def final_states(self, state: torch.Tensor) -> torch.Tensor:
        return state.permute(1, 0, 2).reshape(state.shape[1], -1)
