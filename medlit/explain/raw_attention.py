"""The last block's attention from the CLS token to each patch, averaged over heads: what a ViT "looks at" in its
final attention step, the map most often shown {cite}`dosovitskiy2021vit`, and the one that ignores every
earlier block and everything after the attention."""

from __future__ import annotations

import torch

from medlit.explain.registry import register_explainer
from medlit.explain.tokens import patch_grid_map, to_image
from medlit.models.capabilities import ATTENTION
from medlit.models.capture import capture_attention


def raw_attention_grid(model, x: torch.Tensor) -> torch.Tensor:
    """(B, h, w): row CLS of the last block's attention, mean over heads, on the patch grid."""
    attentions, _, _ = capture_attention(model, x)
    return patch_grid_map(model, attentions[-1].mean(dim=1)[:, 0])


@register_explainer("raw_attention", family="attention", citation="dosovitskiy2021vit",
                    long_name="Raw attention (last block, CLS row)", forward_passes=1, needs=(ATTENTION,))
def raw_attention(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The CLS row of the last block's head-mean attention, upsampled; the same for every target class."""
    return to_image(raw_attention_grid(model, x), x)
