"""An LRP-ready copy of the benchmark ResNet (zennit calls such model rewrites canonizers).

Model-specific, so it lives with the model: ``ResNetClassifier.lrp_ready()`` calls it, and the LRP explainers
ask for the ``lrp_rewrite`` capability instead of knowing the architecture.

Relevance propagation needs every operation of the forward pass to be a module used once, so that a rule can
be attached to it. MONAI's ``ResNet`` is not written that way: a block applies one ``ReLU`` twice and adds its
shortcut functionally (``out += residual``), the network flattens with ``x.view``, and the classifier
normalises its input with tensor arithmetic. ``lrp_ready`` builds an equivalent ``nn.Sequential`` of
standard modules instead, leaving the caller's model untouched (undoing the rewrite is dropping the copy):

* batch normalisation (running statistics) is folded into the convolution before it, the standard practice
  for LRP: a rule then sees one affine layer, not two;
* the input normalisation (x - mean) / std is folded into the first convolution, which then reads the image
  in [0, 1] (so black pixels carry no relevance under the z-rules). The convolution's zero padding of the
  normalised image is padding of the raw image with ``mean``: an explicit ``ConstantPad2d(mean)`` followed by
  an unpadded convolution computes exactly the same logits;
* each block becomes ``ReLU(Add(branch(x), shortcut(x)))`` with a fresh ``ReLU`` per use and the addition
  as an ``Add`` module, so relevance splits between the summands in proportion to their contributions;
* ``x.view`` becomes ``nn.Flatten``.

Building the copy takes about 10 ms on a 2-core CPU (0.3M parameters), against about 100 ms for LRP of a
batch of 32 images at 128 px, so it is rebuilt at every call rather than cached: no cache key (parameter
version counters miss ``p.data = ...``) can then serve a stale copy of a model that was changed since.
"""

from __future__ import annotations

import torch
from monai.networks.nets import ResNet
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
from torch import nn
from torch.nn.utils import skip_init

from medlit.models.resnet import ResNetClassifier


class Add(nn.Module):
    """a + b as a module, so that LRP can attach a rule to a residual addition."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class ResidualBlock(nn.Module):
    """ReLU(branch(x) + shortcut(x)); the shortcut is the identity when ``shortcut`` is None."""

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.branch, self.shortcut, self.add, self.relu = branch, shortcut, Add(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.add(self.branch(x), x if self.shortcut is None else self.shortcut(x)))


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution computing bn(conv(x)) with the running statistics (evaluation mode), in float64."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("batch normalisation without running statistics cannot be folded")
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    folded = _conv_like(conv, bias=True)
    folded.weight.data = (conv.weight.double() * scale[:, None, None, None]).to(conv.weight.dtype)
    folded.bias.data = ((bias - bn.running_mean.double()) * scale + bn.bias.double()).to(conv.weight.dtype)
    return folded


def fold_input_normalisation(conv: nn.Conv2d, mean: torch.Tensor, std: torch.Tensor) -> nn.Sequential:
    """``ConstantPad2d(mean)`` and an unpadded convolution computing conv((x - mean) / std) exactly."""
    if mean.numel() != 1 or std.numel() != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("only a scalar normalisation before a zero-padded convolution can be folded")
    m, s = float(mean), float(std)
    folded = _conv_like(conv, bias=True, padding=0)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    folded.weight.data = (conv.weight.double() / s).to(conv.weight.dtype)
    folded.bias.data = (bias - m / s * conv.weight.double().sum(dim=(1, 2, 3))).to(conv.weight.dtype)
    (ph, pw) = conv.padding
    return nn.Sequential(nn.ConstantPad2d((pw, pw, ph, ph), m), folded)


def _conv_like(conv: nn.Conv2d, bias: bool, padding=None) -> nn.Conv2d:
    # skip_init: no random initialisation (it would cost time and advance the global RNG)
    return skip_init(nn.Conv2d, conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                     padding=conv.padding if padding is None else padding, dilation=conv.dilation,
                     groups=conv.groups, bias=bias, device=conv.weight.device)


def _canonical_block(block: nn.Module) -> ResidualBlock:
    if not isinstance(block.act, nn.ReLU):
        raise TypeError(f"LRP canonicalisation supports ReLU activations, not {type(block.act).__name__}")
    pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    if isinstance(block, ResNetBottleneck):
        pairs.append((block.conv3, block.bn3))
    branch = []
    for conv, bn in pairs:
        branch += [fold_batchnorm(conv, bn), nn.ReLU()]
    shortcut = block.downsample
    if shortcut is not None:
        if not isinstance(shortcut, nn.Sequential):  # MONAI's shortcut type "A" is a function
            raise TypeError("LRP canonicalisation supports shortcut type 'B' (convolution) only")
        shortcut = fold_batchnorm(shortcut[0], shortcut[1])
    return ResidualBlock(nn.Sequential(*branch[:-1]), shortcut)


def lrp_ready(model: ResNetClassifier) -> nn.Sequential:
    """An equivalent copy of ``model`` (same logits in evaluation mode) made only of modules LRP can rule.

    Its modules are ``ConstantPad2d``, ``Conv2d`` (biased, batch norm folded in), ``ReLU`` (each used once),
    ``MaxPool2d``, ``ResidualBlock`` (holding ``Add``), ``AdaptiveAvgPool2d``, ``Flatten`` and ``Linear``.
    No parameter is shared with ``model``.

    Raises
    ------
    TypeError
        if ``model`` is not a ``ResNetClassifier`` around a 2-D MONAI ``ResNet`` with ReLUs and convolution shortcuts.
    """
    if not isinstance(model, ResNetClassifier) or not isinstance(model.net, ResNet):
        raise TypeError("LRP canonicalisation needs a ResNetClassifier around a MONAI ResNet, "
                        f"not {type(model).__name__}")
    net = model.net
    if not isinstance(net.conv1, nn.Conv2d) or not isinstance(net.act, nn.ReLU):
        raise TypeError("LRP canonicalisation supports 2-D ResNets with ReLU activations")
    pad, conv1 = fold_input_normalisation(net.conv1, model.mean, model.std)
    layers = [pad, fold_batchnorm(conv1, net.bn1), nn.ReLU()]
    if not net.no_max_pool:
        layers.append(nn.MaxPool2d(net.maxpool.kernel_size, net.maxpool.stride, net.maxpool.padding,
                                   net.maxpool.dilation, ceil_mode=net.maxpool.ceil_mode))
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in stage:
            if not isinstance(block, (ResNetBlock, ResNetBottleneck)):
                raise TypeError(f"unexpected ResNet block {type(block).__name__}")
            layers.append(_canonical_block(block))
    layers += [nn.AdaptiveAvgPool2d(net.avgpool.output_size), nn.Flatten()]
    if net.fc is not None:
        fc = skip_init(nn.Linear, net.fc.in_features, net.fc.out_features, bias=net.fc.bias is not None,
                       device=net.fc.weight.device)
        fc.load_state_dict(net.fc.state_dict())  # copies, never shares
        with torch.no_grad():  # the model centres its logits (resnet.centre_logits): fold that into the head
            fc.weight -= fc.weight.mean(dim=0, keepdim=True)
            if fc.bias is not None:
                fc.bias -= fc.bias.mean()
        layers.append(fc)
    return nn.Sequential(*layers).eval()
