"""Jacobian maps and stability indicators: exact Jacobians against autograd, spectra against SVD, known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import medlit.explain.jacobian  # noqa: F401  (registration, whatever medlit.explain imports)
from medlit.explain import EXPLAINERS
from medlit.studies.jacobian_stability import (exact_singular_values, jacobian_matrix, jacobian_spectrum,
                                              local_lipschitz_ratio, stability_table)


def small_convnet(in_channels: int = 1, classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, classes)).eval()


def linear_model(weights: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
    """f(x) = W vec(x) + b for images of any shape with W.shape[1] pixels."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weights.shape[1], weights.shape[0], bias=bias is not None,
                                                  dtype=weights.dtype))
    model[1].weight.data = weights.clone()
    if bias is not None:
        model[1].bias.data = bias.clone()
    return model


def autograd_jacobian(model, x: torch.Tensor) -> torch.Tensor:
    """The reference: torch.autograd.functional.jacobian, one image at a time, (B, K, C*H*W)."""
    return torch.stack([torch.autograd.functional.jacobian(model, x[i:i + 1])[0, :, 0].flatten(1)
                        for i in range(len(x))]).detach()


@pytest.mark.parametrize("make", [lambda: small_convnet(1, 2), lambda: small_convnet(3, 3)])
def test_jacobian_matrix_equals_autograd_on_a_small_convnet(make):
    model = make()
    x = torch.rand(3, model[0].in_channels, 8, 8)
    torch.testing.assert_close(jacobian_matrix(model, x), autograd_jacobian(model, x), rtol=1e-5, atol=1e-6)


def test_jacobian_matrix_equals_autograd_on_the_resnet(tiny_model, squares):
    x = squares.images[:3]
    jac = jacobian_matrix(tiny_model, x)
    assert jac.shape == (3, 2, 32 * 32)
    torch.testing.assert_close(jac, autograd_jacobian(tiny_model, x), rtol=1e-5, atol=1e-6)


def test_jacobian_restores_the_model_mode(tiny_model, squares):
    tiny_model.train()
    jacobian_matrix(tiny_model, squares.images[:2])
    assert tiny_model.training
    assert all(m.training for m in tiny_model.modules())


def test_linear_model_jacobian_is_its_weights_and_its_singular_values_are_the_weights():
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(2, 64, generator=g, dtype=torch.float64)
    model = linear_model(weights, bias=torch.tensor([0.3, -0.1], dtype=torch.float64))
    x = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(jacobian_matrix(model, x), weights.expand(4, 2, 64))
    expected = torch.linalg.svdvals(weights).expand(4, 2)
    torch.testing.assert_close(exact_singular_values(model, x), expected)
    torch.testing.assert_close(jacobian_spectrum(model, x, k=2, iters=2), expected)


def test_power_iteration_finds_a_known_top_singular_value():
    """W = U diag(3, 1) V^T: one-vector power iteration converges at rate (1/3)^2 per step."""
    g = torch.Generator().manual_seed(1)
    u = torch.linalg.qr(torch.randn(2, 2, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(64, 2, generator=g, dtype=torch.float64)).Q
    model = linear_model(u @ torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64)) @ v.T)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(jacobian_spectrum(model, x, k=1, iters=30), torch.full((2, 1), 3.0,
                                                                                    dtype=torch.float64))


@pytest.mark.parametrize("k, iters", [(2, 3), (1, 30)])
def test_power_iteration_matches_svdvals_on_the_resnet(tiny_model, squares, k, iters):
    x = squares.images[:4]
    exact = exact_singular_values(tiny_model, x)[:, :k]
    # the model's logits are centred (two rows +-J/2 of one gradient): sigma_2 is zero up to rounding
    scale = float(exact[:, 0].max())
    torch.testing.assert_close(jacobian_spectrum(tiny_model, x, k=k, iters=iters), exact, rtol=1e-4,
                               atol=1e-5 * scale)
    if k == 2:
        assert (exact[:, 1] <= 1e-5 * exact[:, 0]).all()


def test_spectrum_batch_equals_loop_and_rejects_k_above_the_rank(tiny_model, squares):
    x = squares.images[:3]
    batch = jacobian_spectrum(tiny_model, x, k=2, iters=2)
    loop = torch.cat([jacobian_spectrum(tiny_model, x[i:i + 1], k=2, iters=2) for i in range(3)])
    torch.testing.assert_close(batch, loop, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="number of outputs"):
        jacobian_spectrum(tiny_model, x, k=3)


