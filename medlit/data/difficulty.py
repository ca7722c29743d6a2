"""How hard a finding is to see, measured the same way on every data set: its size and its local contrast.

The generators know their own parameters, but those are not comparable across data sets (a phantom's added
density, a fundus lesion's absorption). These two numbers are computed from the image and the finding mask only,
so they also work on real data, where the mask is the union of the boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lesion_area_fraction(masks: torch.Tensor) -> torch.Tensor:
    """(N,) share of the image covered by each (N, H, W) bool finding mask."""
    return masks.flatten(1).float().mean(dim=1)


def lesion_contrast(images: torch.Tensor, masks: torch.Tensor, ring_px: int = 3) -> torch.Tensor:
    """(N,) |mean intensity inside the finding - mean intensity of a ring around it|, averaged over channels.

    The ring is the mask dilated by ``ring_px`` pixels (a square neighbourhood) minus the mask: the tissue just
    around the finding, which is what a reader compares it with. Images are in [0, 1], so the contrast is too.
    NaN for an empty mask or an empty ring (a finding covering the whole image).
    """
    if images.ndim != 4 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"lesion_contrast: images (N, C, H, W) and masks (N, H, W) needed, got "
                         f"{tuple(images.shape)} and {tuple(masks.shape)}")
    inside = masks.float()[:, None]
    dilated = F.max_pool2d(inside, kernel_size=2 * ring_px + 1, stride=1, padding=ring_px)
    ring = dilated - inside
    x = images.float()

    def mean_over(region: torch.Tensor) -> torch.Tensor:
        area = region.sum(dim=(1, 2, 3))
        return (x * region).sum(dim=(2, 3)).mean(dim=1) / area.where(area > 0, torch.ones_like(area)), area

    mean_in, area_in = mean_over(inside)
    mean_ring, area_ring = mean_over(ring)
    contrast = (mean_in - mean_ring).abs()
    return contrast.where((area_in > 0) & (area_ring > 0), torch.full_like(contrast, float("nan")))
