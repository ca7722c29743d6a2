"""Gradient, CAM and relevance explainers: each against its definition, captum, or a known answer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from captum.attr import GradientShap, GuidedBackprop, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from monai.networks.nets import ResNet
from torch import nn

from medlit.explain import EXPLAINERS
from medlit.models.resnet_lrp import lrp_ready
from medlit.explain.gradcam_pp import gradcam_pp
from medlit.explain.gradient_shap import gradient_shap_draws
from medlit.explain.integrated_gradients import baseline_for, integrated_gradients_with_delta
from medlit.explain.lrp import composite_rules, epsilon_rules, lrp_composite, lrp_epsilon, relevance
from medlit.explain.seeding import image_normal
from medlit.models import ModelConfig, build_model
from medlit.models.resnet import ARCHITECTURES, ResNetClassifier
from medlit.perturbation import blurred, gaussian_blur

NEW_METHODS = ["input_x_gradient", "smoothgrad", "integrated_gradients", "integrated_gradients_blur",
               "gradient_shap", "gradcam_pp", "guided_backprop", "guided_gradcam", "lrp_epsilon", "lrp_composite"]


def scrambled_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial statistics and affine parameters, so that folding them matters."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(0.5 * torch.randn(c, generator=g))
            module.running_var.copy_(0.5 + torch.rand(c, generator=g))
            module.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            module.bias.data.copy_(0.3 * torch.randn(c, generator=g))
    return model


def bias_free(model: nn.Module) -> nn.Module:
    """No bias anywhere: batch norm shifts and running means, convolution (shortcut) and dense biases and the
    input mean all zero."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.zero_()
        if isinstance(module, (nn.BatchNorm2d, nn.Conv2d, nn.Linear)) and module.bias is not None:
            module.bias.data.zero_()
    model.mean.zero_()
    return model


def target_logit(model, x, target):
    with torch.no_grad():
        return model(x).gather(1, target[:, None])[:, 0]


@pytest.mark.parametrize("baseline", ["black", "blur"])
@pytest.mark.parametrize("n_steps", [32, 64])
def test_integrated_gradients_completeness(tiny_model, squares, baseline, n_steps):
    """Sum of attributions = f(x) - f(baseline), up to the quadrature error.

    The network is piecewise linear, so the integrand is piecewise constant along the path and Gauss-Legendre
    gains nothing over a Riemann sum: the error is that of a few kinks per step (measured: <= 2.4e-3 at 32 and
    64 steps on this model). The tolerance is 1 % of the logit scale |f(x)| + |f(baseline)|.
    """
    x, target = squares.images[:4], torch.tensor([0, 1, 0, 1])
    maps, delta = integrated_gradients_with_delta(tiny_model, x, target, baseline=baseline, n_steps=n_steps)
    f_x, f_b = target_logit(tiny_model, x, target), target_logit(tiny_model, baseline_for(x, baseline), target)
    torch.testing.assert_close(maps.sum(dim=(1, 2)) - (f_x - f_b), delta, rtol=0, atol=1e-5)  # captum's delta
    assert (delta.abs() <= 1e-2 * (f_x.abs() + f_b.abs())).all()


def test_integrated_gradients_registered_maps_and_blur_baseline(tiny_model, squares):
    x, target = squares.images[:2], torch.tensor([0, 1])
    torch.testing.assert_close(EXPLAINERS["integrated_gradients_blur"].fn(tiny_model, x, target),
                               integrated_gradients_with_delta(tiny_model, x, target, baseline="blur")[0])
    # sigma = side / 25 (5.1 px at 128 px), kernel 2 ceil(2 sigma) + 1
    torch.testing.assert_close(blurred(x), gaussian_blur(x, kernel_size=7, sigma=32 / 25))
    torch.testing.assert_close(blurred(torch.full((1, 1, 128, 128), 0.3)), torch.full((1, 1, 128, 128), 0.3))
    with pytest.raises(ValueError, match="black, blur"):
        baseline_for(x, "grey")


