"""The benchmark CNN: a small MONAI ResNet with the input normalisation built in, registered as model kinds
``resnet10`` and ``resnet18``.

It offers input gradients, feature maps at its last three stages (``layer4``, ``layer3``, ``layer2``; 4 x 4,
8 x 8 and 16 x 16 at 128 px) and an LRP-ready rewrite (``medlit.models.resnet_lrp``).
"""

from __future__ import annotations

import torch
from monai.networks.nets import ResNet
from torch import nn

from medlit.models.capabilities import CAM_STAGES, GRADIENTS, LRP_REWRITE, feature_map
from medlit.models.config import ModelConfig
from medlit.models.registry import register_model_kind
from medlit.models.training import cross_entropy_recipe

ARCHITECTURES = {
    # MONAI ResNet with basic blocks; stride-2 stem (MONAI's default stride-1 stem is ~6x slower at 128 px).
    "resnet10": dict(block="basic", layers=[1, 1, 1, 1], block_inplanes=[16, 32, 64, 128]),
    "resnet18": dict(block="basic", layers=[2, 2, 2, 2], block_inplanes=[32, 64, 128, 256]),
}
CAPABILITIES = {GRADIENTS, LRP_REWRITE, *(feature_map(stage) for stage in CAM_STAGES)}


class ResNetClassifier(nn.Module):
    """Image in [0, 1] -> centred class logits (:func:`centre_logits`).

    The normalisation lives inside the model so that every explainer and metric works in image space
    (a zero substrate is a black image, not a mean-grey one).

    Attributes
    ----------
    net : the MONAI network
    feature_layers : stage -> module whose output CAM methods read: ``"last"`` is ``layer4``, ``"last-1"``
        ``layer3``, ``"last-2"`` ``layer2``
    """

    # no data-dependent control flow: no-grad scoring may run a frozen trace (medlit.models.inference)
    frozen_inference = True

    def __init__(self, net: ResNet, mean: float = 0.5, std: float = 0.25) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        # Channels-last (NHWC) runs this network 1.3-1.6x faster on the CPU, forward and backward, mostly in the
        # stem's max-pool (scripts/bench_explainers.py); the numbers agree with NCHW to float rounding.
        self.to(memory_format=torch.channels_last)

    @property
    def feature_layers(self) -> dict[str, nn.Module]:
        return dict(zip(CAM_STAGES, (self.net.layer4, self.net.layer3, self.net.layer2)))

    def lrp_ready(self) -> nn.Sequential:
        """An equivalent copy made only of modules LRP can attach rules to (see ``medlit.models.resnet_lrp``)."""
        from medlit.models.resnet_lrp import lrp_ready

        return lrp_ready(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return centre_logits(self.net((x - self.mean) / self.std))


def centre_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits minus their mean over classes: the same softmax, and for two classes ``+-`` half the log-odds.

    Every method then explains one quantity, the centred logit of the target (``medlit.explain.targets``), whatever
    constant the training left in the head.
    """
    return logits - logits.mean(dim=1, keepdim=True)


def _build(config: ModelConfig) -> ResNetClassifier:
    net = ResNet(spatial_dims=2, n_input_channels=config.in_channels, num_classes=config.num_classes,
                 conv1_t_stride=2, **ARCHITECTURES[config.arch])
    # In-place ReLUs break captum's layer hooks (a hooked output modified in place); they cost nothing here.
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return ResNetClassifier(net)


for _name, _layers in ARCHITECTURES.items():
    register_model_kind(_name, recipe=cross_entropy_recipe, capabilities=CAPABILITIES, citation="he2016resnet",
                        long_name=f"MONAI ResNet-{_name[6:]} (widths {_layers['block_inplanes']})")(_build)
