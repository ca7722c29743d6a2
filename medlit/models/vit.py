"""The benchmark's vision transformer: a hybrid ViT {cite}`dosovitskiy2021vit` with a small convolutional stem
{cite}`xiao2021early`, built from MONAI's transformer blocks and registered as model kind ``vit``.

A stride-16 convolutional stem (a 4 x 4 convolution of stride 4, then 3 x 3 convolutions of strides 1, 2, 1 and 2;
each with batch norm and ReLU) turns a 128 px image into an 8 x 8 grid of tokens; a learned CLS token is prepended,
learned position embeddings are added (the CLS token's included), three pre-norm MONAI ``TransformerBlock``s
follow, then a layer norm and a linear head on the CLS token: plain logits, not MONAI ``ViT``'s default Tanh head. Trained from scratch, a pure patch-embedding ViT did not learn the phantom in
the CPU budget (AUROC about 0.59, measured with MONAI's ``ViT``), the convolutional stem does; the fundus lesions,
a few pixels wide, needed its stride-1 convolutions (``STEM``).

It offers input gradients, per-block attention (``attention_layers``: the attention dropout of each block, whose
output is the softmax attention, (B, heads, tokens, tokens), still in the autograd graph; MONAI's ``save_attn``
keeps a detached copy only) and feature maps for CAM methods: the input of the last three blocks' attention
(``norm1``), patch tokens as an 8 x 8 grid. The output of the last block is no use to a CAM: the head reads only
the CLS token there, so the patch tokens' gradients are zero.

Training: the benchmark's cross-entropy recipe with as many optimisation steps as the CNN's, but each epoch on a
different draw of training images (``medlit.data.fresh_draws``): the training split, then ``FRESH_DRAWS`` fresh
draws of the same size, in turn. A transformer from scratch needs more distinct images than the CNN, and the
generators make them cheaply.
"""

from __future__ import annotations

from copy import deepcopy

import torch
from monai.networks.blocks import TransformerBlock
from torch import nn

from medlit.data.fresh_draws import fresh_training_draw, has_fresh_draws
from medlit.data.sample import SampleSet
from medlit.models.capabilities import ATTENTION, CAM_STAGES, GRADIENTS, feature_map
from medlit.models.config import ModelConfig
from medlit.models.registry import register_model_kind
from medlit.models.resnet import centre_logits
from medlit.models.training import fit_cross_entropy, shuffled_labels

# Width, depth and heads sized for the 2-core CPU budget: a frozen forward at 128 px costs about 0.9 ms per image
# at batch 64 here, twice the ResNet-10's. Four blocks and a stem of 32/64 channels cost 1.4 ms with test AUROCs of
# 0.964 (phantom) and 0.896 (fundus); this model reached 0.957 and 0.913 (quick profile, one run each), and every
# perturbation method and faithfulness curve pays the forward thousands of times per image.
WIDTH, DEPTH, HEADS, MLP_DIM = 96, 3, 4, 192
# The stem: (output channels, kernel, stride) per convolution, each followed by batch norm and ReLU; None is WIDTH.
# Its strides multiply to PATCH. Measured on the quick fundus set (one run each): four 3 x 3 stride-2 convolutions
# alone reached a test AUROC of 0.57 (the phantom learned either way); with a stride-1 convolution after the second
# and the third, 0.94; this stem, whose first layer cuts 4 x 4 patches instead of two stride-2 convolutions, 0.90
# with a forward pass about a fifth cheaper; narrowed to 24/48 channels with three blocks (above), 0.91.
STEM = ((24, 4, 4), (24, 3, 1), (48, 3, 2), (48, 3, 1), (None, 3, 2))
PATCH = 16  # pixels per token side: the product of the stem's strides
# Images per epoch come from the training split and this many fresh draws of the same size, in turn.
FRESH_DRAWS = 3


