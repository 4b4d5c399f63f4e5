"""The seed's models (fidelity.md §3, §4, §7): pooling blocks, classifiers, frame-level
and video-level models, linrongc's NeXtVLAD models (successors.md §3), and
`build_model(flags)`."""

from yt8m.models.layers import count_trainable_parameters
from yt8m.models.registry import MODELS, ModelError, build_model

__all__ = ["MODELS", "ModelError", "build_model", "count_trainable_parameters"]
