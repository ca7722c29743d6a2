"""Per-lesion recall: does the map find *each* lesion, not just one of them?

Localisation metrics score a map against the union of an image's boxes, so a map that lights up one of four
small lesions counts as a full hit of the pointing game. Lesion recall counts lesions: of an image's lesions,
the fraction that hold at least one of the map's top-K pixels, K the size in pixels of the union of the boxes
(the area the map would have to cover to mark every lesion exactly, the K of relevance rank accuracy
{cite}`arras2022clevr`).

Calling convention (registry kind ``"lesion"``): ``fn(maps[B,H,W], boxes[B,K,4], **params) -> Tensor[B]``, with
boxes in medlit's convention (:data:`medlit.data.sample.BOX_FIELDS`: half-open ``(x0, y0, x1, y1)`` in pixels of
the maps, NaN rows where an image has fewer than K boxes). Each box is rasterised alone with
:func:`medlit.data.sample.boxes_to_mask`. Scores are float32, vectorised over the batch, NaN only for images
without a lesion (ground truth undefined); a map that finds nothing (even a constant one) scores by the rule
below, never NaN.

Ties at the K-th value (within ``tie_rtol * (max - min)`` of the map's range) are resolved by expectation: the
tied pixels fill the remaining top-K places uniformly at random, and a lesion's score is the probability that
it receives at least one top-K pixel (a hypergeometric probability). No pixel is preferred for its position.
"""

from __future__ import annotations

import torch

from medlit.data.sample import boxes_to_mask
from medlit.metrics.ranking import (
    DEFAULT_TIE_RTOL,
    check_maps,
    check_tie_rtol,
    nan_where,
    top_k_selection,
)
from medlit.metrics.registry import register_metric

__all__ = ["lesion_masks", "lesion_recall", "lesion_recall_masks"]


