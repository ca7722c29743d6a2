"""Localisation metrics: how well a saliency map points at the annotated finding.

Every metric takes ``maps`` (B, H, W), real-valued and *not* normalised (each metric states the
normalisation it applies itself), and ``regions`` (B, H, W) bool, the ground-truth pixels (a finding
mask, or the union of boxes rasterised with :func:`medlit.data.sample.boxes_to_mask`). Each returns a
float32 tensor of B scores on the maps' device, NaN where the score is undefined (empty region, ...).
All metrics are vectorised over the batch: no per-sample Python loops.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from medlit.metrics.registry import register_metric

__all__ = [
    "auprc",
    "average_precision",
    "energy_pointing_game",
    "iou_otsu",
    "otsu_binarise",
    "pointing_game",
    "pointing_game_strict",
    "scaled_tolerance",
]


# --------------------------------------------------------------------------------------------- helpers

def _check(maps: torch.Tensor, regions: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (maps, regions) pair and return them as tensors on the maps' device."""
    maps, regions = torch.as_tensor(maps).detach(), torch.as_tensor(regions)
    if maps.ndim != 3:
        raise ValueError(f"{name}: maps must be (B, H, W), got shape {tuple(maps.shape)}")
    if regions.shape != maps.shape:
        raise ValueError(f"{name}: regions {tuple(regions.shape)} must have the shape of maps {tuple(maps.shape)}")
    if maps.shape[1] == 0 or maps.shape[2] == 0:
        raise ValueError(f"{name}: maps have no pixels, shape {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise ValueError(f"{name}: maps must be floating point, got {maps.dtype}")
    if regions.dtype != torch.bool:
        raise ValueError(f"{name}: regions must be a bool tensor, got {regions.dtype}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name}: maps contain NaN or infinite values")
    return maps, regions.to(maps.device)


def _nan_where(values: torch.Tensor, undefined: torch.Tensor) -> torch.Tensor:
    """``values`` as float32, NaN where ``undefined``."""
    values = values.to(torch.float32)
    return torch.where(undefined, torch.full_like(values, float("nan")), values)


def _argmax_rc(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each map's maximum; the first one in row-major order on ties."""
    flat_index = maps.flatten(1).argmax(dim=1)  # torch returns the first maximal index
    return flat_index // maps.shape[2], flat_index % maps.shape[2]


def _empty(regions: torch.Tensor) -> torch.Tensor:
    return ~regions.flatten(1).any(dim=1)


# --------------------------------------------------------------------------------------- pointing game

def scaled_tolerance(original_size: int | Sequence[int], image_size: int | Sequence[int],
                     tolerance_px: float = 15.0) -> float:
    """The pointing-game tolerance in pixels of a resized image.

    The 15 px of {cite}`zhang2018excitation` are defined at the image's original resolution; when the
    image was resized, the tolerance scales linearly with the image side. For non-square sizes the larger
    side is used (``max(image_size) / max(original_size)``), which is exact for aspect-preserving resizes.

    Parameters
    ----------
    original_size, image_size : int or (H, W)
        Side (or sides) of the original and of the stored image.
    tolerance_px : float
        Tolerance at the original resolution.

    Returns
    -------
    float
        The tolerance at ``image_size``.
    """
    orig, new = (float(np.max(size)) for size in (original_size, image_size))
    if orig <= 0 or new <= 0 or tolerance_px < 0:
        raise ValueError(f"scaled_tolerance: sizes must be positive and tolerance >= 0, got "
                         f"{original_size}, {image_size}, {tolerance_px}")
    return float(tolerance_px) * new / orig


@register_metric("pointing_game", short_name="Pointing game",
                 kind="localisation", direction="higher",
                 long_name="Pointing game (15 px tolerance at the original resolution)", citation="zhang2018excitation",
                 normalisation="none: uses only the position of the maximum")
def pointing_game(maps: torch.Tensor, regions: torch.Tensor, *, tolerance_px: float = 15.0) -> torch.Tensor:
    """Pointing game with tolerance {cite}`zhang2018excitation`.

    A hit (1.0) when the region intersects the closed disc of radius ``tolerance_px`` around the map's
    maximum point, else a miss (0.0). Averaging the scores gives the pointing accuracy hits/(hits+misses).

    Parameters
    ----------
    maps : (B, H, W) float tensor
        Saliency maps; only their argmax matters. On ties the first maximum in row-major order is used
        (so a constant map points at pixel (0, 0), usually a miss; Quantus counts any tied maximum).
    regions : (B, H, W) bool tensor
        Ground-truth pixels.
    tolerance_px : float
        Radius of the disc in pixels of ``maps``; see :func:`scaled_tolerance` for resized images.

    Returns
    -------
    (B,) float32 tensor
        1.0 hit, 0.0 miss, NaN where the region is empty.
    """
    maps, regions = _check(maps, regions, "pointing_game")
    if tolerance_px < 0:
        raise ValueError(f"pointing_game: tolerance_px must be >= 0, got {tolerance_px}")
    _, h, w = maps.shape
    r0, c0 = _argmax_rc(maps)
    rows = torch.arange(h, device=maps.device).view(1, h, 1)
    cols = torch.arange(w, device=maps.device).view(1, 1, w)
    dist2 = (rows - r0.view(-1, 1, 1)) ** 2 + (cols - c0.view(-1, 1, 1)) ** 2  # exact integers
    hit = (regions & (dist2 <= float(tolerance_px) ** 2)).flatten(1).any(dim=1)
    return _nan_where(hit, _empty(regions))


@register_metric("pointing_game_strict", short_name="Hit rate (strict)",
                 kind="localisation", direction="higher",
                 long_name="Pointing game, no tolerance (hit rate)", citation="saporta2022chexlocalize",
                 normalisation="none: uses only the position of the maximum")
def pointing_game_strict(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Strict pointing game: the map's argmax pixel lies inside the region.

    This is CheXlocalize's hit rate {cite}`saporta2022chexlocalize`, i.e. :func:`pointing_game` with
    ``tolerance_px=0``. Ties: the first maximum in row-major order.

    Parameters
    ----------
    maps : (B, H, W) float tensor
    regions : (B, H, W) bool tensor

    Returns
    -------
    (B,) float32 tensor
        1.0 hit, 0.0 miss, NaN where the region is empty.
    """
    maps, regions = _check(maps, regions, "pointing_game_strict")
    r0, c0 = _argmax_rc(maps)
    hit = regions[torch.arange(maps.shape[0], device=maps.device), r0, c0]
    return _nan_where(hit, _empty(regions))


# -------------------------------------------------------------------------------- energy pointing game

@register_metric("energy_pointing_game", short_name="Energy pointing game",
                 kind="localisation", direction="higher",
                 long_name="Energy-based pointing game", citation="wang2020scorecam",
                 normalisation="none: negative values are dropped, the rest used as mass (scale-invariant)")
def energy_pointing_game(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game {cite}`wang2020scorecam` (relevance mass accuracy of Arras et al.).

    The share of the map's positive relevance that falls inside the region,
    ``sum(relu(map) * region) / sum(relu(map))``. Negative relevance is ignored (Quantus's
    RelevanceMassAccuracy sums signed values instead; the two agree on non-negative maps).

    Parameters
    ----------
    maps : (B, H, W) float tensor
    regions : (B, H, W) bool tensor

    Returns
    -------
    (B,) float32 tensor
        Scores in [0, 1]; NaN where the region is empty or the map has no positive relevance.
    """
    maps, regions = _check(maps, regions, "energy_pointing_game")
    positive = maps.clamp(min=0).to(torch.float64).flatten(1)
    total = positive.sum(dim=1)
    inside = (positive * regions.flatten(1)).sum(dim=1)
    score = inside / torch.where(total > 0, total, torch.ones_like(total))
    return _nan_where(score, _empty(regions) | (total <= 0))


# -------------------------------------------------------------------------------------------- Otsu IoU

def otsu_binarise(maps: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """Binarise each map at Otsu's threshold, as CheXlocalize does {cite}`saporta2022chexlocalize`.

    Each map is min-max normalised to [0, 1], a ``nbins``-bin histogram over [0, 1] is built per sample
    and Otsu's between-class variance is maximised over the bin centres, exactly as
    ``skimage.filters.threshold_otsu(normalised_map)`` does (same bins, same first-maximum rule, float64
    arithmetic). The mask is ``normalised_map > threshold`` like skimage's convention.

    Parameters
    ----------
    maps : (B, H, W) float tensor
    nbins : int
        Histogram bins.

    Returns
    -------
    (B, H, W) bool tensor
        Empty for a constant map.
    """
    flat = maps.flatten(1).to(torch.float32)
    lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    constant = hi == lo
    norm = (flat - lo) / torch.where(constant, torch.ones_like(hi), hi - lo)
    edges = torch.linspace(0.0, 1.0, nbins + 1, dtype=torch.float32, device=flat.device)  # k / nbins
    bins = torch.bucketize(norm, edges[1:-1], right=True)  # np.histogram: [e_k, e_k+1), last bin closed
    counts = torch.zeros(flat.shape[0], nbins, dtype=torch.float64, device=flat.device)
    counts.scatter_add_(1, bins, torch.ones_like(norm, dtype=torch.float64))
    centres = ((edges[:-1] + edges[1:]) / 2).to(torch.float64)
    mass = counts * centres

    def rcumsum(t: torch.Tensor) -> torch.Tensor:
        return t.flip(1).cumsum(1).flip(1)

    # Bin 0 holds the minimum and the last bin the maximum, so no weight below is zero.
    weight1, weight2 = counts.cumsum(1), rcumsum(counts)
    mean1, mean2 = mass.cumsum(1) / weight1, rcumsum(mass) / weight2
    variance12 = weight1[:, :-1] * weight2[:, 1:] * (mean1[:, :-1] - mean2[:, 1:]) ** 2
    threshold = centres[variance12.argmax(dim=1)].to(torch.float32)
    binary = (norm > threshold[:, None]) & ~constant
    return binary.view_as(maps)


@register_metric("iou_otsu", short_name="IoU (Otsu)",
                 kind="localisation", direction="higher",
                 long_name="IoU of the Otsu-binarised map", citation="saporta2022chexlocalize",
                 normalisation="min-max to [0, 1] per map, then Otsu's threshold")
def iou_otsu(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Intersection over union of the Otsu-binarised map and the region {cite}`saporta2022chexlocalize`.

    Parameters
    ----------
    maps : (B, H, W) float tensor
        Maps at image resolution; binarised with :func:`otsu_binarise` (min-max normalisation included).
    regions : (B, H, W) bool tensor

    Returns
    -------
    (B,) float32 tensor
        IoU in [0, 1]; NaN when both the binary map and the region are empty (a constant map gives an
        empty binary map, hence IoU 0 against a non-empty region).
    """
    maps, regions = _check(maps, regions, "iou_otsu")
    binary = otsu_binarise(maps).flatten(1)
    regions = regions.flatten(1)
    intersection = (binary & regions).sum(dim=1).to(torch.float64)
    union = (binary | regions).sum(dim=1).to(torch.float64)
    return _nan_where(intersection / union.clamp(min=1), union == 0)


# ---------------------------------------------------------------------------------------------- AUPRC

def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batched average precision, the definition of ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing order; tied
    scores share one threshold. Equivalently, each positive contributes the precision at the end of its
    tie group, divided by the number of positives.

    Parameters
    ----------
    scores : (B, N) float tensor
    labels : (B, N) bool tensor

    Returns
    -------
    (B,) float64 tensor
        NaN where a row has no positive label.
    """
    n = scores.shape[1]
    sorted_scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
    hits = labels.gather(1, order).to(torch.float64)
    true_pos = hits.cumsum(dim=1)
    position = torch.arange(n, device=scores.device).expand_as(order)
    is_last = torch.ones_like(hits, dtype=torch.bool)
    is_last[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    # End of each tie group: the smallest "last" position at or after each position (reverse cummin).
    last = torch.where(is_last, position, torch.full_like(position, n))
    group_end = last.flip(1).cummin(dim=1).values.flip(1)
    precision = true_pos.gather(1, group_end) / (group_end + 1).to(torch.float64)
    n_pos = true_pos[:, -1]
    ap = (hits * precision).sum(dim=1) / n_pos.clamp(min=1)
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan")))


@register_metric("auprc", short_name="AUPRC",
                 kind="localisation", direction="higher",
                 long_name="AUPRC of map values for region pixels", citation="arun2021trustworthiness",
                 normalisation="none: uses only the ranking of pixel values")
def auprc(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Area under the precision-recall curve of the map as a pixel classifier {cite}`arun2021trustworthiness`.

    Map values are the scores for "pixel inside the region"; the area is the average precision of
    :func:`average_precision` (sklearn's definition, ties sharing a threshold). Raw map values are used:
    AP depends only on their order, so any monotone normalisation leaves it unchanged. A constant map
    scores the region's area fraction (the chance level).

    Parameters
    ----------
    maps : (B, H, W) float tensor
    regions : (B, H, W) bool tensor

    Returns
    -------
    (B,) float32 tensor
        AP in (0, 1]; NaN where the region is empty.
    """
    maps, regions = _check(maps, regions, "auprc")
    return average_precision(maps.flatten(1), regions.flatten(1)).to(torch.float32)
