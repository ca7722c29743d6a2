"""Controls that a method must beat: known answers for each, and the data-input contract they rely on."""

from __future__ import annotations

import math

import pytest
import torch

from medlit.data.sample import SampleSet
from medlit.explain import (EXPLAINERS, MissingDataInput, data_inputs_for, explain_batched, missing_data_inputs,
                            register_explainer)
from medlit.explain.data_inputs import box_frequency
from tests.conftest import square_set

NO_TARGET = torch.zeros(1, dtype=torch.long)


def gaussian_1d(sigma: float) -> torch.Tensor:
    """The normalised sampled kernel of ``medlit.perturbation.blurred``: width 2 ceil(2 sigma) + 1."""
    radius = math.ceil(2 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-t**2 / (2 * sigma**2))
    return (k / k.sum()).float()


def boxed_set(boxes: list, labels: list, size: int = 32) -> SampleSet:
    """A set of blank images with the given boxes (None: no box) and labels."""
    n = len(labels)
    tensor = torch.full((n, 1, 4), float("nan"))
    for i, box in enumerate(boxes):
        if box is not None:
            tensor[i, 0] = torch.tensor(box, dtype=torch.float32)
    return SampleSet(name="boxes", split="train", images=torch.zeros(n, 1, size, size),
                     labels=torch.tensor(labels), boxes=tensor,
                     finding_masks=torch.zeros(n, size, size, dtype=torch.bool),
                     anatomy_masks=torch.ones(n, size, size, dtype=torch.bool))


def test_every_control_is_a_control_that_uses_no_model():
    controls = [n for n in EXPLAINERS.names() if EXPLAINERS[n].is_control]
    assert {"random", "centre_prior", "edge_map", "anatomy_prior", "box_prior"} <= set(controls)
    for name in controls:
        spec = EXPLAINERS[name]
        assert spec.forward_passes == 0 and spec.backward_passes == 0
        assert spec.long_name.endswith("(control, no model)")


# --------------------------------------------------------------------------------------- edge map

def test_edge_map_of_a_constant_image_is_zero():
    x = torch.full((2, 3, 32, 32), 0.7)
    maps = EXPLAINERS["edge_map"].fn(None, x, NO_TARGET.expand(2), anatomy_masks=torch.ones(2, 32, 32, dtype=bool))
    torch.testing.assert_close(maps, torch.zeros(2, 32, 32), rtol=0, atol=1e-6)


def test_edge_map_of_a_point_is_one_minus_the_kernel_centre_and_zero_beyond_the_kernel():
    """A unit impulse at (16, 16) of a 32 px image: blur(x) there is k0^2 (k0 the centre weight of the 1D
    kernel, sigma 1.28 px, width 7), so the map is 1 - k0^2 there, k_i k_j nearby, and 0 beyond the kernel."""
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 16, 16] = 1.0
    maps = EXPLAINERS["edge_map"].fn(None, x, NO_TARGET, anatomy_masks=torch.ones(1, 32, 32, dtype=bool))[0]
    k = gaussian_1d(32 / 25)
    assert len(k) == 7
    expected = torch.outer(k, k)
    expected[3, 3] = 1 - expected[3, 3]
    torch.testing.assert_close(maps[13:20, 13:20], expected, rtol=1e-5, atol=1e-6)
    maps[13:20, 13:20] = 0
    assert maps.abs().max() < 1e-6


def test_edge_map_is_zero_outside_the_anatomy_and_the_high_pass_inside():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    anatomy = torch.zeros(2, 32, 32, dtype=torch.bool)
    anatomy[0, 4:20, 6:30] = True
    anatomy[1, 10:, :] = True
    maps = EXPLAINERS["edge_map"].fn(None, x, NO_TARGET.expand(2), anatomy_masks=anatomy)
    assert (maps[~anatomy] == 0).all()
    unmasked = EXPLAINERS["edge_map"].fn(None, x, NO_TARGET.expand(2),
                                         anatomy_masks=torch.ones(2, 32, 32, dtype=bool))
    torch.testing.assert_close(maps[anatomy], unmasked[anatomy])
    assert (maps[anatomy] > 0).float().mean() > 0.9  # noise has edges almost everywhere


