"""Occlusion {cite}`zeiler2014occlusion`: the drop of the explained score when a square window is covered.

The occluded copies of all images of a batch run in chunks of ``batch_size`` forward passes
(:func:`medlit.perturbation.region_drops`); the map equals captum's ``Occlusion`` with the same windows, strides and
baselines (checked in the tests), whose per-call Python overhead it avoids.
"""

from __future__ import annotations

import torch

from medlit.explain.registry import FORWARD_BATCH, register_explainer
from medlit.perturbation import PROTOCOL_SUBSTRATE, perturbation_fill, region_drops


def occlusion_window(size: int) -> tuple[int, int]:
    """(window, stride) for an image of side ``size``: window size/8 (16 at 128 px), stride half the window."""
    window = max(2, size // 8)
    return window, max(1, window // 2)


def occlusion_windows(height: int, width: int, window: int, stride: int, device=None) -> torch.Tensor:
    """(R, H, W) bool: ``window`` x ``window`` squares with their top-left corners every ``stride`` pixels, row by row,
    ``ceil((side - window) / stride) + 1`` per side, the last one cut off by the border when the windows do not tile
    the image (captum's sliding windows): every pixel is covered."""
    if not 1 <= window <= min(height, width) or stride < 1:
        raise ValueError(f"occlusion: window {window} must fit in the {height} x {width} image and stride "
                         f"{stride} must be >= 1")
    corners = [(r, c) for r in range(0, height - window + stride, stride)
               for c in range(0, width - window + stride, stride)]
    windows = torch.zeros(len(corners), height, width, dtype=torch.bool, device=device)
    for k, (r, c) in enumerate(corners):
        windows[k, r:r + window, c:c + window] = True
    return windows


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
    batch_size : occluded images per forward pass

    Notes
    -----
    Signed: positive where covering the pixel lowers the explained score. f_t is the target's centred logit
    (:func:`medlit.explain.targets.explained_score`). A window covers every channel, so each channel's attribution
    is the same mean drop and their sum (the map) is C times it, as with captum's per-channel attributions.
    """
    default_window, default_stride = occlusion_window(x.shape[-1])
    window, stride = window or default_window, stride or (default_stride if window is None else max(1, window // 2))
    windows = occlusion_windows(x.shape[-2], x.shape[-1], window, stride, x.device)
    drops = region_drops(model, x, target, windows, perturbation_fill(x, baseline), batch_size)  # (B, R)
    flat = windows.flatten(1).float()  # (R, H*W)
    covered = flat.sum(dim=0)  # windows over each pixel, >= 1
    mean_drop = (drops @ flat) / covered
    return (x.shape[1] * mean_drop).view(len(x), *x.shape[-2:])
