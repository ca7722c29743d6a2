"""Integrated Gradients {cite}`sundararajan2017ig`, through captum, from a black or a blurred baseline."""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients

from medlit.explain.registry import register_explainer
from medlit.models.capabilities import GRADIENTS
from medlit.perturbation import blurred

BASELINES = ("black", "blur")


def baseline_for(x: torch.Tensor, baseline: str) -> torch.Tensor:
    """The reference image: ``"black"`` (zeros, the absence of signal in [0, 1] images) or ``"blur"``."""
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    return torch.zeros_like(x) if baseline == "black" else blurred(x)


def integrated_gradients_with_delta(model, x: torch.Tensor, target: torch.Tensor, baseline: str = "black",
                                    n_steps: int = 32, method: str = "gausslegendre",
                                    internal_batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, W) signed maps and captum's (B,) convergence delta, sum(attributions) - (f(x) - f(baseline)).

    Parameters
    ----------
    baseline : ``"black"`` or ``"blur"`` (see ``baseline_for``)
    n_steps : points on the path; the Gauss-Legendre rule is captum's default
    internal_batch_size : scaled images per forward pass (bounds memory; results do not depend on it)
    """
    attributions, delta = IntegratedGradients(model).attribute(
        x, baselines=baseline_for(x, baseline), target=target, n_steps=n_steps, method=method,
        internal_batch_size=max(internal_batch_size, len(x)), return_convergence_delta=True)
    return attributions.sum(dim=1).detach(), delta.detach()


@register_explainer("integrated_gradients", family="gradient", citation="sundararajan2017ig",
                    long_name="Integrated Gradients (black baseline)", forward_passes=32, backward_passes=32,
                    needs=(GRADIENTS,))
def integrated_gradients(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(x - x') ⊙ ∫ d y_target / d x (x' + a (x - x')) da from a black image x' = 0, 32 steps.

    Attributions are summed over channels and keep their sign, so the map sums to f(x) - f(x') (completeness).
    """
    return integrated_gradients_with_delta(model, x, target, baseline="black")[0]


@register_explainer("integrated_gradients_blur", family="gradient", citation="sundararajan2017ig",
                    long_name="Integrated Gradients (blurred baseline)", forward_passes=32, backward_passes=32,
                    needs=(GRADIENTS,))
def integrated_gradients_blur(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Integrated Gradients from the blurred image (sigma = 1/25 of the image side), 32 steps.

    A blurred baseline keeps the coarse anatomy and removes fine structure, so only what blurring destroys
    (edges, small lesions) can receive attribution; a black baseline gives none to black pixels.
    """
    return integrated_gradients_with_delta(model, x, target, baseline="blur")[0]
