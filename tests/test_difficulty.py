import math

import torch

from medlit.data.difficulty import lesion_area_fraction, lesion_contrast


def test_lesion_contrast_of_a_bright_square_on_grey_is_its_step():
    images = torch.full((2, 1, 16, 16), 0.25)
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 6:10, 6:10] = True
    images[0, 0, 6:10, 6:10] = 0.75
    masks[1] = True  # no surrounding tissue: undefined
    contrast = lesion_contrast(images, masks, ring_px=2)
    assert math.isclose(float(contrast[0]), 0.5, abs_tol=1e-6)
    assert math.isnan(float(contrast[1]))
    torch.testing.assert_close(lesion_area_fraction(masks), torch.tensor([16 / 256, 1.0]))


def test_lesion_contrast_averages_channels_and_ignores_pixels_beyond_the_ring():
    images = torch.zeros(1, 3, 20, 20)
    images[0, :, :, :2] = 1.0  # far from the lesion: not in the ring
    masks = torch.zeros(1, 20, 20, dtype=torch.bool)
    masks[0, 9:11, 9:11] = True
    images[0, 0, 9:11, 9:11] = 0.9  # one channel of three
    assert math.isclose(float(lesion_contrast(images, masks, ring_px=3)[0]), 0.3, abs_tol=1e-6)
