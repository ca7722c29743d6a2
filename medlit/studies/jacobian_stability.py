"""Global Jacobian stability indicators of a classifier at one input {cite}`abe2025jacobian`.

Let ``f: R^(C*H*W) -> R^K`` be the model's logits. Its input-output Jacobian at ``x``,
``J(x) = df/dx`` (K x C*H*W), is computed exactly, per image, with no training data. Abe & Asai's paper is
preliminary and publishes no metric, so medlit defines its own indicators and states them:

``sigma_1 >= sigma_2 >= ...``
    the singular values of ``J(x)`` (at most K of them are non-zero). ``sigma_1`` is the local gain: the largest
    change in the logit vector, in l2, per unit l2 change of the image, to first order.
``sigma_ratio = sigma_1 / sigma_2``
    a condition-like ratio of the (rank <= K) Jacobian: how anisotropic the local sensitivity is. NaN when
    ``sigma_2 <= 1e-6 sigma_1``: a model that returns centred logits of two classes (``+-s``) has a rank-1 Jacobian.
``margin = f_y(x) - max_{k != y} f_k(x)``
    the signed logit margin of the class ``y`` asked about (the label): negative when the model is wrong.
``margin_over_sigma1 = margin / sigma_1``
    the margin in units of the local gain: a cheap proxy for the distance to the boundary, conservative up to
    a factor sqrt(2) (below).
``boundary_distance = margin / ||d margin / dx||_2``
    the first-order (DeepFool, {cite}`moosavi2016deepfool`) l2 distance to the decision boundary between ``y``
    and the runner-up ``r = argmax_{k != y} f_k(x)``: the length of the shortest step that makes the
    linearised margin zero. Because ``||d margin/dx|| = ||(e_y - e_r)^T J|| <= sqrt(2) sigma_1``,
    ``|boundary_distance| >= |margin_over_sigma1| / sqrt(2)``; it can be much larger when the rows of J for
    ``y`` and ``r`` nearly coincide (both logits move together, the margin hardly).

Small ``|boundary_distance|`` with large ``sigma_1`` marks inputs where the model is unstable: a small
perturbation flips it. Both are first-order estimates; for a ReLU network they are exact only
inside the linear region containing ``x``.

All functions evaluate the model in eval mode (restoring its mode afterwards), so that batch-norm does not
couple the images of a batch and each image's Jacobian is its own.
"""

from __future__ import annotations

import math
import warnings

import pandas as pd
import torch

from medlit.models.capture import eval_mode, jacobian


RANK_TOLERANCE = 1e-6  # sigma_2 below this share of sigma_1 counts as zero


def jacobian_matrix(model, x: torch.Tensor) -> torch.Tensor:
    """The exact Jacobian of the logits with respect to the image, (B, K, C*H*W); K backward passes."""
    jac, _ = jacobian(model, x)
    return jac.flatten(2)


def exact_singular_values(model, x: torch.Tensor) -> torch.Tensor:
    """All singular values (B, min(K, C*H*W)) of each image's Jacobian, descending, by ``torch.linalg.svdvals``.

    Exact and cheap when K is small: the Jacobian has only K rows.
    """
    return torch.linalg.svdvals(jacobian_matrix(model, x))


def jacobian_spectrum(model, x: torch.Tensor, k: int = 2, iters: int = 30, seed: int = 0) -> torch.Tensor:
    """The ``k`` largest singular values (B, k) of each image's Jacobian, by subspace iteration.

    Matrix-free: only Jacobian-vector products (``torch.func.jvp``) and vector-Jacobian products
    (``torch.func.vjp``) are used, never J itself, so the same code serves a model with many outputs. Each
    iteration maps an orthonormal block V (k vectors per image) to ``orth(J^T J V)``; the values returned are
    the Rayleigh-Ritz estimates ``svdvals(J V)``. The k vectors of all B images travel as one batch of B*k
    images (valid because eval mode makes images independent). Starting vectors are Gaussian, from ``seed``.

    With K outputs, J has rank <= K, so ``k`` must be at most K; with k = K, V spans the row space of J after
    one iteration and the values are exact up to rounding. The starting block depends on the batch's
    composition, so batch and per-image results agree to the convergence tolerance, not bit for bit.
    """
    b = x.shape[0]
    with eval_mode(model), torch.no_grad():
        n_out = model(x[:1]).shape[1]
    if not 1 <= k <= n_out:
        raise ValueError(f"k must be between 1 and the number of outputs ({n_out}), got {k}")
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, x[0].numel(), k, generator=g, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
    v = torch.linalg.qr(v).Q  # (B, D, k), orthonormal columns
    x_rep = x.detach().repeat_interleave(k, dim=0)  # image i's k copies are rows i*k ... i*k + k-1

    def as_images(block):  # (B, D, k) -> (B*k, C, H, W)
        return block.transpose(1, 2).reshape(x_rep.shape)

    # The outer no_grad stops autograd recording through the model's parameters across iterations; the
    # torch.func transforms differentiate with respect to the image regardless.
    with eval_mode(model), torch.no_grad(), warnings.catch_warnings():
        # torch's own forward-AD decompositions call the deprecated torch.jit.script on first use.
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning)
        _, vjp_fn = torch.func.vjp(model, x_rep)
        for _ in range(iters):
            _, jv = torch.func.jvp(model, (x_rep,), (as_images(v),))  # (B*k, K): J v_j
            jtjv, = vjp_fn(jv)  # (B*k, C, H, W): J^T J v_j
            v = torch.linalg.qr(jtjv.reshape(b, k, -1).transpose(1, 2)).Q
        _, jv = torch.func.jvp(model, (x_rep,), (as_images(v),))
    jv = jv.reshape(b, k, -1).transpose(1, 2)  # (B, K, k) = J V
    return torch.linalg.svdvals(jv.detach())


