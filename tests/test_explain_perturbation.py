"""Perturbation explainers (occlusion, RISE, KernelSHAP, LIME, feature ablation) and Score-CAM: known answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import FeatureAblation, Occlusion
from torch import nn

from medlit.explain import EXPLAINERS
from medlit.explain.occlusion import occlusion_windows
from medlit.explain.rise import rise_masks
from medlit.explain.superpixel_shap import grid_superpixels
from medlit.explain.targets import explained_score
from medlit.perturbation import PROTOCOL_SUBSTRATE, explained_forward, gaussian_blur

PERTURBATION_METHODS = ("rise", "occlusion", "feature_ablation", "kernel_shap", "lime")


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


def test_every_perturbation_method_defaults_to_the_protocol_substrate():
    import inspect

    for name in PERTURBATION_METHODS:
        parameters = inspect.signature(EXPLAINERS[name].fn).parameters
        fill = parameters.get("substrate", parameters.get("baseline"))
        assert fill.default == PROTOCOL_SUBSTRATE == "blur", name


def test_explained_forward_returns_every_classs_explained_score():
    model = linear_model(6)
    x = torch.rand(4, 1, 6, 6)
    out = explained_forward(model)(x)
    for k in range(2):
        torch.testing.assert_close(out[:, k], explained_score(model(x), torch.full((4,), k)))


def test_occlusion_equals_captum(tiny_model, squares):
    x, target = squares.images[:3], torch.tensor([1, 0, 1])
    baselines = gaussian_blur(x)  # the protocol substrate
    expected = Occlusion(explained_forward(tiny_model)).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2),
                                               baselines=baselines, target=target,
                                               perturbations_per_eval=32).sum(dim=1)
    torch.testing.assert_close(EXPLAINERS["occlusion"].fn(tiny_model, x, target), expected.detach(),
                               rtol=1e-4, atol=1e-6)


def test_occlusion_equals_captum_on_colour_images_and_windows_that_do_not_tile():
    """Three channels (a window covers all of them: the map sums captum's three equal channel attributions) and a
    14-pixel image that 4-pixel windows at stride 3 do not tile: the last window of each side is cut off by the
    border, as captum's, so that every pixel is covered."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 14 * 14, 2)).eval()
    x, target = torch.rand(2, 3, 14, 14), torch.tensor([1, 0])
    expected = Occlusion(explained_forward(model)).attribute(
        x, sliding_window_shapes=(3, 4, 4), strides=(3, 3, 3), baselines=gaussian_blur(x), target=target,
        perturbations_per_eval=8).sum(dim=1).detach()
    maps = EXPLAINERS["occlusion"].fn(model, x, target, window=4, stride=3, batch_size=7)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    assert occlusion_windows(14, 14, 4, 3).shape == (25, 14, 14) and occlusion_windows(14, 14, 4, 3).any(dim=0).all()
    assert occlusion_windows(128, 128, 16, 8).shape == (225, 128, 128)  # the registry's 226 passes, less one


def test_feature_ablation_equals_captum(tiny_model, squares):
    x, target = squares.images[:3], torch.tensor([1, 0, 1])
    expected = FeatureAblation(explained_forward(tiny_model)).attribute(
        x, baselines=gaussian_blur(x), target=target, feature_mask=grid_superpixels(*x.shape[-2:], 4),
        perturbations_per_eval=4).sum(dim=1)
    maps = EXPLAINERS["feature_ablation"].fn(tiny_model, x, target, cells=4, batch_size=5)
    torch.testing.assert_close(maps, expected.detach(), rtol=1e-4, atol=1e-6)


def test_occlusion_rejects_a_window_larger_than_the_image(tiny_model, squares):
    with pytest.raises(ValueError, match="window 99 must fit"):
        EXPLAINERS["occlusion"].fn(tiny_model, squares.images[:1], torch.tensor([1]), window=99)


def test_rise_finds_the_region_the_model_reads():
    x = 0.3 * torch.rand(2, 1, 32, 32)
    x[:, :, 4:12, 20:28] = 1.0  # a bright finding where the model looks, darker elsewhere
    for substrate in ("blur", "mean", "zeros"):
        maps = EXPLAINERS["rise"].fn(RegionModel(), x, torch.tensor([1, 1]), n_masks=1000, substrate=substrate)
        for m in maps:
            row, col = divmod(int(m.argmax()), 32)
            assert 4 <= row < 12 and 20 <= col < 28


class OffsetRegionModel(RegionModel):
    """RegionModel with a constant added to the finding's logit: the explained score moves by offset / 2."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x):
        logits = super().forward(x)
        return logits + torch.tensor([0.0, self.offset])


def test_rise_map_does_not_change_when_a_constant_is_added_to_the_score():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([1, 1])
    base = EXPLAINERS["rise"].fn(RegionModel(), x, target, n_masks=300)
    shifted = EXPLAINERS["rise"].fn(OffsetRegionModel(25.0), x, target, n_masks=300)
    torch.testing.assert_close(shifted, base, atol=1e-5, rtol=1e-4)


def test_rise_of_a_linear_score_is_the_mask_covariance_known_answer():
    """For s(x) = w . x + b (centred logit), s_i = const + sum_p a_p M_ip with a = w (x - fill), so the map is
    sum_p a_p C_pq / p_keep, C the masks' covariance (1/N) sum_i (M_ip - mean_i M_ip) M_iq: computed here from
    the masks directly, independent of the forward passes."""
    size, n_masks, p_keep = 12, 400, 0.5
    model = linear_model(size, seed=3)
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([1, 0])
    maps = EXPLAINERS["rise"].fn(model, x, target, n_masks=n_masks, cells=4, p_keep=p_keep, batch_size=64)
    masks = rise_masks(size, size, n_masks, 4, p_keep, 0).double().flatten(1)  # (N, P)
    covariance = (masks - masks.mean(dim=0)).T @ masks / n_masks  # (P, P)
    weight = model[1].weight.detach().double()
    centred_w = weight - weight.mean(dim=0)  # the explained score is the centred logit
    fill = gaussian_blur(x).double()  # the protocol substrate
    for b in range(2):
        a = centred_w[target[b]] * (x[b, 0] - fill[b, 0]).flatten()
        expected = (a @ covariance / p_keep).view(size, size).float()
        torch.testing.assert_close(maps[b], expected, atol=1e-4, rtol=1e-3)


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
    """Per image, per channel: H_k = minmax(upsample(A_k)); s_k = f_t(x H_k) - f_t(0), f_t the explained score
    (centred logit); w = softmax_k(s); ReLU(sum_k w_k A_k) upsampled."""
    model = TinyConvNet().eval()
    x, target = torch.rand(3, 1, 16, 16), torch.tensor([0, 2, 1])
    expected = []
    with torch.no_grad():
        for image, t in zip(x, target.tolist()):
            activations = model.block(model.stem(image[None]))[0]  # (K, 8, 8)
            logits = model(torch.zeros(1, 1, 16, 16))[0]
            base = logits[t] - logits.mean()
            increase = []
            for a in activations:
                up = F.interpolate(a[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
                h = (up - up.min()) / (up.max() - up.min()) if up.max() > up.min() else torch.zeros_like(up)
                logits = model((image * h)[None])[0]
                increase.append(logits[t] - logits.mean() - base)
            weights = torch.softmax(torch.stack(increase), dim=0)
            cam = torch.relu((weights[:, None, None] * activations).sum(dim=0))
            expected.append(F.interpolate(cam[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0])
    maps = EXPLAINERS["scorecam"].fn(model, x, target, batch_size=5)  # chunks that split an image's channels
    torch.testing.assert_close(maps, torch.stack(expected), rtol=1e-4, atol=1e-6)
    assert not model.block._forward_hooks  # the hook was removed


@pytest.mark.parametrize("name", ["kernel_shap", "feature_ablation"])
def test_superpixel_attribution_of_a_linear_model_is_exact(name):
    """For a linear model the explained score (centred logit) is (w_t - mean_k w_k) . x + const; with a removed
    cell set to the protocol substrate (the blurred image x_b), a cell's Shapley value (and its ablation effect) is
    the sum over the cell of (w_t - mean_k w_k) (x - x_b)."""
    size, cells = 16, 4
    model, x, target = linear_model(size), torch.rand(2, 1, size, size), torch.tensor([1, 0])
    kwargs = {"n_samples": 200} if name == "kernel_shap" else {}
    maps = EXPLAINERS[name].fn(model, x, target, cells=cells, **kwargs)
    segments = grid_superpixels(size, size, cells)[0, 0]
    weight = model[1].weight.detach()
    w = (weight - weight.mean(dim=0))[target].view(2, size, size)
    contribution = w * (x[:, 0] - gaussian_blur(x)[:, 0])
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
    weight = model[1].weight.detach()
    w = (weight[1] - weight.mean(dim=0)).view(size, size)
    truth = torch.stack([(w * (x[0, 0] - gaussian_blur(x)[0, 0]))[segments == c].sum() for c in range(cells * cells)])
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
        # LIME's lasso zeroes the untrained tiny model's weak responses: amplify them so the seed shows
        model = Amplified(tiny_model) if name == "lime" else tiny_model
        first = EXPLAINERS[name].fn(model, x, target, **kwargs)
        other = EXPLAINERS[name].fn(model, x, target, seed=1, **kwargs)
        assert first.abs().max() > 0 and not torch.equal(other, first)


class Amplified(torch.nn.Module):
    """``model`` with its logits multiplied by ``gain``: the same maps' shapes, stronger responses."""

    def __init__(self, model: torch.nn.Module, gain: float = 100.0) -> None:
        super().__init__()
        self.model, self.gain = model, gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * self.model(x)


def test_bad_substrate_is_refused(tiny_model, squares):
    with pytest.raises(ValueError, match="substrate"):
        EXPLAINERS["rise"].fn(tiny_model, squares.images[:1], torch.ones(1, dtype=torch.long), substrate="black")
