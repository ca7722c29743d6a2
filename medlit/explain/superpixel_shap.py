"""KernelSHAP {cite}`lundberg2017shap` and LIME {cite}`ribeiro2016lime` on a grid of square superpixels.

Both explain one image at a time with a linear surrogate over binary *coalitions* z in {0, 1}^M of the M
superpixels: the perturbed image x_z keeps the pixels of the superpixels with z_j = 1 and takes the baseline (the
protocol substrate, the blurred image, by default) on the others, and the surrogate g(z) = b_0 + sum_j b_j z_j is
fitted to the explained score f_t(x_z), the target's centred logit (:func:`medlit.explain.targets.explained_score`).
The two methods differ in how coalitions are drawn, how they are weighted and how the surrogate is fitted; both
follow the definitions captum implements (``KernelShap``, ``Lime`` with its defaults), so the maps estimate the
same quantities as captum's.

**Batched forwards.** The coalitions of every image of a call are drawn first; the perturbed copies of all images
are then built on the fly and run in chunks of ``batch_size`` forward passes across images (as
:func:`medlit.perturbation.region_drops` does for occlusion and feature ablation), so a call costs its
``n_samples`` forwards per image at a full batch and none of captum's per-sample Python work. Only the small
surrogate fits are per image.

**Seeding.** Each image draws its coalitions from its own generator, seeded from ``seed`` and the image's content
(:func:`medlit.explain.seeding.image_generator`), so an image gets the same map alone or in any batch, and the global
RNG is left alone.

Superpixels are a regular grid of ``cells`` x ``cells`` squares (8 x 8 = 64 at any image size), not SLIC: the grid is
deterministic, identical for every image (so maps of different images and methods share their units), free to
compute, and does not follow image edges, which on a radiograph are mostly ribs and the body outline rather than
findings.

A superpixel covers every channel of its pixels, so each channel's attribution is the superpixel's value b_j and
the returned map, their sum over channels as for the other perturbation methods, paints C x b_j on the cell.
"""

from __future__ import annotations

import numpy as np
import torch

from medlit.explain.registry import FORWARD_BATCH, register_explainer
from medlit.explain.seeding import image_generator
from medlit.models.inference import inference_forward
from medlit.perturbation import PROTOCOL_SUBSTRATE, perturbation_fill

# Weight of the full and the empty coalition in KernelSHAP's regression (captum's ``inf_weight``; all others 1).
ENDPOINT_WEIGHT = 1e6
# LIME's surrogate: Lasso penalty and width of the exponential kernel on the cosine distance (captum's defaults).
LASSO_ALPHA = 0.01
KERNEL_WIDTH = 1.0


def grid_superpixels(height: int, width: int, cells: int = 8, device=None) -> torch.Tensor:
    """(1, 1, H, W) long tensor: the index (row * cells + column) of each pixel's grid cell."""
    rows = torch.arange(height, device=device) * cells // height
    cols = torch.arange(width, device=device) * cells // width
    return (rows[:, None] * cells + cols[None, :])[None, None]


def _check_arguments(name: str, x: torch.Tensor, target: torch.Tensor, cells: int, n_samples: int,
                     batch_size: int, min_cells: int = 1) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}: images must be (B, C, H, W), got shape {tuple(x.shape)}")
    if torch.as_tensor(target).numel() != len(x):
        raise ValueError(f"{name}: target must hold one class per image ({len(x)}), got "
                         f"{torch.as_tensor(target).numel()}")
    height, width = x.shape[-2:]
    if not min_cells <= cells <= min(height, width):
        raise ValueError(f"{name}: cells {cells} must be between {min_cells} and the image side "
                         f"{min(height, width)} (a {height} x {width} image)")
    if n_samples < 2:
        raise ValueError(f"{name}: n_samples must be >= 2, got {n_samples}")
    if batch_size < 1:
        raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")