def test_edge_map_sums_the_channels():
    grey = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    ones = torch.ones(1, 32, 32, dtype=bool)
    fn = EXPLAINERS["edge_map"].fn
    torch.testing.assert_close(fn(None, grey.expand(1, 3, 32, 32), NO_TARGET, anatomy_masks=ones),
                               3 * fn(None, grey, NO_TARGET, anatomy_masks=ones))


def test_edge_map_rejects_masks_that_do_not_match_the_images():
    with pytest.raises(ValueError, match="edge_map.*anatomy_masks has shape"):
        EXPLAINERS["edge_map"].fn(None, torch.rand(2, 1, 32, 32), NO_TARGET.expand(2),
                                  anatomy_masks=torch.ones(1, 32, 32, dtype=bool))


# --------------------------------------------------------------------------------------- anatomy prior

def test_anatomy_prior_is_the_mask_whatever_the_image():
    anatomy = torch.zeros(2, 32, 32, dtype=torch.bool)
    anatomy[0, 5:25, 3:12] = True
    anatomy[1, 8:30, 20:31] = True
    fn = EXPLAINERS["anatomy_prior"].fn
    maps = fn(None, torch.rand(2, 1, 32, 32), NO_TARGET.expand(2), anatomy_masks=anatomy)
    assert maps.dtype == torch.float32
    torch.testing.assert_close(maps, anatomy.float())
    torch.testing.assert_close(fn(None, torch.zeros(2, 3, 32, 32), NO_TARGET.expand(2), anatomy_masks=anatomy), maps)


# --------------------------------------------------------------------------------------- box prior

def test_box_frequency_averages_the_boxed_positives_only():
    train = boxed_set([(0, 0, 8, 8), (4, 0, 12, 8), None, (20, 20, 30, 30)], labels=[1, 1, 1, 0])
    freq = box_frequency(train)
    assert freq.shape == (32, 32) and freq.dtype == torch.float32
    assert freq[0, 5] == 1.0 and freq[0, 1] == 0.5 and freq[0, 10] == 0.5  # two boxed positives, not three
    assert freq[25, 25] == 0.0  # the negative's box does not count
    assert box_frequency(boxed_set([None, (0, 0, 4, 4)], labels=[1, 0])) is None


def test_box_prior_of_a_single_training_box_peaks_at_its_centre():
    train = boxed_set([(13, 40, 18, 45)], labels=[1], size=64)  # columns 13..17, rows 40..44
    inputs = data_inputs_for(train, square_set(n=3, size=64))
    maps = EXPLAINERS["box_prior"].fn(None, torch.rand(3, 1, 64, 64), NO_TARGET.expand(3),
                                      box_prior=inputs["box_prior"])
    assert divmod(int(maps[0].argmax()), 64) == (42, 15)
    torch.testing.assert_close(maps[1], maps[0])
    torch.testing.assert_close(maps[2], maps[0])


@pytest.mark.parametrize("size", [64, 128])
def test_box_prior_smooths_with_sigma_three_pixels_at_128(size):
    """A one-pixel prior far from the borders becomes the outer product of the sampled Gaussian, sigma = 3 px
    per 128 px of the side (1.5 px, width 7 at 64 px; 3 px, width 13 at 128 px)."""
    prior = torch.zeros(size, size)
    c = size // 2
    prior[c, c] = 1.0
    maps = EXPLAINERS["box_prior"].fn(None, torch.zeros(1, 1, size, size), NO_TARGET, box_prior=prior)[0]
    k = gaussian_1d(3.0 * size / 128)
    r = len(k) // 2
    assert len(k) == (7 if size == 64 else 13)
    torch.testing.assert_close(maps[c - r:c + r + 1, c - r:c + r + 1], torch.outer(k, k), rtol=1e-5, atol=1e-7)
    assert float(maps.sum()) == pytest.approx(1.0, abs=1e-5)


