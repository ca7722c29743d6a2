"""Grad-CAM {cite}`selvaraju2017gradcam`, through captum's LayerGradCam."""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradCam

from medlit.explain.registry import register_explainer


@register_explainer("gradcam", family="activation", citation="selvaraju2017gradcam", long_name="Grad-CAM",
                    forward_passes=1, backward_passes=1)
def gradcam(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k alpha_k A_k) at the model's ``feature_layer``, alpha_k the spatial mean gradient.

    The coarse layer map is upsampled bilinearly to the input size (as in the paper); no normalisation.
    """
    layer_map = LayerGradCam(model, model.feature_layer).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(layer_map, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0].detach()
