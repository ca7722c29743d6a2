"""Occlusion {cite}`zeiler2014occlusion`: the drop of the explained score when a square window is covered.

Through captum's ``Occlusion``; the occluded copies of all images of a batch run in batches.
"""

from __future__ import annotations

import torch
from captum.attr import Occlusion

from medlit.explain.registry import FORWARD_BATCH, register_explainer
from medlit.perturbation import PROTOCOL_SUBSTRATE, explained_forward, perturbation_fill


def occlusion_window(size: int) -> tuple[int, int]:
    """(window, stride) for an image of side ``size``: window size/8 (16 at 128 px), stride half the window."""
    window = max(2, size // 8)
    return window, max(1, window // 2)


# Forward passes at the quick profile (128 px): ((128 - 16) / 8 + 1)^2 = 225 windows + the unoccluded image.
@register_explainer("occlusion", family="perturbation", citation="zeiler2014occlusion", long_name="Occlusion",
                    forward_passes=226, backward_passes=0)
def occlusion(model, x: torch.Tensor, target: torch.Tensor, window: int | None = None, stride: int | None = None,
              baseline: str = PROTOCOL_SUBSTRATE, batch_size: int = FORWARD_BATCH) -> torch.Tensor:
    """sum_c of the mean, over windows covering a pixel, of f_t(x) - f_t(x with the window set to the baseline).

    Parameters
    ----------
    window, stride : side and step of the square window; default ``occlusion_window(H)`` (16 and 8 at 128 px)
    baseline : what a covered window becomes: ``"blur"`` (the protocol substrate,
        :data:`medlit.perturbation.PROTOCOL_SUBSTRATE`: the window shows the blurred image, the substrate deletion
        scores against), ``"mean"`` (the image's mean intensity) or ``"zeros"``
    batch_size : images per forward pass; captum's ``perturbations_per_eval`` is ``batch_size // B``

    Notes
    -----
    Signed: positive where covering the pixel lowers the explained score. f_t is the target's centred logit
    (:func:`medlit.explain.targets.explained_score`).
    """
    default_window, default_stride = occlusion_window(x.shape[-1])
    window, stride = window or default_window, stride or (default_stride if window is None else max(1, window // 2))
    baselines = perturbation_fill(x, baseline)
    attributions = Occlusion(explained_forward(model)).attribute(
        x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride),
        baselines=baselines, target=target, perturbations_per_eval=max(1, batch_size // x.shape[0]))
    return attributions.sum(dim=1).detach().float()