def test_jacobian_is_the_derivative_along_the_top_singular_direction(tiny_model, squares):
    """A finite-difference check in float64: a ReLU network is linear near x, so the gain along v_1 is sigma_1,
    and no random step gains more than sigma_1."""
    model = tiny_model.double()
    x = squares.images[:2].double()
    _, sigma, vh = torch.linalg.svd(jacobian_matrix(model, x), full_matrices=False)
    radius = 1e-6
    with torch.no_grad():
        step = radius * vh[:, 0].reshape(x.shape)
        gain = (model(x + step) - model(x)).norm(dim=1) / radius
    torch.testing.assert_close(gain, sigma[:, 0], rtol=1e-6, atol=0)
    ratio = local_lipschitz_ratio(model, x, radius=radius, n=8)
    assert (ratio <= sigma[:, 0] * (1 + 1e-6)).all() and (ratio > 0).all()


def reference_maps(model, x, target):
    """The two maps computed literally from the full Jacobian."""
    jac = jacobian_matrix(model, x).reshape(len(x), -1, *x.shape[1:])  # (B, K, C, H, W)
    with torch.no_grad():
        logits = model(x)
    rows = torch.arange(len(x))
    runner_up = logits.clone()
    runner_up[rows, target] = -math.inf
    runner_up = runner_up.argmax(dim=1)
    return jac[rows, target].norm(dim=1), (jac[rows, target] - jac[rows, runner_up]).norm(dim=1)


@pytest.mark.parametrize("make, size", [(lambda: small_convnet(3, 3), 8), (None, 32)])
def test_registered_maps_equal_their_definitions(make, size, tiny_model, squares):
    model = make() if make else tiny_model
    x = torch.rand(4, 3, size, size) if make else squares.images[:4]
    target = torch.tensor([0, 1, 2, 1]) if make else torch.tensor([0, 1, 1, 0])
    expected_target, expected_margin = reference_maps(model, x, target)
    torch.testing.assert_close(EXPLAINERS["jacobian_target"].fn(model, x, target), expected_target)
    torch.testing.assert_close(EXPLAINERS["jacobian_margin"].fn(model, x, target), expected_margin)


def test_single_channel_target_map_is_saliency(tiny_model, squares):
    x, target = squares.images[:3], torch.tensor([1, 0, 1])
    torch.testing.assert_close(EXPLAINERS["jacobian_target"].fn(tiny_model, x, target),
                               EXPLAINERS["saliency"].fn(tiny_model, x, target))


@pytest.mark.parametrize("name", ["jacobian_target", "jacobian_margin"])
def test_maps_batch_equals_loop(name, tiny_model, squares):
    x, target = squares.images[:4], torch.tensor([0, 1, 1, 0])
    fn = EXPLAINERS[name].fn
    loop = torch.cat([fn(tiny_model, x[i:i + 1], target[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(fn(tiny_model, x, target), loop, rtol=1e-4, atol=1e-6)
    assert EXPLAINERS[name].family == "gradient" and EXPLAINERS[name].citation == "abe2025jacobian"


def test_stability_table_on_a_linear_model_gives_the_exact_distance_to_the_boundary():
    g = torch.Generator().manual_seed(2)
    weights = torch.randn(2, 64, generator=g, dtype=torch.float64)
    model = linear_model(weights, bias=torch.tensor([0.2, -0.2], dtype=torch.float64))
    x = torch.rand(5, 1, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 1])
    table = stability_table(model, x, labels, batch_size=2)
    assert list(table.columns) == ["label", "predicted", "margin", "sigma_1", "sigma_2", "sigma_ratio",
                                   "margin_over_sigma1", "boundary_distance"]
    sv = torch.linalg.svdvals(weights)
    assert table["sigma_1"].tolist() == pytest.approx([sv[0].item()] * 5)
    assert table["sigma_ratio"].tolist() == pytest.approx([(sv[0] / sv[1]).item()] * 5)
    for i, row in table.iterrows():
        y = int(row["label"])
        normal = weights[y] - weights[1 - y]
        # Step the signed distance against the margin's gradient: the margin is then exactly zero.
        moved = x[i].flatten() - row["boundary_distance"] * normal / normal.norm()
        logits = model(moved.reshape(1, 1, 8, 8))[0]
        assert (logits[y] - logits[1 - y]).item() == pytest.approx(0, abs=1e-9)
        assert abs(row["boundary_distance"]) >= abs(row["margin_over_sigma1"]) / math.sqrt(2) - 1e-12
        assert (row["margin"] > 0) == (row["predicted"] == y)


def test_stability_table_on_the_resnet(tiny_model, squares):
    table = stability_table(tiny_model, squares.images[:6], squares.labels[:6])
    assert len(table) == 6 and table.drop(columns="sigma_ratio").notna().all().all()
    # centred logits (+-s): a rank-1 Jacobian, sigma_2 zero up to rounding and no ratio
    assert (table["sigma_2"] <= 1e-6 * table["sigma_1"]).all() and table["sigma_ratio"].isna().all()
    exact = exact_singular_values(tiny_model, squares.images[:6])
    assert table["sigma_1"].tolist() == pytest.approx(exact[:, 0].tolist(), rel=1e-5)
