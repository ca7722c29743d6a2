"""What determines a trained model: its kind, the data it saw and its training recipe's settings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Fields added after models were cached, with the value that means "as before": left out of the digest at that
# value, so that every model cached before the field existed keeps its digest.
DIGEST_OMITS_AT_DEFAULT = {"label_shuffle_seed": None, "base": ""}


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
    # The data randomisation test of Adebayo et al. (2018): the training labels (only those; validation and test
    # keep theirs, so the record shows chance accuracy) are permuted with this seed. None: the real labels.
    label_shuffle_seed: int | None = None
    # A fine-tuned kind's starting point: the cache file stem (name-digest) of the trained model it starts from,
    # so that a retrained base retrains it. "" for a model trained from scratch.
    base: str = ""

    @property
    def _suffix(self) -> str:
        return "" if self.label_shuffle_seed is None else f"-shuffled{self.label_shuffle_seed}"

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.dataset}-{self.image_size}px-s{self.seed}{self._suffix}"

    @property
    def label(self) -> str:
        """The model's name without the data set: the cube's ``model`` coordinate."""
        return f"{self.arch}-{self.image_size}px-s{self.seed}{self._suffix}"

    def digest(self) -> str:
        fields = {k: v for k, v in asdict(self).items()
                  if not (k in DIGEST_OMITS_AT_DEFAULT and v == DIGEST_OMITS_AT_DEFAULT[k])}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        return asdict(self)
