"""The benchmark CNN: a small MONAI ResNet with the input normalisation built in."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from monai.networks.nets import ResNet
from torch import nn

ARCHITECTURES = {
    # MONAI ResNet with basic blocks; stride-2 stem (MONAI's default stride-1 stem is ~6x slower at 128 px).
    "resnet10": dict(block="basic", layers=[1, 1, 1, 1], block_inplanes=[16, 32, 64, 128]),
    "resnet18": dict(block="basic", layers=[2, 2, 2, 2], block_inplanes=[32, 64, 128, 256]),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that determines a trained model; its hash names the cache entry."""

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
    code: str = ""  # hash of the data and model source code, filled in by the caller

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.dataset}-{self.image_size}px-s{self.seed}"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        return asdict(self)


class Classifier(nn.Module):
    """Image in [0, 1] -> class logits.

    The normalisation lives inside the model so that every explainer and metric works in image space
    (a zero substrate is a black image, not a mean-grey one).

    Attributes
    ----------
    net : the MONAI network
    feature_layer : the last convolutional stage, the layer Grad-CAM and other CAM methods read
    """

    def __init__(self, net: ResNet, mean: float = 0.5, std: float = 0.25) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    @property
    def feature_layer(self) -> nn.Module:
        return self.net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_model(config: ModelConfig) -> Classifier:
    """An untrained classifier for ``config``, seeded so that initial weights are reproducible."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    torch.manual_seed(config.seed)
    net = ResNet(spatial_dims=2, n_input_channels=config.in_channels, num_classes=config.num_classes,
                 conv1_t_stride=2, **ARCHITECTURES[config.arch])
    # In-place ReLUs break captum's layer hooks (a hooked output modified in place); they cost nothing here.
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return Classifier(net)
