"""Attention rollout {cite}`abnar2020rollout`: attention followed through every block, residual path included.

Each block's attention is fused over heads (mean, or max), the identity is added for the residual connection and
every row is renormalised to sum to one, ``Â_l = (A_l + I) / rowsum(A_l + I)``; the rolled-out attention is the
product ``Â_L ... Â_1`` and the map is its CLS row over the patches. Rows, not columns: a widely copied public
version divides by the column sums, which no longer gives a row-stochastic matrix.
"""

from __future__ import annotations

import torch

from medlit.explain.registry import register_explainer
from medlit.explain.tokens import patch_grid_map, to_image
from medlit.models.capabilities import ATTENTION
from medlit.models.capture import capture_attention

HEAD_FUSIONS = ("mean", "max")


def rollout(attentions: list[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """(B, N, N) rolled-out attention from per-block (B, heads, N, N) matrices, first block first; row-stochastic."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"unknown head fusion {head_fusion!r}; choose one of {', '.join(HEAD_FUSIONS)}")
    joint = None
    for attention in attentions:
        fused = attention.mean(dim=1) if head_fusion == "mean" else attention.amax(dim=1)
        fused = fused + torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        fused = fused / fused.sum(dim=-1, keepdim=True)
        joint = fused if joint is None else fused @ joint
    return joint


def rollout_grid(model, x: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """(B, h, w): the CLS row of the rolled-out attention on the patch grid."""
    attentions, _, _ = capture_attention(model, x)
    return patch_grid_map(model, rollout(attentions, head_fusion)[:, 0])


@register_explainer("attention_rollout", family="attention", citation="abnar2020rollout",
                    long_name="Attention rollout (head mean)", forward_passes=1, needs=(ATTENTION,))
def attention_rollout(model, x: torch.Tensor, target: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """Rollout's CLS row, upsampled; class-agnostic, like every attention map without gradients."""
    return to_image(rollout_grid(model, x, head_fusion), x)


@register_explainer("attention_rollout_max", family="attention", citation="abnar2020rollout",
                    long_name="Attention rollout (head max)", forward_passes=1, needs=(ATTENTION,))
def attention_rollout_max(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rollout with the heads fused by their maximum (the strongest head at each position)."""
    return attention_rollout(model, x, target, head_fusion="max")
