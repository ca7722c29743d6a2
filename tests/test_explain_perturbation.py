"""Perturbation explainers (occlusion, RISE, KernelSHAP, LIME, feature ablation) and Score-CAM: known answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from torch import nn

from medlit.explain import EXPLAINERS
from medlit.explain.rise import rise_masks
from medlit.explain.superpixel_shap import grid_superpixels


class RegionModel(nn.Module):
    """logit_1 = 4 x (mean of the image over rows 4:12, columns 20:28) - 2; logit_0 = 0."""

    def forward(self, x):
        score = 4 * x[:, :, 4:12, 20:28].mean(dim=(1, 2, 3)) - 2
        return torch.stack([torch.zeros_like(score), score], dim=1)


class TinyConvNet(nn.Module):
    """A small CNN with a known last-stage feature map (6 channels at half resolution)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(6, 3)

    @property
    def feature_layers(self):
        return {"last": self.block}

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


def linear_model(size: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 2)).eval()


def test_occlusion_equals_captum(tiny_model, squares):
    x, target = squares.images[:3], torch.tensor([1, 0, 1])
    baselines = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x).contiguous()
    expected = Occlusion(tiny_model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2),
                                               baselines=baselines, target=target,
                                               perturbations_per_eval=32).sum(dim=1)
    torch.testing.assert_close(EXPLAINERS["occlusion"].fn(tiny_model, x, target), expected.detach(),
                               rtol=1e-4, atol=1e-6)


def test_rise_finds_the_region_the_model_reads():
    x = 0.3 * torch.rand(2, 1, 32, 32)
    x[:, :, 4:12, 20:28] = 1.0  # a bright finding where the model looks, darker elsewhere
    for substrate in ("mean", "zeros"):
        maps = EXPLAINERS["rise"].fn(RegionModel(), x, torch.tensor([1, 1]), n_masks=1000, substrate=substrate)
        for m in maps:
            row, col = divmod(int(m.argmax()), 32)
            assert 4 <= row < 12 and 20 <= col < 28


def test_rise_masks_are_cached_and_correct():
    masks = rise_masks(32, 32, 1000, 8, 0.5, 0)
    hits = rise_masks.cache_info().hits
    EXPLAINERS["rise"].fn(RegionModel(), torch.rand(1, 1, 32, 32), torch.tensor([1]), n_masks=1000)
    assert rise_masks.cache_info().hits == hits + 1
    assert rise_masks(32, 32, 1000, 8, 0.5, 0) is masks
    assert masks.shape == (1000, 32, 32) and masks.device.type == "cpu"
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.5) < 0.03
    assert abs(float(rise_masks(32, 32, 1000, 8, 0.2, 0).mean()) - 0.2) < 0.03
    assert not torch.equal(masks, rise_masks(32, 32, 1000, 8, 0.5, 1))


def test_scorecam_equals_its_definition():
    """Per image, per channel: H_k = minmax(upsample(A_k)); s_k = p_t(x H_k) - p_t(0); w = softmax_k(s);
    ReLU(sum_k w_k A_k) upsampled."""
    model = TinyConvNet().eval()
    x, target = torch.rand(3, 1, 16, 16), torch.tensor([0, 2, 1])
    expected = []
    with torch.no_grad():
        for image, t in zip(x, target.tolist()):
            activations = model.block(model.stem(image[None]))[0]  # (K, 8, 8)
            base = torch.softmax(model(torch.zeros(1, 1, 16, 16)), dim=1)[0, t]
            increase = []
            for a in activations:
                up = F.interpolate(a[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
                h = (up - up.min()) / (up.max() - up.min()) if up.max() > up.min() else torch.zeros_like(up)
                increase.append(torch.softmax(model((image * h)[None]), dim=1)[0, t] - base)
            weights = torch.softmax(torch.stack(increase), dim=0)
            cam = torch.relu((weights[:, None, None] * activations).sum(dim=0))
            expected.append(F.interpolate(cam[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0])
    maps = EXPLAINERS["scorecam"].fn(model, x, target, batch_size=5)  # chunks that split an image's channels
    torch.testing.assert_close(maps, torch.stack(expected), rtol=1e-4, atol=1e-6)
    assert not model.block._forward_hooks  # the hook was removed


@pytest.mark.parametrize("name", ["kernel_shap", "feature_ablation"])
def test_superpixel_attribution_of_a_linear_model_is_exact(name):
    """For f = w . x + b and a removed cell set to the image mean m, a cell's Shapley value (and its ablation
    effect) is sum over the cell of w_t (x - m)."""
    size, cells = 16, 4
    model, x, target = linear_model(size), torch.rand(2, 1, size, size), torch.tensor([1, 0])
    kwargs = {"n_samples": 200} if name == "kernel_shap" else {}
    maps = EXPLAINERS[name].fn(model, x, target, cells=cells, **kwargs)
    segments = grid_superpixels(size, size, cells)[0, 0]
    w = model[1].weight.detach()[target].view(2, size, size)
    contribution = w * (x[:, 0] - x.mean(dim=(1, 2, 3))[:, None, None])
    for b in range(2):
        expected = torch.zeros(size, size)
        for cell in range(cells * cells):
            expected[segments == cell] = contribution[b][segments == cell].sum()
        torch.testing.assert_close(maps[b], expected, rtol=1e-3, atol=1e-4)


def test_grid_superpixels_are_equal_squares():
    segments = grid_superpixels(128, 128, 8)
    assert segments.shape == (1, 1, 128, 128)
    assert torch.equal(torch.bincount(segments.flatten()), torch.full((64,), 256))


def test_lime_ranks_the_cells_of_a_linear_model():
    """LIME's Lasso surrogate is not exact, but on a linear model it must order strong cells correctly."""
    size, cells = 16, 4
    model, x = linear_model(size, seed=1), torch.rand(1, 1, size, size)
    maps = EXPLAINERS["lime"].fn(model, x, torch.tensor([1]), cells=cells, n_samples=300)
    segments = grid_superpixels(size, size, cells)[0, 0]
    w = model[1].weight.detach()[1].view(size, size)
    truth = torch.stack([(w * (x[0, 0] - x.mean()))[segments == c].sum() for c in range(cells * cells)])
    estimate = torch.stack([maps[0][segments == c][0] for c in range(cells * cells)])
    assert int(estimate.argmax()) == int(truth.argmax()) and int(estimate.argmin()) == int(truth.argmin())


@pytest.mark.parametrize("name", ["rise", "kernel_shap", "lime"])
def test_stochastic_methods_are_reproducible_and_leave_the_global_rng_alone(name, tiny_model, squares):
    x, target = squares.images[:2], torch.ones(2, dtype=torch.long)
    kwargs = {"n_masks": 300} if name == "rise" else {"n_samples": 64}
    state = torch.get_rng_state()
    first = EXPLAINERS[name].fn(tiny_model, x, target, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(10)  # moving the global RNG must not change the maps
    torch.testing.assert_close(EXPLAINERS[name].fn(tiny_model, x.clone(), target, **kwargs), first, rtol=0, atol=0)
    if name != "rise":  # RISE uses the same masks for every image; the samplers are seeded per image
        other = EXPLAINERS[name].fn(tiny_model, x, target, seed=1, **kwargs)
        assert not torch.equal(other, first)


def test_bad_substrate_is_refused(tiny_model, squares):
    with pytest.raises(ValueError, match="substrate"):
        EXPLAINERS["rise"].fn(tiny_model, squares.images[:1], torch.ones(1, dtype=torch.long), substrate="black")
