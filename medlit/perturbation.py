"""Perturbation primitives shared by explainers, metrics and checks: Gaussian blur and the substrate table.

A *substrate* is what hidden or removed pixels become: the black image, each image's mean intensity, a blurred
copy, or the mean intensity inside the anatomy mask. :data:`SUBSTRATES` maps each name to a function giving the
substrate as full images shaped like ``x``; each user accepts the subset it documents (RISE and occlusion a
per-image constant, insertion and deletion zeros or the blur, the substrate check all but the mean).

On a radiograph black is air, and a black patch inside a lung is itself an abnormality, so the perturbation
explainers default to each image's own mean intensity; ``"zeros"`` keeps the black substrate of the original papers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = [
    "CONSTANT_SUBSTRATES",
    "SUBSTRATES",
    "anatomy_mean",
    "blurred",
    "gaussian_blur",
    "substrate_fill",
    "substrate_images",
    "substrate_value",
    "unknown_substrate",
]


def gaussian_blur(x: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Blur every channel of (B, C, H, W) images with a normalised, sampled Gaussian kernel.

    Borders are padded by reflection (replication for images smaller than the kernel radius + 1), so a
    constant image stays constant. RISE's reference code {cite}`petsiuk2018rise` pads with zeros, which
    darkens a border of ``kernel_size // 2`` pixels, and builds its kernel by smoothing a delta with
    ``scipy.ndimage.gaussian_filter``; both differences are small and deliberate.
    """
    radius = kernel_size // 2
    t = torch.arange(kernel_size, dtype=torch.float64, device=x.device) - radius
    k1 = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    k1 = (k1 / k1.sum()).to(x.dtype)
    c, h, w = x.shape[1:]
    mode = "reflect" if min(h, w) > radius else "replicate"
    padded = nn.functional.pad(x, (radius, radius, radius, radius), mode=mode)
    rows = nn.functional.conv2d(padded, k1.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return nn.functional.conv2d(rows, k1.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def blurred(x: torch.Tensor, sigma_fraction: float = 1 / 25) -> torch.Tensor:
    """The image blurred with sigma = ``sigma_fraction`` of its shorter side (5.1 px at 128 px).

    The kernel spans about 4 sigma (odd width ``2 ceil(2 sigma) + 1``); borders are reflected.
    """
    sigma = sigma_fraction * min(x.shape[-2:])
    return gaussian_blur(x, kernel_size=2 * math.ceil(2 * sigma) + 1, sigma=sigma)


def unknown_substrate(kind: object, valid: Iterable[str]) -> str:
    """The error message for a substrate name outside ``valid``: it names the substrate and lists the valid ones."""
    return f"unknown substrate {kind!r}; valid substrates are {', '.join(valid)}"


# Substrates that are one number per image, the only ones a mask-weighted mix (RISE) or captum's scalar-per-image
# baselines need; substrate_value gives them as (B, 1, 1, 1).
CONSTANT_SUBSTRATES = ("mean", "zeros")


def substrate_value(x: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, 1, 1, 1) per-image fill value for images ``x`` (B, C, H, W): ``"mean"`` or ``"zeros"``."""
    if kind == "mean":
        return x.mean(dim=(1, 2, 3), keepdim=True)
    if kind == "zeros":
        return torch.zeros(len(x), 1, 1, 1, device=x.device, dtype=x.dtype)
    raise ValueError(unknown_substrate(kind, CONSTANT_SUBSTRATES))


def substrate_images(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The constant substrate ``kind`` (``"mean"`` or ``"zeros"``) as full images shaped like ``x`` (captum's
    ``baselines``)."""
    return substrate_value(x, kind).expand_as(x).contiguous()


def anatomy_mean(x: torch.Tensor, anatomy: torch.Tensor | None) -> torch.Tensor:
    """Each image's mean intensity (per channel, so colour is kept) inside its (B, H, W) anatomy mask, shaped
    like ``x``; an empty mask gives 0."""
    if anatomy is None:
        raise ValueError("substrate 'anatomy_mean' needs the (B, H, W) anatomy masks")
    mask = anatomy[:, None].to(x.dtype)
    organ_mean = (x * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3)).clamp(min=1)  # (B, C)
    return organ_mean[:, :, None, None].expand_as(x)


# The one substrate table: name -> function (x, anatomy) giving full substrate images shaped like x.
SUBSTRATES: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "zeros": lambda x, anatomy=None: torch.zeros_like(x),
    "mean": lambda x, anatomy=None: substrate_images(x, "mean"),
    "blur": lambda x, anatomy=None: gaussian_blur(x),  # kernel 11, sigma 5: the insertion metric's substrate
    "anatomy_mean": anatomy_mean,
}


def substrate_fill(x: torch.Tensor, kind: str, anatomy: torch.Tensor | None = None,
                   valid: Iterable[str] | None = None) -> torch.Tensor:
    """The substrate ``kind`` of :data:`SUBSTRATES` as full images shaped like ``x`` (B, C, H, W).

    Parameters
    ----------
    kind : ``"zeros"``, ``"mean"``, ``"blur"`` or ``"anatomy_mean"``
    anatomy : (B, H, W) bool masks, needed by ``"anatomy_mean"`` only
    valid : the names the caller accepts (default: all); any other name raises ``ValueError``
    """
    valid = tuple(SUBSTRATES if valid is None else valid)
    if kind not in valid or kind not in SUBSTRATES:
        raise ValueError(unknown_substrate(kind, valid))
    return SUBSTRATES[kind](x, anatomy)
