"""Grad-CAM++ {cite}`chattopadhay2018gradcampp`: Grad-CAM with pixel-wise, second-order channel weights."""

from __future__ import annotations

import torch

from medlit.explain.gradcam import stage_activations_and_gradients, upsample
from medlit.explain.registry import register_cam
from medlit.models.capabilities import GRADIENTS


@register_cam("gradcam_pp", family="activation", citation="chattopadhay2018gradcampp", long_name="Grad-CAM++",
              forward_passes=1, backward_passes=1, needs=(GRADIENTS,))
def gradcam_pp(model, x: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, stage: str = "last") -> torch.Tensor:
    """ReLU(sum_k w_k A_k) at the feature map of ``stage``, upsampled bilinearly to the input size.

    With g = d S / d A for the class score (logit) S, the closed form of the paper for the exponential
    exp(S) (exact for piecewise-linear networks, whose higher derivatives of S vanish) is

        alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab g_kij^3),    w_k = sum_ij alpha_kij ReLU(g_kij),

    as in pytorch-grad-cam: the factor exp(S) of the paper's weights is positive and the same for every
    channel, so dropping it only rescales each map. ``eps`` is pytorch-grad-cam's stabiliser in the
    denominator, and alpha = 0 where g = 0. No normalisation.
    """
    activations, g = stage_activations_and_gradients(model, x, target, stage)
    g2, g3 = g**2, g**3
    alpha = g2 / (2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3 + eps)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
    return upsample(cam, x)
