"""Tie-aware selections of a map's highest pixels, shared by the localisation and lesion metrics.

Saliency maps are often blocky (occlusion, feature ablation, CAMs at layer resolution): many pixels share the
maximum, or the k-th largest value. Taking "the first" of them in memory order biases a metric towards the
top-left corner of the image. The helpers here never pick one tied pixel over another: a metric takes the
*expectation* of its score over a uniformly random choice among the tied pixels.

Two values tie when they differ by at most ``tie_rtol * (max - min)`` of their map (a relative tolerance, so the
rule does not depend on the map's scale; a constant map ties every pixel).
"""

from __future__ import annotations

import torch

__all__ = ["DEFAULT_TIE_RTOL", "check_maps_regions", "nan_where", "tie_tolerance", "tied_maxima",
           "top_k_selection"]

#: Relative tolerance within which two values of one map count as tied: float32 maps carry about 7 digits, so a
#: difference below 1e-6 of the map's range is rounding, not evidence that one pixel matters more.
DEFAULT_TIE_RTOL = 1e-6


def check_maps_regions(maps: torch.Tensor, regions: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (maps, regions) pair and return them as detached tensors on the maps' device."""
    maps, regions = check_maps(maps, name), torch.as_tensor(regions)
    if regions.shape != maps.shape:
        raise ValueError(f"{name}: regions {tuple(regions.shape)} must have the shape of maps {tuple(maps.shape)}")
    if regions.dtype != torch.bool:
        raise ValueError(f"{name}: regions must be a bool tensor, got {regions.dtype}")
    return maps, regions.to(maps.device)


def check_maps(maps: torch.Tensor, name: str) -> torch.Tensor:
    """Validate (B, H, W) finite floating-point maps and return them detached."""
    maps = torch.as_tensor(maps).detach()
    if maps.ndim != 3:
        raise ValueError(f"{name}: maps must be (B, H, W), got shape {tuple(maps.shape)}")
    if maps.shape[1] == 0 or maps.shape[2] == 0:
        raise ValueError(f"{name}: maps have no pixels, shape {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise ValueError(f"{name}: maps must be floating point, got {maps.dtype}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name}: maps contain NaN or infinite values")
    return maps


def check_tie_rtol(tie_rtol: float, name: str) -> float:
    if not 0.0 <= float(tie_rtol) <= 1.0:
        raise ValueError(f"{name}: tie_rtol must lie in [0, 1], got {tie_rtol}")
    return float(tie_rtol)


def nan_where(values: torch.Tensor, undefined: torch.Tensor) -> torch.Tensor:
    """``values`` as float32, NaN where ``undefined``."""
    values = values.to(torch.float32)
    return torch.where(undefined, torch.full_like(values, float("nan")), values)


def tie_tolerance(flat: torch.Tensor, tie_rtol: float = DEFAULT_TIE_RTOL) -> torch.Tensor:
    """(B, 1) float64: the absolute tie tolerance ``tie_rtol * (max - min)`` of each row of ``flat`` (B, N)."""
    flat = flat.to(torch.float64)
    return tie_rtol * (flat.amax(dim=1, keepdim=True) - flat.amin(dim=1, keepdim=True))


def tied_maxima(maps: torch.Tensor, tie_rtol: float = DEFAULT_TIE_RTOL) -> torch.Tensor:
    """The tied set of each map's maximum: pixels with ``value >= max - tie_rtol * (max - min)``.

    Parameters
    ----------
    maps : (B, H, W) float tensor
    tie_rtol : float
        Relative tie tolerance; 0 keeps exactly the maximal pixels. A constant map ties every pixel.

    Returns
    -------
    (B, H, W) bool tensor
        Never empty: the maximum itself always belongs to its tied set.
    """
    flat = maps.flatten(1).to(torch.float64)  # float64: the threshold must not round onto the next float32
    tied = flat >= flat.amax(dim=1, keepdim=True) - tie_tolerance(flat, tie_rtol)
    return tied.view_as(maps)


def top_k_selection(flat: torch.Tensor, k: torch.Tensor,
                    tie_rtol: float = DEFAULT_TIE_RTOL) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The expected top-k pixels of each row, ties at the k-th value shared out evenly.

    Let ``v`` be the k-th largest value of a row and ``eps = tie_rtol * (max - min)``. Pixels above ``v + eps``
    are surely among the top k (``above``); pixels within ``eps`` of ``v`` (``tied``) fill the remaining
    ``k - |above|`` places, chosen uniformly at random, so each is selected with probability
    ``share = (k - |above|) / |tied|``. A pixel's expected membership of the top k is
    ``above + share * tied``; these weights sum to k in every row. No pixel is preferred for its position.

    Parameters
    ----------
    flat : (B, N) float tensor
        Flattened maps.
    k : (B,) integer tensor
        How many pixels to select per row, 1 <= k <= N (rows with k = 0 return meaningless values that the
        caller must mask).
    tie_rtol : float

    Returns
    -------
    above : (B, N) bool tensor
    tied : (B, N) bool tensor
        Disjoint from ``above``; never empty where k >= 1.
    share : (B,) float64 tensor
        Probability that a tied pixel is selected, in (0, 1].
    """
    flat = flat.to(torch.float64)
    k = k.to(device=flat.device, dtype=torch.long)
    k_safe = k.clamp(1, flat.shape[1])
    largest = flat.topk(int(k_safe.max()), dim=1, sorted=True).values  # topk beats a full sort tenfold
    kth = largest.gather(1, (k_safe - 1)[:, None])
    eps = tie_tolerance(flat, tie_rtol)
    above = flat > kth + eps
    tied = (flat - kth).abs() <= eps
    # |above| <= k - 1 (all strictly above v) and |above| + |tied| >= k (all >= v), so 0 < share <= 1.
    share = (k - above.sum(dim=1)).to(torch.float64) / tied.sum(dim=1).clamp(min=1).to(torch.float64)
    return above, tied, share
