"""From a row over a transformer's tokens to a map over the image, shared by the attention methods."""

from __future__ import annotations

import torch

from medlit.explain.gradcam import upsample


def patch_grid_map(model, row: torch.Tensor) -> torch.Tensor:
    """(B, N) values over all tokens -> (B, h, w) over the patch grid, the prefix (CLS) tokens dropped."""
    h, w = model.patch_grid
    patches = row[:, getattr(model, "prefix_tokens", 1):]
    if patches.shape[1] != h * w:
        raise ValueError(f"{patches.shape[1]} patch tokens do not fill the model's {h} x {w} patch grid")
    return patches.reshape(-1, h, w)


def to_image(grid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, h, w) patch-grid map -> (B, H, W) at the input size, bilinear, as CAM maps are upsampled."""
    return upsample(grid[:, None].float(), x)
