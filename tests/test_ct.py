"""Tests of the head-CT lesion set built on pydicom's real CT slices (medlit.data.ct)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from medlit.data.ct import (BASE_SLICES, FINDING_TYPES, GENERATOR_VERSION, load_base_slices, make_ct_lesions,
                            split_seed)
from medlit.data.sample import SampleSet, boxes_to_mask, mask_to_box

N = 64
SIZE = 64


@pytest.fixture(scope="module")
def small() -> SampleSet:
    return make_ct_lesions(N, size=SIZE, seed=3, split="train")


@pytest.fixture(scope="module")
def big() -> SampleSet:
    """Enough positives at the quick-profile size to meet every lesion type, alone and in pairs."""
    return make_ct_lesions(240, size=128, seed=1, split="test")


def test_base_slices_are_real_head_ct_in_hounsfield_units():
    slices = load_base_slices()
    assert tuple(slices) == BASE_SLICES
    assert load_base_slices() is slices  # decoded once per process
    for name, s in slices.items():
        hu, brain = s["hu"], s["brain"]
        assert hu.shape == brain.shape == (512, 512) and hu.dtype == np.float32
        assert hu.min() >= -1024 and hu.max() > 1000  # air clipped, cortical bone present
        assert 0.4 < s["spacing"] < 0.5  # mm, from the Pixel Spacing tag
        area_cm2 = brain.sum() * s["spacing"] ** 2 / 100
        assert 40 < area_cm2 < 150, name
        assert 15 < s["parenchyma_hu"] < 45, name  # brain tissue, not CSF, fat or bone
        assert ((hu[brain] > -5) & (hu[brain] < 90)).mean() > 0.99  # holes filled: a few CSF or vessel pixels


def test_shapes_dtypes_and_range(small):
    ds = small
    assert ds.name == "ct-lesions" and ds.split == "train"
    assert ds.images.shape == (N, 1, SIZE, SIZE) and ds.images.dtype == torch.float32
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert ds.labels.dtype == torch.int64 and set(ds.labels.tolist()) <= {0, 1}
    assert ds.boxes.shape == (N, 2, 4) and ds.boxes.dtype == torch.float32
    assert ds.finding_masks.shape == (N, SIZE, SIZE) and ds.finding_masks.dtype == torch.bool
    assert ds.anatomy_masks.shape == (N, SIZE, SIZE) and ds.anatomy_masks.dtype == torch.bool
    for key in ("sample_id", "finding", "n_findings", "base_slice", "angle_deg", "scale", "window_center",
                "window_width", "noise_hu", "contrast_hu"):
        assert len(ds.meta[key]) == N, key
    assert ds.meta["sample_id"][12] == "ct-lesions-train-00012"
    assert set(ds.meta["base_slice"]) == set(BASE_SLICES)
    assert (np.abs(ds.meta["angle_deg"]) <= 15).all()
    assert ((ds.meta["scale"] >= 0.85) & (ds.meta["scale"] <= 1.15)).all()
    assert ((ds.meta["window_center"] >= 30) & (ds.meta["window_center"] <= 50)).all()
    assert ((ds.meta["window_width"] >= 80) & (ds.meta["window_width"] <= 120)).all()
    assert ((ds.meta["noise_hu"] >= 2) & (ds.meta["noise_hu"] <= 8)).all()
    a = ds.attrs
    assert a["original_size"] == 512 and a["seed"] == 3 and a["generator"] == GENERATOR_VERSION
    assert a["class_names"] == ["no finding", "finding"] and a["finding_types"] == list(FINDING_TYPES)
    assert a["base_slices"] == list(BASE_SLICES)
    assert set(a["pixel_spacing_mm"]) == set(BASE_SLICES)
    # every image shows a head: a brain of plausible size, dark air in the corners, bright skull somewhere
    brain_frac = ds.anatomy_masks.float().mean(dim=(1, 2))
    assert (brain_frac > 0.08).all() and (brain_frac < 0.4).all()
    assert (ds.images[:, 0, :3, :3] == 0).all()
    assert (ds.images.flatten(1) == 1).float().mean(dim=1).min() > 0.03


def test_same_arguments_give_identical_output(small):
    again = make_ct_lesions(N, size=SIZE, seed=3, split="train")
    assert torch.equal(small.images, again.images)
    assert torch.equal(small.labels, again.labels)
    assert torch.equal(small.finding_masks, again.finding_masks)
    assert torch.equal(small.anatomy_masks, again.anatomy_masks)
    assert torch.allclose(small.boxes, again.boxes, equal_nan=True)
    for key, values in small.meta.items():
        if values.dtype.kind == "f":
            np.testing.assert_array_equal(values, again.meta[key])
        else:
            assert (values == again.meta[key]).all(), key


def test_other_split_or_seed_gives_other_draws(small):
    assert split_seed(3, "train") != split_seed(3, "val")
    assert split_seed(3, "train") == split_seed(3, "train")  # stable, not Python's salted hash()
    for ds in (make_ct_lesions(N, size=SIZE, seed=3, split="val"), make_ct_lesions(N, size=SIZE, seed=4,
                                                                                     split="train")):
        per_image = (ds.images - small.images).abs().flatten(1).amax(dim=1)
        assert (per_image > 0.05).all()
        assert not np.array_equal(ds.meta["angle_deg"], small.meta["angle_deg"])
        assert ds.labels.tolist() != small.labels.tolist()


def test_positives_have_exact_masks_and_tight_boxes(big, small):
    for ds in (big, small):
        for i in range(len(ds)):
            s = ds[i]
            if s.label == 0:  # negatives: empty mask, all-NaN box rows, no lesion metadata
                assert not s.finding_mask.any() and s.boxes.shape == (0, 4)
                assert torch.isnan(ds.boxes[i]).all()
                assert s.meta["finding"] == "none" and s.meta["n_findings"] == 0 and s.meta["contrast_hu"] == 0
                continue
            k = s.meta["n_findings"]
            assert s.finding_mask.any() and s.boxes.shape[0] == k >= 1
            assert s.meta["finding"].count("+") == k - 1
            hull = np.array([s.boxes[:, 0].min(), s.boxes[:, 1].min(), s.boxes[:, 2].max(), s.boxes[:, 3].max()])
            np.testing.assert_array_equal(hull, mask_to_box(s.finding_mask))
            covered = boxes_to_mask(torch.from_numpy(s.boxes)[None], ds.image_size)[0].numpy()
            assert not (s.finding_mask & ~covered).any()
            if k == 1:
                np.testing.assert_array_equal(s.boxes[0], mask_to_box(s.finding_mask))
            else:  # two separate lesions: each box touches the mask on all four of its edges
                for x0, y0, x1, y1 in s.boxes.astype(int):
                    inner = s.finding_mask[y0:y1, x0:x1]
                    assert inner[0].any() and inner[-1].any() and inner[:, 0].any() and inner[:, -1].any()
                labelled, n_parts = ndi.label(s.finding_mask)
                assert n_parts >= 2


def test_lesions_lie_inside_the_brain(big, small):
    for ds in (big, small):
        fm, brain = ds.finding_masks, ds.anatomy_masks
        assert not (fm & ~brain).any()


def test_every_type_occurs_alone_and_in_pairs(big):
    pos = big.labels.numpy() == 1
    findings = big.meta["finding"][pos]
    assert set(FINDING_TYPES) <= set(findings)
    assert (big.meta["n_findings"] == 2).any()
    assert set(big.meta["base_slice"][pos]) == set(BASE_SLICES)
    area = big.meta["finding_area"]
    assert np.median(area[big.meta["finding"] == "haemorrhage"]) < np.median(area[big.meta["finding"] == "infarct"])


def _contrast(ds: SampleSet, i: int) -> float:
    """Mean windowed intensity inside the lesion minus a 2-4 px brain ring around it, in HU."""
    m, brain, img = ds.finding_masks[i].numpy(), ds.anatomy_masks[i].numpy(), ds.images[i, 0].numpy()
    ring = ndi.binary_dilation(m, iterations=4) & ~ndi.binary_dilation(m, iterations=1) & brain
    return float((img[m].mean() - img[ring].mean()) * ds.meta["window_width"][i])


def test_lesion_contrast_sign_per_type(big):
    """Haemorrhage is brighter and an infarct darker than the parenchyma around it; a metastasis ring is brighter
    than its core."""
    single = big.meta["n_findings"] == 1
    for kind, sign in (("haemorrhage", 1.0), ("infarct", -1.0)):
        idx = np.flatnonzero(single & (big.meta["finding"] == kind))
        assert idx.size >= 5
        measured = np.array([_contrast(big, i) for i in idx])
        assert (np.sign(measured) == sign).all(), (kind, measured)
        assert np.sign(big.meta["contrast_hu"][idx]).tolist() == [sign] * idx.size
    hae = [_contrast(big, i) for i in np.flatnonzero(single & (big.meta["finding"] == "haemorrhage"))]
    inf = [_contrast(big, i) for i in np.flatnonzero(single & (big.meta["finding"] == "infarct"))]
    assert np.median(hae) > 20 and -15 < np.median(inf) < -3  # HU, in line with the nominal ranges
    for i in np.flatnonzero(single & (big.meta["finding"] == "metastasis")):
        m = big.finding_masks[i].numpy()
        core = ndi.binary_erosion(m, iterations=2)
        if core.sum() >= 2:
            img = big.images[i, 0].numpy()
            assert img[m & ~core].mean() > img[core].mean()


@pytest.mark.parametrize("n, prevalence", [(64, 0.5), (50, 0.3), (7, 0.5), (20, 0.0), (20, 1.0)])
def test_prevalence_is_honoured(n, prevalence):
    ds = make_ct_lesions(n, size=SIZE, seed=0, split="val", prevalence=prevalence)
    assert int(ds.labels.sum()) == round(n * prevalence)
    assert ((ds.meta["finding"] != "none") == (ds.labels.numpy() == 1)).all()
    assert (ds.finding_masks.any(dim=(1, 2)) == (ds.labels == 1)).all()


def test_size_changes_resolution_not_patients():
    small = make_ct_lesions(8, size=64, seed=5, split="val")
    large = make_ct_lesions(8, size=128, seed=5, split="val")
    assert torch.equal(small.labels, large.labels)
    for key in ("finding", "base_slice", "angle_deg", "contrast_hu"):
        assert (small.meta[key] == large.meta[key]).all(), key
    pooled = torch.nn.functional.avg_pool2d(large.anatomy_masks.float()[:, None], 2)[:, 0] > 0.5
    assert (pooled == small.anatomy_masks).float().mean() > 0.97
    assert small.attrs["output_pixel_spacing_mm"] == 2 * large.attrs["output_pixel_spacing_mm"]


def test_invalid_arguments():
    with pytest.raises(ValueError):
        make_ct_lesions(4, prevalence=1.5)
    with pytest.raises(ValueError):
        make_ct_lesions(4, size=32)
    with pytest.raises(ValueError):
        make_ct_lesions(-1)
    empty = make_ct_lesions(0, size=SIZE)
    assert len(empty) == 0 and empty.images.shape == (0, 1, SIZE, SIZE)
