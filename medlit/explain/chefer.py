"""Gradient-weighted attention relevance, the "generic" rule of {cite}`chefer2021generic`.

Starting from ``R = I`` (each token relevant to itself), every block, first to last, adds the relevance its
attention passes on: ``Ā_l = mean_h (∇A_l ⊙ A_l)^+`` and ``R ← R + Ā_l R``, with ``∇A_l`` the gradient of the
explained logit (before the softmax) with respect to the block's attention. The map is the CLS row of ``R`` over
the patches. Unlike rollout it is class-specific, and the gradient silences heads that do not matter to the
output; no renormalisation (as in the authors' code).
"""

from __future__ import annotations

import torch

from medlit.explain.registry import register_explainer
from medlit.explain.tokens import patch_grid_map, to_image
from medlit.models.capabilities import ATTENTION, GRADIENTS
from medlit.models.capture import capture_attention


def generic_relevance(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """(B, N, N) relevance from per-block attention and its gradients (B, heads, N, N), first block first."""
    relevance = None
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient * attention).clamp(min=0).mean(dim=1)
        if relevance is None:
            relevance = torch.eye(weighted.shape[-1], dtype=weighted.dtype, device=weighted.device).expand_as(
                weighted).clone()
        relevance = relevance + weighted @ relevance
    return relevance


def chefer_grid(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, h, w): the CLS row of the generic relevance for ``target`` on the patch grid."""
    attentions, gradients, _ = capture_attention(model, x, target)
    return patch_grid_map(model, generic_relevance(attentions, gradients)[:, 0])


@register_explainer("chefer_relevance", family="attention", citation="chefer2021generic",
                    long_name="Gradient-weighted attention relevance (Chefer generic)", forward_passes=1,
                    backward_passes=1, needs=(GRADIENTS, ATTENTION))
def chefer_relevance(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The generic rule's CLS row for ``target``, upsampled."""
    return to_image(chefer_grid(model, x, target), x)
