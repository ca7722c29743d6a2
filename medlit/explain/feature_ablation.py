"""Feature ablation on grid superpixels: occlusion {cite}`zeiler2014occlusion` with non-overlapping cells.

The ablated copies of all images of a batch run in chunks of ``batch_size`` forward passes
(:func:`medlit.perturbation.region_drops`); the map equals captum's ``FeatureAblation`` with the same cells and
baselines (checked in the tests).
"""

from __future__ import annotations

import torch

from medlit.explain.registry import FORWARD_BATCH, register_explainer
from medlit.explain.superpixel_shap import grid_superpixels
from medlit.perturbation import PROTOCOL_SUBSTRATE, perturbation_fill, region_drops


# forward passes: one per superpixel (64) + the unablated image
@register_explainer("feature_ablation", family="perturbation", citation="zeiler2014occlusion",
                    long_name="Feature ablation (grid superpixels)", forward_passes=65, backward_passes=0)
def feature_ablation(model, x: torch.Tensor, target: torch.Tensor, cells: int = 8,
                     baseline: str = PROTOCOL_SUBSTRATE,
                     batch_size: int = FORWARD_BATCH) -> torch.Tensor:
    """f_t(x) - f_t(x with one grid cell set to the baseline), painted on that cell; f_t the explained score
    (the target's centred logit).

    Parameters
    ----------
    cells : grid side (64 cells by default), the same grid as ``kernel_shap`` and ``lime``
    baseline : ``"blur"`` (the protocol substrate: the cell shows the blurred image), ``"mean"`` (the image's mean
        intensity) or ``"zeros"``
    batch_size : ablated images per forward pass

    A cell covers every channel, so the map (the sum of the per-channel attributions, as with captum) is C times
    the drop.
    """
    segments = grid_superpixels(x.shape[-2], x.shape[-1], cells, x.device)[0, 0]  # (H, W) cell index
    cell_masks = segments[None] == torch.arange(cells * cells, device=x.device)[:, None, None]  # (R, H, W)
    drops = region_drops(model, x, target, cell_masks, perturbation_fill(x, baseline), batch_size)  # (B, R)
    return x.shape[1] * drops[:, segments]