def local_lipschitz_ratio(model, x: torch.Tensor, radius: float = 1e-3, n: int = 16, seed: int = 0,
                          batch_size: int = 64) -> torch.Tensor:
    """max over n random steps ``delta`` with ``||delta||_2 = radius`` of ``||f(x + delta) - f(x)||_2 / radius``.

    A finite-difference probe of the local gain, per image (B,). Directions are isotropic Gaussian, normalised
    per image, from ``seed``. For a small radius inside a linear region of a ReLU network, the ratio is at most
    sigma_1 of the Jacobian (and much smaller for random directions in high dimension, whose projection on the
    K-dimensional row space is small); a larger ratio shows that the first-order picture breaks down there.
    The image is not clipped to [0, 1]: this probes the function, not the data domain.
    """
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(n, *x.shape, generator=g, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
    delta = delta * (radius / delta.flatten(2).norm(dim=2)).reshape(n, x.shape[0], *[1] * (x.dim() - 1))
    with eval_mode(model), torch.no_grad():
        base = model(x)
        perturbed = (x[None] + delta).flatten(0, 1)
        out = torch.cat([model(perturbed[i:i + batch_size]) for i in range(0, len(perturbed), batch_size)])
    change = (out.reshape(n, *base.shape) - base[None]).norm(dim=2)  # (n, B)
    return (change / radius).amax(dim=0)


def stability_table(model, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 32) -> pd.DataFrame:
    """Per-image stability indicators (see the module docstring), one row per image.

    Columns: ``label``, ``predicted``, ``margin`` (signed, for the label), ``sigma_1``, ``sigma_2`` (0 when
    K = 1), ``sigma_ratio``, ``margin_over_sigma1``, ``boundary_distance`` (signed like the margin). Exact
    Jacobians (K backward passes per batch).
    """
    rows = []
    for start in range(0, len(images), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size].to(images.device)
        jac, logits = jacobian(model, x)
        if logits.shape[1] < 2:
            raise ValueError("a logit margin needs at least two classes")
        jac = jac.flatten(2).double()
        sv = torch.linalg.svdvals(jac)
        sv = torch.cat([sv, sv.new_zeros(len(x), 2)], dim=1)[:, :2]
        others = logits.scatter(1, y[:, None], -math.inf)
        runner_up = others.argmax(dim=1)
        margin = (logits.gather(1, y[:, None]) - logits.gather(1, runner_up[:, None]))[:, 0].double()
        grad_margin = jac[torch.arange(len(x)), y] - jac[torch.arange(len(x)), runner_up]
        rows.append(pd.DataFrame({
            "label": y.cpu().numpy(),
            "predicted": logits.argmax(dim=1).cpu().numpy(),
            "margin": margin.cpu().numpy(),
            "sigma_1": sv[:, 0].cpu().numpy(),
            "sigma_2": sv[:, 1].cpu().numpy(),
            # NaN for a rank-1 Jacobian (two centred logits are +-s: one direction, no ratio to speak of)
            "sigma_ratio": torch.where(sv[:, 1] > RANK_TOLERANCE * sv[:, 0], sv[:, 0] / sv[:, 1],
                                       torch.full_like(sv[:, 0], math.nan)).cpu().numpy(),
            "margin_over_sigma1": (margin / sv[:, 0]).cpu().numpy(),
            "boundary_distance": (margin / grad_margin.norm(dim=1)).cpu().numpy(),
        }))
    table = pd.concat(rows, ignore_index=True)
    table.index.name = "sample"
    return table
