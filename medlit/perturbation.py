"""Perturbation primitives shared by explainers, metrics and checks: Gaussian blur and the substrate table.

A *substrate* is what hidden or removed pixels become: the black image, each image's mean intensity, a blurred
copy, or the mean intensity inside the anatomy mask. :data:`SUBSTRATES` maps each name to a function giving the
substrate as full images shaped like ``x``; each user accepts the subset it documents (the perturbation explainers
:data:`PERTURBATION_SUBSTRATES`, insertion and deletion zeros, the blur or the mean, the substrate check all).

**The protocol substrate.** :data:`PROTOCOL_SUBSTRATE` (``"blur"``, the Gaussian blur of kernel 11 and sigma 5 that
insertion has always started from) is the default fill of every perturbation explainer (RISE, occlusion, feature
ablation, KernelSHAP, LIME) *and* the default substrate of insertion and deletion, so a map is made and scored with
the same notion of "removed". The blur is chosen because it is the only candidate that removes detail without
adding evidence of its own: black is air on a radiograph, and a black patch inside a lung or on a retina is itself
an abnormality (blacking out the fundus lesions *raised* p(finding) from 0.875 to 0.983); a flat grey patch (the
image mean) is a sharp-edged artefact as well; the blur keeps the local intensity and the anatomy, so only the
fine structure a small finding consists of is lost. Whether it does remove a data set's findings is measured, not
assumed: :mod:`medlit.studies.substrate_check` reports the explained score with the finding pixels replaced by each
substrate, and :func:`medlit.studies.substrate_check.inverted_metrics` names the metrics whose substrate fails.
``"zeros"`` and ``"mean"`` stay available for comparisons with the original papers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = [
    "CONSTANT_SUBSTRATES",
    "PERTURBATION_SUBSTRATES",
    "PROTOCOL_SUBSTRATE",
    "SUBSTRATES",
    "anatomy_mean",
    "blurred",
    "explained_forward",
    "gaussian_blur",
    "perturbation_fill",
    "region_drops",
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


# The substrate every perturbation explainer fills with and insertion/deletion score against by default (see above).
PROTOCOL_SUBSTRATE = "blur"

# The substrates a perturbation explainer accepts as its baseline: full images, so the blur is one of them.
PERTURBATION_SUBSTRATES = ("blur", "mean", "zeros")


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


def perturbation_fill(x: torch.Tensor, kind: str = PROTOCOL_SUBSTRATE) -> torch.Tensor:
    """The baseline of a perturbation explainer as full, contiguous images shaped like ``x`` (captum's
    ``baselines``): one of :data:`PERTURBATION_SUBSTRATES`, the protocol substrate by default."""
    return substrate_fill(x, kind, valid=PERTURBATION_SUBSTRATES).contiguous()


def explained_forward(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` with its (N, K) outputs replaced by every class's explained score (the centred logit of
    :func:`medlit.explain.targets.explained_score`), for attribution libraries that pick the target column
    themselves (captum): the target's column is then exactly the quantity every method and metric explains."""
    from medlit.explain.targets import explained_score

    def forward(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        if logits.ndim != 2:
            raise ValueError(f"explained_forward: the model must return (N, K) logits, got {tuple(logits.shape)}")
        classes = torch.arange(logits.shape[1], device=logits.device)
        return torch.stack([explained_score(logits, k.expand(len(logits))) for k in classes], dim=1)

    return forward


@torch.no_grad()
def region_drops(model, x: torch.Tensor, target: torch.Tensor, regions: torch.Tensor, fill: torch.Tensor,
                 batch_size: int = 64) -> torch.Tensor:
    """(B, R) drop of the explained score when each region is replaced by the fill: ``f_t(x) - f_t(x_r)``.

    The shared step of occlusion and feature ablation. All (image, region) pairs run in chunks of ``batch_size``
    forward passes, the perturbed copies built on the fly; f_t is the target's centred logit
    (:func:`medlit.explain.targets.explained_score`).

    Parameters
    ----------
    x : (B, C, H, W) images
    target : (B,) class indices
    regions : (R, H, W) bool, the same regions for every image (every channel of a pixel is replaced)
    fill : (B, C, H, W) what a replaced pixel becomes (:func:`perturbation_fill`)
    """
    from medlit.explain.targets import explained_score
    from medlit.models.inference import inference_forward

    if regions.ndim != 3 or tuple(regions.shape[1:]) != tuple(x.shape[-2:]):
        raise ValueError(f"region_drops: regions must be (R, H, W) = (R, {x.shape[-2]}, {x.shape[-1]}), "
                         f"got {tuple(regions.shape)}")
    b, r = len(x), len(regions)
    forward = inference_forward(model)
    target = target.to(x.device)
    regions = regions.to(x.device, torch.bool)
    unperturbed = torch.cat([explained_score(forward(x[i:i + batch_size]), target[i:i + batch_size])
                             for i in range(0, b, batch_size)])
    drops = torch.empty(b * r, dtype=torch.float32, device=x.device)
    for first in range(0, b * r, batch_size):
        pair = torch.arange(first, min(first + batch_size, b * r), device=x.device)
        image, region = pair // r, pair % r
        perturbed = torch.where(regions[region][:, None], fill[image], x[image])
        drops[pair] = unperturbed[image] - explained_score(forward(perturbed), target[image])
    return drops.view(b, r)
