"""Localisation metrics: how well a saliency map points at the annotated finding.

Every metric takes ``maps`` (B, H, W), real-valued and *not* normalised (each metric states the
normalisation it applies itself), and ``regions`` (B, H, W) bool, the ground-truth pixels: a finding mask,
or the union of boxes rasterised with :func:`medlit.data.sample.boxes_to_mask`. No metric assumes the region
is a rectangle, or connected. Each returns a float32 tensor of B scores on the maps' device. All metrics are
vectorised over the batch: no per-sample Python loops.

Ties. Where a metric looks at "the maximum" or "the top k pixels", tied values (within ``tie_rtol`` of the
map's range, see :mod:`medlit.metrics.ranking`) are never resolved by position: the score is its expectation
over a uniformly random choice among the tied pixels. A blocky map thus scores what its best block deserves,
not what the block's top-left pixel happens to hit.

NaN policy. A score is NaN only where the *ground truth* leaves it undefined: an empty region (a negative
image, a finding without annotation). A map that gives a metric nothing to work with (constant, all zero, no
positive relevance) is a legitimate, bad explanation and gets that metric's worst value or its chance level,
as each metric's Returns section states; it is never dropped as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from medlit.metrics.ranking import (
    DEFAULT_TIE_RTOL,
    check_maps_regions,
    check_tie_rtol,
    nan_where,
    tied_maxima,
)
from medlit.metrics.registry import register_metric

__all__ = [
    "DEFAULT_CURVE_FRACTIONS",
    "DEFAULT_TOLERANCE_FRACTION",
    "auprc",
    "average_precision",
    "energy_pointing_game",
    "iou_otsu",
    "otsu_binarise",
    "pointing_curve",
    "pointing_game",
    "pointing_game_strict",
    "relative_tolerance_px",
    "scaled_tolerance",
    "squared_distance_to_region",
]

#: Pointing-game tolerance as a fraction of the image's longer side. The pointing game's 15 px
#: {cite}`zhang2018excitation` are applied by TorchRay's benchmark at the *original* resolution of PASCAL VOC07
#: (the saliency map is resized to the image, the mask is the annotation's), whose images are (almost all) 500 px
#: on their longer side: 15 / 500 = 0.03. This fraction reproduces the geometry of the published reference numbers
#: (COCO's 640 px give 0.023; 15 px of a 224 px network input would be 0.067, more than twice as lenient).
DEFAULT_TOLERANCE_FRACTION = 0.03

#: Tolerances of :func:`pointing_curve`, fractions of the image's longer side; 0 is the strict hit rate and
#: 0.03 the pointing game's default.
DEFAULT_CURVE_FRACTIONS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)

# Radii are compared with this relative slack, so that a radius meant to be a whole number of pixels
# (15/224 of 224 px) is not lost to floating-point rounding of fraction * side.
_RADIUS_SLACK = 1e-9


# --------------------------------------------------------------------------------------------- helpers

def _empty(regions: torch.Tensor) -> torch.Tensor:
    return ~regions.flatten(1).any(dim=1)


def relative_tolerance_px(image_size: int | Sequence[int], fraction: float) -> float:
    """A tolerance given as a fraction of the image's longer side, in pixels of that image.

    Parameters
    ----------
    image_size : int or (H, W)
        Side (or sides) of the image the map lives on.
    fraction : float
        Tolerance as a fraction of ``max(image_size)``, >= 0.

    Returns
    -------
    float
        ``fraction * max(image_size)``.
    """
    side = float(np.max(image_size))
    if side <= 0:
        raise ValueError(f"relative_tolerance_px: image_size must be positive, got {image_size}")
    if not (math.isfinite(fraction) and fraction >= 0):
        raise ValueError(f"relative_tolerance_px: the tolerance fraction must be finite and >= 0, got {fraction}")
    return float(fraction) * side


def scaled_tolerance(original_size: int | Sequence[int], image_size: int | Sequence[int],
                     tolerance_px: float = 15.0) -> float:
    """Legacy: a tolerance of ``tolerance_px`` at ``original_size``, scaled to ``image_size``.

    Superseded by :data:`DEFAULT_TOLERANCE_FRACTION` and :func:`relative_tolerance_px`: a tolerance fixed at
    each data set's original resolution is a different metric on every data set. Kept only while
    ``medlit.benchmark`` imports it; the metrics no longer use it. For non-square sizes the larger side is used
    (``max(image_size) / max(original_size)``), which is exact for aspect-preserving resizes.

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