def lesion_masks(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, H, W) bool: each box rasterised on its own (NaN rows give empty masks).

    Parameters
    ----------
    boxes : (B, K, 4) float tensor
        Boxes in medlit's convention, NaN rows for missing boxes.
    size : (H, W)

    Returns
    -------
    (B, K, H, W) bool tensor on the CPU
    """
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 3 or boxes.shape[2] != 4:
        raise ValueError(f"lesion_masks: boxes must be (B, K, 4), got shape {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"lesion_masks: boxes must be floating point (NaN rows for missing boxes), got {boxes.dtype}")
    b, k, _ = boxes.shape
    # One box per "image" of a (B*K, 1, 4) batch: boxes_to_mask's union over one box is the box itself.
    masks = boxes_to_mask(boxes.detach().cpu().reshape(b * k, 1, 4), size)
    return masks.view(b, k, *size)


def _miss_probability(tied: torch.Tensor, drawn: torch.Tensor, marked: torch.Tensor) -> torch.Tensor:
    """P(none of ``marked`` items is drawn) when ``drawn`` of ``tied`` items are drawn without replacement.

    ``C(tied - marked, drawn) / C(tied, drawn)``, in log space (float64) so that large images do not overflow;
    0 where fewer than ``drawn`` items are unmarked.
    """
    rest = tied - marked
    log_p = (torch.lgamma(rest + 1) - torch.lgamma((rest - drawn).clamp(min=0) + 1)
             - torch.lgamma(tied + 1) + torch.lgamma(tied - drawn + 1))
    return torch.where(rest >= drawn, log_p.exp(), torch.zeros_like(log_p))


def lesion_recall_masks(maps: torch.Tensor, lesions: torch.Tensor, *,
                        tie_rtol: float = DEFAULT_TIE_RTOL) -> torch.Tensor:
    """Lesion recall with each lesion given as a mask (e.g. box rasters, or components of a finding mask).

    For each image: K = the number of pixels of the union of its lesions; the score is the fraction of its
    lesions (non-empty masks; they may overlap and need not be rectangles) that contain at least one of the
    map's top-K pixels, ties at the K-th value by expectation (see the module docstring).

    Parameters
    ----------
    maps : (B, H, W) float tensor
    lesions : (B, K, H, W) bool tensor
        One mask per lesion; empty masks are no lesion (padding).
    tie_rtol : float
        Relative tie tolerance.

    Returns
    -------
    (B,) float32 tensor
        Expected recall in [0, 1]; NaN where an image has no lesion.
    """
    maps = check_maps(maps, "lesion_recall")
    lesions = torch.as_tensor(lesions)
    if lesions.ndim != 4 or lesions.shape[0] != maps.shape[0] or lesions.shape[2:] != maps.shape[1:]:
        raise ValueError(f"lesion_recall: lesions {tuple(lesions.shape)} must be (B, K, H, W) for maps "
                         f"{tuple(maps.shape)}")
    if lesions.dtype != torch.bool:
        raise ValueError(f"lesion_recall: lesions must be a bool tensor, got {lesions.dtype}")
    tie_rtol = check_tie_rtol(tie_rtol, "lesion_recall")
    lesions = lesions.to(maps.device).flatten(2)  # (B, K, N)
    real = lesions.any(dim=2)  # (B, K): padding rows and boxes off the image are no lesion
    k = lesions.any(dim=1).sum(dim=1)  # size of the union
    above, tied, _ = top_k_selection(maps.flatten(1), k, tie_rtol)
    n_tied = tied.sum(dim=1).to(torch.float64)
    drawn = (k.to(maps.device) - above.sum(dim=1)).to(torch.float64)  # top-K places left to the tied pixels
    surely = (lesions & above[:, None]).any(dim=2)  # (B, K)
    marked = (lesions & tied[:, None]).sum(dim=2).to(torch.float64)
    found = torch.where(surely, torch.ones_like(marked),
                        1 - _miss_probability(n_tied[:, None], drawn[:, None], marked)).clamp(0, 1)  # rounding
    n_real = real.sum(dim=1)
    recall = (found * real).sum(dim=1) / n_real.clamp(min=1)
    return nan_where(recall, n_real == 0)


@register_metric("lesion_recall", short_name="Lesion recall",
                 kind="lesion", direction="higher",
                 long_name="Lesion recall (share of boxes holding a top-K pixel, K = box-union size)",
                 citation="arras2022clevr",
                 normalisation="none: uses only the ranking of pixel values")
def lesion_recall(maps: torch.Tensor, boxes: torch.Tensor, *, tie_rtol: float = DEFAULT_TIE_RTOL) -> torch.Tensor:
    """Per-lesion recall of the map's top-K pixels against an image's boxes.

    Each non-NaN box is one lesion, rasterised alone with :func:`medlit.data.sample.boxes_to_mask` at the maps'
    size; K is the pixel count of the union of the image's boxes. The score is the fraction of lesions holding
    at least one top-K pixel (ties by expectation); see :func:`lesion_recall_masks`. Two lesions, one found:
    0.5.

    Parameters
    ----------
    maps : (B, H, W) float tensor
        Saliency maps at the resolution the boxes are expressed in.
    boxes : (B, K, 4) float tensor
        Half-open ``(x0, y0, x1, y1)`` boxes in pixels of the maps, NaN rows for missing boxes.
    tie_rtol : float
        Relative tie tolerance.

    Returns
    -------
    (B,) float32 tensor
        Expected recall in [0, 1]; NaN where an image has no box (on the image).
    """
    maps = check_maps(maps, "lesion_recall")
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 3 or boxes.shape[0] != maps.shape[0] or boxes.shape[2] != 4:
        raise ValueError(f"lesion_recall: boxes {tuple(boxes.shape)} must be (B, K, 4) for maps {tuple(maps.shape)}")
    return lesion_recall_masks(maps, lesion_masks(boxes, tuple(maps.shape[1:])), tie_rtol=tie_rtol)
