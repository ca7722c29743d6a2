"""Agreement of medlit.metrics with peer implementations: Quantus, scikit-learn, scikit-image, RISE.

Quantus 0.6 runs here with a plain torch model (its PyTorchModel wrapper needs no torchvision), so its
PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy and PixelFlipping are compared directly. Known, documented differences
that the inputs below avoid on purpose:

* Quantus's PointingGame writes NaN into a bool array, so an empty mask counts as a hit (medlit: NaN),
  and its ``weighted=True`` mode fails on batches with hits: the tests use non-empty masks, the unweighted
  mode, and maps with a unique maximum (Quantus counts a hit on *any* tied maximum, medlit scores the
  expected hit over the tied maxima: a test pins that difference). Quantus has no tolerance, so it is
  compared with ``pointing_game_strict``.
* RelevanceRankAccuracy breaks ties at the K-th value with an unstable argsort; medlit shares them out by
  expectation. The maps compared have distinct values.
* RelevanceMassAccuracy sums signed relevance; medlit's energy pointing game sums positive relevance only.
* PixelFlipping's curve omits the unperturbed start (medlit's column 0), breaks ties with an unstable
  argsort (maps here have distinct values), uses ``np.trapz`` with dx = 1 for its AUC (so only the curves
  are compared), and has no insertion variant: insertion is checked against a slow, literal re-implementation
  of RISE's step-by-step loop instead.

Quantus's own warnings are silenced for this module only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu
from sklearn.metrics import average_precision_score
from torch import nn

from medlit.metrics import (
    auprc,
    energy_pointing_game,
    insertion_deletion_curves,
    iou_otsu,
    otsu_binarise,
    pointing_game,
    pointing_game_strict,
    relevance_rank_accuracy,
)
from medlit.perturbation import gaussian_blur

quantus = pytest.importorskip("quantus")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Quantus warns with plain UserWarnings

B, H, W = 24, 28, 28


@pytest.fixture(scope="module")
def batch():
    """Continuous maps (a unique maximum almost surely), non-empty box regions, half with a planted hit."""
    g = torch.Generator().manual_seed(7)
    maps = torch.randn(B, H, W, generator=g)
    regions = torch.zeros(B, H, W, dtype=torch.bool)
    for i in range(B):
        y0, x0 = (int(v) for v in torch.randint(0, H - 8, (2,), generator=g))
        regions[i, y0:y0 + 4 + i % 5, x0:x0 + 8] = True
        if i % 2 == 0:
            maps[i, y0 + 1, x0 + 2] = 10.0
    x = torch.rand(B, 1, H, W, generator=g)
    return maps, regions, x


def quantus_kwargs(maps, regions, x):
    return dict(model=None, x_batch=x.numpy(), y_batch=np.zeros(len(x), dtype=int),
                a_batch=maps[:, None].numpy(), s_batch=regions[:, None].numpy().astype(np.float32),
                channel_first=True)


def test_pointing_game_strict_equals_quantus_unweighted(batch):
    maps, regions, x = batch
    metric = quantus.PointingGame(weighted=False, abs=False, normalise=False, disable_warnings=True)
    theirs = np.asarray(metric(**quantus_kwargs(maps, regions, x)), dtype=np.float32)
    ours = pointing_game_strict(maps, regions).numpy()
    assert 0 < ours.sum() < B  # both hits and misses
    np.testing.assert_array_equal(ours, theirs)


def test_pointing_game_ties_expected_hit_where_quantus_counts_any_tied_maximum(batch):
    maps, regions, x = batch
    maps, regions, x = maps[:4].clone(), regions[:4], x[:4]
    for i in range(4):  # two tied maxima: one inside the region, one outside (the region never reaches row 27)
        inside = torch.nonzero(regions[i])[0]
        maps[i, inside[0], inside[1]] = maps[i, H - 1, W - 1] = 20.0
    metric = quantus.PointingGame(weighted=False, abs=False, normalise=False, disable_warnings=True)
    theirs = np.asarray(metric(**quantus_kwargs(maps, regions, x)), dtype=np.float32)
    np.testing.assert_array_equal(theirs, np.ones(4, np.float32))  # any tied maximum in the region: a hit
    np.testing.assert_array_equal(pointing_game_strict(maps, regions).numpy(), np.full(4, 0.5, np.float32))


def test_pointing_game_at_zero_tolerance_equals_quantus(batch):
    maps, regions, x = batch
    metric = quantus.PointingGame(weighted=False, abs=False, normalise=False, disable_warnings=True)
    theirs = np.asarray(metric(**quantus_kwargs(maps, regions, x)), dtype=np.float32)
    np.testing.assert_array_equal(pointing_game(maps, regions, tolerance_fraction=0.0).numpy(), theirs)


def test_relevance_rank_accuracy_equals_quantus(batch):
    maps, regions, x = batch
    maps = maps + 1.5 * regions.float()  # informative maps, still with distinct values: no ties at the K-th
    metric = quantus.RelevanceRankAccuracy(abs=False, normalise=False, disable_warnings=True)
    theirs = np.asarray(metric(**quantus_kwargs(maps, regions, x)), dtype=np.float64)
    ours = relevance_rank_accuracy(maps, regions).numpy()
    assert 0 < ours.min() < ours.max() < 1  # informative: neither all hits nor all misses
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_energy_pointing_game_equals_relevance_mass_accuracy(batch):
    maps, regions, x = batch
    metric = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)
    # on non-negative maps the two definitions coincide; on signed maps medlit = Quantus on relu(map)
    relu = maps.clamp(min=0)
    theirs = np.asarray(metric(**quantus_kwargs(relu, regions, x)), dtype=np.float64)
    np.testing.assert_allclose(energy_pointing_game(maps, regions).numpy(), theirs, atol=1e-6)
    np.testing.assert_allclose(energy_pointing_game(relu, regions).numpy(), theirs, atol=1e-6)


@pytest.mark.parametrize("quantised", [False, True])
def test_auprc_equals_sklearn_average_precision(batch, quantised):
    maps, regions, _ = batch
    maps = torch.round(maps * 2) if quantised else maps  # quantised: many ties sharing a threshold
    theirs = [average_precision_score(r.numpy().ravel(), m.numpy().ravel()) for m, r in zip(maps, regions)]
    np.testing.assert_allclose(auprc(maps, regions).numpy(), theirs, atol=1e-6)


@pytest.mark.parametrize("quantised", [False, True])
def test_otsu_equals_skimage_threshold_otsu(batch, quantised):
    maps, regions, _ = batch
    maps = torch.round(maps * 3) if quantised else maps ** 3  # ties / a skewed distribution
    ours = otsu_binarise(maps).numpy()
    ious = []
    for m, r, o in zip(maps.numpy(), regions.numpy(), ours):
        n = (m - m.min()) / (m.max() - m.min())  # CheXlocalize's min-max normalisation
        binary = n > threshold_otsu(n)
        np.testing.assert_array_equal(o, binary)
        ious.append((binary & r).sum() / (binary | r).sum())
    np.testing.assert_allclose(iou_otsu(maps, regions).numpy(), ious, atol=1e-6)


def small_cnn(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(64, 3)).eval()


def test_deletion_curve_equals_quantus_pixel_flipping(batch):
    maps, _, x = batch
    maps, x = maps[:6], x[:6]
    steps = 16
    model, target = small_cnn(1), np.array([0, 1, 2, 0, 1, 2])
    metric = quantus.PixelFlipping(features_in_step=H * W // steps, perturb_baseline=0.0, abs=False,
                                   normalise=False, disable_warnings=True)
    theirs = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=target, a_batch=maps[:, None].numpy(),
                               channel_first=True, softmax=True, device="cpu"))
    ours = insertion_deletion_curves(model, x, torch.as_tensor(target), maps, mode="deletion", steps=steps,
                                     substrate="zeros", quantity="probability")  # Quantus: black, softmax
    np.testing.assert_allclose(ours[:, 1:].numpy(), theirs, atol=1e-6)


def literal_curve(model, image, target, relevance, mode, steps, substrate):
    """RISE's single_run, literally: one image, pixels moved in place step by step, one forward per step."""
    c, h, w = image.shape
    flat = relevance.flatten().tolist()
    order = sorted(range(h * w), key=lambda i: (-flat[i], i))  # descending, ties by index
    start, finish = (image.clone(), substrate.clone()) if mode == "deletion" else (substrate.clone(), image.clone())
    curve, moved = [], 0
    for k in range(steps + 1):
        n_k = math.floor(k * h * w / steps + 0.5)
        for i in order[moved:n_k]:
            start[:, i // w, i % w] = finish[:, i // w, i % w]
        moved = n_k
        with torch.no_grad():
            curve.append(torch.softmax(model(start[None]), dim=1)[0, target].item())
    return curve


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
def test_curves_equal_literal_reference(mode):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 12, 10, generator=g)
    maps = torch.round(torch.randn(3, 12, 10, generator=g) * 2)  # ties: stable order by pixel index
    model, target, steps = small_cnn(3), torch.tensor([2, 0, 1]), 7  # 120 px / 7 steps: rounding matters
    substrate = gaussian_blur(x) if mode == "insertion" else torch.zeros_like(x)
    ours = insertion_deletion_curves(model, x, target, maps, mode=mode, steps=steps, batch_size=5,
                                     substrate=substrate, quantity="probability")
    for i in range(3):
        ref = literal_curve(model, x[i], int(target[i]), maps[i], mode, steps, substrate[i])
        np.testing.assert_allclose(ours[i].numpy(), ref, atol=1e-6)


def test_gaussian_blur_equals_scipy():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 20, 17, generator=g, dtype=torch.float64)
    t = np.arange(11) - 5
    kernel = np.exp(-t ** 2 / 50.0)
    kernel /= kernel.sum()
    ref = ndimage.convolve1d(x.numpy(), kernel, axis=2, mode="mirror")
    ref = ndimage.convolve1d(ref, kernel, axis=3, mode="mirror")
    np.testing.assert_allclose(gaussian_blur(x).numpy(), ref, atol=1e-10)
