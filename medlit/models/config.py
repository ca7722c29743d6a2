"""What determines a trained model: its kind, the data it saw and its training recipe's settings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Everything that determines a trained model; its hash names the cache entry.

    ``arch`` names a registered model kind (``medlit.models.MODEL_KINDS``), whose builder and training recipe
    read the remaining fields.
    """

    dataset: str
    image_size: int
    n_train: int
    n_val: int
    epochs: int
    batch_size: int
    seed: int = 0
    arch: str = "resnet10"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    in_channels: int = 1
    num_classes: int = 2
    confounder_strength: float = 0.0
    # Where it was trained: a GPU-trained model differs in its last bits from a CPU-trained one, so each has its
    # own cache entry and a CPU run never reuses GPU weights (CPU cubes stay bit-identical for a seed).
    device_type: str = "cpu"
    code: str = ""  # hash of the data and model source code, filled in by the caller

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.dataset}-{self.image_size}px-s{self.seed}"

    @property
    def label(self) -> str:
        """The model's name without the data set: the cube's ``model`` coordinate."""
        return f"{self.arch}-{self.image_size}px-s{self.seed}"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        return asdict(self)
