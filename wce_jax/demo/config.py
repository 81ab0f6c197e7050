"""The settings of a comparison run, apart from the code so that ``--help`` is quick."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Config:
    """What a comparison run does; :data:`DEFAULT` and :data:`QUICK` are the CLI's."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3  # Adam
    imbalance: float = 50.0  # largest over smallest training-class count
    data_seed: int = 0  # the split and the subsample; the same for every run
    minority_k: int = 3  # minority recall: mean recall of the k rarest training classes


DEFAULT = Config()
QUICK = Config(seeds=(0, 1), steps=150)
