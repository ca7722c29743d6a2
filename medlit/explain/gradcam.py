"""Grad-CAM {cite}`selvaraju2017gradcam` at any feature stage the model declares."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medlit.explain.registry import register_cam
from medlit.models.capabilities import GRADIENTS, feature_grid, feature_layer
from medlit.models.capture import capture


def stage_activations_and_gradients(model, x: torch.Tensor, target: torch.Tensor | None, stage: str):
    """(A, dA) of the model's feature map at ``stage`` as (B, C, h, w) grids; dA is None without a target."""
    activations, gradients, _ = capture(model, feature_layer(model, stage), x, target,
                                        reshape=lambda output: feature_grid(model, stage, output))
    return activations, gradients


def upsample(cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) -> (B, H, W) at the input size, bilinear (half-pixel centres), as in the paper."""
    return F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]


@register_cam("gradcam", family="activation", citation="selvaraju2017gradcam", long_name="Grad-CAM",
              forward_passes=1, backward_passes=1, needs=(GRADIENTS,))
def gradcam(model, x: torch.Tensor, target: torch.Tensor, stage: str = "last") -> torch.Tensor:
    """ReLU(sum_k alpha_k A_k) at the feature map of ``stage``, alpha_k the spatial mean gradient of the target
    logit; upsampled bilinearly to the input size; no normalisation.

    Registered as ``gradcam`` (last stage), ``gradcam_stage-1`` and ``gradcam_stage-2``. A test checks it
    against captum's ``LayerGradCam`` and MONAI's ``GradCAM``.
    """
    activations, gradients = stage_activations_and_gradients(model, x, target, stage)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
    return upsample(cam, x)
