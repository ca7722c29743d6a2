"""Explainers: the registry contract for every method, and known answers for each."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam

from medlit.explain import EXPLAINERS, MissingDataInput, NotApplicable, data_inputs_for, explain_batched
from medlit.explain.registry import is_per_image
import medlit.models.idexpo_finetuned  # noqa: F401  (fine-tuned kinds register on import)
from medlit.models import MODEL_KINDS, ModelConfig, build_model
from tests.conftest import square_set


def tiny_instance(kind: str, in_channels: int = 1):
    """A small untrained model of registered kind ``kind`` for 32 px images."""
    return build_model(ModelConfig(dataset="squares", image_size=32, n_train=8, n_val=8, epochs=1, batch_size=8,
                                   arch=kind, in_channels=in_channels)).eval()


def disc_anatomy(n: int, size: int = 32) -> torch.Tensor:
    """(n, size, size) bool: a centred disc, an organ that does not fill the image (as lungs and fundi do not)."""
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    return (r[:, None] ** 2 + r[None, :] ** 2 <= (0.4 * size) ** 2).expand(n, size, size).clone()


def inputs_for(n: int, size: int = 32) -> dict:
    """Every data input for ``n`` explained images: a disc anatomy, and the box prior of a squares train split."""
    explained = square_set(n=n, size=size, seed=3)
    explained.anatomy_masks = disc_anatomy(n, size)
    return data_inputs_for(square_set(size=size, seed=1, split="train"), explained)


def declared(name: str, inputs: dict, index=slice(None)) -> dict:
    """The data inputs explainer ``name`` declares, per-image ones at ``index``: its keyword arguments."""
    return {k: inputs[k][index] if is_per_image(k) else inputs[k] for k in EXPLAINERS[name].data_inputs}


# Every (explainer, model kind) pair the kind can serve: a new method or model kind is tested once registered.
# Fine-tuned kinds are their base kind's network with other weights: tested through the base.
NETWORKS = [kind for kind in MODEL_KINDS.names() if not MODEL_KINDS[kind].base]
SERVED = [(name, kind) for kind in NETWORKS for name in EXPLAINERS.names()
          if set(EXPLAINERS[name].needs) <= MODEL_KINDS[kind].capabilities]
UNSERVED = [(name, kind) for kind in NETWORKS for name in EXPLAINERS.names()
            if not set(EXPLAINERS[name].needs) <= MODEL_KINDS[kind].capabilities]


@pytest.mark.parametrize("name,kind", SERVED)
def test_contract_shape_dtype_and_batch_equals_loop(name, kind, squares):
    model = tiny_instance(kind)
    x, target, inputs = squares.images[:4], torch.ones(4, dtype=torch.long), inputs_for(4)
    maps = EXPLAINERS[name].fn(model, x, target, **declared(name, inputs))
    assert maps.shape == (4, 32, 32) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    one_by_one = torch.cat([EXPLAINERS[name].fn(model, x[i:i + 1], target[i:i + 1],
                                                **declared(name, inputs, slice(i, i + 1))) for i in range(4)])
    # float rounding only (batched convolutions and products sum in another order); a ViT's gradients through its
    # layer norms and softmax amplify it more than the CNN's (Integrated Gradients from a blurred baseline: 0.13 % of
    # the map's largest value), so for the ViT the tolerance follows the map's scale
    atol = 1e-6 if kind != "vit" else max(1e-6, 2e-3 * float(maps.abs().max()))
    torch.testing.assert_close(maps, one_by_one, rtol=1e-4, atol=atol)


# Every explainer with data inputs, and two without (which must ignore the inputs they do not declare).
WITH_INPUTS = [n for n in EXPLAINERS.names() if EXPLAINERS[n].data_inputs] + ["centre_prior", "gradcam"]


@pytest.mark.parametrize("name", WITH_INPUTS)
def test_explain_batched_passes_data_inputs_sliced_to_each_batch(name, tiny_model, squares):
    """Through ``explain_batched``, with batches that split the images unevenly, an explainer gives the maps of
    one call on all images: per-image inputs follow their images; inputs it does not declare are ignored."""
    x, target, inputs = squares.images[:5], torch.ones(5, dtype=torch.long), inputs_for(5)
    maps, _ = explain_batched(name, tiny_model, x, target, data_inputs=inputs, batch_size=2)
    whole = EXPLAINERS[name].fn(tiny_model, x, target, **declared(name, inputs))
    torch.testing.assert_close(maps, whole.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in EXPLAINERS.names() if EXPLAINERS[n].data_inputs])
def test_a_missing_data_input_is_refused_by_name(name, tiny_model, squares):
    x, target = squares.images[:2], torch.ones(2, dtype=torch.long)
    first = EXPLAINERS[name].data_inputs[0]
    with pytest.raises(MissingDataInput, match=f"explainer '{name}' needs data input.*'{first}'"):
        explain_batched(name, tiny_model, x, target)
    partial = {k: v for k, v in inputs_for(2).items() if k != first}
    with pytest.raises(ValueError, match=f"'{name}'.*'{first}'"):  # MissingDataInput is a ValueError
        explain_batched(name, tiny_model, x, target, data_inputs=partial)


@pytest.mark.parametrize("name,kind", UNSERVED or [pytest.param("", "", marks=pytest.mark.skip("none"))])
def test_a_method_a_model_cannot_serve_is_refused_by_name(name, kind, squares):
    with pytest.raises(NotApplicable, match=f"{name}.*needs"):
        explain_batched(name, tiny_instance(kind), squares.images[:2], torch.ones(2, dtype=torch.long))


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_colour_images_give_one_map_per_image(name):
    """The fundus set is RGB: every explainer must reduce the channels to one (H, W) map (on a model kind that
    serves it: the CNN, or the ViT for the attention methods)."""
    kind = next(k for k in MODEL_KINDS.names() if set(EXPLAINERS[name].needs) <= MODEL_KINDS[k].capabilities)
    model = tiny_instance(kind, in_channels=3)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = EXPLAINERS[name].fn(model, x, torch.ones(3, dtype=torch.long), **declared(name, inputs_for(3)))
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.float32 and torch.isfinite(maps).all()


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_metadata_is_complete(name):
    spec = EXPLAINERS[name]
    assert spec.family in {"gradient", "activation", "perturbation", "prototype", "attention", "control"}
    assert spec.long_name
    assert spec.is_control or spec.citation, "a method must cite its paper"
    assert spec.forward_passes >= 0 and spec.backward_passes >= 0
    assert isinstance(spec.data_inputs, tuple)
    if spec.is_control:  # a control uses no model: it costs nothing and says so
        assert spec.forward_passes == spec.backward_passes == 0 and "control" in spec.long_name


def test_unknown_explainer_names_the_registered_ones():
    with pytest.raises(KeyError, match="registered: .*gradcam"):
        EXPLAINERS["gradkam"]


def test_gradcam_equals_its_definition(tiny_model, squares):
    """ReLU(sum_k alpha_k A_k), alpha = mean gradient, computed literally with hooks, then upsampled."""
    x, target = squares.images[:3], torch.tensor([1, 0, 1])
    store = {}
    hook = tiny_model.feature_layers["last"].register_forward_hook(lambda m, i, o: store.setdefault("A", o))
    logits = tiny_model(x)
    hook.remove()
    activations = store["A"]
    grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), activations)[0]
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((alpha * activations).sum(dim=1, keepdim=True))
    expected = torch.nn.functional.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(EXPLAINERS["gradcam"].fn(tiny_model, x, target), expected.detach(),
                               rtol=1e-4, atol=1e-6)


def test_gradcam_equals_captum_layergradcam(tiny_model, squares):
    x, target = squares.images[:3], torch.tensor([1, 1, 0])
    for name, stage in (("gradcam", "last"), ("gradcam_stage-1", "last-1"), ("gradcam_stage-2", "last-2")):
        layer = LayerGradCam(tiny_model, tiny_model.feature_layers[stage]).attribute(x, target=target,
                                                                                    relu_attributions=True)
        expected = LayerAttribution.interpolate(layer, (32, 32), interpolate_mode="bilinear")[:, 0]
        torch.testing.assert_close(EXPLAINERS[name].fn(tiny_model, x, target), expected.detach())


def test_saliency_of_a_linear_model_is_its_weights():
    weights = torch.randn(2, 1, 8, 8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2, bias=False))
    model[1].weight.data = weights.flatten(1)
    x = torch.rand(2, 1, 8, 8)
    maps = EXPLAINERS["saliency"].fn(model, x, torch.tensor([0, 1]))
    torch.testing.assert_close(maps, weights[:, 0].abs())


def test_centre_prior_peaks_in_the_centre():
    x = torch.zeros(2, 1, 33, 33)
    maps = EXPLAINERS["centre_prior"].fn(None, x, torch.zeros(2, dtype=torch.long))
    assert divmod(int(maps[0].argmax()), 33) == (16, 16)
    torch.testing.assert_close(maps[0], maps[1])


def test_random_map_is_reproducible_and_image_specific():
    x = torch.rand(3, 1, 16, 16)
    t = torch.zeros(3, dtype=torch.long)
    a, b = EXPLAINERS["random"].fn(None, x, t), EXPLAINERS["random"].fn(None, x.clone(), t)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], a[1])


def test_explain_batched_checks_shape_and_times(tiny_model, squares):
    maps, seconds = explain_batched("gradcam", tiny_model, squares.images, torch.ones(16, dtype=torch.long),
                                    batch_size=5)
    assert maps.shape == (16, 32, 32) and seconds > 0


def test_gradcam_equals_monai_gradcam(tiny_model, squares):
    """MONAI's GradCAM on the same layer: the same rectified map at layer resolution, and the same map after
    bilinear upsampling. MONAI's default post-processing then rescales each map so that its minimum becomes 1
    and its maximum 0 (documented in MONAI's ``default_normalizer``); medlit deliberately returns raw maps."""
    from monai.visualize import GradCAM

    x = squares.images[:4]
    # An untrained network's rectified map can be zero everywhere for one class: compare on a class where it
    # is not, or the comparison would prove nothing.
    maps = {c: EXPLAINERS["gradcam"].fn(tiny_model, x, torch.full((4,), c)) for c in (0, 1)}
    cls = max(maps, key=lambda c: int((maps[c].flatten(1).amax(dim=1) > 0).sum()))
    ours = maps[cls]
    nonzero = ours.flatten(1).amax(dim=1) > 0
    assert nonzero.sum() >= 2, "the test needs non-trivial maps"
    cam = GradCAM(nn_module=tiny_model, target_layers="net.layer4")
    layer_map = cam.compute_map(x, class_idx=cls)  # MONAI takes one class index for the whole batch
    upsampled = torch.nn.functional.interpolate(layer_map, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, upsampled[:, 0].detach(), rtol=1e-4, atol=1e-6)
    scaled = cam(x, class_idx=cls)[:, 0]
    lo, hi = ours.amin(dim=(1, 2), keepdim=True), ours.amax(dim=(1, 2), keepdim=True)
    rescaled = (ours - lo) / (hi - lo).clamp(min=1e-12)
    torch.testing.assert_close(scaled[nonzero], 1 - rescaled[nonzero], rtol=1e-4, atol=1e-5)
