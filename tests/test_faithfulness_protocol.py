"""The faithfulness protocol: explained-score curves on the evidence scale, the NaN rule, ROAD and its imputation.

Known answers come from models whose explained score is a linear function of the image, and from linear systems
solved by hand or by ``scipy.sparse.linalg.spsolve``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import spsolve
from torch import nn

from medlit.imputation import imputation_system, linear_imputation, noisy_linear_imputation
from medlit.metrics import METRICS, deletion_auc, forwards_needed, insertion_auc, insertion_deletion_curves
from medlit.metrics.faithfulness import MIN_DROP, road_curves, road_morf
from medlit.perturbation import PROTOCOL_SUBSTRATE, gaussian_blur


class SumModel(nn.Module):
    """Logits (0, a * sum(x)): explained score a * sum(x) / 2, p = sigmoid(a * sum(x)); counts its calls."""

    def __init__(self, a: float = 0.5, offset: float = 0.0) -> None:
        super().__init__()
        self.a, self.offset, self.calls = a, offset, 0

    def forward(self, x):
        self.calls += 1
        s = self.a * x.flatten(1).sum(dim=1) + self.offset
        return torch.stack([torch.zeros_like(s), s], dim=1)


class EnergyModel(SumModel):
    """Logits (0, a * sum(x^2) + offset): unlike a sum, the energy falls when the image is blurred."""

    def forward(self, x):
        return super().forward(x ** 2)


def ramp():
    return torch.arange(1.0, 17.0).view(1, 1, 4, 4)


# --- curves on the explained score ------------------------------------------------------------------------


def test_deletion_curve_records_the_explained_score_and_its_evidence_scale():
    x, model = ramp(), SumModel(0.05)
    curve = insertion_deletion_curves(model, x, torch.tensor([1]), x[:, 0], mode="deletion", steps=4,
                                      substrate="zeros")
    remaining = np.array([136, 136 - 58, 136 - 100, 136 - 126, 0])  # the 4 largest pixels go at each step
    np.testing.assert_allclose(curve[0].numpy(), 0.025 * remaining, atol=1e-5)  # a * sum / 2
    evidence = remaining / 136  # (s - s_substrate) / (s_image - s_substrate), s_substrate = 0
    expected = (evidence.sum() - evidence[0] / 2 - evidence[-1] / 2) / 4
    got = deletion_auc(model, x, torch.tensor([1]), x[:, 0], steps=4, substrate="zeros")
    assert got.item() == pytest.approx(expected, abs=1e-6)
    worst = deletion_auc(model, x, torch.tensor([1]), -x[:, 0], steps=4, substrate="zeros")
    assert worst.item() > got.item()


def test_insertion_on_the_evidence_scale_by_hand():
    x, model = ramp(), SumModel(0.05)
    got = insertion_auc(model, x, torch.tensor([1]), x[:, 0], steps=2, substrate="zeros")
    evidence = np.array([0, 100, 136]) / 136  # top 8 pixels: 16 + ... + 9 = 100
    assert got.item() == pytest.approx((evidence.sum() - evidence[0] / 2 - evidence[-1] / 2) / 2, abs=1e-6)


def test_a_constant_offset_of_the_model_does_not_change_the_scores():
    g = torch.Generator().manual_seed(0)
    x, maps = torch.rand(3, 1, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    target = torch.ones(3, dtype=torch.long)
    for fn, kwargs in ((insertion_auc, {"substrate": "zeros"}), (deletion_auc, {"substrate": "zeros"}),
                       (road_morf, {})):
        a = fn(EnergyModel(4.0), x, target, maps, steps=4, **kwargs)
        b = fn(EnergyModel(4.0, offset=7.0), x, target, maps, steps=4, **kwargs)
        assert not bool(a.isnan().any())
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_nan_when_the_substrate_does_not_remove_the_evidence():
    x = ramp().repeat(2, 1, 1, 1)
    x[1] = 3.0  # a constant image: its blur is itself, the substrate removes nothing
    model, maps, target = SumModel(0.05), x[:, 0], torch.ones(2, dtype=torch.long)
    for fn in (insertion_auc, deletion_auc):
        scores = fn(model, x, target, maps, steps=4, substrate="zeros" if fn is insertion_auc else "blur")
        assert not math.isnan(scores[0]) if fn is insertion_auc else True
        assert math.isnan(scores[1]) or fn is insertion_auc
    # zeros as the substrate: image 0 drops 0.025 * 136 = 3.4 > MIN_DROP, a raised bar makes it NaN
    ok = deletion_auc(model, x[:1], target[:1], maps[:1], steps=4, substrate="zeros")
    assert not math.isnan(ok)
    assert math.isnan(deletion_auc(model, x[:1], target[:1], maps[:1], steps=4, substrate="zeros", min_drop=3.5))
    # a substrate that raises the score is undefined too
    assert math.isnan(deletion_auc(model, x[:1], target[:1], maps[:1], steps=4, substrate=torch.tensor(20.0)))
    assert MIN_DROP["score"] == 0.5


def test_probability_quantity_gives_the_papers_raw_curve():
    x, model = ramp(), SumModel(0.05)
    curve = insertion_deletion_curves(model, x, torch.tensor([1]), x[:, 0], mode="deletion", steps=4,
                                      substrate="zeros", quantity="probability")
    remaining = np.array([136, 78, 36, 10, 0])
    np.testing.assert_allclose(curve[0].numpy(), 1 / (1 + np.exp(-0.05 * remaining)), atol=1e-6)
    raw = deletion_auc(model, x, torch.tensor([1]), x[:, 0], steps=4, substrate="zeros", quantity="probability",
                       normalise=False)
    p = curve[0].numpy()
    assert raw.item() == pytest.approx((p.sum() - p[0] / 2 - p[-1] / 2) / 4, abs=1e-6)
    with pytest.raises(ValueError, match="quantity"):
        deletion_auc(model, x, torch.tensor([1]), x[:, 0], steps=4, quantity="logit")


def test_both_curves_default_to_the_protocol_substrate():
    g = torch.Generator().manual_seed(1)
    x, maps, target = torch.rand(2, 1, 12, 12, generator=g), torch.rand(2, 12, 12, generator=g), torch.tensor([1, 1])
    assert PROTOCOL_SUBSTRATE == "blur"
    model = SumModel(0.3)
    for mode in ("insertion", "deletion"):
        default = insertion_deletion_curves(model, x, target, maps, mode=mode, steps=6)
        explicit = insertion_deletion_curves(model, x, target, maps, mode=mode, steps=6, substrate=gaussian_blur(x))
        torch.testing.assert_close(default, explicit)
    blur_score = 0.15 * gaussian_blur(x).flatten(1).sum(1)
    torch.testing.assert_close(insertion_deletion_curves(model, x, target, maps, mode="deletion", steps=6)[:, -1],
                               blur_score, atol=1e-4, rtol=1e-5)


# --- noisy linear imputation ------------------------------------------------------------------------------


def test_imputation_of_a_3x3_image_by_hand():
    x = torch.arange(1.0, 10.0, dtype=torch.float64).view(1, 1, 3, 3)  # 1 2 3 / 4 5 6 / 7 8 9
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    # (2 + 4 + 6 + 8) / 6 + (1 + 3 + 7 + 9) / 12 = 20/6 + 20/12 = 5
    assert linear_imputation(x, centre)[0, 0, 1, 1].item() == pytest.approx(5.0, abs=1e-9)
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True
    # neighbours that exist: 2 and 4 (1/6 each), 5 (1/12): (2/6 + 4/6 + 5/12) / (5/12) = 17/5
    assert linear_imputation(x, corner)[0, 0, 0, 0].item() == pytest.approx(17 / 5, abs=1e-9)
    pair = centre.clone()
    pair[0, 1, 2] = True  # centre and its right neighbour 6, solved together:
    # v5 = (2 + 4 + 8)/6 + v6/6 + (1 + 3 + 7 + 9)/12; 6 is on the edge, its weights sum to 3/6 + 2/12 = 2/3:
    # (2/3) v6 = (3 + 9)/6 + v5/6 + (2 + 8)/12
    a = np.array([[1.0, -1 / 6], [-1 / 6, 2 / 3]])
    b = np.array([14 / 6 + 20 / 12, 12 / 6 + 10 / 12])
    v5, v6 = np.linalg.solve(a, b)
    out = linear_imputation(x, pair, tol=1e-12, max_iter=50)
    assert out[0, 0, 1, 1].item() == pytest.approx(v5, abs=1e-9)
    assert out[0, 0, 1, 2].item() == pytest.approx(v6, abs=1e-9)
    assert torch.equal(out[~pair[:, None]], x[~pair[:, None]])


def test_imputation_equals_scipy_spsolve():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 2, 24, 20, generator=g, dtype=torch.float64)
    removed = torch.rand(3, 24, 20, generator=g) < torch.tensor([0.2, 0.6, 0.9])[:, None, None]
    removed[0, 5:15, 4:14] = True  # a large hole
    ours = linear_imputation(x, removed, tol=1e-10, max_iter=2000)
    for i in range(3):
        for c in range(2):
            a, b, index = imputation_system(x[i, c].numpy(), removed[i].numpy())
            np.testing.assert_allclose(ours[i, c].flatten()[index].numpy(), spsolve(a, b), atol=1e-7)


def test_default_solver_is_close_to_the_exact_solution_at_128_px():
    g = torch.Generator().manual_seed(3)
    x = gaussian_blur(torch.rand(2, 1, 128, 128, generator=g), 11, 2.0)
    relevance = gaussian_blur(torch.rand(2, 1, 128, 128, generator=g), 31, 10.0).flatten(1)
    removed = (relevance.argsort(1, descending=True).argsort(1) < 0.6 * 128 * 128).view(2, 128, 128)
    fast = linear_imputation(x, removed)  # the defaults ROAD runs with
    exact = linear_imputation(x, removed, tol=1e-7, max_iter=3000)
    error = (fast - exact).abs()[removed[:, None]]
    assert float(error.mean()) < 2e-3 and float(error.max()) < 0.03  # noise is 0.01


def test_noise_only_on_removed_pixels_and_batch_independent():
    g = torch.Generator().manual_seed(4)
    x, removed = torch.rand(4, 1, 16, 16, generator=g), torch.rand(4, 16, 16, generator=g) < 0.5
    noisy = noisy_linear_imputation(x, removed)
    clean = linear_imputation(x, removed)
    assert torch.equal(noisy[~removed[:, None]], x[~removed[:, None]])
    difference = (noisy - clean)[removed[:, None]]
    assert 0.007 < float(difference.std()) < 0.013
    one = noisy_linear_imputation(x[2:3], removed[2:3])
    torch.testing.assert_close(one, noisy[2:3], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="every pixel removed"):
        linear_imputation(x[:1], torch.ones(1, 16, 16, dtype=torch.bool))


# --- ROAD -------------------------------------------------------------------------------------------------


def test_road_morf_of_a_quadratic_model_equals_the_spsolve_reference():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64)
    maps = torch.rand(2, 12, 12, generator=g, dtype=torch.float64)
    model, target, steps = EnergyModel(2.0), torch.ones(2, dtype=torch.long), 4
    got = road_morf(model, x, target, maps, steps=steps, sigma=0.0, tol=1e-10, max_iter=2000)
    ranks = maps.flatten(1).argsort(1, descending=True).argsort(1).view(2, 12, 12)
    for i in range(2):
        s_image = float((x[i] ** 2).sum())  # explained score: a sum(x^2) / 2, a = 2
        s_blur = float((gaussian_blur(x[i:i + 1]) ** 2).sum())
        evidence = []
        for k in range(1, steps):
            removed = (ranks[i] < round(k / steps * 144)).numpy()
            a, b, index = imputation_system(x[i, 0].numpy(), removed)
            filled = x[i, 0].numpy().copy().ravel()
            filled[index] = spsolve(a, b)
            evidence.append(((filled ** 2).sum() - s_blur) / (s_image - s_blur))
        assert got[i].item() == pytest.approx(np.mean(evidence), abs=1e-5)


def test_road_curves_layout_and_forward_count():
    g = torch.Generator().manual_seed(6)
    x, maps = torch.rand(3, 1, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
    model = SumModel(0.2)
    curves, fractions = road_curves(model, x, torch.ones(3, dtype=torch.long), maps, steps=5, batch_size=7)
    assert curves.shape == (3, 6) and fractions.tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0], abs=0.01)
    torch.testing.assert_close(curves[:, 0], 0.1 * x.flatten(1).sum(1))
    torch.testing.assert_close(curves[:, -1], 0.1 * gaussian_blur(x).flatten(1).sum(1), atol=1e-4, rtol=1e-5)
    assert model.calls == forwards_needed(3, 5, 7) == math.ceil(3 * 6 / 7)


def test_road_is_registered_as_a_lower_is_better_faithfulness_metric():
    spec = METRICS["road_morf"]
    assert spec.kind == "faithfulness" and spec.direction == "lower" and spec.citation == "rong2022road"


def test_road_batch_invariance_and_perfect_map_beats_reversed():
    g = torch.Generator().manual_seed(7)
    x = torch.zeros(4, 1, 16, 16)
    x[:, :, 4:10, 3:9] = 1.0 + torch.rand(4, 1, 6, 6, generator=g)  # the evidence: a bright blob
    model, target = EnergyModel(0.5), torch.ones(4, dtype=torch.long)
    good = road_morf(model, x, target, x[:, 0], steps=5)
    bad = road_morf(model, x, target, -x[:, 0], steps=5)
    assert bool((good < bad).all())
    single = torch.cat([road_morf(model, x[i:i + 1], target[i:i + 1], x[i:i + 1, 0], steps=5) for i in range(4)])
    torch.testing.assert_close(single, good, atol=1e-5, rtol=0)
    torch.testing.assert_close(road_morf(model, x, target, x[:, 0], steps=5, batch_size=5), good, atol=1e-5, rtol=0)
