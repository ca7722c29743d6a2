"""Known-answer tests of medlit.metrics on hand-built maps, regions and toy models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medlit.data.sample import boxes_to_mask
from medlit.metrics import (
    METRICS,
    auprc,
    average_precision,
    deletion_auc,
    energy_pointing_game,
    forwards_needed,
    insertion_auc,
    insertion_deletion_curves,
    iou_otsu,
    normalised_auc,
    otsu_binarise,
    pixel_ranks,
    pointing_game,
    pointing_game_strict,
    scaled_tolerance,
    step_counts,
)
from medlit.perturbation import gaussian_blur

LOCALISATION = [name for name in METRICS if METRICS[name].kind == "localisation"]
FAITHFULNESS = [name for name in METRICS if METRICS[name].kind == "faithfulness"]


def box_mask(x0, y0, x1, y1, size=(32, 32)) -> torch.Tensor:
    """(1, H, W) mask of one half-open box, rasterised the package's way."""
    return boxes_to_mask(torch.tensor([[[x0, y0, x1, y1]]], dtype=torch.float32), size)


def peak_map(row, col, size=(32, 32)) -> torch.Tensor:
    m = torch.zeros(1, *size)
    m[0, row, col] = 1.0
    return m


def random_batch(b=6, size=(24, 20), seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(b, *size, generator=g)
    maps[0] = torch.round(maps[0] * 2)  # many ties
    regions = torch.zeros(b, *size, dtype=torch.bool)
    for i in range(b):
        y0 = int(torch.randint(0, size[0] - 6, (1,), generator=g))
        x0 = int(torch.randint(0, size[1] - 6, (1,), generator=g))
        regions[i, y0:y0 + 6, x0:x0 + 5] = True
    regions[-1] = False  # one undefined sample
    return maps, regions


# ----------------------------------------------------------------------------------------- registry

def test_registry_holds_every_metric_with_metadata():
    expected = {
        "pointing_game": ("localisation", "higher", "zhang2018excitation"),
        "pointing_game_strict": ("localisation", "higher", "saporta2022chexlocalize"),
        "energy_pointing_game": ("localisation", "higher", "wang2020scorecam"),
        "iou_otsu": ("localisation", "higher", "saporta2022chexlocalize"),
        "auprc": ("localisation", "higher", "arun2021trustworthiness"),
        "insertion_auc": ("faithfulness", "higher", "petsiuk2018rise"),
        "deletion_auc": ("faithfulness", "lower", "petsiuk2018rise"),
    }
    for name, (kind, direction, citation) in expected.items():
        spec = METRICS[name]
        assert (spec.kind, spec.direction, spec.citation) == (kind, direction, citation)
        assert spec.range == (0.0, 1.0) and spec.long_name


# ------------------------------------------------------------------------------------- pointing game

def test_pointing_game_peak_inside_box_is_a_hit():
    region = box_mask(10, 10, 20, 20)
    assert pointing_game(peak_map(15, 15), region).item() == 1.0
    assert pointing_game_strict(peak_map(15, 15), region).item() == 1.0


def test_pointing_game_tolerance_10px_outside():
    region = box_mask(10, 10, 20, 20)  # columns 10..19
    peak = peak_map(15, 29)  # 10 px right of column 19
    assert pointing_game(peak, region, tolerance_px=15).item() == 1.0
    assert pointing_game(peak, region, tolerance_px=10).item() == 1.0  # closed disc
    assert pointing_game(peak, region, tolerance_px=9.99).item() == 0.0
    assert pointing_game(peak, region, tolerance_px=5).item() == 0.0
    assert pointing_game_strict(peak, region).item() == 0.0


def test_pointing_game_tolerance_is_euclidean():
    region = box_mask(0, 0, 5, 5, size=(40, 40))  # nearest pixel to the peak: (4, 4)
    peak = peak_map(4 + 6, 4 + 8, size=(40, 40))  # distance exactly 10
    assert pointing_game(peak, region, tolerance_px=10).item() == 1.0
    assert pointing_game(peak, region, tolerance_px=9.9).item() == 0.0


def test_pointing_game_strict_respects_half_open_boxes():
    region = box_mask(10, 10, 20, 20)
    assert pointing_game_strict(peak_map(19, 19), region).item() == 1.0
    assert pointing_game_strict(peak_map(20, 15), region).item() == 0.0
    assert pointing_game_strict(peak_map(15, 20), region).item() == 0.0
    assert torch.equal(pointing_game(peak_map(15, 20), region, tolerance_px=0), torch.tensor([0.0]))


def test_pointing_game_ties_take_the_first_maximum_in_row_major_order():
    region = box_mask(10, 10, 20, 20)
    first_outside = peak_map(2, 2) + peak_map(15, 15)
    first_inside = peak_map(15, 15) + peak_map(25, 25)
    assert pointing_game_strict(first_outside, region).item() == 0.0
    assert pointing_game_strict(first_inside, region).item() == 1.0
    assert pointing_game_strict(torch.zeros(1, 32, 32), box_mask(0, 0, 1, 1)).item() == 1.0  # pixel (0, 0)


def test_scaled_tolerance():
    assert scaled_tolerance(1024, 128) == pytest.approx(1.875)
    assert scaled_tolerance((1024, 1024), (256, 256)) == pytest.approx(3.75)
    assert scaled_tolerance((2000, 1000), (200, 100), tolerance_px=20) == pytest.approx(2.0)
    assert scaled_tolerance(128, 128) == 15.0
    assert scaled_tolerance(np.array([1024, 1024]), torch.Size([128, 128])) == pytest.approx(1.875)
    with pytest.raises(ValueError):
        scaled_tolerance(0, 128)


# ------------------------------------------------------------------------------ energy pointing game

def test_energy_pointing_game_exact_fraction_ignores_negative_relevance():
    m = torch.zeros(1, 32, 32)
    m[0, 12, 12], m[0, 14, 15] = 2.0, 1.0  # 3 inside
    m[0, 0, 0] = 1.0  # 1 outside
    m[0, 30, 30], m[0, 15, 15] = -5.0, -1.0  # ignored
    assert energy_pointing_game(m, box_mask(10, 10, 20, 20)).item() == pytest.approx(0.75, abs=1e-7)


def test_energy_pointing_game_nan_cases():
    region = box_mask(10, 10, 20, 20)
    assert math.isnan(energy_pointing_game(-torch.ones(1, 32, 32), region).item())
    assert math.isnan(energy_pointing_game(torch.zeros(1, 32, 32), region).item())
    assert math.isnan(energy_pointing_game(torch.rand(1, 32, 32), torch.zeros(1, 32, 32, dtype=torch.bool)).item())


# ----------------------------------------------------------------------------------------- Otsu IoU

def test_iou_otsu_bimodal_map_equal_to_box_is_one():
    g = torch.Generator().manual_seed(1)
    region = box_mask(5, 8, 17, 20)
    m = 10.0 + 5.0 * region.float() + 0.3 * torch.rand(1, 32, 32, generator=g)  # unnormalised, offset
    assert torch.equal(otsu_binarise(m), region)
    assert iou_otsu(m, region).item() == 1.0


def test_iou_otsu_partial_overlap_known_value():
    on = box_mask(0, 0, 10, 10)  # 100 px
    region = box_mask(5, 0, 15, 10)  # 100 px, overlap 50 px, union 150 px
    assert iou_otsu(on.float() * 3.0, region).item() == pytest.approx(50 / 150)


def test_iou_otsu_constant_map_is_empty_binary():
    region = box_mask(5, 5, 10, 10)
    assert not otsu_binarise(torch.full((1, 32, 32), 0.7)).any()
    assert iou_otsu(torch.full((1, 32, 32), 0.7), region).item() == 0.0
    empty = torch.zeros(1, 32, 32, dtype=torch.bool)
    assert math.isnan(iou_otsu(torch.full((1, 32, 32), 0.7), empty).item())
    assert iou_otsu(torch.rand(1, 32, 32), empty).item() == 0.0  # binary non-empty, region empty


def test_otsu_threshold_splits_two_levels_between_them():
    m = torch.zeros(1, 4, 4)
    m[0, :, :1] = 1.0
    assert torch.equal(otsu_binarise(m)[0, :, 0], torch.ones(4, dtype=torch.bool))
    assert otsu_binarise(m).sum().item() == 4


# ---------------------------------------------------------------------------------------------- AUPRC

def test_auprc_perfect_and_constant_maps():
    region = box_mask(10, 10, 20, 20)
    assert auprc(region.float() + 0.01 * torch.rand(1, 32, 32), region).item() == pytest.approx(1.0)
    assert auprc(torch.ones(1, 32, 32), region).item() == pytest.approx(100 / 1024)


def test_average_precision_hand_computed_with_ties():
    scores = torch.tensor([[3.0, 2.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    labels = torch.tensor([[True, False, True, False], [True, False, False, False]])
    # row 0: thresholds 3 (P=1, R=1/2) and 2 (P=2/3, R=1) -> 1/2 * 1 + 1/2 * 2/3
    # row 1: the single positive ranks last -> P = 1/4
    expected = torch.tensor([0.5 + 1 / 3, 0.25], dtype=torch.float64)
    assert torch.allclose(average_precision(scores, labels), expected)


def test_auprc_empty_region_is_nan():
    assert math.isnan(auprc(torch.rand(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool)).item())


# ----------------------------------------------------------------------- all localisation metrics

@pytest.mark.parametrize("name", LOCALISATION)
def test_localisation_batch_equals_per_sample_loop(name):
    fn = METRICS[name].fn
    maps, regions = random_batch()
    batched = fn(maps, regions)
    looped = torch.cat([fn(maps[i:i + 1], regions[i:i + 1]) for i in range(len(maps))])
    assert batched.dtype == torch.float32 and batched.shape == (len(maps),)
    assert torch.allclose(batched, looped, equal_nan=True)
    # empty region: undefined, except IoU, which is NaN only when the binary map is empty too
    assert torch.isnan(batched[-1]) or (name == "iou_otsu" and batched[-1] == 0)
    assert bool(((batched[:-1] >= 0) & (batched[:-1] <= 1)).all())


@pytest.mark.parametrize("name", LOCALISATION)
def test_localisation_accepts_maps_that_require_grad(name):
    maps, regions = random_batch()
    scores = METRICS[name].fn(maps.requires_grad_(), regions)
    assert not scores.requires_grad
    scores.numpy()


@pytest.mark.parametrize("name", LOCALISATION)
def test_localisation_rejects_bad_inputs(name):
    fn = METRICS[name].fn
    maps, regions = random_batch()
    with pytest.raises(ValueError, match="regions"):
        fn(maps, regions[:, :-1])
    with pytest.raises(ValueError, match="maps"):
        fn(maps[0], regions[0])
    with pytest.raises(ValueError, match="bool"):
        fn(maps, regions.float())
    bad = maps.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fn(bad, regions)


def test_pointing_game_rejects_negative_tolerance():
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(*random_batch(), tolerance_px=-1)


# ------------------------------------------------------------------------------ insertion / deletion

class SumModel(nn.Module):
    """Two logits (0, a * sum(x)): p(class 1) = sigmoid(a * sum(x)), a known function of the pixels."""

    def __init__(self, a: float = 0.5) -> None:
        super().__init__()
        self.a = a
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        s = self.a * x.flatten(1).sum(dim=1)
        return torch.stack([torch.zeros_like(s), s], dim=1)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-np.asarray(v, dtype=np.float64)))


def ramp_image():
    """One 1-channel 4x4 image with pixel values 1..16 (value = relevance = rank order)."""
    return torch.arange(1.0, 17.0).view(1, 1, 4, 4)


def test_step_counts_round_half_up():
    assert step_counts(10, 4).tolist() == [0, 3, 5, 8, 10]
    assert step_counts(16, 4).tolist() == [0, 4, 8, 12, 16]
    assert step_counts(3, 6).tolist() == [0, 1, 1, 2, 2, 3, 3]


def test_pixel_ranks_descending_with_stable_ties():
    maps = torch.tensor([[[1.0, 3.0], [3.0, 0.0]]])
    assert pixel_ranks(maps).tolist() == [[2, 0, 1, 3]]


def test_normalised_auc():
    assert torch.allclose(normalised_auc(torch.full((1, 9), 0.3)), torch.tensor([0.3]))
    assert torch.allclose(normalised_auc(torch.linspace(1, 0, 5)[None]), torch.tensor([0.5]))


def test_deletion_curve_by_hand():
    x, model = ramp_image(), SumModel(0.05)
    curve = insertion_deletion_curves(model, x, torch.tensor([1]), x[:, 0], mode="deletion", steps=4)
    # each step deletes (zeros) the 4 largest remaining pixels: 16+15+14+13 = 58, then 42, 26, 10
    sums = [136, 136 - 58, 136 - 100, 136 - 126, 0]
    assert np.allclose(curve[0].numpy(), sigmoid(0.05 * np.array(sums)), atol=1e-6)
    expected_auc = (sigmoid(0.05 * np.array(sums)).sum() - sigmoid(6.8) / 2 - 0.5 / 2) / 4
    assert deletion_auc(model, x, torch.tensor([1]), x[:, 0], steps=4).item() == pytest.approx(expected_auc, abs=1e-6)


def test_insertion_curve_by_hand_with_zero_substrate():
    x, model = ramp_image(), SumModel(0.05)
    target = torch.tensor([0])  # p(class 0) = 1 - sigmoid(a * sum)
    curve = insertion_deletion_curves(model, x, target, x[:, 0], mode="insertion", steps=2, substrate="zeros")
    sums = [0, 16 + 15 + 14 + 13 + 12 + 11 + 10 + 9, 136]
    assert np.allclose(curve[0].numpy(), 1 - sigmoid(0.05 * np.array(sums)), atol=1e-6)


def test_insertion_starts_at_the_blurred_image_and_ends_at_the_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 12, generator=g)
    model = SumModel(0.1)
    target = torch.tensor([1, 0])
    curve = insertion_deletion_curves(model, x, target, torch.rand(2, 12, 12, generator=g), mode="insertion", steps=8)
    p = torch.softmax(model(torch.cat([gaussian_blur(x), x])), dim=1)
    assert torch.allclose(curve[:, 0], p[[0, 1], target], atol=1e-6)
    assert torch.allclose(curve[:, -1], p[[2, 3], target], atol=1e-6)


def test_gaussian_blur_is_normalised_and_keeps_constants():
    x = torch.full((1, 3, 9, 7), 0.4)
    assert torch.allclose(gaussian_blur(x), x, atol=1e-6)
    tiny = torch.full((1, 1, 3, 3), 2.0)  # smaller than the kernel radius: replicate padding
    assert torch.allclose(gaussian_blur(tiny), tiny, atol=1e-6)
    delta = torch.zeros(1, 1, 31, 31)
    delta[0, 0, 15, 15] = 1.0
    kernel = gaussian_blur(delta)[0, 0, 10:21, 10:21]
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(kernel, kernel.T) and kernel[5, 5] == kernel.max()


def test_deletion_perfect_map_beats_reversed_map():
    x, model = ramp_image(), SumModel(0.05)
    target = torch.tensor([1])
    good = deletion_auc(model, x, target, x[:, 0], steps=16)
    bad = deletion_auc(model, x, target, -x[:, 0], steps=16)
    assert good.item() < bad.item()
    ins_good = insertion_auc(model, x, target, x[:, 0], steps=16, substrate="zeros")
    ins_bad = insertion_auc(model, x, target, -x[:, 0], steps=16, substrate="zeros")
    assert ins_good.item() > ins_bad.item()


@pytest.mark.parametrize("name", FAITHFULNESS)
def test_faithfulness_batch_equals_loop_and_batch_size_invariance(name):
    fn = METRICS[name].fn
    g = torch.Generator().manual_seed(2)
    x, maps = torch.rand(5, 2, 8, 8, generator=g), torch.rand(5, 8, 8, generator=g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(128, 3))
    target = torch.tensor([0, 1, 2, 1, 0])
    batched = fn(model, x, target, maps, steps=8)
    looped = torch.cat([fn(model, x[i:i + 1], target[i:i + 1], maps[i:i + 1], steps=8) for i in range(5)])
    assert batched.dtype == torch.float32 and batched.shape == (5,)
    assert torch.allclose(batched, looped, atol=1e-6)
    for batch_size in (1, 7, 1000):
        assert torch.allclose(fn(model, x, target, maps, steps=8, batch_size=batch_size), batched, atol=1e-6)


def test_one_forward_per_chunk_of_steps():
    x = torch.rand(3, 1, 16, 16)
    model = SumModel()
    deletion_auc(model, x, torch.tensor([1, 1, 1]), torch.rand(3, 16, 16), steps=64, batch_size=50)
    assert model.calls == forwards_needed(3, 64, 50) == math.ceil(3 * 65 / 50)


def test_model_is_evaluated_in_eval_mode_and_its_mode_restored():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(64, 2)).train()
    x, maps, target = torch.rand(2, 1, 8, 8), torch.rand(2, 8, 8), torch.tensor([0, 1])
    first = deletion_auc(model, x, target, maps, steps=4)
    assert model.training
    assert torch.equal(first, deletion_auc(model, x, target, maps, steps=4))  # dropout was off


def test_faithfulness_rejects_bad_inputs():
    model = SumModel()
    x, maps, target = torch.rand(2, 1, 8, 8), torch.rand(2, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="maps"):
        deletion_auc(model, x, target, maps[:, :-1])
    with pytest.raises(ValueError, match="x must be"):
        deletion_auc(model, x[0], target, maps)
    with pytest.raises(ValueError, match="target"):
        deletion_auc(model, x, torch.tensor([0]), maps)
    with pytest.raises(ValueError, match="target"):
        deletion_auc(model, x, torch.tensor([0, 5]), maps)
    with pytest.raises(ValueError, match="substrate"):
        insertion_auc(model, x, target, maps, substrate="noise")
    with pytest.raises(ValueError, match="mode"):
        insertion_deletion_curves(model, x, target, maps, mode="both")
    with pytest.raises(ValueError, match="logits"):
        deletion_auc(lambda t: t.flatten(1).sum(1, keepdim=True), x, target, maps)
    with pytest.raises(ValueError, match="steps"):
        deletion_auc(model, x, target, maps, steps=0)
