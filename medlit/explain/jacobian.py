"""Jacobian sensitivity maps {cite}`abe2025jacobian`: per-pixel norms of rows of the input-output Jacobian.

With ``f`` the logits and ``J = df/dx`` (K x C x H x W) at one image, computed exactly with no training data,
medlit defines two maps (the paper, preliminary, publishes none; the global indicators, singular values and
distance to the decision boundary, are in ``medlit.studies.jacobian_stability``):

``jacobian_target``
    ``M[i, j] = || d f_t / d x[:, i, j] ||_2`` over channels: how strongly pixel (i, j) moves the target logit.
    For one channel this equals the saliency map |gradient| {cite}`simonyan2014saliency` (which takes the
    maximum over channels instead of the l2 norm).
``jacobian_margin``
    ``M[i, j] = || d (f_t - f_r) / d x[:, i, j] ||_2`` over channels, ``r = argmax_{k != t} f_k(x)`` the
    runner-up class at ``x`` (held fixed: the derivative of the max along its active branch). The gradient of
    the decision margin: how strongly pixel (i, j) moves the model towards or away from flipping its decision.
    For two classes ``r`` is simply the other class, and the map is ``|| J_t - J_r ||`` per pixel.

Each map takes one forward and one backward pass for the whole batch (the batch sum trick; images are
independent in eval mode, which these functions set for the call and then restore).
"""

from __future__ import annotations

import torch

from medlit.explain.registry import register_explainer
from medlit.models.capabilities import GRADIENTS
from medlit.models.capture import logit_gradient


def _one_hot(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(logits).scatter(1, target[:, None].to(logits.device), 1.0)


def target_weights(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Row weights selecting ``f_t``: the one-hot vector of the target."""
    return _one_hot(logits, target)


def margin_weights(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Row weights of the margin ``f_t - f_r``, r the highest-scoring class other than t."""
    if logits.shape[1] < 2:
        raise ValueError("a margin needs at least two classes")
    onehot = _one_hot(logits, target)
    runner_up = logits.masked_fill(onehot.bool(), -torch.inf).argmax(dim=1)
    return onehot - _one_hot(logits, runner_up)


@register_explainer("jacobian_target", family="gradient", citation="abe2025jacobian",
                    long_name="Jacobian, target row (||df_t/dx|| per pixel)", forward_passes=1, backward_passes=1,
                    needs=(GRADIENTS,))
def jacobian_target(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel l2 norm over channels of the target logit's Jacobian row, (B, H, W)."""
    grad, _ = logit_gradient(model, x, lambda logits: target_weights(logits, target))
    return grad.norm(dim=1).float()


@register_explainer("jacobian_margin", family="gradient", citation="abe2025jacobian",
                    long_name="Jacobian, margin (||d(f_t - f_runner-up)/dx|| per pixel)",
                    forward_passes=1, backward_passes=1, needs=(GRADIENTS,))
def jacobian_margin(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel l2 norm over channels of the gradient of the margin f_t - max_{k != t} f_k, (B, H, W)."""
    grad, _ = logit_gradient(model, x, lambda logits: margin_weights(logits, target))
    return grad.norm(dim=1).float()
