"""Per-image random generators, so that a stochastic explainer gives an image the same map in any batch."""

from __future__ import annotations

import torch


def image_generator(image: torch.Tensor, seed: int = 0) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and the content of one (C, H, W) image.

    The same rule as the random control map: draws depend on the image, not on its position in a batch.
    """
    return torch.Generator().manual_seed(seed + int(torch.sum(image.detach().double() * 1e6) % (2**31)))


def image_normal(x: torch.Tensor, n: int, std: float, seed: int = 0) -> torch.Tensor:
    """(B, n, C, H, W) Gaussian noise of standard deviation ``std``, drawn per image from its own generator."""
    noise = [torch.randn((n, *x.shape[1:]), generator=image_generator(image, seed)) for image in x]
    return (std * torch.stack(noise)).to(device=x.device, dtype=x.dtype)
