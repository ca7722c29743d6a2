"""Tests of the procedural chest-radiograph phantom (medlit.data.phantom)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlit.data.phantom import FINDING_TYPES, GENERATOR_VERSION, make_cxr_phantom, split_seed
from medlit.data.sample import SampleSet, boxes_to_mask, mask_to_box

N = 48
SIZE = 64


@pytest.fixture(scope="module")
def train() -> SampleSet:
    return make_cxr_phantom(N, size=SIZE, seed=3, split="train")


@pytest.fixture(scope="module")
def big() -> SampleSet:
    """Enough positives at the quick-profile size to meet every finding type and some second nodules."""
    return make_cxr_phantom(160, size=128, seed=1, split="test")


def test_same_arguments_give_identical_output(train):
    again = make_cxr_phantom(N, size=SIZE, seed=3, split="train")
    assert torch.equal(train.images, again.images)
    assert torch.equal(train.labels, again.labels)
    assert torch.equal(train.finding_masks, again.finding_masks)
    assert torch.equal(train.anatomy_masks, again.anatomy_masks)
    assert torch.allclose(train.boxes, again.boxes, equal_nan=True)
    for key, values in train.meta.items():
        if values.dtype.kind == "f":
            np.testing.assert_array_equal(values, again.meta[key])
        else:
            assert (values == again.meta[key]).all(), key


def test_other_split_or_seed_gives_other_images(train):
    val = make_cxr_phantom(N, size=SIZE, seed=3, split="val")
    other = make_cxr_phantom(N, size=SIZE, seed=4, split="train")
    for ds in (val, other):
        per_image = (ds.images - train.images).abs().flatten(1).amax(dim=1)
        assert (per_image > 0.05).all()
    assert split_seed(3, "train") != split_seed(3, "val")
    assert split_seed(3, "train") == split_seed(3, "train")  # stable, not Python's salted hash()


def test_shapes_dtypes_and_range(train):
    assert train.name == "cxr-phantom" and train.split == "train"
    assert train.images.shape == (N, 1, SIZE, SIZE) and train.images.dtype == torch.float32
    assert train.images.min() >= 0.0 and train.images.max() <= 1.0
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) <= {0, 1}
    assert train.boxes.shape == (N, 2, 4) and train.boxes.dtype == torch.float32
    assert train.finding_masks.shape == (N, SIZE, SIZE) and train.finding_masks.dtype == torch.bool
    assert train.anatomy_masks.shape == (N, SIZE, SIZE) and train.anatomy_masks.dtype == torch.bool
    for key in ("finding", "confounder", "contrast", "sample_id"):
        assert len(train.meta[key]) == N
    assert train.meta["confounder"].dtype == bool
    assert train.meta["sample_id"][12] == "cxr-phantom-train-00012"
    assert set(train.meta["finding"]) <= {"none", *FINDING_TYPES}
    assert train.attrs["original_size"] == 256 and train.attrs["seed"] == 3
    assert train.attrs["generator"] == GENERATOR_VERSION
    assert train.attrs["class_names"] == ["no finding", "finding"]
    assert train.attrs["size"] == SIZE


def test_images_look_like_a_chest_radiograph(train):
    """Lungs dark, mediastinum and abdomen bright, air outside the body darkest."""
    img = train.images[:, 0]
    lung = img[train.anatomy_masks].mean()
    centre = img[:, SIZE // 2 - 6: SIZE // 2 - 2, SIZE // 2 - 2: SIZE // 2 + 2].mean()  # mediastinum / spine
    abdomen = img[:, -6:, SIZE // 4: 3 * SIZE // 4].mean()
    corner_air = img[:, -4:, :2].mean()
    assert corner_air < lung < centre
    assert lung < abdomen
    lung_frac = train.anatomy_masks.float().mean(dim=(1, 2))
    assert (lung_frac > 0.12).all() and (lung_frac < 0.45).all()
    # two lung fields, one each side of the midline
    assert train.anatomy_masks[:, :, : SIZE // 2].any(dim=(1, 2)).all()
    assert train.anatomy_masks[:, :, SIZE // 2:].any(dim=(1, 2)).all()


@pytest.mark.parametrize("n, prevalence", [(48, 0.5), (50, 0.3), (7, 0.5), (20, 0.0), (20, 1.0)])
def test_exact_positive_count(n, prevalence):
    ds = make_cxr_phantom(n, size=SIZE, seed=0, split="val", prevalence=prevalence)
    assert int(ds.labels.sum()) == round(n * prevalence)
    assert ((ds.meta["finding"] != "none") == (ds.labels.numpy() == 1)).all()


def test_labels_are_shuffled():
    ds = make_cxr_phantom(40, size=SIZE, seed=0, split="train")
    labels = ds.labels.tolist()
    assert labels != sorted(labels) and labels != sorted(labels, reverse=True)


def test_positives_have_exact_masks_and_tight_boxes(big):
    for ds in (big,):
        for i in range(len(ds)):
            s = ds[i]
            if s.label == 0:
                assert not s.finding_mask.any()
                assert s.boxes.shape == (0, 4)
                assert s.meta["contrast"] == 0.0
                continue
            assert s.finding_mask.any()
            assert s.boxes.shape[0] == s.meta["n_findings"] >= 1
            # the hull of the boxes is the tight box of the mask, and the boxes cover exactly the mask's pixels
            hull = np.array([s.boxes[:, 0].min(), s.boxes[:, 1].min(), s.boxes[:, 2].max(), s.boxes[:, 3].max()])
            np.testing.assert_array_equal(hull, mask_to_box(s.finding_mask))
            covered = boxes_to_mask(torch.from_numpy(s.boxes)[None], ds.image_size)[0].numpy()
            assert not (s.finding_mask & ~covered).any()
            if s.boxes.shape[0] == 1:
                np.testing.assert_array_equal(s.boxes[0], mask_to_box(s.finding_mask))
            else:  # two nodules: each box touches the mask on all four of its edges
                for x0, y0, x1, y1 in s.boxes.astype(int):
                    inner = s.finding_mask[y0:y1, x0:x1]
                    assert inner[0].any() and inner[-1].any() and inner[:, 0].any() and inner[:, -1].any()
            assert s.meta["contrast"] > 0.0


def test_every_finding_type_occurs_and_some_are_subtle(big):
    kinds = set(big.meta["finding"][big.labels.numpy() == 1])
    assert kinds == set(FINDING_TYPES)
    contrast = big.meta["contrast"][big.labels.numpy() == 1]
    assert contrast.min() < 0.5 * np.median(contrast)
    assert (big.meta["n_findings"] == 2).any()


def test_findings_lie_in_the_lungs(big, train):
    for ds in (big, train):
        pos = ds.labels == 1
        fm, lung = ds.finding_masks[pos], ds.anatomy_masks[pos]
        inside = (fm & lung).sum(dim=(1, 2)).float() / fm.sum(dim=(1, 2)).float()
        assert inside.min() >= 0.9
        assert inside.mean() >= 0.98
        consolidation = torch.from_numpy(ds.meta["finding"][pos.numpy()] == "consolidation")
        if consolidation.any():  # confined to the lung exactly
            assert (inside[consolidation] == 1.0).all()


def test_findings_overlap_ribs_and_vary_in_size(big):
    pos = big.labels.numpy() == 1
    area = big.meta["finding_area"][pos]
    kinds = big.meta["finding"][pos]
    assert np.median(area[kinds == "nodule"]) < np.median(area[kinds == "mass"])
    assert area.min() >= 1


def test_confounder_correlated_in_train_only():
    kw = dict(size=SIZE, seed=2, confounder_strength=1.0)
    train = make_cxr_phantom(60, split="train", **kw)
    test = make_cxr_phantom(60, split="test", **kw)
    y_tr, c_tr = train.labels.numpy() == 1, train.meta["confounder"]
    assert (c_tr == y_tr).all()  # strength 1: exactly the positives carry the marker
    y_te, c_te = test.labels.numpy() == 1, test.meta["confounder"]
    assert c_te[y_te].sum() == round(y_te.sum() / 2) and c_te[~y_te].sum() == round((~y_te).sum() / 2)
    # the marker is drawn where meta says, as bright pixels in a top corner
    for ds in (train, test):
        for i in np.flatnonzero(ds.meta["confounder"])[:5]:
            x0, y0, x1, y1 = ds.meta["marker_box"][i].astype(int)
            assert y1 <= SIZE // 4 and (x1 <= SIZE // 4 or x0 >= 3 * SIZE // 4)
            assert ds.images[i, 0, y0:y1, x0:x1].max() > 0.8
        assert np.isnan(ds.meta["marker_box"][~ds.meta["confounder"]]).all()


@pytest.mark.parametrize("strength", [0.0, 0.5])
def test_confounder_partial_and_default(strength):
    ds = make_cxr_phantom(80, size=SIZE, seed=0, split="train", confounder_strength=strength)
    y, c = ds.labels.numpy() == 1, ds.meta["confounder"]
    assert c[y].sum() == round(y.sum() * (0.5 + strength / 2))
    assert c[~y].sum() == round((~y).sum() * (0.5 - strength / 2))
    assert ds.attrs["confounder_strength"] == strength


def test_size_changes_resolution_not_patients():
    small = make_cxr_phantom(8, size=64, seed=5, split="val")
    large = make_cxr_phantom(8, size=128, seed=5, split="val")
    assert torch.equal(small.labels, large.labels)
    assert (small.meta["finding"] == large.meta["finding"]).all()
    pooled = torch.nn.functional.avg_pool2d(large.anatomy_masks.float()[:, None], 2)[:, 0] > 0.5
    agree = (pooled == small.anatomy_masks).float().mean()
    assert agree > 0.97


def test_invalid_arguments():
    with pytest.raises(ValueError):
        make_cxr_phantom(4, prevalence=1.5)
    with pytest.raises(ValueError):
        make_cxr_phantom(4, confounder_strength=-0.1)
    with pytest.raises(ValueError):
        make_cxr_phantom(4, size=16)
    empty = make_cxr_phantom(0, size=SIZE)
    assert len(empty) == 0 and empty.images.shape == (0, 1, SIZE, SIZE)


def test_marker_counterfactuals_change_only_the_marker():
    kw = dict(size=SIZE, seed=7, split="test")
    on = make_cxr_phantom(24, force_marker=True, **kw)
    off = make_cxr_phantom(24, force_marker=False, **kw)
    default = make_cxr_phantom(24, **kw)
    assert on.meta["confounder"].all() and not off.meta["confounder"].any()
    assert torch.equal(on.labels, off.labels) and torch.equal(on.finding_masks, off.finding_masks)
    near = torch.zeros(24, SIZE, SIZE, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(on.meta["marker_box"].astype(int)):
        near[i, max(0, y0 - 4): y1 + 4, max(0, x0 - 4): x1 + 4] = True  # the box grown by the blur's reach
    diff = (on.images[:, 0] - off.images[:, 0]).abs()
    assert (diff[~near] == 0).all() and (diff[near].amax() > 0.3)
    carried = torch.from_numpy(default.meta["confounder"])
    assert torch.equal(default.images[carried], on.images[carried])
    assert torch.equal(default.images[~carried], off.images[~carried])
