"""Faithfulness metrics: insertion and deletion {cite}`petsiuk2018rise`.

Pixels are ranked by relevance; deletion moves them, most relevant first, from the image to a substrate
(zeros by default), insertion moves them from a blurred copy into the image. The softmax probability of
the target class is recorded after every step and the score is the normalised area under that curve.

All (image, step) pairs are evaluated in batches: each perturbed image is built on the fly from a
per-pixel rank tensor (``moved = rank < n_k``), ``batch_size`` pairs per forward pass, so the cost is
``ceil(B * (steps + 1) / batch_size)`` forwards, never one per pixel.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medlit.metrics.registry import register_metric
from medlit.perturbation import substrate_fill, unknown_substrate

__all__ = [
    "deletion_auc",
    "forwards_needed",
    "insertion_auc",
    "insertion_deletion_curves",
    "normalised_auc",
    "pixel_ranks",
    "step_counts",
]

# The names of medlit.perturbation.SUBSTRATES these metrics accept (a tensor is accepted as well).
SUBSTRATES = ("zeros", "blur")


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(B, H*W) int64 rank of every pixel, 0 for the most relevant.

    Ties are broken deterministically by a stable sort: among equal values the pixel earlier in
    row-major order ranks first.
    """
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def step_counts(n_pixels: int, steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(steps + 1,) int64: pixels moved after step k, ``round(k * n_pixels / steps)`` (halves round up)."""
    k = torch.arange(steps + 1, dtype=torch.int64, device=device)
    return (2 * k * n_pixels + steps) // (2 * steps)


def normalised_auc(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under (B, steps + 1) curves on [0, 1]: ``(sum - first/2 - last/2) / steps``."""
    steps = curves.shape[1] - 1
    return (curves.sum(dim=1) - curves[:, 0] / 2 - curves[:, -1] / 2) / steps


def _check(x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, steps: int, batch_size: int,
           name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim != 4:
        raise ValueError(f"{name}: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    if tuple(maps.shape) != (b, h, w):
        raise ValueError(f"{name}: maps {tuple(maps.shape)} must be (B, H, W) = {(b, h, w)} to match x")
    target = torch.as_tensor(target)
    if tuple(target.shape) != (b,) or target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"{name}: target must be (B,) = ({b},) integer class indices, got "
                         f"{tuple(target.shape)} {target.dtype}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name}: maps contain NaN or infinite values")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"{name}: steps and batch_size must be >= 1, got {steps}, {batch_size}")
    return target.to(x.device, torch.int64), maps.detach().to(x.device)


def _substrate(x: torch.Tensor, substrate: str | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(substrate, torch.Tensor):
        try:
            return torch.broadcast_to(substrate.to(x.device, x.dtype), x.shape)
        except RuntimeError:
            raise ValueError(f"{name}: substrate {tuple(substrate.shape)} does not broadcast to x "
                             f"{tuple(x.shape)}") from None
    if substrate not in SUBSTRATES:
        raise ValueError(f"{name}: {unknown_substrate(substrate, SUBSTRATES)} or a tensor")
    return substrate_fill(x, substrate, valid=SUBSTRATES)


def _target_probability(model, images: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    logits = model(images)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"{name}: the model must return (N, n_classes >= 2) logits, got {tuple(logits.shape)}")
    if bool((target >= logits.shape[1]).any()) or bool((target < 0).any()):
        raise ValueError(f"{name}: target outside [0, {logits.shape[1]})")
    return torch.softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)


@torch.no_grad()
def insertion_deletion_curves(model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, *,
                              mode: str, steps: int = 64, substrate: str | torch.Tensor | None = None,
                              batch_size: int = 64) -> torch.Tensor:
    """Insertion or deletion curves {cite}`petsiuk2018rise`, all steps of all images batched.

    Parameters
    ----------
    model : callable
        Maps (N, C, H, W) to (N, n_classes) logits; an ``nn.Module`` is put in eval mode for the call
        and restored afterwards.
    x : (B, C, H, W) float tensor
        Images; the computation runs on ``x.device``.
    target : (B,) int tensor
        Class whose softmax probability is recorded.
    maps : (B, H, W) float tensor
        Relevance; pixels are moved in decreasing order of relevance (all channels of a pixel together),
        ties broken by :func:`pixel_ranks`.
    mode : {"insertion", "deletion"}
    steps : int
        Step k moves the top ``round(k * H * W / steps)`` pixels, k = 0..steps.
    substrate : {"zeros", "blur"}, tensor or None
        What deleted pixels become / where inserted pixels come from (see :data:`medlit.perturbation.SUBSTRATES`).
        None: "blur" (Gaussian, kernel 11, sigma 5, :func:`medlit.perturbation.gaussian_blur`) for insertion,
        "zeros" for deletion. A tensor broadcastable to ``x`` is used as is.
    batch_size : int
        (image, step) pairs per forward pass.

    Returns
    -------
    (B, steps + 1) float32 tensor
        Target probability after each step; column 0 is the unperturbed start (the image for deletion,
        the substrate for insertion), the last column the end state.
    """
    name = "insertion_deletion_curves"
    if mode not in ("insertion", "deletion"):
        raise ValueError(f"{name}: mode must be 'insertion' or 'deletion', got {mode!r}")
    target, maps = _check(x, target, maps, steps, batch_size, name)
    if substrate is None:
        substrate = "blur" if mode == "insertion" else "zeros"
    base = _substrate(x, substrate, name)
    start, finish = (x, base) if mode == "deletion" else (base, x)
    b, _, h, w = x.shape
    ranks = pixel_ranks(maps)
    counts = step_counts(h * w, steps, x.device)
    curves = torch.empty(b * (steps + 1), dtype=torch.float32, device=x.device)
    was_training = model.training if isinstance(model, nn.Module) else None
    if was_training is not None:
        model.eval()
    try:
        for first in range(0, b * (steps + 1), batch_size):
            pair = torch.arange(first, min(first + batch_size, b * (steps + 1)), device=x.device)
            img, k = pair // (steps + 1), pair % (steps + 1)
            moved = (ranks[img] < counts[k, None]).view(-1, 1, h, w)
            perturbed = torch.where(moved, finish[img], start[img])
            curves[pair] = _target_probability(model, perturbed, target[img], name)
    finally:
        if was_training is not None:
            model.train(was_training)
    return curves.view(b, steps + 1)


@register_metric("insertion_auc", short_name="Insertion AUC",
                 kind="faithfulness", direction="higher",
                 long_name="Insertion AUC", citation="petsiuk2018rise",
                 normalisation="none: uses only the ranking of pixel values")
def insertion_auc(model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, *, steps: int = 64,
                  substrate: str | torch.Tensor = "blur", batch_size: int = 64) -> torch.Tensor:
    """Insertion score {cite}`petsiuk2018rise`: area under the insertion curve (higher is better).

    Pixels move, most relevant first, from a blurred copy of the image (Gaussian, kernel 11, sigma 5)
    into it; see :func:`insertion_deletion_curves` for the parameters and :func:`normalised_auc`.

    Returns
    -------
    (B,) float32 tensor
        Normalised area in [0, 1].
    """
    curves = insertion_deletion_curves(model, x, target, maps, mode="insertion", steps=steps,
                                       substrate=substrate, batch_size=batch_size)
    return normalised_auc(curves)


@register_metric("deletion_auc", short_name="Deletion AUC",
                 kind="faithfulness", direction="lower",
                 long_name="Deletion AUC", citation="petsiuk2018rise",
                 normalisation="none: uses only the ranking of pixel values")
def deletion_auc(model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, *, steps: int = 64,
                 substrate: str | torch.Tensor = "zeros", batch_size: int = 64) -> torch.Tensor:
    """Deletion score {cite}`petsiuk2018rise`: area under the deletion curve (lower is better).

    Pixels move, most relevant first, from the image to the substrate (zeros by default); see
    :func:`insertion_deletion_curves` for the parameters and :func:`normalised_auc`.

    Returns
    -------
    (B,) float32 tensor
        Normalised area in [0, 1].
    """
    curves = insertion_deletion_curves(model, x, target, maps, mode="deletion", steps=steps,
                                       substrate=substrate, batch_size=batch_size)
    return normalised_auc(curves)


def forwards_needed(n_images: int, steps: int = 64, batch_size: int = 64) -> int:
    """Forward passes one insertion or deletion evaluation costs: ``ceil(n_images * (steps+1) / batch_size)``."""
    return math.ceil(n_images * (steps + 1) / batch_size)