def gradcam_pp_literal(model, image, target):
    """The paper's weights for Y = exp(S), one image and one channel at a time, with no stabiliser.

    For a piecewise-linear network d2Y/dA2 = exp(S) g^2 and d3Y/dA3 = exp(S) g^3 (the paper's closed form),
    with g = dS/dA; alpha = d2 / (2 d2 + sum_ab A_ab d3), w_k = sum_ij alpha_ij ReLU(dY/dA_ij).
    """
    store = {}
    hook = model.feature_layers["last"].register_forward_hook(lambda m, i, o: store.setdefault("A", o))
    score = model(image[None])[0, target]
    hook.remove()
    A = store["A"][0]
    dY = torch.autograd.grad(torch.exp(score), store["A"])[0][0]
    g = dY / torch.exp(score)
    cam = torch.zeros(A.shape[1:], dtype=torch.float64)
    for k in range(A.shape[0]):
        d2, d3 = torch.exp(score) * g[k] ** 2, torch.exp(score) * g[k] ** 3
        alpha = torch.where(g[k] != 0, d2 / (2 * d2 + A[k].sum() * d3), torch.zeros_like(d2))
        cam += float((alpha * torch.relu(dY[k])).sum().detach()) * A[k].detach().double()
    return torch.relu(cam).float(), float(torch.exp(score.detach()))


def test_gradcam_pp_equals_its_definition(tiny_model, squares):
    """The fast kernel times exp(S) (the factor it drops) equals a per-image, per-channel literal version."""
    x, target = squares.images[:3], torch.tensor([0, 1, 0])
    fast = gradcam_pp(tiny_model, x, target, eps=0.0)
    for i in range(len(x)):
        cam, scale = gradcam_pp_literal(tiny_model, x[i], int(target[i]))
        expected = nn.functional.interpolate(cam[None, None], size=(32, 32), mode="bilinear", align_corners=False)
        assert expected.abs().max() > 0
        torch.testing.assert_close(fast[i] * scale, expected[0, 0], rtol=1e-4, atol=1e-6)
    # the registered default only adds pytorch-grad-cam's 1e-6 stabiliser (its share grows as the gradients of
    # the untrained tiny model's centred logit shrink: a few parts in a thousand)
    torch.testing.assert_close(EXPLAINERS["gradcam_pp"].fn(tiny_model, x, target), fast, rtol=5e-3, atol=1e-6)


class GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients where the input was positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


def test_guided_backprop_equals_its_definition(tiny_model, squares):
    """captum's hooks on MONAI's ReLU (one module applied twice per block) equal a literal guided ReLU."""
    x, target = squares.images[:3], torch.tensor([0, 1, 0])
    literal = copy.deepcopy(tiny_model)
    for module in literal.modules():
        if isinstance(module, nn.ReLU):
            module.forward = GuidedReLU.apply
    xg = x.clone().requires_grad_()
    grads = torch.autograd.grad(literal(xg).gather(1, target[:, None]).sum(), xg)[0]
    torch.testing.assert_close(EXPLAINERS["guided_backprop"].fn(tiny_model, x, target), grads.abs().amax(dim=1))


def test_guided_gradcam_is_guided_backprop_times_gradcam(tiny_model, squares):
    x, target = squares.images[:4], torch.tensor([0, 0, 1, 0])
    guided = GuidedBackprop(tiny_model).attribute(x, target=target)
    cam = LayerAttribution.interpolate(
        LayerGradCam(tiny_model, tiny_model.feature_layers["last"]).attribute(x, target=target, relu_attributions=True),
        (32, 32), interpolate_mode="bilinear")
    maps = EXPLAINERS["guided_gradcam"].fn(tiny_model, x, target)
    assert maps.abs().max() > 0
    torch.testing.assert_close(maps, (guided * cam).abs().amax(dim=1))
    torch.testing.assert_close(maps, EXPLAINERS["guided_backprop"].fn(tiny_model, x, target)
                               * EXPLAINERS["gradcam"].fn(tiny_model, x, target))


