"""Occlusion {cite}`zeiler2014occlusion`: the drop of the target logit when a square window is covered.

Through captum's ``Occlusion``; the occluded copies of all images of a batch run in batches.
"""

from __future__ import annotations

import torch
from captum.attr import Occlusion

from medlit.explain.registry import FORWARD_BATCH, register_explainer
from medlit.perturbation import substrate_images


def occlusion_window(size: int) -> tuple[int, int]:
    """(window, stride) for an image of side ``size``: window size/8 (16 at 128 px), stride half the window."""
    window = max(2, size // 8)
    return window, max(1, window // 2)


# Forward passes at the quick profile (128 px): ((128 - 16) / 8 + 1)^2 = 225 windows + the unoccluded image.
@register_explainer("occlusion", family="perturbation", citation="zeiler2014occlusion", long_name="Occlusion",
                    forward_passes=226, backward_passes=0)
def occlusion(model, x: torch.Tensor, target: torch.Tensor, window: int | None = None, stride: int | None = None,
              baseline: str = "mean", batch_size: int = FORWARD_BATCH) -> torch.Tensor:
    """sum_c of the mean, over windows covering a pixel, of f_t(x) - f_t(x with the window set to the baseline).

    Parameters
    ----------
    window, stride : side and step of the square window; default ``occlusion_window(H)`` (16 and 8 at 128 px)
    baseline : ``"mean"`` (the image's mean intensity, per image) or ``"zeros"``. The default is the mean: on a
        radiograph a black patch is itself an anomaly (a black patch inside a lung was seen to keep p(finding)
        high), so a mean-grey patch removes information with less new evidence.
    batch_size : images per forward pass; captum's ``perturbations_per_eval`` is ``batch_size // B``

    Notes
    -----
    Signed: positive where covering the pixel lowers the target logit. f_t is the logit (captum's default).
    """
    default_window, default_stride = occlusion_window(x.shape[-1])
    window, stride = window or default_window, stride or (default_stride if window is None else max(1, window // 2))
    baselines = substrate_images(x, baseline)
    attributions = Occlusion(model).attribute(
        x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride),
        baselines=baselines, target=target, perturbations_per_eval=max(1, batch_size // x.shape[0]))
    return attributions.sum(dim=1).detach().float()
