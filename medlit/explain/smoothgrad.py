"""SmoothGrad {cite}`smilkov2017smoothgrad`: the absolute gradient averaged over noisy copies of the image."""

from __future__ import annotations

import torch
from captum.attr import Saliency

from medlit.explain.registry import register_explainer
from medlit.models.capabilities import GRADIENTS
from medlit.explain.seeding import image_normal


@register_explainer("smoothgrad", family="gradient", citation="smilkov2017smoothgrad", long_name="SmoothGrad",
                    forward_passes=25, backward_passes=25, needs=(GRADIENTS,))
def smoothgrad(model, x: torch.Tensor, target: torch.Tensor, n_samples: int = 25, sigma: float = 0.15,
               seed: int = 0) -> torch.Tensor:
    """(1/n) sum_i |d y_target / d x (x + eps_i)|, eps_i ~ N(0, sigma^2), then the maximum over channels.

    Parameters
    ----------
    n_samples : noisy copies per image (the paper sees diminishing returns above about 50)
    sigma : the noise standard deviation, 0.15 of the input range [0, 1] (the paper finds 10-20 % best)
    seed : the noise of an image is drawn from ``seed`` and the image's content

    Notes
    -----
    This is captum's ``NoiseTunnel(Saliency).attribute(nt_type="smoothgrad", abs=True)``, except that the
    noise comes from a generator per image: NoiseTunnel draws from the global RNG in batch order, so an
    image's map would depend on its batch position. Noisy images are not clipped to [0, 1] (as in the paper).
    """
    noise = image_normal(x, n_samples, sigma, seed)
    saliency = Saliency(model)
    total = torch.zeros_like(x)
    for i in range(n_samples):  # one batch of B noisy images per sample keeps memory at that of saliency
        total += saliency.attribute(x + noise[:, i], target=target, abs=True).detach()
    return (total / n_samples).amax(dim=1)
