"""Feature ablation on grid superpixels: occlusion {cite}`zeiler2014occlusion` with non-overlapping cells.

Through captum's ``FeatureAblation``; the ablated copies of all images of a batch run in batches.
"""

from __future__ import annotations

import torch
from captum.attr import FeatureAblation

from medlit.explain.registry import FORWARD_BATCH, register_explainer
from medlit.explain.superpixel_shap import grid_superpixels
from medlit.perturbation import PROTOCOL_SUBSTRATE, explained_forward, perturbation_fill


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
    batch_size : images per forward pass (captum's ``perturbations_per_eval`` is ``batch_size // B``)
    """
    baselines = perturbation_fill(x, baseline)
    attributions = FeatureAblation(explained_forward(model)).attribute(
        x, baselines=baselines, target=target, feature_mask=grid_superpixels(x.shape[-2], x.shape[-1], cells, x.device),
        perturbations_per_eval=max(1, batch_size // x.shape[0]))
    return attributions.sum(dim=1).detach().float()