class TokenEmbedding(nn.Module):
    """The CLS token and the learned position embeddings (CLS included), truncated-normal initialised."""

    def __init__(self, width: int, n_patches: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.zeros(1, 1 + n_patches, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1) + self.position


class HybridViTNet(nn.Module):
    """Stem -> tokens -> ``block1`` ... ``block<depth>`` -> norm -> head (children in that order, so that the
    randomisation cascade re-initialises head, norm, each block, the token embedding and the stem in turn)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, width: int = WIDTH,
                 depth: int = DEPTH, heads: int = HEADS, mlp_dim: int = MLP_DIM) -> None:
        super().__init__()
        if image_size % PATCH:
            raise ValueError(f"the ViT needs an image size divisible by {PATCH}, got {image_size}")
        self.grid = image_size // PATCH
        layers, channels = [], in_channels
        for out, kernel, stride in STEM:
            out = width if out is None else out
            layers += [nn.Conv2d(channels, out, kernel, stride=stride, padding=(kernel - 1) // 2 if kernel % 2 else 0,
                                 bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.stem = nn.Sequential(*layers)
        self.tokens = TokenEmbedding(width, self.grid ** 2)
        self.depth = depth
        for i in range(depth):
            self.add_module(f"block{i + 1}", TransformerBlock(width, mlp_dim, heads, qkv_bias=True))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    @property
    def blocks(self) -> list[TransformerBlock]:
        return [getattr(self, f"block{i + 1}") for i in range(self.depth)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(self.stem(x).flatten(2).transpose(1, 2))
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens)[:, 0])


class ViTClassifier(nn.Module):
    """Image in [0, 1] -> centred class logits, the normalisation built in (as ``ResNetClassifier``).

    Attributes
    ----------
    net : the :class:`HybridViTNet`
    attention_layers : per block, the module whose output is its softmax attention (B, heads, N, N)
    token_layer : the last block (its output tokens, before the final norm)
    patch_grid : (h, w) of the patch tokens; ``prefix_tokens`` (1, the CLS token) come before them
    feature_layers : stage -> module whose output CAM methods read (a block's ``norm1``)
    """

    frozen_inference = True  # no data-dependent control flow: no-grad scoring may run a frozen trace
    prefix_tokens = 1

    def __init__(self, net: HybridViTNet, mean: float = 0.5, std: float = 0.25) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        # The stem's convolutions are half the forward's time; channels-last runs them about 1.2x faster on the CPU.
        self.net.stem.to(memory_format=torch.channels_last)

    def inference_copy(self) -> "ViTClassifier":
        """A copy for no-grad scoring (``medlit.models.inference``): the same weights, attention by PyTorch's fused
        ``scaled_dot_product_attention`` (equal to float rounding, faster; it keeps no attention matrix)."""
        copy = deepcopy(self)
        for block in copy.net.blocks:
            block.attn.use_flash_attention = True
        return copy

    @property
    def patch_grid(self) -> tuple[int, int]:
        return self.net.grid, self.net.grid

    @property
    def token_layer(self) -> nn.Module:
        """The last block, whose output tokens the head reads (the CLS token) after the final norm."""
        return self.net.blocks[-1]

    @property
    def attention_layers(self) -> list[nn.Module]:
        return [block.attn.drop_weights for block in self.net.blocks]

    @property
    def feature_layers(self) -> dict[str, nn.Module]:
        last_three = self.net.blocks[::-1][:len(CAM_STAGES)]
        return {stage: block.norm1 for stage, block in zip(CAM_STAGES, last_three)}

    def feature_grid(self, stage: str, output: torch.Tensor) -> torch.Tensor:
        """(B, 1 + h*w, C) tokens -> (B, C, h, w): the patch tokens, the CLS token dropped."""
        h, w = self.patch_grid
        return output[:, self.prefix_tokens:].transpose(1, 2).reshape(output.shape[0], -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return centre_logits(self.net(x))


def training_epochs(config: ModelConfig, train: SampleSet):
    """``epoch -> images`` for the ViT: the training split, then fresh draws 1..``FRESH_DRAWS``, in turn.

    A real data set (no generator) gives its training split every epoch. Under a label-shuffle seed each draw's
    labels are permuted too (seeded by draw), like the training split's.
    """
    draws = FRESH_DRAWS if has_fresh_draws(config.dataset) else 0

    def epoch_data(epoch: int) -> SampleSet:
        index = epoch % (draws + 1)
        if index == 0:
            return train
        data = fresh_training_draw(config.dataset, index, len(train), size=config.image_size, seed=config.seed,
                                   confounder_strength=config.confounder_strength)
        if config.label_shuffle_seed is not None:
            data = shuffled_labels(data, config.label_shuffle_seed + index)
        return data

    return epoch_data


def fresh_draws_recipe(model: nn.Module, config: ModelConfig, train: SampleSet, val: SampleSet, *,
                       device: torch.device | str = "cpu", progress: bool = True) -> list[dict]:
    """The cross-entropy recipe over :func:`training_epochs`; each history row also names its draw."""
    epoch_data = training_epochs(config, train)
    history = fit_cross_entropy(model, config, epoch_data, val, device=device, progress=progress)
    draws = FRESH_DRAWS if has_fresh_draws(config.dataset) else 0
    return [{**row, "draw": (row["epoch"] - 1) % (draws + 1)} for row in history]


@register_model_kind("vit", recipe=fresh_draws_recipe,
                     capabilities={GRADIENTS, ATTENTION, *map(feature_map, CAM_STAGES)}, long_name=f"hybrid ViT (conv stem, {DEPTH} MONAI transformer blocks, width {WIDTH})",
                     citation="dosovitskiy2021vit")
def build_vit(config: ModelConfig) -> ViTClassifier:
    return ViTClassifier(HybridViTNet(config.in_channels, config.num_classes, config.image_size))
