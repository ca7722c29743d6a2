"""The substrate check: known answers on a model that only sees the finding's brightness."""

from __future__ import annotations

import pytest
import torch

from medlit.studies.substrate_check import finding_removal, substrate_fills


class BrightSpotDetector(torch.nn.Module):
    """p(finding) rises with the brightest pixel: black removes the evidence completely."""

    def forward(self, x):
        peak = x.flatten(1).amax(dim=1)
        return torch.stack([torch.zeros_like(peak), 40 * (peak - 0.7)], dim=1)


def test_black_removes_a_bright_finding_for_a_brightness_detector(squares):
    table = finding_removal(BrightSpotDetector(), squares).set_index("finding pixels replaced by")
    original = table.loc["nothing (original image)", "mean probability of finding"]
    black = table.loc["black (deletion's substrate)", "mean probability of finding"]
    assert original > 0.99 and black < 0.01
    assert (table.n == 8).all()


def test_fills_have_the_image_shape_and_the_organ_mean(squares):
    fills = substrate_fills(squares)
    assert all(f.shape == squares.images.shape for f in fills.values())
    organ = fills["mean of the anatomy mask"]
    assert organ[0].unique().numel() == 1
    assert float(organ[0, 0, 0, 0]) == pytest.approx(float(squares.images[0].mean()), rel=1e-5)
