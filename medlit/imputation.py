"""Noisy linear imputation {cite}`rong2022road`: removed pixels become the weighted mean of their neighbours.

ROAD ("remove and debias") replaces removed pixels by a value that carries no information about the removal mask:
each removed pixel equals the weighted mean of its 8 neighbours (weight 1/6 for the 4 direct neighbours, 1/12 for
the 4 diagonal ones; at the image border the weights of the neighbours that exist are renormalised), known pixels
stay fixed, and Gaussian noise of standard deviation ``sigma`` (0.01, as in the paper and Quantus) is added to the
imputed pixels. The values solve a sparse, symmetric positive definite linear system per image and channel
(a discrete Laplace equation with the known pixels as boundary values):

    W_p v_p - sum_{q in N(p), removed} w_q v_q = sum_{q in N(p), known} w_q x_q,   W_p = sum_{q in N(p)} w_q.

All systems of a batch (every image, step and channel) are solved at once in torch by conjugate gradients with a
Jacobi preconditioner, started from the solution of the same problem at half resolution (cascadic multigrid,
down to 16 px, where a push-pull image-pyramid fill starts), so that few iterations per level are needed. Each
system stops on its own relative residual, so a system's solution does not depend on the batch it is solved in.
:func:`imputation_system` builds the same system as a scipy sparse matrix, for the agreement test with
``scipy.sparse.linalg.spsolve``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from medlit.explain.seeding import image_normal

__all__ = [
    "DIAGONAL_WEIGHT",
    "DIRECT_WEIGHT",
    "ROAD_NOISE",
    "imputation_system",
    "linear_imputation",
    "neighbour_sum",
    "noisy_linear_imputation",
    "push_pull_fill",
]

DIRECT_WEIGHT = 1 / 6  # the 4 neighbours sharing an edge
DIAGONAL_WEIGHT = 1 / 12  # the 4 neighbours sharing a corner
ROAD_NOISE = 0.01  # standard deviation of the noise added to imputed pixels (Rong et al. 2022; Quantus)


def neighbour_sum(u: torch.Tensor) -> torch.Tensor:
    """sum_q w_q u_q over the 8 neighbours of every pixel of (..., H, W) ``u``, zero outside the image.

    The kernel [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 is the separable [1, 2, 1] x [1, 2, 1] / 12 minus 4/12 of the
    centre, so two 3-tap passes of shifted adds do it (faster on the CPU than a one-channel conv2d).
    """
    rows = 2 * u
    rows[..., 1:] += u[..., :-1]
    rows[..., :-1] += u[..., 1:]
    both = 2 * rows
    both[..., 1:, :] += rows[..., :-1, :]
    both[..., :-1, :] += rows[..., 1:, :]
    return both * DIAGONAL_WEIGHT - u * (4 * DIAGONAL_WEIGHT)


def push_pull_fill(x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """A cheap smooth fill of the removed pixels: the mean of the known pixels of the finest 2^l x 2^l block of an
    image pyramid that holds any. Only a starting point for the solver; known pixels keep their value.

    Parameters
    ----------
    x : (N, C, H, W) values, read where ``known``
    known : (N, 1, H, W) bool
    """
    weight = known.to(x.dtype)
    total, count = x * weight, weight
    levels = [(total, count)]
    while min(total.shape[-2:]) > 1:
        total = F.avg_pool2d(total, 2, ceil_mode=True) * 4
        count = F.avg_pool2d(count, 2, ceil_mode=True) * 4
        levels.append((total, count))
    estimate = levels[-1][0] / levels[-1][1].clamp(min=1e-12)
    for total, count in reversed(levels[:-1]):
        coarse = F.interpolate(estimate, size=total.shape[-2:], mode="nearest")
        estimate = torch.where(count > 0, total / count.clamp(min=1e-12), coarse)
    return torch.where(known, x, estimate)


def _coarse_start(xs: torch.Tensor, known: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """Initial values from the half-resolution problem (a block is known where any of its pixels is, at the mean
    of those), solved the same way and upsampled bilinearly: cascadic multigrid, so that the fine level only
    corrects local errors. Below 16 px the push-pull fill starts the solve."""
    if min(xs.shape[-2:]) < 16:
        return push_pull_fill(xs, known)
    weight = known.to(xs.dtype)
    count = F.avg_pool2d(weight, 2, ceil_mode=True)
    coarse = F.avg_pool2d(xs * weight, 2, ceil_mode=True) / count.clamp(min=1e-12)
    solved = _solve(coarse, count > 0, tol, 2 * max_iter)  # a quarter of the pixels: twice the iterations
    return F.interpolate(solved, size=xs.shape[-2:], mode="bilinear", align_corners=False)


def _solve(xs: torch.Tensor, known: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """Preconditioned conjugate gradients on every (image, channel) system at once; see :func:`linear_imputation`."""
    unknown = (~known).to(xs.dtype)
    diagonal = neighbour_sum(torch.ones_like(unknown[:1, :1]))  # W_p: the weights of the neighbours that exist

    def apply(v):  # A v on the removed pixels (v is zero on known pixels)
        return unknown * (diagonal * v - neighbour_sum(v))

    rhs = unknown * neighbour_sum(xs * known)
    v = unknown * _coarse_start(xs, known, tol, max_iter)
    r = rhs - apply(v)
    z = r / diagonal
    p = z.clone()
    rz = (r * z).sum(dim=(2, 3), keepdim=True)
    stop = (tol ** 2) * ((rhs * rhs / diagonal).sum(dim=(2, 3), keepdim=True)).clamp(min=1e-30)
    for _ in range(max_iter):
        active = rz > stop  # a converged system is frozen, so batching never changes its answer
        if not bool(active.any()):
            break
        ap = apply(p)
        alpha = torch.where(active, rz / (p * ap).sum(dim=(2, 3), keepdim=True).clamp(min=1e-30),
                            torch.zeros_like(rz))
        v = v + alpha * p
        r = r - alpha * ap
        z = r / diagonal
        rz_new = (r * z).sum(dim=(2, 3), keepdim=True)
        beta = torch.where(active, rz_new / rz.clamp(min=1e-30), torch.zeros_like(rz))
        p = torch.where(active, z + beta * p, p)
        rz = torch.where(active, rz_new, rz)
    return torch.where(known, xs, v)


def linear_imputation(x: torch.Tensor, removed: torch.Tensor, *, tol: float = 1e-3,
                      max_iter: int = 40) -> torch.Tensor:
    """Images ``x`` with the ``removed`` pixels replaced by the solution of the linear imputation system (no noise).

    Parameters
    ----------
    x : (N, C, H, W) float images
    removed : (N, H, W) or (N, 1, H, W) bool, True where a pixel is removed (all channels together); every image
        must keep at least one pixel, otherwise the system is singular
    tol : each system stops once its preconditioned residual norm is below ``tol`` times its right-hand side's
    max_iter : conjugate-gradient iterations at most at full resolution, twice as many at each coarser level (the
        start comes from the half-resolution problem, so the fine level corrects local errors only); raise it (and
        lower ``tol``) for an exact solve

    Returns
    -------
    (N, C, H, W) tensor of ``x``'s dtype; known pixels are exactly ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"linear_imputation: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    removed = removed.reshape(len(x), 1, *x.shape[-2:]).to(x.device, torch.bool)
    if bool(removed.flatten(1).all(dim=1).any()):
        raise ValueError("linear_imputation: an image has every pixel removed; nothing to impute from")
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    return _solve(x.to(work), ~removed, tol, max_iter).to(x.dtype)


def noisy_linear_imputation(x: torch.Tensor, removed: torch.Tensor, *, sigma: float = ROAD_NOISE,
                            noise: torch.Tensor | None = None, seed: int = 0, **solver) -> torch.Tensor:
    """ROAD's noisy linear imputation: :func:`linear_imputation` plus N(0, ``sigma``) noise on the removed pixels.

    Parameters
    ----------
    x, removed : as for :func:`linear_imputation`
    sigma : noise standard deviation (0.01 for images in [0, 1], the paper's and Quantus's value)
    noise : (N, C, H, W) standard normal draws to use; default drawn per image from a generator seeded by
        ``seed`` and the image's content (:func:`medlit.explain.seeding.image_normal`), so an image gets the same
        noise in any batch
    solver : ``tol`` and ``max_iter`` of :func:`linear_imputation`
    """
    filled = linear_imputation(x, removed, **solver)
    if noise is None:
        noise = image_normal(x, 1, 1.0, seed)[:, 0]
    removed = removed.reshape(len(x), 1, *x.shape[-2:]).to(x.device, torch.bool)
    return torch.where(removed, filled + sigma * noise.to(filled), filled)


def imputation_system(image: np.ndarray, removed: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
    """The imputation system of one (H, W) channel as scipy sparse matrix, for checks against a direct solver.

    Returns
    -------
    a : (n, n) csc matrix over the removed pixels in row-major order
    b : (n,) right-hand side
    index : (n,) flat indices of the removed pixels
    """
    h, w = image.shape
    index = np.flatnonzero(removed.ravel())
    variable = -np.ones(h * w, dtype=np.int64)
    variable[index] = np.arange(len(index))
    rows, cols, vals = [], [], []
    b = np.zeros(len(index))
    for i, flat in enumerate(index):
        r, c = divmod(int(flat), w)
        total = 0.0
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr, dc) == (0, 0) or not (0 <= rr < h and 0 <= cc < w):
                    continue
                weight = DIRECT_WEIGHT if dr == 0 or dc == 0 else DIAGONAL_WEIGHT
                total += weight
                if variable[rr * w + cc] >= 0:
                    rows.append(i), cols.append(variable[rr * w + cc]), vals.append(-weight)
                else:
                    b[i] += weight * image[rr, cc]
        rows.append(i), cols.append(i), vals.append(total)
    a = sp.csc_matrix((vals, (rows, cols)), shape=(len(index), len(index)))
    return a, b, index
