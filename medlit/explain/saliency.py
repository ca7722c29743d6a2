"""Vanilla gradient saliency {cite}`simonyan2014saliency`, through captum's Saliency."""

from __future__ import annotations

import torch
from captum.attr import Saliency

from medlit.explain.registry import register_explainer
from medlit.models.capabilities import GRADIENTS


@register_explainer("saliency", family="gradient", citation="simonyan2014saliency", long_name="Saliency (|gradient|)",
                    forward_passes=1, backward_passes=1, needs=(GRADIENTS,))
def saliency(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|d y_target / d x|, the maximum over channels (the paper's choice for colour images)."""
    grads = Saliency(model).attribute(x, target=target, abs=True)
    return grads.amax(dim=1).detach()
