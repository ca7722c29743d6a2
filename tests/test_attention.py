"""The vision transformer and its attention methods: rollout, raw attention, Chefer's generic rule, token grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlit.data.fresh_draws import fresh_training_draw, has_fresh_draws
from medlit.explain import EXPLAINERS, explain_batched, not_applicable_reason, positive_class
from medlit.explain.chefer import chefer_grid, generic_relevance
from medlit.explain.raw_attention import raw_attention_grid
from medlit.explain.rollout import rollout, rollout_grid
from medlit.models import ModelConfig, build_model
from medlit.models.capture import capture_attention
from medlit.models.inference import inference_forward
from medlit.models.vit import FRESH_DRAWS, training_epochs
from medlit.studies.randomisation import randomisation_cascade

ATTENTION_METHODS = [name for name in EXPLAINERS.names() if EXPLAINERS[name].family == "attention"]


def vit_config(size=64, **kw):
    return ModelConfig(**({"dataset": "squares", "image_size": size, "n_train": 32, "n_val": 16, "epochs": 1,
                           "batch_size": 16, "arch": "vit"} | kw))


@pytest.fixture(scope="module")
def vit():
    return build_model(vit_config()).eval()


def row_stochastic(n, generator, heads=1):
    return torch.softmax(torch.randn(1, heads, n, n, generator=generator) * 2, dim=-1)


def test_rollout_is_the_product_of_the_renormalised_matrices_and_row_stochastic():
    g = torch.Generator().manual_seed(0)
    a1, a2, a3 = (row_stochastic(4, g, heads=2) for _ in range(3))
    eye = np.eye(4)

    def hat(a, fuse):
        m = fuse(a[0].double().numpy()) + eye
        return m / m.sum(axis=1, keepdims=True)

    for fusion, fuse in (("mean", lambda a: a.mean(axis=0)), ("max", lambda a: a.max(axis=0))):
        expected = hat(a3, fuse) @ hat(a2, fuse) @ hat(a1, fuse)
        got = rollout([a1.double(), a2.double(), a3.double()], head_fusion=fusion)[0].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)  # rows, not columns
    # with row-stochastic attention and the mean, (A + I) renormalised is the paper's 0.5 A + 0.5 I
    np.testing.assert_allclose(rollout([a1.double()])[0].numpy(), 0.5 * a1[0].double().mean(0).numpy() + 0.5 * eye)


def test_rollout_is_not_the_column_normalised_version():
    g = torch.Generator().manual_seed(1)
    a = [row_stochastic(5, g, heads=3) for _ in range(2)]
    got = rollout(a, head_fusion="max")[0]
    wrong = None
    for m in a:
        fused = m[0].amax(dim=0) + torch.eye(5)
        fused = fused / fused.sum(dim=0)  # a popular implementation's axis
        wrong = fused if wrong is None else fused @ wrong
    assert not torch.allclose(got, wrong, atol=1e-3)
    assert not torch.allclose(wrong.sum(dim=1), torch.ones(5), atol=1e-3)


class OneBlockToy(nn.Module):
    """CLS + two patch tokens, two heads, one attention and a linear read-out of the CLS row: the gradient of the
    logit with respect to A[h, 0, j] is v[h, j] . w_h, and zero on the other rows."""

    patch_grid = (1, 2)
    prefix_tokens = 1

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.embed = nn.Parameter(torch.randn(3, 4, generator=g))  # token t's embedding is x_t * embed[t]
        self.wq, self.wk, self.wv = (nn.Parameter(torch.randn(2, 4, 2, generator=g)) for _ in range(3))
        self.out = nn.Parameter(torch.randn(2, 2, 2, generator=g))  # head, head dim, class
        self.drop = nn.Identity()
        self.attention_layers = [self.drop]

    def parts(self, x):
        tokens = x.reshape(-1, 3, 1) * self.embed  # (B, 3, 4)
        q, k, v = (torch.einsum("bnd,hde->bhne", tokens, w) for w in (self.wq, self.wk, self.wv))
        return torch.softmax(q @ k.transpose(-1, -2), dim=-1), v

    def forward(self, x):
        attention, v = self.parts(x)
        cls_out = (self.drop(attention) @ v)[:, :, 0]  # (B, heads, head dim)
        return torch.einsum("bhe,hec->bc", cls_out, self.out)


def test_chefer_rule_on_a_one_block_toy_equals_the_hand_computation():
    toy = OneBlockToy().eval()
    x = torch.tensor([[0.5, 1.0, -0.7], [1.2, -0.3, 0.4]])
    target = torch.tensor([1, 0])
    with torch.no_grad():
        attention, v = toy.parts(x)
    grad_cls = torch.einsum("bhje,he->bhj", v, toy.out.detach()[:, :, 1])  # d logit / d A[h, 0, j], target 1
    hand = []
    for b, t in enumerate(target.tolist()):
        g = torch.einsum("hje,he->hj", v[b], toy.out.detach()[:, :, t])
        hand.append((g * attention[b, :, 0]).clamp(min=0).mean(dim=0)[1:])  # R = I + Ā, row CLS, patches
    got = chefer_grid(toy, x, target)
    assert got.shape == (2, 1, 2)
    torch.testing.assert_close(got.reshape(2, 2), torch.stack(hand), rtol=1e-5, atol=1e-6)
    assert grad_cls.shape == (2, 2, 3)
    # the generic rule itself, on the captured matrices: the identity plus the gradient-weighted attention
    attentions, gradients, _ = capture_attention(toy, x, target)
    torch.testing.assert_close(gradients[0][:, :, 1:].abs().sum(), torch.tensor(0.0))  # rows other than CLS
    relevance = generic_relevance(attentions, gradients)
    torch.testing.assert_close(relevance[:, 0, 0], 1 + (gradients[0] * attentions[0]).clamp(min=0).mean(1)[:, 0, 0])


def test_attention_read_by_medlit_equals_monais_saved_attention(vit):
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    blocks = vit.net.blocks
    for block in blocks:
        block.attn.save_attn = True
    try:
        attentions, _, _ = capture_attention(vit, x)
        saved = [block.attn.att_mat for block in blocks]
    finally:
        for block in blocks:
            block.attn.save_attn = False
    assert len(attentions) == len(blocks) == vit.net.depth
    for ours, monai in zip(attentions, saved):
        assert ours.shape == (3, 4, 1 + 16, 1 + 16)
        torch.testing.assert_close(ours, monai, rtol=0, atol=0)


def test_attention_maps_have_the_patch_grid_shape_before_upsampling(vit):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    target = positive_class(2)
    assert vit.patch_grid == (4, 4)
    for grid in (raw_attention_grid(vit, x), rollout_grid(vit, x), rollout_grid(vit, x, "max"),
                 chefer_grid(vit, x, target)):
        assert grid.shape == (2, 4, 4) and torch.isfinite(grid).all()
    for name in ATTENTION_METHODS:
        maps = EXPLAINERS[name].fn(vit, x, target)
        assert maps.shape == (2, 64, 64), name
    assert {"raw_attention", "attention_rollout", "attention_rollout_max", "chefer_relevance"} <= set(ATTENTION_METHODS)


def test_rollout_of_the_vit_is_row_stochastic_and_raw_attention_is_the_last_cls_row(vit):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    attentions, _, _ = capture_attention(vit, x)
    rolled = rollout(attentions)
    torch.testing.assert_close(rolled.sum(dim=-1), torch.ones(2, 17))
    torch.testing.assert_close(raw_attention_grid(vit, x).reshape(2, 16), attentions[-1].mean(1)[:, 0, 1:])


def test_attention_methods_are_not_applicable_to_the_cnn():
    cnn = build_model(vit_config(arch="resnet10")).eval()
    for name in ATTENTION_METHODS:
        assert "attention" in not_applicable_reason(name, cnn)
    maps, _ = explain_batched("attention_rollout", build_model(vit_config()).eval(), torch.rand(3, 1, 64, 64),
                              positive_class(3), batch_size=2)
    assert maps.shape == (3, 64, 64)


def test_gradcam_reads_the_token_grid_where_the_patches_still_matter(vit):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    maps = EXPLAINERS["gradcam"].fn(vit, x, positive_class(2))
    assert maps.shape == (2, 64, 64) and maps.abs().sum() > 0
    # the last block's output would give nothing: the head reads the CLS token only
    assert vit.feature_layers["last"] is vit.net.blocks[-1].norm1


def test_the_frozen_forward_equals_the_vit():
    model = build_model(vit_config(size=128)).eval()
    x = torch.rand(5, 1, 128, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(inference_forward(model)(x), model(x), rtol=1e-4, atol=1e-5)


def test_the_randomisation_cascade_reaches_every_parameter_of_the_vit(vit):
    groups = randomisation_cascade(vit)
    labels = [label for label, _ in groups]
    assert labels[0] == "head" and labels[-1] == "stem"
    last = f"block{vit.net.depth}+norm"  # the final norm joins the last block
    assert {*(f"block{i}" for i in range(1, vit.net.depth)), last, "tokens"} <= set(labels)
    covered = {name for _, names in groups for name in names}
    for name, _ in vit.named_parameters():
        assert any(name.startswith(group + ".") for group in covered), name


def test_fresh_draws_are_other_images_and_real_data_has_none(results):
    assert has_fresh_draws("cxr-phantom") and not has_fresh_draws("nih-cxr14")
    draw = fresh_training_draw("cxr-phantom", 1, 8, size=64, seed=0)
    from medlit.data.phantom import make_cxr_phantom

    train = make_cxr_phantom(8, size=64, seed=0, split="train")
    assert draw.images.shape == train.images.shape and not torch.equal(draw.images, train.images)
    assert torch.equal(fresh_training_draw("cxr-phantom", 1, 8, size=64, seed=0).images, draw.images)
    with pytest.raises(ValueError, match="not generated"):
        fresh_training_draw("nih-cxr14", 1, 8, size=64, seed=0)
    with pytest.raises(ValueError, match="index"):
        fresh_training_draw("cxr-phantom", 0, 8, size=64, seed=0)
    epochs = training_epochs(ModelConfig(dataset="cxr-phantom", image_size=64, n_train=8, n_val=4, epochs=8,
                                         batch_size=4, arch="vit"), train)
    assert epochs(0) is train and epochs(FRESH_DRAWS + 1) is train
    assert torch.equal(epochs(1).images, draw.images)


def test_patch_regions_marks_exactly_the_patches_a_mask_touches():
    from medlit.studies.attention_sinks import patch_regions

    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 20:22, 40:42] = True  # inside patch (1, 2) of a 4 x 4 grid of 16 px patches
    masks[1, 15:17, 0:2] = True  # straddles patches (0, 0) and (1, 0)
    regions = patch_regions(masks, (4, 4))
    assert regions[0].nonzero().flatten().tolist() == [1 * 4 + 2]
    assert regions[1].nonzero().flatten().tolist() == [0, 4]


def test_token_statistics_are_shares_and_ratios(vit):
    from medlit.studies.attention_sinks import token_statistics

    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(6))
    boxes = torch.zeros(3, 64, 64, dtype=torch.bool)
    boxes[:, :32] = True
    stats = token_statistics(vit, x, boxes, torch.ones(3, 64, 64, dtype=torch.bool), batch_size=2)
    assert len(stats) == 3 and (stats["norm ratio"] >= 1).all()
    assert stats["top-norm token in anatomy"].all()  # the anatomy is the whole image
    share = stats["top patch's share of CLS attention"]
    assert ((share >= 1 / 16 - 1e-6) & (share <= 1)).all()  # the largest of 16 shares is at least their mean


def comparison_cube(a, b, kinds=("resnet10", "vit")):
    import xarray as xr

    score = np.stack([a, b])[None, :, :, None, :]  # dataset, model, explainer, metric, sample
    return xr.Dataset({"score": (("dataset", "model", "explainer", "metric", "sample"), score)},
                      coords={"dataset": ["d"], "model": ["cnn-label", "vit-label"], "model_kind": ("model", list(kinds)),
                              "explainer": ["m1", "m2"], "family": ("explainer", ["gradient", "attention"]),
                              "metric": ["pointing_game"], "direction": ("metric", ["higher"])})


def test_model_comparison_pairs_images_and_corrects_over_methods():
    from medlit.model_comparison import comparison_lines, model_comparison, model_of_kind

    cnn = np.array([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0], [0.2, 0.3, 0.1, 0.4, 0.2, 0.3, 0.1, 0.4]])
    vit = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [np.nan, np.nan, 0.1, 0.4, 0.2, 0.3, 0.1, 0.4]])
    cube = comparison_cube(cnn, vit)
    assert model_of_kind(cube, "vit") == "vit-label"
    table = model_comparison(cube, ["m1", "m2", "absent"], ["pointing_game"], reference="resnet10", other="vit",
                             replicates=200)
    m1, m2 = table.set_index("method").loc["m1"], table.set_index("method").loc["m2"]
    assert m1.difference == pytest.approx(0.5) and m1.resnet10 == pytest.approx(0.5) and m1.vit == 1.0
    assert m2.n == 6 and m2.difference == pytest.approx(0.0)  # only the images both models scored
    assert (table.p_holm >= table.p - 1e-12).all()
    text = comparison_lines(table, "resnet10", "vit", "pointing_game")
    assert "mixes the model and the method" in text
    with pytest.raises(ValueError, match="kind 'prototree'"):
        model_of_kind(cube, "prototree")


def test_the_vits_inference_copy_uses_fused_attention_and_gives_the_same_logits(vit):
    copy = vit.inference_copy().eval()
    assert all(block.attn.use_flash_attention for block in copy.net.blocks)
    assert not any(block.attn.use_flash_attention for block in vit.net.blocks)  # the model itself keeps its matrices
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(copy(x), vit(x), rtol=1e-5, atol=1e-6)