def test_input_x_gradient_of_a_linear_model_is_weight_times_input():
    weights = torch.randn(2, 1, 8, 8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    model[1].weight.data = weights.flatten(1)
    x = torch.rand(2, 1, 8, 8)
    maps = EXPLAINERS["input_x_gradient"].fn(model, x, torch.tensor([0, 1]))
    torch.testing.assert_close(maps, (weights * x)[:, 0])


@pytest.mark.parametrize("name", ["smoothgrad", "gradient_shap"])
def test_stochastic_methods_are_reproducible(name, tiny_model, squares):
    x, target = squares.images[:3], torch.tensor([0, 1, 0])
    first = EXPLAINERS[name].fn(tiny_model, x, target)
    torch.manual_seed(123)  # the global RNG plays no part
    np.random.seed(123)
    torch.testing.assert_close(EXPLAINERS[name].fn(tiny_model, x.clone(), target), first, rtol=0, atol=0)
    assert not torch.allclose(EXPLAINERS[name].fn(tiny_model, x, target, seed=1), first)


def test_smoothgrad_equals_captum_noise_tunnel_given_the_same_noise(tiny_model, squares, monkeypatch):
    x, target = squares.images[:2], torch.tensor([0, 1])
    noise = image_normal(x, 25, 0.15)
    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input",
                        staticmethod(lambda inp, stdev, n: inp.repeat_interleave(n, dim=0) + noise.flatten(0, 1)))
    expected = NoiseTunnel(Saliency(tiny_model)).attribute(x, nt_type="smoothgrad", nt_samples=25, stdevs=0.15,
                                                          target=target, abs=True)
    torch.testing.assert_close(EXPLAINERS["smoothgrad"].fn(tiny_model, x, target), expected.amax(dim=1),
                               rtol=1e-4, atol=1e-7)


def test_gradient_shap_equals_captum_given_the_same_draws(tiny_model, squares, monkeypatch):
    """captum draws baselines with np.random.choice, noise with torch.normal and positions with
    np.random.uniform; feeding it our draws for one image must give our map."""
    x, target = squares.images[1:2], torch.tensor([1])
    baselines = torch.cat([torch.zeros_like(x), blurred(x)])
    choice, noise, alpha = gradient_shap_draws(x, 2, n_samples=16, stdev=0.1)
    monkeypatch.setattr(np.random, "choice", lambda n, size: choice[0].numpy())
    monkeypatch.setattr(np.random, "uniform", lambda low, high, size: alpha[0].double().numpy())
    monkeypatch.setattr(torch, "normal", lambda mean, std: noise[0])
    expected = GradientShap(tiny_model).attribute(x, baselines=baselines, n_samples=16, stdevs=0.1, target=target)
    monkeypatch.undo()
    torch.testing.assert_close(EXPLAINERS["gradient_shap"].fn(tiny_model, x, target), expected.sum(dim=1),
                               rtol=1e-4, atol=1e-7)


# --- LRP -------------------------------------------------------------------------------------------------


def bottleneck_model() -> ResNetClassifier:
    net = ResNet(block="bottleneck", layers=[1, 2, 1, 1], block_inplanes=[4, 8, 8, 8], spatial_dims=2,
                 n_input_channels=1, num_classes=2, conv1_t_stride=2)
    return ResNetClassifier(net)


@pytest.mark.parametrize("arch", [*ARCHITECTURES, "bottleneck"])
def test_lrp_ready_copy_gives_identical_logits(arch, squares):
    """Folding batch norm and the input normalisation, splitting ReLUs and additions changes no logit."""
    if arch == "bottleneck":
        model = bottleneck_model()
    else:
        model = build_model(ModelConfig(dataset="squares", image_size=32, n_train=1, n_val=1, epochs=1,
                                        batch_size=1, arch=arch))
    model = scrambled_batchnorm(model).eval()
    canonical = lrp_ready(model)
    with torch.no_grad():
        torch.testing.assert_close(canonical(squares.images), model(squares.images), rtol=0, atol=1e-5)
    assert not {id(p) for p in canonical.parameters()} & {id(p) for p in model.parameters()}


