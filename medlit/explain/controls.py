"""Control maps: what any method must beat to have localised anything.

The centre prior is the pointing-game "centre baseline" of {cite}`zhang2018excitation`; the random map is
the floor. Neither looks at the image or the model.
"""

from __future__ import annotations

import torch

from medlit.explain.registry import register_explainer
from medlit.explain.seeding import image_generator


@register_explainer("random", family="control", citation="", long_name="Random map (control)", forward_passes=0)
def random_map(model, x: torch.Tensor, target: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Independent uniform noise per pixel, reproducible from ``seed`` and the image content."""
    # Seeded from the image content, so that a given image gets the same map whatever batch it is in.
    return torch.stack([torch.rand(x.shape[-2:], generator=image_generator(image, seed)) for image in x]).to(x.device)


@register_explainer("centre_prior", family="control", citation="zhang2018excitation",
                    long_name="Centre prior (control)", forward_passes=0)
def centre_prior(model, x: torch.Tensor, target: torch.Tensor, sigma_fraction: float = 0.25) -> torch.Tensor:
    """An isotropic Gaussian centred on the image, sigma = ``sigma_fraction`` of the shorter side."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, dtype=torch.float32, device=x.device) - (h - 1) / 2
    cols = torch.arange(w, dtype=torch.float32, device=x.device) - (w - 1) / 2
    sigma = sigma_fraction * min(h, w)
    bump = torch.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * sigma**2))
    return bump.expand(x.shape[0], h, w).clone()
