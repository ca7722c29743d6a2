"""Cascading model-parameter randomisation: the cascade, its known answers, and SSIM/Spearman against references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from medlit.studies.randomisation import (cascading_randomisation, normalise_maps, randomisation_cascade,
                                          sanity_verdict, spearman, ssim)

METHODS = ["saliency", "gradcam", "centre_prior", "random"]


@pytest.fixture
def cascade_result(tiny_model, squares):
    # Target 0: on this untrained model Grad-CAM of class 1 is zero everywhere (a constant map).
    x, target = squares.images[:4], torch.zeros(4, dtype=torch.long)
    return cascading_randomisation(tiny_model, x, target, METHODS, seed=0, batch_size=3, progress=False)


def test_cascade_runs_from_the_output_down_with_the_stem_as_one_group(tiny_model):
    assert randomisation_cascade(tiny_model) == [
        ("fc", ["net.fc"]), ("layer4", ["net.layer4"]), ("layer3", ["net.layer3"]), ("layer2", ["net.layer2"]),
        ("layer1", ["net.layer1"]), ("conv1+bn1", ["net.conv1", "net.bn1"])]


def test_the_callers_model_is_unchanged(tiny_model, squares):
    tiny_model.train()  # explain_batched puts models in eval mode: that must not reach the caller's model either
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    cascading_randomisation(tiny_model, squares.images[:2], torch.zeros(2, dtype=torch.long), ["saliency"],
                            progress=False)
    after = tiny_model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert tiny_model.training


def test_dataset_layout(cascade_result):
    ds = cascade_result
    assert ds["similarity"].dims == ("explainer", "randomised", "measure", "sample")
    assert list(ds["randomised"].values) == ["none", "fc", "+layer4", "+layer3", "+layer2", "+layer1", "+conv1+bn1"]
    assert list(ds["measure"].values) == ["ssim", "spearman"]
    assert ds.attrs["seed"] == 0 and "min-max" in ds.attrs["conventions"]


def test_no_randomisation_means_similarity_exactly_one(cascade_result):
    assert (cascade_result["similarity"].sel(randomised="none") == 1.0).all()


def test_model_independent_maps_never_change(cascade_result):
    """A map that ignores the model fails the sanity check by construction."""
    controls = cascade_result["similarity"].sel(explainer=["centre_prior", "random"])
    np.testing.assert_allclose(controls.values, 1.0, rtol=0, atol=1e-12)


def test_model_dependent_maps_change(cascade_result):
    full = cascade_result["similarity"].sel(explainer=["saliency", "gradcam"]).isel(randomised=-1)
    ssim_full, spearman_full = full.sel(measure="ssim"), full.sel(measure="spearman")
    assert bool(np.isfinite(ssim_full).all()) and bool((ssim_full.mean("sample") < 0.5).all())
    # Spearman is undefined (NaN) where the randomised Grad-CAM is zero everywhere (ReLU of a negative sum).
    assert bool((spearman_full.fillna(0) < 1).all())
    assert bool(np.isfinite(spearman_full.sel(explainer="saliency")).all())


def test_verdict_without_a_null_falls_back_to_the_fixed_threshold(cascade_result):
    verdict = sanity_verdict(cascade_result)
    assert verdict.loc["saliency", "changes"] and verdict.loc["gradcam", "changes"]
    assert not verdict.loc["centre_prior", "changes"] and not verdict.loc["random", "changes"]
    assert verdict.loc["centre_prior", "ssim_top"] == pytest.approx(1.0)
    assert (verdict["changes"] == verdict["depends_on_model"]).all()
    assert verdict["rule"].str.contains("no null computed").all()
    assert {"family", "steps", "ssim_top", "ssim_full", "ssim_full_low", "ssim_full_high", "spearman_top",
            "spearman_full", "changes", "depends_on_model", "verdict", "rule"} == set(verdict.columns)


def test_deterministic_given_the_seed(tiny_model, squares):
    x, target = squares.images[:2], torch.zeros(2, dtype=torch.long)
    run = [cascading_randomisation(tiny_model, x, target, ["saliency"], seed=s, progress=False) for s in (3, 3, 4)]
    # the explaining time (a coordinate, for the cost) is the only thing that may differ between two runs
    xr.testing.assert_identical(run[0].drop_vars("seconds"), run[1].drop_vars("seconds"))
    assert not np.allclose(run[0]["similarity"].values, run[2]["similarity"].values)


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 20, 27)])
def test_ssim_agrees_with_skimage(shape):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(shape, generator=g, dtype=torch.float64)
    b = (0.6 * a + 0.4 * torch.rand(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    expected = [structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False) for i in range(shape[0])]
    np.testing.assert_allclose(ssim(a, b).numpy(), expected, rtol=1e-4, atol=1e-10)
    assert torch.equal(ssim(a, a), torch.ones(shape[0], dtype=torch.float64))


def test_spearman_agrees_with_scipy_with_and_without_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 10, 10, generator=g, dtype=torch.float64)
    b = a + 0.3 * torch.rand(4, 10, 10, generator=g, dtype=torch.float64)
    ties_a, ties_b = (a * 4).floor(), (b * 3).floor()
    for x, y in ((a, b), (ties_a, ties_b)):
        expected = [spearmanr(x[i].flatten().numpy(), y[i].flatten().numpy()).statistic for i in range(4)]
        np.testing.assert_allclose(spearman(x, y).numpy(), expected, rtol=1e-10)
    assert torch.isnan(spearman(torch.zeros(1, 5, 5), a[:1, :5, :5])).all()


def test_normalisation_takes_absolute_values_and_scales_to_unit_range():
    maps = torch.tensor([[[-2.0, 1.0], [0.0, 0.5]], [[3.0, 3.0], [3.0, 3.0]]])
    normalised = normalise_maps(maps)
    torch.testing.assert_close(normalised[0], torch.tensor([[1.0, 0.5], [0.0, 0.25]], dtype=torch.float64))
    assert torch.equal(normalised[1], torch.zeros(2, 2, dtype=torch.float64))