def test_lrp_ready_rejects_other_models():
    with pytest.raises(TypeError, match="MONAI ResNet"):
        lrp_ready(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_lrp_zero_is_input_times_gradient(tiny_model, squares):
    """As epsilon -> 0, LRP of a ReLU network equals gradient × input: a check of the whole rewrite and of
    captum's hooks (residual additions, max pooling, the grey padding) in one number."""
    model = scrambled_batchnorm(tiny_model)
    x, target = squares.images[:4], torch.tensor([0, 1, 0, 1])
    torch.testing.assert_close(lrp_epsilon(model, x, target, epsilon=1e-9),
                               EXPLAINERS["input_x_gradient"].fn(model, x, target), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("rules, tolerance", [(epsilon_rules, 1e-5), (composite_rules, 1e-2)],
                         ids=["epsilon", "composite"])
def test_lrp_conserves_relevance_without_biases(tiny_model, squares, rules, tolerance):
    """Sum of input relevance = target logit when nothing can absorb relevance.

    LRP-epsilon conserves as epsilon -> 0 if there are no biases (a bias takes its share b / z_j of R_j);
    with zero biases and a zero input mean (the first convolution's padding is then black and takes nothing)
    it returns the logit up to the 1e-9 stabilisers. z+ conserves over a convolution with non-negative inputs
    (the image, post-ReLU activations) wherever its denominator sum_i x_i w+_ij is positive: R_i =
    x_i w+_ij / sum_i x_i w+_ij R_j sums to R_j, biases ignored by construction. A block's second convolution
    feeds the residual addition before any ReLU, so a unit with no positive contribution can still receive
    relevance there, and z+ loses it (measured: up to 0.2 % of the logit here); hence 1 % for the composite.
    """
    model = bias_free(scrambled_batchnorm(tiny_model))
    x, target = squares.images[:4], torch.tensor([0, 1, 0, 1])
    maps, delta = relevance(model, x, target, rules(1e-9), return_convergence_delta=True)
    logits = target_logit(model, x, target)
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3)), logits - delta, rtol=1e-5, atol=1e-7)  # captum's delta
    assert (delta.abs() <= tolerance * logits.abs()).all(), (delta, logits)


def test_lrp_biases_and_epsilon_absorb_relevance(tiny_model, squares):
    model = scrambled_batchnorm(tiny_model)
    x, target = squares.images[:4], torch.tensor([0, 1, 0, 1])
    _, delta = relevance(model, x, target, epsilon_rules(0.25), return_convergence_delta=True)
    assert delta.abs().max() > 1e-3


def test_lrp_composite_differs_from_epsilon(tiny_model, squares):
    model = scrambled_batchnorm(tiny_model)
    x, target = squares.images[:4], torch.tensor([0, 1, 0, 1])
    composite, epsilon = lrp_composite(model, x, target), lrp_epsilon(model, x, target)
    assert composite.abs().max() > 0 and epsilon.abs().max() > 0
    assert not torch.allclose(composite / composite.abs().max(), epsilon / epsilon.abs().max(), atol=1e-2)


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
              "_load_state_dict_pre_hooks")


@pytest.mark.parametrize("name", NEW_METHODS)
def test_callers_model_is_untouched(name, tiny_model, squares):
    """Same modules, same weights, no hooks or rule attributes left behind, still in evaluation mode."""
    modules_before = [(n, id(m)) for n, m in tiny_model.named_modules()]
    state_before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    EXPLAINERS[name].fn(tiny_model, squares.images[:2], torch.tensor([0, 1]))
    assert [(n, id(m)) for n, m in tiny_model.named_modules()] == modules_before
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, state_before[key]), key
    for module in tiny_model.modules():
        assert not module.training
        assert not hasattr(module, "rule") and not hasattr(module, "activations")
        for hooks in HOOK_DICTS:
            assert not getattr(module, hooks, {}), (name, type(module).__name__, hooks)
    assert all(p.grad is None for p in tiny_model.parameters())
