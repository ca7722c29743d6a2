"""Facts about a model that chapters report (computed, never typed in)."""

from __future__ import annotations

import torch

from medlit.models.capabilities import feature_grid as to_grid
from medlit.models.capabilities import feature_layer
from medlit.models.capture import capture


@torch.no_grad()
def feature_grid(model, x: torch.Tensor, stage: str = "last") -> tuple[int, int]:
    """(rows, columns) of the model's feature map at ``stage`` for input ``x``: the resolution of CAM maps."""
    model.eval()
    activations, _, _ = capture(model, feature_layer(model, stage), x,
                                reshape=lambda output: to_grid(model, stage, output))
    return tuple(activations.shape[-2:])
