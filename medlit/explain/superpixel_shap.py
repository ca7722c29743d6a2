"""KernelSHAP {cite}`lundberg2017shap` and LIME {cite}`ribeiro2016lime` on a grid of square superpixels.

Both through captum (``KernelShap``, ``Lime``), one image per call so that captum's sampling, which draws from the
global RNG, can be seeded from the image alone; each call batches its own perturbed copies.

Superpixels are a regular grid of ``cells`` x ``cells`` squares (8 x 8 = 64 at any image size), not SLIC: the grid is
deterministic, identical for every image (so maps of different images and methods share their units), free to
compute, and does not follow image edges, which on a radiograph are mostly ribs and the body outline rather than
findings.
"""

from __future__ import annotations

import torch
from captum.attr import KernelShap, Lime

from medlit.explain.registry import FORWARD_BATCH, register_explainer
from medlit.explain.seeding import image_generator
from medlit.perturbation import PROTOCOL_SUBSTRATE, explained_forward, perturbation_fill


def grid_superpixels(height: int, width: int, cells: int = 8, device=None) -> torch.Tensor:
    """(1, 1, H, W) long tensor: the index (row * cells + column) of each pixel's grid cell."""
    rows = torch.arange(height, device=device) * cells // height
    cols = torch.arange(width, device=device) * cells // width
    return (rows[:, None] * cells + cols[None, :])[None, None]


def _superpixel_attribution(method, model, x, target, cells, n_samples, seed, batch_size, baseline):
    feature_mask = grid_superpixels(x.shape[-2], x.shape[-1], cells, x.device)
    attributor = method(explained_forward(model))  # the target's column is its centred logit
    maps = []
    for image, t in zip(x, target):
        image = image[None]
        baselines = perturbation_fill(image, baseline)
        # captum samples coalitions from the global CPU RNG: fork it and seed it from the image.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(image_generator(image[0], seed).initial_seed()))
            attribution = attributor.attribute(
                image, baselines=baselines, target=int(t), feature_mask=feature_mask, n_samples=n_samples,
                perturbations_per_eval=batch_size)
        maps.append(attribution.sum(dim=1))  # one value per superpixel, painted on its pixels
    return torch.cat(maps).detach().float()


# forward passes: n_samples (the empty and the full coalition are among them; no extra forward)
@register_explainer("kernel_shap", family="perturbation", citation="lundberg2017shap",
                    long_name="KernelSHAP (grid superpixels)", forward_passes=256, backward_passes=0)
def kernel_shap(model, x: torch.Tensor, target: torch.Tensor, cells: int = 8, n_samples: int = 256,
                seed: int = 0, batch_size: int = FORWARD_BATCH, baseline: str = PROTOCOL_SUBSTRATE) -> torch.Tensor:
    """Shapley values of the ``cells`` x ``cells`` grid superpixels for the explained score (the target's centred
    logit), each painted on its cell.

    Parameters
    ----------
    cells : grid side (64 superpixels by default)
    n_samples : coalitions per image, drawn from the Shapley kernel (captum includes the empty and full ones)
    seed : sampling is seeded from ``seed`` and the image's content
    batch_size : perturbed copies per forward pass (captum's ``perturbations_per_eval``)
    baseline : what a removed superpixel becomes: ``"blur"`` (the protocol substrate, the blurred image),
        ``"mean"`` (the image's mean intensity) or ``"zeros"`` (black is itself an anomaly on a radiograph)
    """
    return _superpixel_attribution(KernelShap, model, x, target, cells, n_samples, seed, batch_size, baseline)


@register_explainer("lime", family="perturbation", citation="ribeiro2016lime", long_name="LIME (grid superpixels)",
                    forward_passes=256, backward_passes=0)
def lime(model, x: torch.Tensor, target: torch.Tensor, cells: int = 8, n_samples: int = 256, seed: int = 0,
         batch_size: int = FORWARD_BATCH, baseline: str = PROTOCOL_SUBSTRATE) -> torch.Tensor:
    """Coefficients of captum's LIME surrogate (Lasso, alpha 0.01, exponential cosine kernel of width 1) over
    grid superpixels, for the explained score (the target's centred logit), each painted on its cell. Arguments as
    for ``kernel_shap``."""
    return _superpixel_attribution(Lime, model, x, target, cells, n_samples, seed, batch_size, baseline)
