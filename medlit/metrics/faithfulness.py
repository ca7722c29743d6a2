"""Faithfulness metrics: insertion and deletion {cite}`petsiuk2018rise`, and ROAD {cite}`rong2022road`.

Pixels are ranked by relevance; deletion moves them, most relevant first, from the image to a substrate,
insertion moves them from the substrate into the image. Both default to the protocol substrate
(:data:`medlit.perturbation.PROTOCOL_SUBSTRATE`, the Gaussian blur), the fill the perturbation explainers make their
maps with. The curve records the **explained score** after every step: the target's centred logit
(:func:`medlit.explain.targets.explained_score`, half the log-odds for two classes), the quantity every method
explains. The softmax probability saturates (median 0.997 on the explained positives), which pushed insertion to
its ceiling for every map; ``quantity="probability"`` keeps it for comparisons with Quantus and the papers.

**The per-image score.** With s_image the score of the image and s_substrate the score of the substrate (the two
ends of every curve), each point is put on the evidence scale ``(s_k - s_substrate) / (s_image - s_substrate)``:
0 = the substrate's level, 1 = the image's. The score is the trapezoidal area of that normalised curve on [0, 1].
Deletion (lower is better): 0 = the evidence is gone with the first pixels, 1 = it stays until the last ones.
Insertion (higher is better): 1 = the evidence arrives with the first pixels, 0 = only with the last ones. The
normalised curve may leave [0, 1] (a partly removed image can score above the image or below the substrate), so
may the area: the registered range (0, 1) is the nominal one.

**Undefined scores.** When the substrate does not remove the model's evidence for an image, i.e.
``s_image - s_substrate < min_drop`` (default :data:`MIN_DROP`: 0.5 in explained-score units, an odds ratio of
e = 2.7 between image and substrate; 0.05 for the probability), the curve has no scale: the score is NaN. This is the
only NaN of these metrics (the localisation metrics add the one for missing ground truth); the pipeline should
report how many images it dropped.

All (image, step) pairs are evaluated in batches: each perturbed image is built on the fly from a per-pixel rank
tensor (``moved = rank < n_k``), ``batch_size`` pairs per forward pass, so the cost is
``ceil(B * (steps + 1) / batch_size)`` forwards, never one per pixel. ROAD imputes all its (image, fraction) pairs
of a chunk at once (:mod:`medlit.imputation`) and costs ``ceil(B * (steps + 1) / batch_size)`` forwards too.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medlit.explain.targets import explained_score
from medlit.imputation import ROAD_NOISE, noisy_linear_imputation
from medlit.metrics.registry import register_metric
from medlit.models.inference import inference_forward
from medlit.perturbation import PROTOCOL_SUBSTRATE, substrate_fill, unknown_substrate

__all__ = [
    "MIN_DROP",
    "QUANTITIES",
    "deletion_auc",
    "evidence_curves",
    "forwards_needed",
    "insertion_auc",
    "insertion_deletion_curves",
    "normalised_auc",
    "pixel_ranks",
    "road_curves",
    "road_morf",
    "step_counts",
]

# The names of medlit.perturbation.SUBSTRATES these metrics accept (a tensor is accepted as well).
SUBSTRATES = ("zeros", "blur", "mean")

# What a curve records: the explained score (centred logit) or the softmax probability of the target.
QUANTITIES = ("score", "probability")

# The least drop from image to substrate for which a curve is scored, in the units of each quantity.
MIN_DROP = {"score": 0.5, "probability": 0.05}


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


def _explained(model, images: torch.Tensor, target: torch.Tensor, quantity: str, name: str) -> torch.Tensor:
    """(N,) explained score (centred logit) or softmax probability of ``target`` for ``images``."""
    logits = inference_forward(model)(images)  # a frozen copy on the CPU (medlit.models.inference)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"{name}: the model must return (N, n_classes >= 2) logits, got {tuple(logits.shape)}")
    if bool((target >= logits.shape[1]).any()) or bool((target < 0).any()):
        raise ValueError(f"{name}: target outside [0, {logits.shape[1]})")
    if quantity == "probability":
        return torch.softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
    return explained_score(logits, target)


def _check_quantity(quantity: str, name: str) -> None:
    if quantity not in QUANTITIES:
        raise ValueError(f"{name}: quantity must be one of {', '.join(QUANTITIES)}, got {quantity!r}")


class _EvalMode:
    """Puts an ``nn.Module`` in eval mode for a block and restores its mode afterwards (dropout off)."""

    def __init__(self, model) -> None:
        self.model, self.was_training = model, model.training if isinstance(model, nn.Module) else None

    def __enter__(self):
        if self.was_training is not None:
            self.model.eval()

    def __exit__(self, *exc) -> None:
        if self.was_training is not None:
            self.model.train(self.was_training)


@torch.no_grad()
def insertion_deletion_curves(model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, *,
                              mode: str, steps: int = 64, substrate: str | torch.Tensor | None = PROTOCOL_SUBSTRATE,
                              batch_size: int = 64, quantity: str = "score") -> torch.Tensor:
    """Insertion or deletion curves {cite}`petsiuk2018rise`, all steps of all images batched.

    Parameters
    ----------
    model : callable
        Maps (N, C, H, W) to (N, n_classes) logits; an ``nn.Module`` is put in eval mode for the call
        and restored afterwards.
    x : (B, C, H, W) float tensor
        Images; the computation runs on ``x.device``.
    target : (B,) int tensor
        Class whose score is recorded.
    maps : (B, H, W) float tensor
        Relevance; pixels are moved in decreasing order of relevance (all channels of a pixel together),
        ties broken by :func:`pixel_ranks`.
    mode : {"insertion", "deletion"}
    steps : int
        Step k moves the top ``round(k * H * W / steps)`` pixels, k = 0..steps.
    substrate : {"blur", "zeros", "mean"} or tensor
        What deleted pixels become / where inserted pixels come from (see :data:`medlit.perturbation.SUBSTRATES`);
        default (and None) the protocol substrate, the blur (Gaussian, kernel 11, sigma 5), for both modes. A tensor
        broadcastable to ``x`` is used as is.
    batch_size : int
        (image, step) pairs per forward pass.
    quantity : {"score", "probability"}
        ``"score"``: the explained score, the target's centred logit; ``"probability"``: its softmax probability
        (the papers' and Quantus's curve).

    Returns
    -------
    (B, steps + 1) float32 tensor
        The quantity after each step; column 0 is the unperturbed start (the image for deletion, the substrate
        for insertion), the last column the end state.
    """
    name = "insertion_deletion_curves"
    if mode not in ("insertion", "deletion"):
        raise ValueError(f"{name}: mode must be 'insertion' or 'deletion', got {mode!r}")
    _check_quantity(quantity, name)
    target, maps = _check(x, target, maps, steps, batch_size, name)
    base = _substrate(x, PROTOCOL_SUBSTRATE if substrate is None else substrate, name)
    start, finish = (x, base) if mode == "deletion" else (base, x)
    b, _, h, w = x.shape
    ranks = pixel_ranks(maps)
    counts = step_counts(h * w, steps, x.device)
    curves = torch.empty(b * (steps + 1), dtype=torch.float32, device=x.device)
    with _EvalMode(model):
        for first in range(0, b * (steps + 1), batch_size):
            pair = torch.arange(first, min(first + batch_size, b * (steps + 1)), device=x.device)
            img, k = pair // (steps + 1), pair % (steps + 1)
            moved = (ranks[img] < counts[k, None]).view(-1, 1, h, w)
            perturbed = torch.where(moved, finish[img], start[img])
            curves[pair] = _explained(model, perturbed, target[img], quantity, name)
    return curves.view(b, steps + 1)


def evidence_curves(curves: torch.Tensor, image: torch.Tensor, substrate: torch.Tensor,
                    min_drop: float) -> torch.Tensor:
    """Curves on the evidence scale ``(s - s_substrate) / (s_image - s_substrate)``; NaN rows where the substrate
    lowers the score by less than ``min_drop`` (the substrate does not remove the evidence, the curve has no scale).

    Parameters
    ----------
    curves : (B, n) float tensor of scores
    image, substrate : (B,) scores of the image and of the substrate
    min_drop : the least ``s_image - s_substrate`` that defines a scale
    """
    drop = image - substrate
    defined = drop >= min_drop
    scale = torch.where(defined, drop, torch.ones_like(drop))
    normalised = (curves - substrate[:, None]) / scale[:, None]
    return torch.where(defined[:, None], normalised, torch.full_like(normalised, float("nan")))


def _curve_score(curves: torch.Tensor, mode: str, quantity: str, normalise: bool,
                 min_drop: float | None) -> torch.Tensor:
    if not normalise:
        return normalised_auc(curves)
    image, substrate = (curves[:, 0], curves[:, -1]) if mode == "deletion" else (curves[:, -1], curves[:, 0])
    min_drop = MIN_DROP[quantity] if min_drop is None else min_drop
    return normalised_auc(evidence_curves(curves, image, substrate, min_drop))


_CURVE_NORMALISATION = ("none: uses only the ranking of pixel values; the curve is put on the evidence scale "
                        "(score - substrate) / (image - substrate), NaN where the substrate lowers the explained "
                        "score by less than MIN_DROP")


@register_metric("insertion_auc", short_name="Insertion AUC",
                 kind="faithfulness", direction="higher",
                 long_name="Insertion AUC (explained score, evidence scale)", citation="petsiuk2018rise",
                 normalisation=_CURVE_NORMALISATION)
def insertion_auc(model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, *, steps: int = 64,
                  substrate: str | torch.Tensor = PROTOCOL_SUBSTRATE, batch_size: int = 64,
                  quantity: str = "score", normalise: bool = True, min_drop: float | None = None) -> torch.Tensor:
    """Insertion score {cite}`petsiuk2018rise` (higher is better): the area under the insertion curve of the
    explained score on the evidence scale (see the module docstring), 1 when the evidence arrives at once.

    Pixels move, most relevant first, from the protocol substrate (the blurred image) into the image; see
    :func:`insertion_deletion_curves` for the parameters.

    Parameters
    ----------
    normalise : put the curve on the evidence scale (default); False: the plain area of the raw curve
    min_drop : the least ``s_image - s_substrate`` scored; default ``MIN_DROP[quantity]``

    Returns
    -------
    (B,) float32 tensor, NaN where the substrate does not lower the score by ``min_drop``.
    """
    curves = insertion_deletion_curves(model, x, target, maps, mode="insertion", steps=steps,
                                       substrate=substrate, batch_size=batch_size, quantity=quantity)
    return _curve_score(curves, "insertion", quantity, normalise, min_drop)


@register_metric("deletion_auc", short_name="Deletion AUC",
                 kind="faithfulness", direction="lower",
                 long_name="Deletion AUC (explained score, evidence scale)", citation="petsiuk2018rise",
                 normalisation=_CURVE_NORMALISATION)
def deletion_auc(model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, *, steps: int = 64,
                 substrate: str | torch.Tensor = PROTOCOL_SUBSTRATE, batch_size: int = 64,
                 quantity: str = "score", normalise: bool = True, min_drop: float | None = None) -> torch.Tensor:
    """Deletion score {cite}`petsiuk2018rise` (lower is better): the area under the deletion curve of the
    explained score on the evidence scale (see the module docstring), 0 when the evidence goes at once.

    Pixels move, most relevant first, from the image to the protocol substrate (the blurred image); parameters
    as for :func:`insertion_auc`.
    """
    curves = insertion_deletion_curves(model, x, target, maps, mode="deletion", steps=steps,
                                       substrate=substrate, batch_size=batch_size, quantity=quantity)
    return _curve_score(curves, "deletion", quantity, normalise, min_drop)


def road_fractions(steps: int) -> torch.Tensor:
    """(steps - 1,) fractions of pixels ROAD removes: k / steps for k = 1..steps-1 (steps 5: 20, 40, 60, 80 %)."""
    return torch.arange(1, steps, dtype=torch.float64) / steps


@torch.no_grad()
def road_curves(model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, *, steps: int = 5,
                sigma: float = ROAD_NOISE, seed: int = 0, batch_size: int = 64, quantity: str = "score",
                max_iter: int = 20, tol: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """ROAD MoRF curves {cite}`rong2022road`: the explained score with the most relevant pixels removed by noisy
    linear imputation (:func:`medlit.imputation.noisy_linear_imputation`), at the fractions of :func:`road_fractions`.

    Parameters
    ----------
    steps : the fractions are k / steps, k = 1..steps-1 (no 0 % and 100 %: nothing to impute / nothing to impute
        from)
    sigma, seed : the imputation noise (standard deviation 0.01; drawn per image from ``seed`` and its content,
        the same draw at every fraction)
    max_iter, tol : conjugate-gradient iterations per resolution level and residual tolerance of the imputation
    other parameters : as for :func:`insertion_deletion_curves`

    Returns
    -------
    curves : (B, steps + 1) float32: column 0 the image, columns 1..steps-1 the fractions, column ``steps`` the
        protocol substrate (the whole image blurred), the reference of the evidence scale
    fractions : (steps + 1,) the fraction of each column (the substrate's column is 1.0)
    """
    name = "road_curves"
    _check_quantity(quantity, name)
    target, maps = _check(x, target, maps, steps, batch_size, name)
    if steps < 2:
        raise ValueError(f"{name}: steps must be >= 2 (fractions k / steps, k = 1..steps-1), got {steps}")
    b, c, h, w = x.shape
    ranks = pixel_ranks(maps)
    counts = torch.round(road_fractions(steps) * h * w).to(torch.int64).to(x.device)
    counts = torch.cat([counts.new_zeros(1), counts, counts.new_full((1,), h * w)])  # image, fractions, substrate
    noise = torch.stack([torch.randn((c, h, w), generator=_image_generator(image, seed)) for image in x])
    base = substrate_fill(x, PROTOCOL_SUBSTRATE)
    n_pairs = b * (steps + 1)
    curves = torch.empty(n_pairs, dtype=torch.float32, device=x.device)
    with _EvalMode(model):
        for first in range(0, n_pairs, batch_size):
            pair = torch.arange(first, min(first + batch_size, n_pairs), device=x.device)
            img, k = pair // (steps + 1), pair % (steps + 1)
            images = x[img]
            middle = (k > 0) & (k < steps)  # the fractions: imputed; column 0: the image; last: the substrate
            if bool(middle.any()):
                removed = (ranks[img[middle]] < counts[k[middle], None]).view(-1, h, w)
                images[middle] = noisy_linear_imputation(x[img[middle]], removed, sigma=sigma,
                                                         noise=noise[img[middle].cpu()].to(x.device),
                                                         max_iter=max_iter, tol=tol)
            images[k == steps] = base[img[k == steps]]
            curves[pair] = _explained(model, images, target[img], quantity, name)
    fractions = counts.to(torch.float64) / (h * w)
    return curves.view(b, steps + 1), fractions


def _image_generator(image: torch.Tensor, seed: int) -> torch.Generator:
    from medlit.explain.seeding import image_generator  # the rule every stochastic method of medlit uses

    return image_generator(image, seed)


@register_metric("road_morf", short_name="ROAD MoRF",
                 kind="faithfulness", direction="lower",
                 long_name="ROAD, most relevant first (noisy linear imputation, evidence scale)",
                 citation="rong2022road", normalisation=_CURVE_NORMALISATION)
def road_morf(model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, *, steps: int = 5,
              sigma: float = ROAD_NOISE, seed: int = 0, batch_size: int = 64, quantity: str = "score",
              min_drop: float | None = None, max_iter: int = 20, tol: float = 1e-2) -> torch.Tensor:
    """ROAD MoRF {cite}`rong2022road` (lower is better): the mean, over the removed fractions k / steps
    (default 20, 40, 60, 80 %), of the explained score on the evidence scale ``(s_k - s_substrate) /
    (s_image - s_substrate)``, with the protocol substrate (the whole image blurred) as the reference, the same
    scale and the same NaN rule as :func:`deletion_auc`. 0: removing the top 20 % already takes the score to the
    substrate's level; 1: the evidence is untouched.

    Removed pixels are imputed from their neighbours plus N(0, sigma) noise, so the removal's shape carries no
    information (the point of ROAD); see :func:`road_curves` for the parameters.
    """
    curves, _ = road_curves(model, x, target, maps, steps=steps, sigma=sigma, seed=seed, batch_size=batch_size,
                            quantity=quantity, max_iter=max_iter, tol=tol)
    min_drop = MIN_DROP[quantity] if min_drop is None else min_drop
    evidence = evidence_curves(curves[:, 1:-1], curves[:, 0], curves[:, -1], min_drop)
    return evidence.mean(dim=1)


def forwards_needed(n_images: int, steps: int = 64, batch_size: int = 64) -> int:
    """Forward passes one insertion, deletion or ROAD evaluation costs: ``ceil(n_images * (steps+1) / batch_size)``."""
    return math.ceil(n_images * (steps + 1) / batch_size)
