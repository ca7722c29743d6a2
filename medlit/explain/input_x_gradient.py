"""Gradient times input {cite}`shrikumar2017inputxgradient`, through captum's InputXGradient."""

from __future__ import annotations

import torch
from captum.attr import InputXGradient

from medlit.explain.registry import register_explainer
from medlit.models.capabilities import GRADIENTS


@register_explainer("input_x_gradient", family="gradient", citation="shrikumar2017inputxgradient",
                    long_name="Input × Gradient", forward_passes=1, backward_passes=1, needs=(GRADIENTS,))
def input_x_gradient(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """x ⊙ d y_target / d x, summed over channels and signed.

    The sum over channels keeps the attribution additive (for a linear model it is the per-pixel
    contribution w · x to the logit); the sign is kept, negative pixels speak against the class.
    """
    return InputXGradient(model).attribute(x, target=target).sum(dim=1).detach()