@torch.no_grad()
def coalition_scores(model, x: torch.Tensor, target: torch.Tensor, coalitions: torch.Tensor, cells: int,
                     fill: torch.Tensor, batch_size: int = FORWARD_BATCH) -> torch.Tensor:
    """(B, S) explained score f_t(x_z) of every image under each of its own coalitions.

    All (image, coalition) pairs run in chunks of ``batch_size`` forward passes, the perturbed copies built on the
    fly into one reused buffer: a pixel keeps its value where its grid cell (:func:`grid_superpixels`) is in the
    coalition and takes the fill elsewhere. The pixel masks are expanded from the cells row and column apart
    (the grid is separable), and each image's run of pairs in a chunk is filled by broadcasting its image, which
    keeps the copies a few percent of the forward time.

    Parameters
    ----------
    x : (B, C, H, W) images
    target : (B,) class indices
    coalitions : (B, S, cells * cells) bool, S coalitions of the grid cells per image (index row * cells + column)
    cells : grid side
    fill : (B, C, H, W) what a removed pixel becomes (:func:`medlit.perturbation.perturbation_fill`)
    """
    from medlit.explain.targets import explained_score

    forward = inference_forward(model)  # a frozen copy on the CPU (medlit.models.inference)
    b, s, _ = coalitions.shape
    height, width = x.shape[-2:]
    rows = torch.arange(height, device=x.device) * cells // height
    cols = torch.arange(width, device=x.device) * cells // width
    target = torch.as_tensor(target).to(x.device).view(-1)
    grid = coalitions.to(x.device, torch.bool).reshape(b * s, cells, cells)
    scores = torch.empty(b * s, dtype=torch.float32, device=x.device)
    buffer = torch.empty(min(batch_size, b * s), *x.shape[1:], dtype=x.dtype, device=x.device)
    for first in range(0, b * s, batch_size):
        last = min(first + batch_size, b * s)
        keep = grid[first:last].index_select(1, rows).index_select(2, cols)[:, None]  # (chunk, 1, H, W)
        perturbed = buffer[:last - first]
        for image in range(first // s, (last - 1) // s + 1):  # the images whose pairs fall in this chunk
            lo, hi = max(first, image * s) - first, min(last, (image + 1) * s) - first
            torch.where(keep[lo:hi], x[image], fill[image], out=perturbed[lo:hi])
        image = torch.arange(first, last, device=x.device) // s
        scores[first:last] = explained_score(forward(perturbed), target[image])
    return scores.view(b, s)


def shapley_coalitions(n_features: int, n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """(n_samples, M) bool coalitions for KernelSHAP: the full and the empty coalition, then n_samples - 2 draws.

    A draw picks its size k in 1 ... M - 1 with p(k) proportional to (M - 1) / (k (M - k)), then k superpixels
    uniformly at random: together, a coalition is drawn with the Shapley kernel's weight
    (M - 1) / (C(M, k) k (M - k)), as in captum's ``KernelShap``.
    """
    m = n_features
    endpoints = torch.stack([torch.ones(m, dtype=torch.bool), torch.zeros(m, dtype=torch.bool)])
    n_drawn = n_samples - 2
    if n_drawn <= 0:
        return endpoints[:n_samples]
    sizes = torch.arange(1, m, dtype=torch.float64)
    probs = (m - 1) / (sizes * (m - sizes))
    k = 1 + torch.multinomial(probs, n_drawn, replacement=True, generator=generator)
    ranks = torch.rand(n_drawn, m, generator=generator).argsort(dim=1).argsort(dim=1)  # a random order per draw
    return torch.cat([endpoints, ranks < k[:, None]])


def bernoulli_coalitions(n_features: int, n_samples: int, generator: torch.Generator) -> torch.Tensor:
    """(n_samples, M) bool coalitions for LIME: every superpixel kept independently with probability 0.5 (captum's
    default perturbation)."""
    return torch.bernoulli(torch.full((n_samples, n_features), 0.5), generator=generator).bool()


def weighted_least_squares(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B, M) coefficients of the weighted linear fit y ~ b_0 + z b, with intercept, per image.

    Batched over images in float64. As sklearn's ``LinearRegression`` (which captum's ``KernelShap`` fits): z and y
    are centred on their weighted means, the rows scaled by sqrt(w), and the minimum-norm least-squares solution
    taken (``gelsd``), so a rank-deficient design (fewer coalitions than superpixels) still gives a defined answer.
    """
    z, y, w = z.double(), y.double(), w.double()
    p = w / w.sum(dim=1, keepdim=True)
    z_mean = (p[:, :, None] * z).sum(dim=1, keepdim=True)
    y_mean = (p * y).sum(dim=1, keepdim=True)
    root = w.sqrt()
    a = (z - z_mean) * root[:, :, None]
    rhs = ((y - y_mean) * root)[:, :, None]
    return torch.linalg.lstsq(a, rhs, driver="gelsd").solution[:, :, 0]


def lime_weights(x: torch.Tensor, fill: torch.Tensor, coalitions: torch.Tensor, segments: torch.Tensor,
                 kernel_width: float = KERNEL_WIDTH) -> torch.Tensor:
    """(B, S) LIME sample weights exp(-d^2 / (2 width^2)), d = 1 - cos(x, x_z) the cosine distance in input space.

    Computed from per-superpixel sums without building the images: x . x_z = sum_j [z_j x_j . x_j +
    (1 - z_j) x_j . f_j] and |x_z|^2 = sum_j [z_j |x_j|^2 + (1 - z_j) |f_j|^2], with x_j, f_j the image and the
    fill on superpixel j (all channels). Norms are clamped at 1e-8 as in ``torch.nn.CosineSimilarity``.
    """
    b, m = len(x), coalitions.shape[-1]
    index = segments.reshape(-1).to(x.device)
    xs, fs = x.double().flatten(2), fill.double().flatten(2)  # (B, C, HW)

    def per_cell(values: torch.Tensor) -> torch.Tensor:  # (B, HW) -> (B, M)
        return torch.zeros(b, m, dtype=torch.float64, device=x.device).index_add_(1, index, values)

    xx, xf, ff = per_cell((xs * xs).sum(1)), per_cell((xs * fs).sum(1)), per_cell((fs * fs).sum(1))
    z = coalitions.to(x.device, torch.float64)
    dot = z @ xx[:, :, None] + (1 - z) @ xf[:, :, None]
    norm2 = z @ xx[:, :, None] + (1 - z) @ ff[:, :, None]
    eps = 1e-8
    cosine = dot[..., 0] / (xx.sum(1, keepdim=True).sqrt().clamp(min=eps) * norm2[..., 0].sqrt().clamp(min=eps))
    return torch.exp(-((1 - cosine) ** 2) / (2 * kernel_width ** 2))


def lasso(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = LASSO_ALPHA) -> torch.Tensor:
    """(B, M) coefficients of sklearn's ``Lasso(alpha)`` (with intercept) fitted per image with sample weights,
    as captum's ``SkLearnLasso(alpha=0.01)``: minimises sum_i w_i (y_i - b_0 - z_i . b)^2 / (2 sum_i w_i) +
    alpha |b|_1."""
    from sklearn.linear_model import Lasso

    z, y, w = (t.detach().cpu().double().numpy() for t in (z, y, w))
    coefs = [Lasso(alpha=alpha).fit(z[i], y[i], sample_weight=w[i]).coef_ for i in range(len(z))]
    return torch.from_numpy(np.stack(coefs)) if coefs else torch.zeros(0, z.shape[-1], dtype=torch.float64)


def _paint(values: torch.Tensor, segments: torch.Tensor, channels: int, device) -> torch.Tensor:
    """(B, H, W) float32 map: C x each superpixel's value on its cell."""
    values = (channels * values).to(device=device, dtype=torch.float32)
    return values[:, segments.to(device)]


def _coalitions(sampler, x: torch.Tensor, n_features: int, n_samples: int, seed: int) -> torch.Tensor:
    """(B, S, M) coalitions, each image's drawn from its own generator (seeded from ``seed`` and its content)."""
    draws = [sampler(n_features, n_samples, image_generator(image, seed)) for image in x]
    if not draws:
        return torch.zeros(0, n_samples, n_features, dtype=torch.bool)
    return torch.stack(draws)


# forward passes: n_samples (the empty and the full coalition are among them; no extra forward)
@register_explainer("kernel_shap", family="perturbation", citation="lundberg2017shap",
                    long_name="KernelSHAP (grid superpixels)", forward_passes=256, backward_passes=0)
def kernel_shap(model, x: torch.Tensor, target: torch.Tensor, cells: int = 8, n_samples: int = 256,
                seed: int = 0, batch_size: int = FORWARD_BATCH, baseline: str = PROTOCOL_SUBSTRATE) -> torch.Tensor:
    """Shapley values of the ``cells`` x ``cells`` grid superpixels for the explained score (the target's centred
    logit), each painted on its cell (times the number of channels, see the module notes).

    The values b minimise sum_i w_i (f_t(x_{z_i}) - b_0 - z_i . b)^2 over coalitions z_i drawn from the Shapley
    kernel (:func:`shapley_coalitions`), all with weight 1 except the full and the empty coalition, which are always
    included with weight 10^6 (captum's choice, a soft rather than an exact efficiency constraint, kept so the values
    estimate exactly what captum's do): the fit then misses f_t(x) and f_t(baseline) by about n_samples / 10^6 of
    the typical residual, so the efficiency property sum_j b_j = f_t(x) - f_t(baseline) holds to about 1e-4 of the
    score's scale at the default 256 coalitions (it loosens linearly with n_samples). The fit is weighted least
    squares with an intercept, batched over images (:func:`weighted_least_squares`).

    Parameters
    ----------
    cells : grid side (64 superpixels by default; at least 2)
    n_samples : coalitions (forward passes) per image, the full and the empty coalition among them
    seed : sampling is seeded from ``seed`` and the image's content
    batch_size : perturbed copies per forward pass, across images
    baseline : what a removed superpixel becomes: ``"blur"`` (the protocol substrate, the blurred image),
        ``"mean"`` (the image's mean intensity) or ``"zeros"`` (black is itself an anomaly on a radiograph)
    """
    _check_arguments("kernel_shap", x, target, cells, n_samples, batch_size, min_cells=2)
    fill = perturbation_fill(x, baseline)
    segments = grid_superpixels(x.shape[-2], x.shape[-1], cells, x.device)[0, 0]
    m = cells * cells
    z = _coalitions(shapley_coalitions, x, m, n_samples, seed)  # (B, S, M), CPU
    scores = coalition_scores(model, x, target, z, cells, fill, batch_size).cpu()
    endpoint = (z.sum(dim=2) == 0) | (z.sum(dim=2) == m)
    w = torch.where(endpoint, ENDPOINT_WEIGHT, 1.0).double()
    values = weighted_least_squares(z, scores, w) if len(x) else torch.zeros(0, m, dtype=torch.float64)
    return _paint(values, segments, x.shape[1], x.device)


@register_explainer("lime", family="perturbation", citation="ribeiro2016lime", long_name="LIME (grid superpixels)",
                    forward_passes=256, backward_passes=0)
def lime(model, x: torch.Tensor, target: torch.Tensor, cells: int = 8, n_samples: int = 256, seed: int = 0,
         batch_size: int = FORWARD_BATCH, baseline: str = PROTOCOL_SUBSTRATE) -> torch.Tensor:
    """Coefficients of LIME's sparse linear surrogate over the grid superpixels, for the explained score (the
    target's centred logit), each painted on its cell (times the number of channels, see the module notes).

    Coalitions keep each superpixel with probability 0.5 (:func:`bernoulli_coalitions`); a coalition's weight is
    w = exp(-d^2 / 2), d = 1 - cos(x, x_z) the cosine distance between the image and its perturbed copy in input
    space (:func:`lime_weights`, kernel width 1); the surrogate is a Lasso with intercept and alpha 0.01 fitted with
    these sample weights (:func:`lasso`). These are captum's ``Lime`` defaults. The Lasso shrinks every value towards
    0 and sets weak ones to exactly 0, so the map ranks and sparsifies rather than adding up to the score.
    Arguments as for ``kernel_shap`` (``n_samples`` coalitions are all drawn; cells at least 1).
    """
    _check_arguments("lime", x, target, cells, n_samples, batch_size)
    fill = perturbation_fill(x, baseline)
    segments = grid_superpixels(x.shape[-2], x.shape[-1], cells, x.device)[0, 0]
    m = cells * cells
    z = _coalitions(bernoulli_coalitions, x, m, n_samples, seed)
    scores = coalition_scores(model, x, target, z, cells, fill, batch_size)
    w = lime_weights(x, fill, z, segments)
    return _paint(lasso(z, scores, w), segments, x.shape[1], x.device)
