"""GradientSHAP {cite}`lundberg2017shap`: expected gradients over noisy images and random baselines."""

from __future__ import annotations

import torch
from captum.attr import Saliency

from medlit.explain.registry import register_explainer
from medlit.models.capabilities import GRADIENTS
from medlit.explain.seeding import image_generator
from medlit.perturbation import blurred


def gradient_shap_draws(x: torch.Tensor, n_baselines: int, n_samples: int = 16, stdev: float = 0.1,
                        seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: baseline indices (B, n), input noise (B, n, C, H, W) and path positions (B, n) in [0, 1)."""
    choices, noises, alphas = [], [], []
    for image in x:
        g = image_generator(image, seed)
        noises.append(stdev * torch.randn((n_samples, *x.shape[1:]), generator=g))
        choices.append(torch.randint(n_baselines, (n_samples,), generator=g))
        alphas.append(torch.rand(n_samples, generator=g))
    return (torch.stack(choices).to(x.device), torch.stack(noises).to(x.device, x.dtype),
            torch.stack(alphas).to(x.device, x.dtype))


def gradient_shap_from_draws(model, x: torch.Tensor, target: torch.Tensor, baselines: torch.Tensor,
                             choice: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) mean over samples i of (x + n_i - b_i) ⊙ grad f(b_i + a_i (x + n_i - b_i)).

    ``baselines`` is (B, K, C, H, W), one set of K references per image. This is captum's GradientShap
    (NoiseTunnel over InputBaselineXGradient, baselines drawn from the distribution) with given draws.
    """
    rows = torch.arange(len(x), device=x.device)
    saliency, total = Saliency(model), torch.zeros_like(x)
    for i in range(choice.shape[1]):  # one batch of B points per sample
        base, noisy, a = baselines[rows, choice[:, i]], x + noise[:, i], alpha[:, i].view(-1, 1, 1, 1)
        point = a * noisy + (1 - a) * base
        total += (noisy - base) * saliency.attribute(point, target=target, abs=False).detach()
    return total / choice.shape[1]


@register_explainer("gradient_shap", family="gradient", citation="lundberg2017shap", long_name="GradientSHAP",
                    forward_passes=16, backward_passes=16, needs=(GRADIENTS,))
def gradient_shap(model, x: torch.Tensor, target: torch.Tensor, n_samples: int = 16, stdev: float = 0.1,
                  seed: int = 0) -> torch.Tensor:
    """GradientSHAP with a black and a blurred baseline, 16 samples, input noise 0.1 of the range; channel sum.

    Parameters
    ----------
    n_samples : (baseline, noise, path position) draws per image
    stdev : standard deviation of the noise added to the image, 0.1 of the input range [0, 1]
    seed : draws come from ``seed`` and the image's content, so a map does not depend on the batch

    Notes
    -----
    captum's ``GradientShap`` shares one baseline distribution across the batch and draws from the global
    numpy and torch RNGs; the blurred baseline is image-specific and the draws must be per image, so the same
    estimator is computed here from per-image draws (a test checks it equals captum's given those draws).
    The map is the signed sum over channels. Without input noise its expectation sums to
    f(x) - E_b[f(b)] (the completeness of Integrated Gradients, averaged over baselines).
    """
    baselines = torch.stack([torch.zeros_like(x), blurred(x)], dim=1)
    draws = gradient_shap_draws(x, baselines.shape[1], n_samples, stdev, seed)
    return gradient_shap_from_draws(model, x, target, baselines, *draws).sum(dim=1)
