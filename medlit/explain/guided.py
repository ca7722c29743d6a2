"""Guided backpropagation {cite}`springenberg2015guided` and Guided Grad-CAM {cite}`selvaraju2017gradcam`."""

from __future__ import annotations

import torch
from captum.attr import GuidedBackprop, GuidedGradCam

from medlit.explain.registry import register_cam, register_explainer
from medlit.models.capabilities import GRADIENTS, feature_layer


@register_explainer("guided_backprop", family="gradient", citation="springenberg2015guided",
                    long_name="Guided backpropagation", forward_passes=1, backward_passes=1, needs=(GRADIENTS,))
def guided_backprop(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The gradient with every ReLU passing back only positive gradients; absolute, maximum over channels.

    The reduction is that of ``saliency`` so the two maps are comparable. captum hooks every ``nn.ReLU``
    module (a module used twice, as in MONAI's residual blocks, is handled per call) and removes the hooks.
    """
    return GuidedBackprop(model).attribute(x, target=target).abs().amax(dim=1).detach()


@register_cam("guided_gradcam", family="activation", citation="selvaraju2017gradcam",
              long_name="Guided Grad-CAM", forward_passes=2, backward_passes=2, needs=(GRADIENTS,))
def guided_gradcam(model, x: torch.Tensor, target: torch.Tensor, stage: str = "last") -> torch.Tensor:
    """Guided backpropagation ⊙ Grad-CAM at the feature map of ``stage``; absolute, maximum over channels.

    Grad-CAM is upsampled bilinearly (as the registered ``gradcam`` map; captum's default is nearest), so
    the map is exactly ``guided_backprop``'s absolute gradient times ``gradcam``'s map for one channel.
    Through captum, which reads the layer's output as a grid; for a model whose feature map needs reshaping (a
    ViT's tokens) the same product is formed from ``guided_backprop`` and ``gradcam`` (a non-negative CAM does not
    change which channel is largest).
    """
    if getattr(model, "feature_grid", None) is not None:
        from medlit.explain.gradcam import gradcam

        return guided_backprop(model, x, target) * gradcam(model, x, target, stage=stage)
    attributions = GuidedGradCam(model, feature_layer(model, stage)).attribute(x, target=target,
                                                                              interpolate_mode="bilinear")
    return attributions.abs().amax(dim=1).detach()
