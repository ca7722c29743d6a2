"""Grad-CAM++ {cite}`chattopadhay2018gradcampp`: Grad-CAM with pixel-wise, second-order channel weights."""

from __future__ import annotations

import torch
from torch import nn

from medlit.explain.registry import register_explainer


def layer_activations_and_gradients(model, layer: nn.Module, x: torch.Tensor,
                                    target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The output A of ``layer`` and d y_target / d A, for every image of the batch (the hook is always removed)."""
    store = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: store.setdefault("A", output))
    try:
        with torch.enable_grad():
            scores = model(x).gather(1, target[:, None]).sum()  # images are independent: one backward for all
            gradients = torch.autograd.grad(scores, store["A"])[0]
    finally:
        handle.remove()
    return store["A"].detach(), gradients.detach()


@register_explainer("gradcam_pp", family="activation", citation="chattopadhay2018gradcampp", long_name="Grad-CAM++",
                    forward_passes=1, backward_passes=1)
def gradcam_pp(model, x: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ReLU(sum_k w_k A_k) at the model's ``feature_layer``, upsampled bilinearly to the input size.

    With g = d S / d A for the class score (logit) S, the closed form of the paper for the exponential
    exp(S) (exact for piecewise-linear networks, whose higher derivatives of S vanish) is

        alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab g_kij^3),    w_k = sum_ij alpha_kij ReLU(g_kij),

    as in pytorch-grad-cam: the factor exp(S) of the paper's weights is positive and the same for every
    channel, so dropping it only rescales each map. ``eps`` is pytorch-grad-cam's stabiliser in the
    denominator, and alpha = 0 where g = 0. No normalisation.
    """
    activations, g = layer_activations_and_gradients(model, model.feature_layer, x, target)
    g2, g3 = g**2, g**3
    alpha = g2 / (2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3 + eps)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
    return nn.functional.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