def test_box_prior_rejects_a_prior_of_another_resolution():
    with pytest.raises(ValueError, match="box_prior.*32 x 32"):
        EXPLAINERS["box_prior"].fn(None, torch.zeros(1, 1, 32, 32), NO_TARGET, box_prior=torch.zeros(64, 64))


# --------------------------------------------------------------------------------------- data inputs

def test_data_inputs_for_gives_the_explained_anatomy_and_the_training_prior():
    train, explained = square_set(split="train", seed=1), square_set(n=5, seed=2)
    explained.anatomy_masks = torch.rand(5, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.5
    inputs = data_inputs_for(train, explained)
    assert set(inputs) == {"anatomy_masks", "box_prior"}
    assert torch.equal(inputs["anatomy_masks"], explained.anatomy_masks)
    positives = train.box_masks()[train.labels == 1].float()
    torch.testing.assert_close(inputs["box_prior"], positives.mean(dim=0))


def test_without_training_boxes_only_the_box_prior_is_missing(tiny_model):
    negatives = boxed_set([None, None], labels=[0, 0])
    inputs = data_inputs_for(negatives, square_set(n=2))
    assert set(inputs) == {"anatomy_masks"}
    assert missing_data_inputs("box_prior", inputs) == ["box_prior"]
    assert missing_data_inputs("edge_map", inputs) == [] and missing_data_inputs("gradcam", None) == []
    with pytest.raises(MissingDataInput, match="'box_prior' needs data input.*'box_prior'"):
        explain_batched("box_prior", tiny_model, torch.rand(2, 1, 32, 32), NO_TARGET.expand(2), data_inputs=inputs)


def test_data_inputs_for_refuses_sets_of_different_resolution():
    with pytest.raises(ValueError, match="training images are"):
        data_inputs_for(square_set(size=64, split="train"), square_set(size=32))


def test_a_data_set_input_is_passed_whole_even_when_its_side_equals_the_image_count(tiny_model):
    """32 images of 32 px: the (32, 32) prior has as many rows as there are images, and must not be sliced."""
    prior = torch.rand(32, 32, generator=torch.Generator().manual_seed(0))
    x = torch.rand(32, 1, 32, 32)
    maps, _ = explain_batched("box_prior", tiny_model, x, torch.ones(32, dtype=torch.long),
                              data_inputs={"box_prior": prior}, batch_size=5)
    one = EXPLAINERS["box_prior"].fn(None, x[:1], NO_TARGET, box_prior=prior)[0]
    torch.testing.assert_close(maps, one.expand(32, 32, 32))


def test_a_per_image_input_of_the_wrong_length_is_refused(tiny_model):
    with pytest.raises(MissingDataInput, match="'edge_map'.*'anatomy_masks' has 3 entries.*\\(4\\)"):
        explain_batched("edge_map", tiny_model, torch.rand(4, 1, 32, 32), NO_TARGET.expand(4),
                        data_inputs={"anatomy_masks": torch.ones(3, 32, 32, dtype=bool)})


def test_a_data_input_given_as_a_setting_is_refused(tiny_model):
    masks = torch.ones(2, 32, 32, dtype=bool)
    with pytest.raises(ValueError, match="anatomy_masks must be given in data_inputs"):
        explain_batched("edge_map", tiny_model, torch.rand(2, 1, 32, 32), NO_TARGET.expand(2),
                        data_inputs={"anatomy_masks": masks}, anatomy_masks=masks)


def test_registering_an_undeclared_data_input_is_refused():
    with pytest.raises(ValueError, match="'typo_control' declares unknown data input.*'anatomy_mask'.*anatomy_masks"):
        register_explainer("typo_control", family="control", citation="", long_name="x",
                           data_inputs=("anatomy_mask",))
    assert "typo_control" not in EXPLAINERS
