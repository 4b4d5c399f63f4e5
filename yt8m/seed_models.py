"""The seven models of the WILLOW seed README, with the flags its commands give them.

`training_flags` are the seed's `python train.py` flags without `--train_data_pattern`
(its data path) and without `--max_step` (its training length, in `max_steps`).
`size_flag` is the flag whose seed value the title names (256 clusters, 1200 cells);
`title_for` names a model built at another size honestly.
`tests/test_seed_models.py` checks this table against the seed file itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from yt8m.flags import Flags, parse_flags


@dataclass(frozen=True)
class SeedModel:
    title: str
    train_dir: str
    training_flags: str
    max_steps: int
    size_flag: str = ""

    def training_argv(self) -> list[str]:
        """The flags as a command line would hold them."""
        return shlex.split(self.training_flags)

    def title_for(self, flags: Flags) -> str:
        """The title of this model built with `flags`: the seed's title at the seed's size,
        else the size built and the seed's, e.g. "Gated NetVLAD (16 clusters; the seed's 256)"."""
        if not self.size_flag:
            return self.title
        seed_size = getattr(parse_flags(self.training_argv()), self.size_flag)
        size = getattr(flags, self.size_flag)
        if size == seed_size:
            return self.title
        head, _, tail = self.title.rpartition(str(seed_size))
        return f"{head}{size}{tail.removesuffix(')')}; the seed's {seed_size})"


_FRAMES = '--frame_features=True --feature_names="rgb,audio" --feature_sizes="1024,128"'

SEED_MODELS: tuple[SeedModel, ...] = (
    SeedModel(
        "Gated NetVLAD (256 clusters)",
        "gatednetvladLF-256k-1024-80-0002-300iter-norelu-basic-gatedmoe",
        f"--model=NetVLADModelLF {_FRAMES} --batch_size=80 --base_learning_rate=0.0002 "
        "--netvlad_cluster_size=256 --netvlad_hidden_size=1024 --moe_l2=1e-6 --iterations=300 "
        "--learning_rate_decay=0.8 --netvlad_relu=False --gating=True --moe_prob_gating=True",
        700000,
        "netvlad_cluster_size",
    ),
    SeedModel(
        "Gated NetFV (128 clusters)",
        "gatednetfvLF-128k-1024-80-0002-300iter-norelu-basic-gatedmoe",
        f"--model=NetFVModelLF {_FRAMES} --batch_size=80 --base_learning_rate=0.0002 "
        "--fv_cluster_size=128 --fv_hidden_size=1024 --moe_l2=1e-6 --iterations=300 "
        "--learning_rate_decay=0.8 --fv_relu=False --gating=True --moe_prob_gating=True "
        "--fv_couple_weights=False",
        600000,
        "fv_cluster_size",
    ),
    SeedModel(
        "Gated Soft-DBoF (4096 clusters)",
        "gateddboflf-4096-1024-80-0002-300iter",
        f"--model=GatedDbofModelLF {_FRAMES} --batch_size=80 --base_learning_rate=0.0002 "
        "--dbof_cluster_size=4096 --dbof_hidden_size=1024 --moe_l2=1e-6 --iterations=300 "
        "--dbof_relu=False",
        1000000,
        "dbof_cluster_size",
    ),
    SeedModel(
        "Soft-DBoF (8000 clusters)",
        "softdboflf-8000-1024-80-0002-300iter",
        f"--model=SoftDbofModelLF {_FRAMES} --batch_size=80 --base_learning_rate=0.0002 "
        "--dbof_cluster_size=8000 --dbof_hidden_size=1024 --iterations=300 --dbof_relu=False",
        800000,
        "dbof_cluster_size",
    ),
    SeedModel(
        "Gated NetRVLAD (256 clusters)",
        "gatedlightvladLF-256k-1024-80-0002-300iter-norelu-basic-gatedmoe",
        f"--model=NetVLADModelLF {_FRAMES} --batch_size=80 --base_learning_rate=0.0002 "
        "--netvlad_cluster_size=256 --netvlad_hidden_size=1024 --moe_l2=1e-6 --iterations=300 "
        "--learning_rate_decay=0.8 --netvlad_relu=False --gating=True --moe_prob_gating=True "
        "--lightvlad=True",
        600000,
        "netvlad_cluster_size",
    ),
    SeedModel(
        "GRU (2 layers of 1200)",
        "GRU-0002-1200",
        f"--model=GruModel {_FRAMES} --batch_size=128 --base_learning_rate=0.0002 "
        "--gru_cells=1200 --learning_rate_decay=0.9 --moe_l2=1e-6",
        300000,
        "gru_cells",
    ),
    SeedModel(
        "LSTM (2 layers of 1024)",
        "lstm-0002-val-150-random-2",
        f"--model=LstmModel {_FRAMES} --batch_size=128 --base_learning_rate=0.0002 "
        "--iterations=150 --lstm_random_sequence=True",
        400000,
        "lstm_cells",
    ),
)
