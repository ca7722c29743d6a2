"""Relevance rank accuracy {cite}`arras2022clevr`: the share of the map's top-K pixels inside the region.

Same conventions as :mod:`medlit.metrics.localisation` (maps (B, H, W) unnormalised, regions (B, H, W) bool of
any shape, float32 scores, NaN only where the region is empty), and the same tie policy: ties at the K-th
value are shared out by expectation (:func:`medlit.metrics.ranking.top_k_selection`), never by position.
"""

from __future__ import annotations

import torch

from medlit.metrics.ranking import (
    DEFAULT_TIE_RTOL,
    check_maps_regions,
    check_tie_rtol,
    nan_where,
    top_k_selection,
)
from medlit.metrics.registry import register_metric

__all__ = ["relevance_rank_accuracy"]


@register_metric("relevance_rank_accuracy", short_name="Rank accuracy",
                 kind="localisation", direction="higher",
                 long_name="Relevance rank accuracy (top-K pixels in the region, K = its size)",
                 citation="arras2022clevr",
                 normalisation="none: uses only the ranking of pixel values")
def relevance_rank_accuracy(maps: torch.Tensor, regions: torch.Tensor, *,
                            tie_rtol: float = DEFAULT_TIE_RTOL) -> torch.Tensor:
    """Relevance rank accuracy {cite}`arras2022clevr`.

    With K the number of region pixels, the fraction of the map's K highest-valued pixels that lie inside the
    region. Only the order of values matters, so no normalisation is applied (signed values rank as they are).

    Ties at the K-th value (within ``tie_rtol * (max - min)``) are resolved by expectation: the tied pixels
    fill the remaining top-K places uniformly at random, so each counts with the same weight
    ``(K - |strictly above|) / |tied|``. Without ties this is exactly Quantus's RelevanceRankAccuracy (whose
    unstable argsort picks tied pixels in an arbitrary order).

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
        Expected accuracy in [0, 1]; a constant map scores the region's area fraction (the chance level).
        NaN only where the region is empty.
    """
    maps, regions = check_maps_regions(maps, regions, "relevance_rank_accuracy")
    tie_rtol = check_tie_rtol(tie_rtol, "relevance_rank_accuracy")
    flat, inside = maps.flatten(1), regions.flatten(1)
    k = inside.sum(dim=1)
    above, tied, share = top_k_selection(flat, k, tie_rtol)
    hits = (above & inside).sum(dim=1).to(torch.float64) + share * (tied & inside).sum(dim=1).to(torch.float64)
    return nan_where(hits / k.clamp(min=1).to(torch.float64), k == 0)