def squared_distance_to_region(regions: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance from every pixel to the nearest pixel of its image's region.

    Distances are between pixel centres, so they are exact integers (0 inside the region). Each image's
    distance transform is one call of scipy's C routine ``ndimage.distance_transform_edt``: the one place
    where a metric visits images one by one, because it is about six times faster than a single 3-D transform
    of the stacked batch (with a spacing between images larger than any distance within one), which computes
    and discards distances across images.

    Parameters
    ----------
    regions : (B, H, W) bool tensor

    Returns
    -------
    (B, H, W) float64 tensor on the regions' device
        ``inf`` throughout an image whose region is empty.
    """
    outside = ~regions.cpu().numpy()  # non-zero where the region is not: the EDT measures to the zeros
    out = np.full(outside.shape, np.inf)
    for i in np.flatnonzero(~outside.all(axis=(1, 2))):
        out[i] = np.rint(ndimage.distance_transform_edt(outside[i]) ** 2)  # sqrt of an integer, squared: exact
    return torch.from_numpy(out).to(regions.device)


def _check_fractions(fractions: Sequence[float], name: str) -> list[float]:
    values = [float(f) for f in np.atleast_1d(np.asarray(fractions, dtype=np.float64))]
    if not values or not all(math.isfinite(f) and f >= 0 for f in values):
        raise ValueError(f"{name}: tolerance fractions must be a non-empty list of finite values >= 0, "
                         f"got {fractions}")
    return values


def _expected_hits(maps: torch.Tensor, regions: torch.Tensor, radii_px: Sequence[float],
                   tie_rtol: float) -> torch.Tensor:
    """(B, R) float64: the share of each map's tied maxima whose closed disc of each radius meets the region.

    A tied maximum at squared distance d2 from the region hits at radius r when ``d2 <= r**2``. Only the
    region's own pixels count at radius 0, so no distance transform is needed when every radius is 0.
    """
    tied = tied_maxima(maps, tie_rtol).flatten(1)
    n_tied = tied.sum(dim=1).to(torch.float64)  # >= 1: the maximum is always tied
    if all(r == 0 for r in radii_px):
        inside = regions.flatten(1)
        return ((tied & inside).sum(dim=1) / n_tied)[:, None].expand(-1, len(radii_px)).clone()
    dist2 = squared_distance_to_region(regions).to(maps.device).flatten(1)
    columns = [((tied & (dist2 <= r * r * (1 + _RADIUS_SLACK))).sum(dim=1) / n_tied) for r in radii_px]
    return torch.stack(columns, dim=1)  # a loop over radii, not over images


# --------------------------------------------------------------------------------------- pointing game

@register_metric("pointing_game", short_name="Pointing game",
                 kind="localisation", direction="higher",
                 long_name="Pointing game (tolerance 3 % of the image side)", citation="zhang2018excitation",
                 normalisation="none: uses only the position of the (tied) maxima")
def pointing_game(maps: torch.Tensor, regions: torch.Tensor, *,
                  tolerance_fraction: float = DEFAULT_TOLERANCE_FRACTION,
                  tie_rtol: float = DEFAULT_TIE_RTOL) -> torch.Tensor:
    """Pointing game with tolerance {cite}`zhang2018excitation`.

    A hit when the region has a pixel within the closed disc of radius
    ``r = tolerance_fraction * max(H, W)`` around the map's maximum point (distance between pixel centres
    ``<= r``), else a miss. The tolerance is a fraction of the image side so that the metric means the same on
    every data set whatever its resolution; see :data:`DEFAULT_TOLERANCE_FRACTION` for the value. Averaging the
    scores gives the pointing accuracy hits / (hits + misses).

    TorchRay's benchmark accepts the open disc, ``distance**2 < 15**2``, at the original image resolution.
    The two boundaries differ only for a region pixel at distance exactly ``r``, which between integer pixel
    positions needs ``r**2`` to be an integer: never the case for the default 0.03 at 128, 224, 256 or 512 px.
    The closed disc is kept so that ``tolerance_fraction=0`` is exactly :func:`pointing_game_strict`.

    Ties: the map's *tied maxima* are the pixels with ``value >= max - tie_rtol * (max - min)`` (a constant
    map ties every pixel). The score is the expected hit over them, i.e. the fraction of tied maxima whose disc
    meets the region, as if one of them were drawn uniformly at random; no position is preferred. Without ties
    this is the usual 0/1 hit of the single maximum. (Quantus's PointingGame counts a hit when *any* tied maximum
    lies in the region.)

    Parameters
    ----------
    maps : (B, H, W) float tensor
        Saliency maps; only the positions of their tied maxima matter.
    regions : (B, H, W) bool tensor
        Ground-truth pixels, any shape.
    tolerance_fraction : float
        Radius of the disc as a fraction of the maps' longer side (see :func:`relative_tolerance_px`).
    tie_rtol : float
        Relative tie tolerance.

    Returns
    -------
    (B,) float32 tensor
        Expected hit in [0, 1] (1.0 / 0.0 for a unique maximum); a constant map scores the share of pixels
        within the tolerance of the region. NaN only where the region is empty.
    """
    maps, regions = check_maps_regions(maps, regions, "pointing_game")
    if not (math.isfinite(tolerance_fraction) and tolerance_fraction >= 0):
        raise ValueError(f"pointing_game: tolerance_fraction must be finite and >= 0, got {tolerance_fraction}")
    tie_rtol = check_tie_rtol(tie_rtol, "pointing_game")
    radius = relative_tolerance_px(maps.shape[1:], tolerance_fraction)
    hits = _expected_hits(maps, regions, [radius], tie_rtol)[:, 0]
    return nan_where(hits, _empty(regions))


@register_metric("pointing_game_strict", short_name="Hit rate (strict)",
                 kind="localisation", direction="higher",
                 long_name="Pointing game, no tolerance (hit rate)", citation="saporta2022chexlocalize",
                 normalisation="none: uses only the position of the (tied) maxima")
def pointing_game_strict(maps: torch.Tensor, regions: torch.Tensor, *,
                         tie_rtol: float = DEFAULT_TIE_RTOL) -> torch.Tensor:
    """Strict pointing game: the map's maximum pixel lies inside the region.

    This is CheXlocalize's hit rate {cite}`saporta2022chexlocalize`, i.e. :func:`pointing_game` with
    ``tolerance_fraction=0``.

    Ties: the map's *tied maxima* are the pixels with ``value >= max - tie_rtol * (max - min)`` (a constant
    map ties every pixel). The score is the expected hit over them, i.e. the fraction of tied maxima whose disc
    meets the region, as if one of them were drawn uniformly at random; no position is preferred. Without ties
    this is the usual 0/1 hit of the single maximum. (Quantus's PointingGame counts a hit when *any* tied maximum
    lies in the region.)

    Parameters
    ----------
    maps : (B, H, W) float tensor
    regions : (B, H, W) bool tensor
        Ground-truth pixels, any shape.
    tie_rtol : float
        Relative tie tolerance.

    Returns
    -------
    (B,) float32 tensor
        The share of tied maxima inside the region (1.0 / 0.0 for a unique maximum); a constant map scores the
        region's area fraction. NaN only where the region is empty.
    """
    maps, regions = check_maps_regions(maps, regions, "pointing_game_strict")
    tie_rtol = check_tie_rtol(tie_rtol, "pointing_game_strict")
    hits = _expected_hits(maps, regions, [0.0], tie_rtol)[:, 0]
    return nan_where(hits, _empty(regions))


def pointing_curve(maps: torch.Tensor, regions: torch.Tensor,
                   fractions: Sequence[float] = DEFAULT_CURVE_FRACTIONS, *,
                   tie_rtol: float = DEFAULT_TIE_RTOL) -> torch.Tensor:
    """Pointing-game hit against tolerance: the expected hit at each tolerance fraction of the image side.

    Column j is :func:`pointing_game` with ``tolerance_fraction=fractions[j]`` (same tie rule, same closed
    disc), computed from one distance transform of the regions. A curve that rises quickly means the maps point
    *near* the finding even when they miss it; it removes the arbitrariness of any single tolerance.

    Parameters
    ----------
    maps : (B, H, W) float tensor
    regions : (B, H, W) bool tensor
        Ground-truth pixels, any shape.
    fractions : sequence of R floats >= 0
        Tolerances as fractions of the maps' longer side (in any order).
    tie_rtol : float
        Relative tie tolerance.

    Returns
    -------
    (B, R) float32 tensor
        Expected hits in [0, 1], non-decreasing along increasing fractions; a row of NaN where the region is
        empty.
    """
    maps, regions = check_maps_regions(maps, regions, "pointing_curve")
    fractions = _check_fractions(fractions, "pointing_curve")
    tie_rtol = check_tie_rtol(tie_rtol, "pointing_curve")
    radii = [relative_tolerance_px(maps.shape[1:], f) for f in fractions]
    hits = _expected_hits(maps, regions, radii, tie_rtol)
    return nan_where(hits, _empty(regions)[:, None].expand_as(hits))


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
        Ground-truth pixels, any shape.

    Returns
    -------
    (B,) float32 tensor
        Scores in [0, 1]. A map without positive relevance (all zero, all negative) puts no mass on the region
        and scores the worst value, 0.0. NaN only where the region is empty.
    """
    maps, regions = check_maps_regions(maps, regions, "energy_pointing_game")
    positive = maps.clamp(min=0).to(torch.float64).flatten(1)
    total = positive.sum(dim=1)
    inside = (positive * regions.flatten(1)).sum(dim=1)
    score = torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)),
                        torch.zeros_like(total))
    return nan_where(score, _empty(regions))


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
        Ground-truth pixels, any shape.

    Returns
    -------
    (B,) float32 tensor
        IoU in [0, 1]. A constant map binarises to an empty mask and scores the worst value, 0.0. NaN only
        where the region is empty (whatever the binary map).
    """
    maps, regions = check_maps_regions(maps, regions, "iou_otsu")
    binary = otsu_binarise(maps).flatten(1)
    flat = regions.flatten(1)
    intersection = (binary & flat).sum(dim=1).to(torch.float64)
    union = (binary | flat).sum(dim=1).to(torch.float64)  # >= 1 wherever the region is not empty
    return nan_where(intersection / union.clamp(min=1), _empty(regions))


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
        Ground-truth pixels, any shape.

    Returns
    -------
    (B,) float32 tensor
        AP in (0, 1]; a constant map scores the chance level, the region's area fraction. NaN only where the
        region is empty.
    """
    maps, regions = check_maps_regions(maps, regions, "auprc")
    return average_precision(maps.flatten(1), regions.flatten(1)).to(torch.float32)
