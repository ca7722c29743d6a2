"""The shared perturbation primitives (blur, the substrate table) and the data generators' split seeding."""

from __future__ import annotations

import pytest
import torch

from medlit.data import ct, fundus, phantom, seeding
from medlit.perturbation import (
    CONSTANT_SUBSTRATES,
    PERTURBATION_SUBSTRATES,
    PROTOCOL_SUBSTRATE,
    SUBSTRATES,
    blurred,
    gaussian_blur,
    perturbation_fill,
    substrate_fill,
    substrate_images,
    substrate_value,
)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 20, 24, generator=g)
    anatomy = torch.zeros(3, 20, 24, dtype=torch.bool)
    anatomy[:, 5:15, 4:12] = True
    anatomy[2] = False  # an empty mask gives 0, not NaN
    return x, anatomy


# --- the substrate table ---------------------------------------------------------------------------------


def test_the_table_holds_every_substrate():
    assert set(SUBSTRATES) == {"zeros", "mean", "blur", "anatomy_mean"}
    assert set(CONSTANT_SUBSTRATES) <= set(SUBSTRATES)


def test_each_substrate_gives_the_expected_images(images):
    x, anatomy = images
    expected = {
        "zeros": torch.zeros_like(x),
        "mean": x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x),
        "blur": gaussian_blur(x, 11, 5.0),
        "anatomy_mean": torch.stack([
            x[0][:, anatomy[0]].mean(dim=1)[:, None, None].expand(2, 20, 24),
            x[1][:, anatomy[1]].mean(dim=1)[:, None, None].expand(2, 20, 24),
            torch.zeros(2, 20, 24),
        ]),
    }
    for name, want in expected.items():
        got = substrate_fill(x, name, anatomy)
        assert got.shape == x.shape and got.dtype == x.dtype, name
        torch.testing.assert_close(got, want, msg=name)


def test_constant_substrates_as_values_and_images(images):
    x, _ = images
    assert substrate_value(x, "mean").shape == (3, 1, 1, 1)
    torch.testing.assert_close(substrate_value(x, "mean")[:, 0, 0, 0], x.mean(dim=(1, 2, 3)))
    assert torch.equal(substrate_value(x, "zeros"), torch.zeros(3, 1, 1, 1))
    for kind in CONSTANT_SUBSTRATES:
        assert substrate_images(x, kind).is_contiguous()
        assert torch.equal(substrate_images(x, kind), substrate_fill(x, kind))


def test_unknown_substrate_is_named_with_the_valid_ones(images):
    x, _ = images
    with pytest.raises(ValueError, match=r"'noise'.*zeros, mean, blur, anatomy_mean"):
        substrate_fill(x, "noise")
    with pytest.raises(ValueError, match=r"'blur'.*mean, zeros"):  # not a per-image constant
        substrate_value(x, "blur")
    with pytest.raises(ValueError, match=r"'black'.*mean, zeros"):
        substrate_images(x, "black")
    with pytest.raises(ValueError, match=r"'mean'.*zeros, blur"):  # outside the caller's subset
        substrate_fill(x, "mean", valid=("zeros", "blur"))
    with pytest.raises(ValueError, match="anatomy"):
        substrate_fill(x, "anatomy_mean")


def test_metric_and_explainers_share_the_one_home():
    from medlit.explain import integrated_gradients
    from medlit.metrics import faithfulness

    assert not hasattr(faithfulness, "gaussian_blur"), "the metric module does not re-export the blur"
    assert integrated_gradients.blurred is blurred
    with pytest.raises(ValueError, match=r"'anatomy_mean'.*zeros, blur, mean or a tensor"):
        faithfulness.insertion_auc(lambda z: torch.zeros(len(z), 2), torch.zeros(1, 1, 8, 8), torch.zeros(1).long(),
                                   torch.zeros(1, 8, 8), substrate="anatomy_mean")


def test_one_protocol_substrate_for_explainers_and_metrics(images):
    import inspect

    from medlit.metrics import faithfulness

    x, _ = images
    assert PROTOCOL_SUBSTRATE == "blur" and PROTOCOL_SUBSTRATE in PERTURBATION_SUBSTRATES
    assert torch.equal(perturbation_fill(x), gaussian_blur(x))  # the insertion metric's kernel 11, sigma 5
    assert perturbation_fill(x).is_contiguous()
    for fn in (faithfulness.insertion_auc, faithfulness.deletion_auc, faithfulness.insertion_deletion_curves):
        assert inspect.signature(fn).parameters["substrate"].default == PROTOCOL_SUBSTRATE, fn.__name__
    with pytest.raises(ValueError, match=r"'anatomy_mean'.*blur, mean, zeros"):
        perturbation_fill(x, "anatomy_mean")


# --- blur ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 32, 40), (1, 1, 4, 5), (1, 1, 128, 128)])
def test_blur_of_a_constant_image_is_constant(shape):
    x = torch.full(shape, 0.37)
    torch.testing.assert_close(gaussian_blur(x), x)
    torch.testing.assert_close(gaussian_blur(x, 7, 1.3), x)
    torch.testing.assert_close(blurred(x), x)


def test_blurred_scales_sigma_with_the_image():
    x = torch.rand(1, 1, 50, 75, generator=torch.Generator().manual_seed(1))
    assert torch.equal(blurred(x), gaussian_blur(x, kernel_size=9, sigma=2.0))  # sigma = 50 / 25, 2 ceil(4) + 1


# --- split seeding ---------------------------------------------------------------------------------------


def test_split_seed_is_a_fixed_stable_value():
    # computed once; a change here changes every generated image of every data set
    assert seeding.split_seed("medlit.cxr-phantom", 0, "test") == 8332309555276788978
    assert seeding.split_seed("medlit.cxr-phantom", 3, "train") == 2791657401630676109
    assert seeding.split_seed("medlit.fundus-lesions", 0, "test") == 9075154700730433593
    assert seeding.split_seed("medlit.ct-lesions", 0, "test") == 1370276113139221326


def test_split_seed_differs_between_splits_seeds_and_generators():
    seeds = {seeding.split_seed(g, s, split) for g in ("medlit.cxr-phantom", "medlit.ct-lesions")
             for s in (0, 1) for split in ("train", "val", "test")}
    assert len(seeds) == 12
    assert all(0 <= s < 2 ** 63 for s in seeds)


def test_the_generators_use_the_helper():
    for module, key in ((phantom, "medlit.cxr-phantom"), (fundus, "medlit.fundus-lesions"),
                        (ct, "medlit.ct-lesions")):
        for split in ("train", "val", "test"):
            assert module.split_seed(5, split) == seeding.split_seed(key, 5, split)


def test_chunk_seeds():
    root = 8332309555276788978
    assert seeding.chunk_seed(root, 0) == root + 1_000_003
    assert seeding.chunk_seed(root, 2) == root + 3 * 1_000_003
    assert seeding.chunk_seed(root, 2, stride=1, offset=0) == root + 2  # the fundus generator's rule
    assert seeding.chunk_seed(2 ** 63 - 1, 0) == 1_000_002  # wraps to 63 bits
    a, b = seeding.chunk_generator(root, 0), seeding.chunk_generator(root, 0)
    assert torch.equal(torch.randn(5, generator=a), torch.randn(5, generator=b))
    assert not torch.equal(torch.randn(5, generator=seeding.chunk_generator(root, 1)),
                           torch.randn(5, generator=seeding.chunk_generator(root, 0)))
