"""The substrate check: known answers on a model that only sees the finding's brightness."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from medlit.studies.substrate_check import FILL_NAMES, finding_removal, inverted_metrics, substrate_fills


class BrightSpotDetector(torch.nn.Module):
    """p(finding) rises with the brightest pixel: black (and any fill darker than the finding) removes it."""

    def forward(self, x):
        peak = x.flatten(1).amax(dim=1)
        return torch.stack([torch.zeros_like(peak), 40 * (peak - 0.7)], dim=1)


class DarkSpotDetector(torch.nn.Module):
    """p(finding) rises with the darkest pixel's darkness: black *adds* evidence, the other fills do not."""

    def forward(self, x):
        low = x.flatten(1).amin(dim=1)
        return torch.stack([torch.zeros_like(low), 40 * (0.2 - low)], dim=1)


def test_black_removes_a_bright_finding_for_a_brightness_detector(squares):
    table = finding_removal(BrightSpotDetector(), squares).set_index("finding pixels replaced by")
    original = table.loc["nothing (original image)", "mean probability of finding"]
    black = table.loc["black (zeros)", "mean probability of finding"]
    assert original > 0.99 and black < 0.01
    assert (table.n == 8).all()
    # explained score = half the logit difference: 20 (0.9 - 0.7) = 4 on the original
    assert table.loc["nothing (original image)", "mean explained score"] == pytest.approx(4.0, abs=1e-4)
    assert table.loc["black (zeros)", "mean drop in explained score"] > 3
    assert set(table.substrate.dropna()) == {"zeros", "blur", "mean", "anatomy_mean", "road"}


def test_fills_have_the_image_shape_and_the_organ_mean(squares):
    fills = substrate_fills(squares)
    assert set(fills) == set(FILL_NAMES)
    assert all(f.shape == squares.images.shape for f in fills.values())
    organ = fills["mean of the anatomy mask"]
    assert organ[0].unique().numel() == 1
    assert float(organ[0, 0, 0, 0]) == pytest.approx(float(squares.images[0].mean()), rel=1e-5)
    road = fills["noisy linear imputation (ROAD)"]
    outside = ~squares.finding_masks[:, None]
    assert torch.equal(road[outside], squares.images[outside])  # ROAD keeps every known pixel
    inside = squares.finding_masks[:, None]
    assert float(road[inside].mean()) < 0.45  # the bright square (0.9) is imputed from the background (0.3)


def test_inverted_metrics_names_the_metric_whose_substrate_fails(squares):
    bright = finding_removal(BrightSpotDetector(), squares)
    assert inverted_metrics(bright) == {None: {}}  # every substrate removes a bright square
    dark = finding_removal(DarkSpotDetector(), squares).assign(**{"data set": "dark"})
    table = pd.concat([bright.assign(**{"data set": "bright"}), dark]).set_index(["data set",
                                                                                 "finding pixels replaced by"])
    verdicts = inverted_metrics(table)
    assert verdicts["bright"] == {}
    assert set(verdicts) == {"bright", "dark"}
    # the dark detector does not see the bright square: no substrate lowers its score
    assert set(verdicts["dark"]) == {"insertion_auc", "deletion_auc", "road_morf"}
    assert all("explained score" in reason for reason in verdicts["dark"].values())


def test_inverted_metrics_reports_a_raise():
    table = pd.DataFrame({"finding pixels replaced by": ["nothing (original image)", "blurred", "road"],
                          "substrate": [None, "blur", "road"], "mean explained score": [1.0, 1.4, 0.2],
                          "mean drop in explained score": [0.0, -0.4, 0.8]})
    verdicts = inverted_metrics(table)[None]
    assert set(verdicts) == {"insertion_auc", "deletion_auc"}
    assert "raises the explained score by 0.40" in verdicts["deletion_auc"]
