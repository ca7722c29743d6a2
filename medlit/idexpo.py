"""Differentiable insertion and deletion, the regularisers of ID-ExpO {cite}`yoshikawa2024idexpo`.

The hard curves of :mod:`medlit.metrics.faithfulness` move whole pixels, in rank order, so they have no gradient
with respect to the map. ID-ExpO replaces the step "the top m_k pixels are moved" by a soft mask: with the map
``e`` of an image, its values sorted, ``s`` the mean non-zero gap between consecutive sorted values and ``t_k`` the
midpoint between the m_k-th and the (m_k + 1)-th largest value,

    alpha_k = sigmoid(T / s * (e - t_k)),

which is near 1 on the top m_k pixels and near 0 elsewhere, the sharper the larger the temperature ``T``. The
inserted image of step k is ``alpha_k x + (1 - alpha_k) b`` and the deleted one ``alpha_k b + (1 - alpha_k) x``,
with ``b`` the substrate. The thresholds and the scale are constants of the step (computed without gradient, as in
the authors' code); the gradient reaches the map through ``alpha`` and the model through its outputs.

The loss terms, averaged over the steps k = 1..n and the images:

- ``c_ins = -mean_k log p_y(x_ins_k)``: insertion should bring the class back early;
- ``c_del = mean_k (log p_y(x_del_k) - log p_y(x))``: deletion should take it away early;
- the map-norm penalty ``||E||^2 / numel(E)``, which keeps the map from growing to sharpen the masks.

ID-ExpO's loss is ``CE + lambda1 (c_ins + c_del) + lambda2 penalty``. The step counts are those of the hard
curves (:func:`medlit.metrics.faithfulness.step_counts`), so at a high temperature the soft curves of a map
without ties become the hard ones; medlit uses the protocol substrate (the blur) where the authors use a constant
background, so that training and the book's faithfulness metrics remove evidence the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medlit.explain.targets import explained_score
from medlit.metrics.faithfulness import step_counts
from medlit.perturbation import PROTOCOL_SUBSTRATE, substrate_fill

# What the soft curves record: the log-probability of the target (the paper's terms) or the explained score
# (the centred logit, the hard curves' default quantity).
SOFT_QUANTITIES = ("log_probability", "score")


@torch.no_grad()
def soft_thresholds(maps: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the thresholds ``t_k`` of steps k = 0..``steps`` and the scale ``s``: ``(B, steps + 1)``, ``(B,)``.

    Step k keeps the ``step_counts(H*W, steps)[k]`` largest values above its threshold: ``t_k`` is the midpoint
    between that count's value and the next one; one scale above the largest value at k = 0 (nothing moved) and
    one scale below the smallest at the last step (everything moved). ``s`` is the mean of the non-zero gaps
    between consecutive sorted values (1 for a constant map, which has none).
    """
    flat = maps.detach().flatten(1).float()
    n_pixels = flat.shape[1]
    ordered = torch.sort(flat, dim=1, descending=True).values
    gaps = ordered[:, :-1] - ordered[:, 1:]
    nonzero = gaps > 0
    scale = torch.where(nonzero.any(dim=1), (gaps * nonzero).sum(dim=1) / nonzero.sum(dim=1).clamp(min=1),
                        torch.ones(len(flat), device=flat.device))
    counts = step_counts(n_pixels, steps, flat.device)
    inner = counts.clamp(1, n_pixels - 1)
    midpoints = (ordered[:, inner - 1] + ordered[:, inner]) / 2
    top, bottom = ordered[:, :1] + scale[:, None], ordered[:, -1:] - scale[:, None]
    thresholds = torch.where(counts == 0, top, torch.where(counts == n_pixels, bottom, midpoints))
    return thresholds, scale


def soft_masks(maps: torch.Tensor, steps: int, temperature: float = 1.0) -> torch.Tensor:
    """(B, steps + 1, H, W) soft masks ``sigmoid(T / s * (e - t_k))``, differentiable with respect to ``maps``."""
    if maps.ndim != 3:
        raise ValueError(f"soft_masks: maps must be (B, H, W), got shape {tuple(maps.shape)}")
    if temperature <= 0:
        raise ValueError(f"soft_masks: temperature must be positive, got {temperature}")
    thresholds, scale = soft_thresholds(maps, steps)
    sharpness = (temperature / scale)[:, None, None, None]
    return torch.sigmoid(sharpness * (maps[:, None].float() - thresholds[:, :, None, None]))


def _recorded(logits: torch.Tensor, target: torch.Tensor, quantity: str) -> torch.Tensor:
    if quantity == "log_probability":
        return F.log_softmax(logits.float(), dim=1).gather(1, target.view(-1, 1)).squeeze(1)
    return explained_score(logits, target)


def soft_insertion_deletion_curves(model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, *,
                                   steps: int = 16, temperature: float = 1.0,
                                   substrate: str | torch.Tensor = PROTOCOL_SUBSTRATE,
                                   quantity: str = "log_probability") -> tuple[torch.Tensor, torch.Tensor]:
    """Soft insertion and deletion curves, each (B, steps + 1), differentiable with respect to ``maps`` and the
    model's parameters (the model runs as it is, in its current mode; no frozen copy).

    Column k is the recorded quantity after step k (column 0: the substrate for insertion, the image for
    deletion), as in :func:`medlit.metrics.faithfulness.insertion_deletion_curves` with the same ``steps``.
    ``substrate``: a name of :data:`medlit.perturbation.SUBSTRATES` or a tensor broadcastable to ``x``.
    """
    if quantity not in SOFT_QUANTITIES:
        raise ValueError(f"soft_insertion_deletion_curves: quantity must be one of {', '.join(SOFT_QUANTITIES)}, "
                         f"got {quantity!r}")
    if x.ndim != 4 or tuple(maps.shape) != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"soft_insertion_deletion_curves: maps {tuple(maps.shape)} must be (B, H, W) of x "
                         f"{tuple(x.shape)}")
    base = (torch.broadcast_to(substrate.to(x), x.shape) if isinstance(substrate, torch.Tensor)
            else substrate_fill(x, substrate))
    alpha = soft_masks(maps, steps, temperature)[:, :, None]  # (B, K, 1, H, W)
    inserted = alpha * x[:, None] + (1 - alpha) * base[:, None]
    deleted = alpha * base[:, None] + (1 - alpha) * x[:, None]
    b, k = alpha.shape[:2]
    both = torch.cat([inserted, deleted]).flatten(0, 1)  # one forward for every (mode, image, step)
    repeated = target.to(x.device, torch.long).repeat_interleave(k).repeat(2)
    values = _recorded(model(both), repeated, quantity).view(2, b, k)
    return values[0], values[1]


def idexpo_terms(model, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor, *, steps: int = 16,
                 temperature: float = 1.0, substrate: str | torch.Tensor = PROTOCOL_SUBSTRATE) -> dict:
    """ID-ExpO's regularisers, averaged over the images: ``c_ins``, ``c_del`` (steps 1..n of the log-probability
    curves) and ``penalty`` (the map's mean square); each a scalar tensor with gradients."""
    inserted, deleted = soft_insertion_deletion_curves(model, x, target, maps, steps=steps, temperature=temperature,
                                                       substrate=substrate, quantity="log_probability")
    # the image itself, not step 0 of the soft curve: at a low temperature that step is already a little deleted
    image = _recorded(model(x), target.to(x.device, torch.long), "log_probability")[:, None]
    return {"c_ins": -inserted[:, 1:].mean(),
            "c_del": (deleted[:, 1:] - image).mean(),
            "penalty": maps.float().pow(2).mean()}
