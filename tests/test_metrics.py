"""Known-answer tests of medlit.metrics on hand-built maps, regions and toy models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medlit.data.sample import boxes_to_mask
from medlit.metrics import (
    DEFAULT_CURVE_FRACTIONS,
    DEFAULT_TOLERANCE_FRACTION,
    METRICS,
    auprc,
    average_precision,
    deletion_auc,
    energy_pointing_game,
    forwards_needed,
    insertion_auc,
    insertion_deletion_curves,
    iou_otsu,
    lesion_masks,
    lesion_recall,
    lesion_recall_masks,
    normalised_auc,
    otsu_binarise,
    pixel_ranks,
    pointing_curve,
    pointing_game,
    pointing_game_strict,
    register_metric,
    relative_tolerance_px,
    relevance_rank_accuracy,
    scaled_tolerance,
    squared_distance_to_region,
    step_counts,
    tied_maxima,
    top_k_selection,
)
from medlit.perturbation import gaussian_blur

LOCALISATION = [name for name in METRICS if METRICS[name].kind == "localisation"]
FAITHFULNESS = [name for name in METRICS if METRICS[name].kind == "faithfulness"]
LESION = [name for name in METRICS if METRICS[name].kind == "lesion"]


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
        "relevance_rank_accuracy": ("localisation", "higher", "arras2022clevr"),
        "lesion_recall": ("lesion", "higher", "arras2022clevr"),
        "insertion_auc": ("faithfulness", "higher", "petsiuk2018rise"),
        "deletion_auc": ("faithfulness", "lower", "petsiuk2018rise"),
    }
    for name, (kind, direction, citation) in expected.items():
        spec = METRICS[name]
        assert (spec.kind, spec.direction, spec.citation) == (kind, direction, citation)
        assert spec.range == (0.0, 1.0) and spec.long_name


def test_registry_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        register_metric("bogus", kind="region", direction="higher", long_name="x", citation="x", normalisation="x")
    assert "bogus" not in METRICS


# ------------------------------------------------------------------------------------- pointing game

def test_pointing_game_peak_inside_box_is_a_hit():
    region = box_mask(10, 10, 20, 20)
    assert pointing_game(peak_map(15, 15), region).item() == 1.0
    assert pointing_game_strict(peak_map(15, 15), region).item() == 1.0


def test_pointing_game_tolerance_10px_outside():
    region = box_mask(10, 10, 20, 20)  # columns 10..19
    peak = peak_map(15, 29)  # 10 px right of column 19
    assert pointing_game(peak, region, tolerance_fraction=15 / 32).item() == 1.0
    assert pointing_game(peak, region, tolerance_fraction=10 / 32).item() == 1.0  # closed disc
    assert pointing_game(peak, region, tolerance_fraction=9.99 / 32).item() == 0.0
    assert pointing_game(peak, region, tolerance_fraction=5 / 32).item() == 0.0
    assert pointing_game(peak, region).item() == 0.0  # default: 0.03 * 32 = 0.96 px
    assert pointing_game_strict(peak, region).item() == 0.0


def test_pointing_game_tolerance_is_euclidean():
    region = box_mask(0, 0, 5, 5, size=(40, 40))  # nearest pixel to the peak: (4, 4)
    peak = peak_map(4 + 6, 4 + 8, size=(40, 40))  # distance exactly 10
    assert pointing_game(peak, region, tolerance_fraction=10 / 40).item() == 1.0
    assert pointing_game(peak, region, tolerance_fraction=9.9 / 40).item() == 0.0


def test_pointing_game_strict_respects_half_open_boxes():
    region = box_mask(10, 10, 20, 20)
    assert pointing_game_strict(peak_map(19, 19), region).item() == 1.0
    assert pointing_game_strict(peak_map(20, 15), region).item() == 0.0
    assert pointing_game_strict(peak_map(15, 20), region).item() == 0.0
    assert torch.equal(pointing_game(peak_map(15, 20), region, tolerance_fraction=0), torch.tensor([0.0]))


def test_pointing_game_two_tied_maxima_one_hit_is_one_half():
    # Formerly 0.0 and 1.0 (the first maximum in row-major order decided); now the expectation over both.
    region = box_mask(10, 10, 20, 20)
    first_outside = peak_map(2, 2) + peak_map(15, 15)
    first_inside = peak_map(15, 15) + peak_map(25, 25)
    for fn in (pointing_game_strict, pointing_game):
        assert fn(first_outside, region).item() == 0.5
        assert fn(first_inside, region).item() == 0.5
    assert pointing_game(first_outside, region, tolerance_fraction=1.0).item() == 1.0  # both discs meet it


def test_pointing_game_block_tie_counts_the_share_of_the_block():
    region = box_mask(10, 0, 20, 32)  # columns 10..19, all rows
    block = torch.zeros(1, 32, 32)
    block[0, 8:12, 8:12] = 1.0  # a 4 x 4 block of tied maxima, columns 8..11: half of them inside
    assert pointing_game_strict(block, region).item() == 0.5  # the old rule: pixel (8, 8), a miss
    assert pointing_game(block, region, tolerance_fraction=1 / 32).item() == 0.75  # column 9 is 1 px away
    assert pointing_game(block, region, tolerance_fraction=2 / 32).item() == 1.0


def test_pointing_game_constant_map_scores_the_share_of_pixels_within_tolerance():
    region = box_mask(10, 10, 20, 20)  # 100 px
    constant = torch.full((1, 32, 32), 0.3)
    assert pointing_game_strict(constant, region).item() == pytest.approx(100 / 1024)
    assert pointing_game(constant, region, tolerance_fraction=0).item() == pytest.approx(100 / 1024)
    # radius 1 px: the 12 x 12 square around the box without its 4 corners (at distance sqrt 2)
    assert pointing_game(constant, region, tolerance_fraction=1 / 32).item() == pytest.approx(140 / 1024)
    assert pointing_game(constant, region, tolerance_fraction=1.5 / 32).item() == pytest.approx(144 / 1024)


def test_ties_are_relative_to_the_map_range():
    region = box_mask(10, 10, 20, 20)
    m = peak_map(2, 2)
    m[0, 15, 15] = 1.0 - 5e-7  # within 1e-6 of the range (0..1) below the maximum: tied
    assert tied_maxima(m).sum().item() == 2
    assert pointing_game_strict(m, region).item() == 0.5
    assert pointing_game_strict(m, region, tie_rtol=0).item() == 0.0
    assert pointing_game_strict(m * 1e6 + 3.0, region).item() == 0.5  # scale and offset do not matter
    m[0, 15, 15] = 0.999  # a real difference
    assert pointing_game_strict(m, region).item() == 0.0
    assert tied_maxima(torch.full((2, 3, 4), -1.0)).all()  # a constant map ties every pixel


def brute_force_hit(maps, regions, radius, open_disc=False):
    """The pre-tie rule, literally: the first maximum in row-major order, a disc around it, any region pixel."""
    hits = []
    for m, r in zip(maps, regions):
        i = int(m.flatten().argmax())
        r0, c0 = divmod(i, m.shape[1])
        ys, xs = torch.nonzero(r, as_tuple=True)
        d2 = (ys - r0) ** 2 + (xs - c0) ** 2
        inside = d2 < radius ** 2 if open_disc else d2 <= radius ** 2
        hits.append(float(bool(inside.any())) if len(ys) else float("nan"))
    return torch.tensor(hits)


def test_without_ties_the_old_rule_and_torchray_boundary_agree():
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(40, 25, 30, generator=g)  # continuous: a unique maximum
    regions = torch.zeros(40, 25, 30, dtype=torch.bool)
    for i in range(40):
        y0, x0 = (int(v) for v in torch.randint(0, 20, (2,), generator=g))
        regions[i, y0:y0 + 1 + i % 5, x0:x0 + 3] = True
    for fraction in (0.0, DEFAULT_TOLERANCE_FRACTION, 0.1, 0.25):
        radius = relative_tolerance_px((25, 30), fraction)
        ours = pointing_game(maps, regions, tolerance_fraction=fraction)
        assert torch.equal(ours, brute_force_hit(maps, regions, radius))
        if fraction > 0:  # r**2 not an integer: TorchRay's open disc (d**2 < r**2) gives the same hits
            assert torch.equal(ours, brute_force_hit(maps, regions, radius, open_disc=True))
    assert torch.equal(pointing_game_strict(maps, regions), brute_force_hit(maps, regions, 0.0))
    assert 0 < pointing_game(maps, regions, tolerance_fraction=0.1).sum() < 40


def test_closed_disc_differs_from_torchray_only_at_an_integer_radius():
    region = box_mask(0, 0, 1, 1, size=(40, 40))  # pixel (0, 0)
    peak = peak_map(9, 12, size=(40, 40))  # distance exactly 15
    assert pointing_game(peak, region, tolerance_fraction=15 / 40).item() == 1.0
    assert brute_force_hit(peak, region, 15.0, open_disc=True).item() == 0.0  # TorchRay: 15**2 < 15**2 fails


def test_relative_tolerance_px():
    assert relative_tolerance_px(224, 15 / 224) == pytest.approx(15.0)
    assert relative_tolerance_px((128, 256), 0.03) == pytest.approx(7.68)  # the longer side
    assert relative_tolerance_px(torch.Size([100, 50]), 0.0) == 0.0
    assert DEFAULT_TOLERANCE_FRACTION == 0.03
    with pytest.raises(ValueError, match="fraction"):
        relative_tolerance_px(128, -0.01)
    with pytest.raises(ValueError, match="image_size"):
        relative_tolerance_px(0, 0.03)


def test_squared_distance_to_region_is_exact_and_inf_for_empty_regions():
    regions = torch.zeros(2, 6, 7, dtype=torch.bool)
    regions[0, 0, 0] = True
    d2 = squared_distance_to_region(regions)
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(7), indexing="ij")
    assert torch.equal(d2[0], (rows ** 2 + cols ** 2).double())
    assert torch.isinf(d2[1]).all()


# ------------------------------------------------------------------------------------ pointing curve

def test_pointing_curve_known_answer():
    region = box_mask(0, 0, 1, 1, size=(10, 10))  # pixel (0, 0); the side is 10 px
    one = peak_map(3, 4, size=(10, 10))  # distance 5
    two = one + peak_map(6, 8, size=(10, 10))  # tied maxima at distances 5 and 10
    fractions = (0.0, 0.1, 0.3, 0.5, 0.99, 1.0)
    curve = pointing_curve(torch.cat([one, two]), torch.cat([region, region]), fractions)
    expected = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0.5, 0.5, 1]])
    assert curve.dtype == torch.float32 and torch.equal(curve, expected)


def test_pointing_curve_columns_are_pointing_games():
    maps, regions = random_batch()
    curve = pointing_curve(maps, regions)
    assert curve.shape == (len(maps), len(DEFAULT_CURVE_FRACTIONS))
    for j, fraction in enumerate(DEFAULT_CURVE_FRACTIONS):
        assert torch.allclose(curve[:, j], pointing_game(maps, regions, tolerance_fraction=fraction), atol=0,
                              rtol=0, equal_nan=True)
    assert torch.allclose(curve[:, 0], pointing_game_strict(maps, regions), atol=0, rtol=0, equal_nan=True)
    assert bool((curve[:-1].diff(dim=1) >= 0).all())  # fractions are increasing: hits never decrease
    assert torch.isnan(curve[-1]).all()  # empty region


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
    # No positive relevance: nothing lands in the region, the worst score (formerly NaN, silently dropped).
    assert energy_pointing_game(-torch.ones(1, 32, 32), region).item() == 0.0
    assert energy_pointing_game(torch.zeros(1, 32, 32), region).item() == 0.0
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
    assert math.isnan(iou_otsu(torch.rand(1, 32, 32), empty).item())  # empty region: undefined (formerly 0.0)


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


# -------------------------------------------------------------------------- relevance rank accuracy

def test_relevance_rank_accuracy_known_value_without_ties():
    region = box_mask(0, 0, 2, 2)  # 4 px: K = 4
    m = torch.linspace(0, 0.5, 1024).view(1, 32, 32)  # distinct values, all below the four planted ones
    m[0, 0, 0], m[0, 0, 1], m[0, 1, 0] = 4.0, 3.0, 2.0  # three inside
    m[0, 20, 20] = 2.5  # one outside, ranked third
    assert relevance_rank_accuracy(m, region).item() == pytest.approx(0.75)


def test_relevance_rank_accuracy_shares_ties_at_the_kth_value():
    region = torch.tensor([[[True, True, False, False]]])  # K = 2
    m = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])  # pixel 0 surely selected, one of the three zeros with p = 1/3
    assert relevance_rank_accuracy(m, region).item() == pytest.approx((1 + 1 / 3) / 2)
    above, tied, share = top_k_selection(m.flatten(1), torch.tensor([2]))
    assert above.tolist() == [[True, False, False, False]] and tied.tolist() == [[False, True, True, True]]
    assert share.tolist() == [pytest.approx(1 / 3)]
    assert relevance_rank_accuracy(torch.full((1, 32, 32), 2.0), box_mask(0, 0, 10, 10)).item() == pytest.approx(
        100 / 1024)  # a constant map: chance level


def test_top_k_selection_weights_sum_to_k():
    maps, _ = random_batch(b=5)  # map 0 has many ties
    k = torch.tensor([1, 7, 30, 200, 480])
    above, tied, share = top_k_selection(maps.flatten(1), k)
    expected = above.sum(dim=1) + share * tied.sum(dim=1)
    assert torch.allclose(expected, k.double())
    assert not bool((above & tied).any()) and bool(((share > 0) & (share <= 1)).all())


# ------------------------------------------------------------------------------------- lesion recall

def ranked_map(size=(32, 32)) -> torch.Tensor:
    """(1, H, W) distinct values in (0, 1): no ties anywhere."""
    g = torch.Generator().manual_seed(11)
    return (torch.randperm(size[0] * size[1], generator=g).float() / (size[0] * size[1])).view(1, *size)


TWO_LESIONS = torch.tensor([[[2.0, 2.0, 6.0, 6.0], [20.0, 20.0, 24.0, 24.0]]])  # 16 px each: K = 32


def test_lesion_recall_two_lesions_one_found_is_one_half():
    m = ranked_map()
    m[0, 2:6, 2:6] += 10.0  # lesion 1: its 16 px are the top 16
    m[0, 20:24, 20:24] -= 10.0  # lesion 2: the bottom 16, far from the top 32
    assert lesion_recall(m, TWO_LESIONS).item() == 0.5
    m[0, 21, 22] = 5.0  # one top-K pixel in lesion 2 suffices
    assert lesion_recall(m, TWO_LESIONS).item() == 1.0
    m[0, 2:6, 2:6] -= 20.0
    m[0, 21, 22] = -5.0
    assert lesion_recall(m, TWO_LESIONS).item() == 0.0


def test_lesion_recall_ties_at_the_kth_value_by_expectation():
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [3.0, 0.0, 4.0, 1.0]]])  # pixels 0 and 3 of a 1 x 4 image: K = 2
    m = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])  # lesion 1 surely found; 1 of 3 zeros drawn: lesion 2 with p = 1/3
    assert lesion_recall(m, boxes).item() == pytest.approx((1 + 1 / 3) / 2)
    # a constant map: 32 of 1024 tied pixels drawn; a 16 px lesion is missed with p = C(1008, 32) / C(1024, 32)
    found = 1 - math.comb(1008, 32) / math.comb(1024, 32)
    assert lesion_recall(torch.zeros(1, 32, 32), TWO_LESIONS).item() == pytest.approx(found, rel=1e-6)


def test_lesion_recall_nan_rows_overlaps_and_boxes_off_the_image():
    nan = float("nan")
    m = ranked_map()
    m[0, 2:6, 2:6] += 10.0
    boxes = torch.tensor([[[2.0, 2.0, 6.0, 6.0], [nan] * 4, [40.0, 40.0, 50.0, 50.0]],  # off the image: ignored
                          [[nan] * 4, [nan] * 4, [nan] * 4],  # no lesion: NaN
                          [[2.0, 2.0, 6.0, 6.0], [4.0, 4.0, 8.0, 8.0], [nan] * 4]])  # overlapping: K = 28
    scores = lesion_recall(m.expand(3, -1, -1), boxes)
    assert scores[0] == 1.0 and math.isnan(scores[1]) and scores[2] == 1.0
    assert lesion_recall(m, torch.zeros(1, 0, 4)).isnan().all()  # K = 0 boxes


def test_lesion_masks_rasterise_each_box_alone():
    masks = lesion_masks(torch.cat([TWO_LESIONS, torch.full((1, 1, 4), float("nan"))], dim=1), (32, 32))
    assert masks.shape == (1, 3, 32, 32)
    assert torch.equal(masks[:, 0], box_mask(2, 2, 6, 6)) and torch.equal(masks[:, 1], box_mask(20, 20, 24, 24))
    assert not masks[:, 2].any()
    assert torch.equal(masks.any(dim=1), boxes_to_mask(TWO_LESIONS, (32, 32)))


def test_lesion_recall_masks_on_non_rectangular_lesions():
    ring = torch.zeros(32, 32, dtype=torch.bool)
    ring[4:12, 4:12] = True
    ring[6:10, 6:10] = False  # a ring: its hole is no lesion
    dot = torch.zeros(32, 32, dtype=torch.bool)
    dot[25, 25] = True
    lesions = torch.stack([ring, dot])[None]  # (1, 2, 32, 32), K = 49
    m = ranked_map()
    m[0, 6:10, 6:10] += 10.0  # the hole holds the top 16 ...
    m[0, 25, 25] -= 10.0
    m[0, 4:12, 4:12][ring[4:12, 4:12]] -= 10.0
    m[0, 0:6, 20:32] += 5.0  # ... and the next 72 lie elsewhere: neither lesion is found
    assert lesion_recall_masks(m, lesions).item() == 0.0
    m[0, 11, 11] = 20.0
    assert lesion_recall_masks(m, lesions).item() == 0.5


@pytest.mark.parametrize("name", LESION)
def test_lesion_batch_equals_per_sample_loop(name):
    fn = METRICS[name].fn
    g = torch.Generator().manual_seed(4)
    maps = torch.randn(5, 24, 20, generator=g)
    maps[0] = torch.round(maps[0])  # ties
    boxes = torch.rand(5, 3, 2, generator=g) * torch.tensor([14.0, 18.0])
    boxes = torch.cat([boxes, boxes + 1 + 5 * torch.rand(5, 3, 2, generator=g)], dim=2)  # (x0, y0, x1, y1)
    boxes[1, 2] = float("nan")
    boxes[4] = float("nan")
    batched = fn(maps, boxes)
    looped = torch.cat([fn(maps[i:i + 1], boxes[i:i + 1]) for i in range(5)])
    assert batched.dtype == torch.float32 and batched.shape == (5,)
    assert torch.allclose(batched, looped, equal_nan=True)
    assert torch.isnan(batched[4]) and bool(((batched[:4] >= 0) & (batched[:4] <= 1)).all())
    assert not fn(maps.requires_grad_(), boxes).requires_grad


@pytest.mark.parametrize("name", LESION)
def test_lesion_rejects_bad_inputs(name):
    fn = METRICS[name].fn
    maps, boxes = torch.rand(2, 8, 8), torch.tensor([[[0.0, 0.0, 2.0, 2.0]]] * 2)
    with pytest.raises(ValueError, match="boxes"):
        fn(maps, boxes[:1])
    with pytest.raises(ValueError, match="boxes"):
        fn(maps, boxes[..., :3])
    with pytest.raises(ValueError, match="maps"):
        fn(maps[0], boxes)
    bad = maps.clone()
    bad[0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(bad, boxes)
    with pytest.raises(ValueError, match="bool"):
        lesion_recall_masks(maps, torch.ones(2, 1, 8, 8))


# --------------------------------------------------------------------- non-rectangular regions

def l_shape() -> torch.Tensor:
    """(1, 32, 32): an L of 51 px inside the 10 x 10 box rows 0..9, columns 0..9."""
    region = torch.zeros(1, 32, 32, dtype=torch.bool)
    region[0, 0:10, 0:3] = True  # 30 px
    region[0, 7:10, 3:10] = True  # 21 px
    return region


def test_pointing_games_on_an_l_shaped_region():
    region, peak = l_shape(), peak_map(2, 8)  # inside the L's bounding box, outside the L
    assert pointing_game_strict(peak, region).item() == 0.0
    # nearest L pixel: (7, 8), 5 px below (column 2 is 6 px to the left)
    assert pointing_game(peak, region, tolerance_fraction=5 / 32).item() == 1.0
    assert pointing_game(peak, region, tolerance_fraction=4.9 / 32).item() == 0.0
    assert pointing_curve(peak, region, (0.0, 4.9 / 32, 5 / 32)).tolist() == [[0.0, 0.0, 1.0]]
    assert pointing_game_strict(peak_map(8, 8), region).item() == 1.0


def test_area_metrics_on_an_l_shaped_region():
    region = l_shape()
    bounding_box = box_mask(0, 0, 10, 10).float()
    m = torch.zeros(1, 32, 32)
    m[0, 8, 5], m[0, 5, 5] = 3.0, 1.0  # 3 inside the L, 1 in its box outside it
    assert energy_pointing_game(m, region).item() == pytest.approx(0.75)
    assert iou_otsu(region.float() * 3.0, region).item() == 1.0
    assert iou_otsu(bounding_box, region).item() == pytest.approx(51 / 100)
    assert auprc(region.float() + 0.01 * ranked_map(), region).item() == pytest.approx(1.0)
    assert auprc(bounding_box, region).item() == pytest.approx(51 / 100)  # one tie group: its precision
    # K = 51 of the box's 100 tied pixels: each inside pixel counts 51/100
    assert relevance_rank_accuracy(bounding_box, region).item() == pytest.approx(51 / 100)


# ----------------------------------------------------------------------- all localisation metrics

@pytest.mark.parametrize("name", LOCALISATION)
def test_localisation_batch_equals_per_sample_loop(name):
    fn = METRICS[name].fn
    maps, regions = random_batch()
    batched = fn(maps, regions)
    looped = torch.cat([fn(maps[i:i + 1], regions[i:i + 1]) for i in range(len(maps))])
    assert batched.dtype == torch.float32 and batched.shape == (len(maps),)
    assert torch.allclose(batched, looped, equal_nan=True)
    assert torch.isnan(batched[-1])  # empty region: the only undefined case
    assert bool(((batched[:-1] >= 0) & (batched[:-1] <= 1)).all())


@pytest.mark.parametrize("name", LOCALISATION)
def test_localisation_uninformative_maps_score_not_nan(name):
    region = box_mask(10, 10, 20, 20)
    for m in (torch.zeros(1, 32, 32), -torch.ones(1, 32, 32), torch.full((1, 32, 32), 5.0)):
        score = METRICS[name].fn(m, region).item()
        assert 0.0 <= score <= 100 / 1024 + 1e-6  # the worst value or the chance level, never NaN


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
        pointing_game(*random_batch(), tolerance_fraction=-0.1)
    with pytest.raises(ValueError, match="tie_rtol"):
        pointing_game(*random_batch(), tie_rtol=-1e-6)
    with pytest.raises(ValueError, match="fractions"):
        pointing_curve(*random_batch(), fractions=[])


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
    curve = insertion_deletion_curves(model, x, torch.tensor([1]), x[:, 0], mode="deletion", steps=4,
                                      substrate="zeros", quantity="probability")
    # each step deletes (zeros) the 4 largest remaining pixels: 16+15+14+13 = 58, then 42, 26, 10
    sums = [136, 136 - 58, 136 - 100, 136 - 126, 0]
    assert np.allclose(curve[0].numpy(), sigmoid(0.05 * np.array(sums)), atol=1e-6)
    expected_auc = (sigmoid(0.05 * np.array(sums)).sum() - sigmoid(6.8) / 2 - 0.5 / 2) / 4
    raw = deletion_auc(model, x, torch.tensor([1]), x[:, 0], steps=4, substrate="zeros", quantity="probability",
                       normalise=False)
    assert raw.item() == pytest.approx(expected_auc, abs=1e-6)
    # on the explained score (half the log-odds, 0.025 * sum) and the evidence scale: (s_k - s_end) / (s_0 - s_end)
    evidence = np.array(sums) / 136
    score = deletion_auc(model, x, torch.tensor([1]), x[:, 0], steps=4, substrate="zeros")
    assert score.item() == pytest.approx((evidence.sum() - (evidence[0] + evidence[-1]) / 2) / 4, abs=1e-6)


def test_insertion_curve_by_hand_with_zero_substrate():
    x, model = ramp_image(), SumModel(0.05)
    target = torch.tensor([0])  # p(class 0) = 1 - sigmoid(a * sum)
    curve = insertion_deletion_curves(model, x, target, x[:, 0], mode="insertion", steps=2, substrate="zeros",
                                      quantity="probability")
    sums = [0, 16 + 15 + 14 + 13 + 12 + 11 + 10 + 9, 136]
    assert np.allclose(curve[0].numpy(), 1 - sigmoid(0.05 * np.array(sums)), atol=1e-6)


def test_insertion_starts_at_the_blurred_image_and_ends_at_the_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 12, generator=g)
    model = SumModel(0.1)
    target = torch.tensor([1, 0])
    curve = insertion_deletion_curves(model, x, target, torch.rand(2, 12, 12, generator=g), mode="insertion", steps=8,
                                      quantity="probability")
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
    # blurring keeps SumModel's sum (no evidence removed: NaN by the protocol), so delete to black here
    good = deletion_auc(model, x, target, x[:, 0], steps=16, substrate="zeros")
    bad = deletion_auc(model, x, target, -x[:, 0], steps=16, substrate="zeros")
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
    assert torch.allclose(batched, looped, atol=1e-6, equal_nan=True)
    for batch_size in (1, 7, 1000):
        assert torch.allclose(fn(model, x, target, maps, steps=8, batch_size=batch_size), batched, atol=1e-6,
                              equal_nan=True)


def test_one_forward_per_chunk_of_steps():
    x = torch.rand(3, 1, 16, 16)
    model = SumModel()
    deletion_auc(model, x, torch.tensor([1, 1, 1]), torch.rand(3, 16, 16), steps=64, batch_size=50)
    assert model.calls == forwards_needed(3, 64, 50) == math.ceil(3 * 65 / 50)


def test_model_is_evaluated_in_eval_mode_and_its_mode_restored():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(64, 2)).train()
    x, maps, target = torch.rand(2, 1, 8, 8), torch.rand(2, 8, 8), torch.tensor([0, 1])
    first = deletion_auc(model, x, target, maps, steps=4, quantity="probability", normalise=False)
    assert model.training
    again = deletion_auc(model, x, target, maps, steps=4, quantity="probability", normalise=False)
    assert torch.isfinite(first).all() and torch.equal(first, again)  # dropout was off


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
