"""Facts about a model that chapters report (computed, never typed in)."""

from __future__ import annotations

import torch


@torch.no_grad()
def feature_grid(model, x: torch.Tensor) -> tuple[int, int]:
    """(rows, columns) of the model's ``feature_layer`` output for input ``x``: the resolution of CAM maps."""
    shapes = []
    hook = model.feature_layer.register_forward_hook(lambda module, inputs, output: shapes.append(output.shape))
    try:
        model.eval()
        model(x)
    finally:
        hook.remove()
    return tuple(shapes[0][-2:])
