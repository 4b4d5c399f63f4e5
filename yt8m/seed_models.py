"""The seven models of the WILLOW seed README, with the flags its commands give them.

`training_flags` are the seed's `python train.py` flags without `--train_data_pattern`
(its data path) and without `--max_step` (its training length, in `max_steps`).
`tests/test_seed_models.py` checks this table against the seed file itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class SeedModel:
    title: str
    train_dir: str
    training_flags: str
    max_steps: int

    def training_argv(self) -> list[str]:
        """The flags as a command line would hold them."""
        return shlex.split(self.training_flags)


_FRAMES = '--frame_features=True --feature_names="rgb,audio" --feature_sizes="1024,128"'

SEED_MODELS: tuple[SeedModel, ...] = (
    SeedModel(
        "Gated NetVLAD (256 clusters)",
        "gatednetvladLF-256k-1024-80-0002-300iter-norelu-basic-gatedmoe",
        f"--model=NetVLADModelLF {_FRAMES} --batch_size=80 --base_learning_rate=0.0002 "
        "--netvlad_cluster_size=256 --netvlad_hidden_size=1024 --moe_l2=1e-6 --iterations=300 "
        "--learning_rate_decay=0.8 --netvlad_relu=False --gating=True --moe_prob_gating=True",
        700000,
    ),
    SeedModel(
        "Gated NetFV (128 clusters)",
        "gatednetfvLF-128k-1024-80-0002-300iter-norelu-basic-gatedmoe",
        f"--model=NetFVModelLF {_FRAMES} --batch_size=80 --base_learning_rate=0.0002 "
        "--fv_cluster_size=128 --fv_hidden_size=1024 --moe_l2=1e-6 --iterations=300 "
        "--learning_rate_decay=0.8 --fv_relu=False --gating=True --moe_prob_gating=True "
        "--fv_couple_weights=False",
        600000,
    ),
    SeedModel(
        "Gated Soft-DBoF (4096 clusters)",
        "gateddboflf-4096-1024-80-0002-300iter",
        f"--model=GatedDbofModelLF {_FRAMES} --batch_size=80 --base_learning_rate=0.0002 "
        "--dbof_cluster_size=4096 --dbof_hidden_size=1024 --moe_l2=1e-6 --iterations=300 "
        "--dbof_relu=False",
        1000000,
    ),
    SeedModel(
        "Soft-DBoF (8000 clusters)",
        "softdboflf-8000-1024-80-0002-300iter",
        f"--model=SoftDbofModelLF {_FRAMES} --batch_size=80 --base_learning_rate=0.0002 "
        "--dbof_cluster_size=8000 --dbof_hidden_size=1024 --iterations=300 --dbof_relu=False",
        800000,
    ),
    SeedModel(
        "Gated NetRVLAD (256 clusters)",
        "gatedlightvladLF-256k-1024-80-0002-300iter-norelu-basic-gatedmoe",
        f"--model=NetVLADModelLF {_FRAMES} --batch_size=80 --base_learning_rate=0.0002 "
        "--netvlad_cluster_size=256 --netvlad_hidden_size=1024 --moe_l2=1e-6 --iterations=300 "
        "--learning_rate_decay=0.8 --netvlad_relu=False --gating=True --moe_prob_gating=True "
        "--lightvlad=True",
        600000,
    ),
    SeedModel(
        "GRU (2 layers of 1200)",
        "GRU-0002-1200",
        f"--model=GruModel {_FRAMES} --batch_size=128 --base_learning_rate=0.0002 "
        "--gru_cells=1200 --learning_rate_decay=0.9 --moe_l2=1e-6",
        300000,
    ),
    SeedModel(
        "LSTM (2 layers of 1024)",
        "lstm-0002-val-150-random-2",
        f"--model=LstmModel {_FRAMES} --batch_size=128 --base_learning_rate=0.0002 "
        "--iterations=150 --lstm_random_sequence=True",
        400000,
    ),
)
