"""The fundus lesion set: real photograph, exact lesion masks and boxes, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlit.data.fundus import LESION_TYPES, _ma_templates, make_fundus_lesions
from medlit.data.sample import mask_to_box


@pytest.fixture(scope="module")
def fundus():
    return make_fundus_lesions(48, size=64, seed=0, split="test")


def test_shapes_range_and_labels(fundus):
    assert fundus.images.shape == (48, 3, 64, 64) and fundus.images.dtype == torch.float32
    assert float(fundus.images.min()) >= 0 and float(fundus.images.max()) <= 1
    assert set(fundus.labels.tolist()) == {0, 1}
    assert fundus.attrs["original_size"] == 1411 and fundus.name == "fundus-lesions"


def test_same_call_same_images_and_splits_differ():
    a = make_fundus_lesions(6, size=48, seed=3, split="val")
    b = make_fundus_lesions(6, size=48, seed=3, split="val")
    c = make_fundus_lesions(6, size=48, seed=3, split="train")
    assert torch.equal(a.images, b.images) and torch.equal(a.finding_masks, b.finding_masks)
    assert not torch.equal(a.images, c.images)


def test_boxes_are_the_tight_boxes_of_lesion_masks(fundus):
    for i in range(len(fundus)):
        boxes = fundus.boxes[i][~torch.isnan(fundus.boxes[i, :, 0])]
        if fundus.labels[i] == 0:
            assert len(boxes) == 0 and not fundus.finding_masks[i].any()
            continue
        assert len(boxes) >= 1
        # each box is tight around some lesion pixels, and together they cover the whole finding mask
        union = torch.zeros_like(fundus.finding_masks[i])
        for x0, y0, x1, y1 in boxes.int().tolist():
            patch = fundus.finding_masks[i, y0:y1, x0:x1]
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()
            union[y0:y1, x0:x1] = True
        assert not (fundus.finding_masks[i] & ~union).any()
        np.testing.assert_array_equal(
            mask_to_box(fundus.finding_masks[i].numpy()),
            [boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()])


def test_lesions_lie_on_the_retina_away_from_the_optic_disc(fundus):
    positives = fundus.labels == 1
    masks, anatomy = fundus.finding_masks[positives], fundus.anatomy_masks[positives]
    # lesion centres are drawn inside the anatomy mask; a soft edge may reach one or two pixels beyond it
    inside = (masks & anatomy).sum() / masks.sum()
    assert inside > 0.9


def test_lesions_have_their_colour(fundus):
    """Microaneurysms and haemorrhages are darker (green channel), exudates brighter, than the retina around."""
    test = make_fundus_lesions(96, size=96, seed=1, split="test")
    for kind, sign in (("haemorrhage", -1), ("hard exudate", 1)):
        rows = [i for i in range(len(test)) if test.meta["finding"][i] == kind]
        assert rows, kind
        diffs = []
        for i in rows:
            lesion = test.finding_masks[i]
            ring = torch.nn.functional.max_pool2d(lesion[None, None].float(), 7, 1, 3)[0, 0].bool() & ~lesion
            ring &= test.anatomy_masks[i]
            green = test.images[i, 1]
            diffs.append(float(green[lesion].mean() - green[ring].mean()))
        assert sign * np.median(diffs) > 0.02, (kind, diffs)


def test_microaneurysm_templates_come_from_the_real_crop():
    templates = _ma_templates()
    assert templates.shape == (2, 1, 13, 13)
    # peak 1 at (or next to) the centre: the blob detector found the dark dots, not a vessel
    for t in templates[:, 0]:
        row, col = divmod(int(t.argmax()), 13)
        assert abs(row - 6) <= 1 and abs(col - 6) <= 1 and float(t.max()) == pytest.approx(1.0)


def test_findings_name_lesion_types(fundus):
    names = set("+".join(fundus.meta["finding"]).split("+")) - {"none"}
    assert names <= set(LESION_TYPES) and names
    assert (fundus.meta["n_findings"][fundus.labels.numpy() == 1] >= 1).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="size"):
        make_fundus_lesions(4, size=8)
