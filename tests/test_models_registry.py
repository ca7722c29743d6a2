"""Model kinds as a registered axis: capabilities, not-applicable methods, several models per cube, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlit.explain import EXPLAINERS, NotApplicable, explain_batched, not_applicable_reason
import medlit.models.idexpo_finetuned  # noqa: F401  (fine-tuned kinds register on import)
from medlit.models import MODEL_KINDS, ModelConfig, build_model, capabilities_of, load_or_train
from medlit.models.capabilities import CAM_STAGES, GRADIENTS, LRP_REWRITE, feature_layer, feature_map
from medlit.models.inspect import feature_grid
from tests.conftest import square_set

KNOWN = {GRADIENTS, LRP_REWRITE, "attention", "prototypes", *(feature_map(s) for s in CAM_STAGES)}


def config(kind="resnet10", **kw):
    return ModelConfig(**({"dataset": "squares", "image_size": 32, "n_train": 32, "n_val": 16, "epochs": 1,
                           "batch_size": 16, "arch": kind} | kw))


@pytest.mark.parametrize("kind", MODEL_KINDS.names())
def test_every_kind_builds_tagged_and_offers_what_it_declares(kind, squares):
    model = build_model(config(kind)).eval()
    assert model.kind == kind and capabilities_of(model) == MODEL_KINDS[kind].capabilities
    assert MODEL_KINDS[kind].capabilities <= KNOWN, "capabilities are named in medlit.models.capabilities"
    x = squares.images[:2]
    assert model(x).shape == (2, 2)
    for stage in CAM_STAGES:
        if feature_map(stage) in model.capabilities:
            assert len(feature_grid(model, x, stage)) == 2
    if LRP_REWRITE in model.capabilities:
        torch.testing.assert_close(model.lrp_ready()(x), model(x), rtol=0, atol=1e-5)


def test_building_is_deterministic_by_seed():
    a, b, c = build_model(config()), build_model(config()), build_model(config(seed=1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_the_resnet_stages_are_ever_finer_grids():
    """At 128 px the last stage is 4 x 4; one and two stages earlier 8 x 8 and 16 x 16."""
    model = build_model(config(image_size=128)).eval()
    x = torch.rand(1, 1, 128, 128)
    assert [feature_grid(model, x, stage) for stage in CAM_STAGES] == [(4, 4), (8, 8), (16, 16)]


def test_cam_methods_are_registered_on_each_stage_and_need_it():
    for base in ("gradcam", "gradcam_pp", "guided_gradcam", "scorecam"):
        for stage, name in zip(CAM_STAGES, (base, f"{base}_stage-1", f"{base}_stage-2")):
            assert feature_map(stage) in EXPLAINERS[name].needs
    assert EXPLAINERS["scorecam_stage-2"].forward_passes < EXPLAINERS["scorecam"].forward_passes


class PlainNet(nn.Module):
    """A model that declares nothing: it offers forward passes and input gradients only."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(32 * 32, 2)

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_a_model_without_a_capability_is_refused_with_the_reason(squares):
    model = PlainNet().eval()
    assert capabilities_of(model) == {GRADIENTS}
    assert not_applicable_reason("saliency", model) == ""
    assert "feature_map:last" in not_applicable_reason("gradcam", model)
    with pytest.raises(NotApplicable, match="gradcam.*feature_map:last.*PlainNet"):
        explain_batched("gradcam", model, squares.images[:2], torch.ones(2, dtype=torch.long))
    with pytest.raises(TypeError, match="no feature map at stage 'last-1'"):
        feature_layer(model, "last-1")


def test_the_pipeline_records_not_applicable_methods_as_nan_with_the_reason(squares):
    from medlit.benchmark import score_method
    from medlit.metrics import DEFAULT_CURVE_FRACTIONS

    model, positives = PlainNet().eval(), squares.subset(np.arange(1, 8, 2))
    scores, seconds, reason, curve = score_method(model, positives, "lrp_epsilon", ["pointing_game"], {})
    assert np.isnan(scores).all() and np.isnan(seconds) and np.isnan(curve).all() and "lrp_rewrite" in reason
    scores, seconds, reason, curve = score_method(model, positives, "saliency", ["pointing_game"], {})
    assert np.isfinite(scores).all() and reason == ""
    assert curve.shape == (len(DEFAULT_CURVE_FRACTIONS), len(positives)) and np.isfinite(curve).all()
    assert (np.diff(curve, axis=0) >= 0).all()  # a larger tolerance never loses a hit


def test_load_or_train_puts_the_model_on_the_device_and_records_it(tmp_path):
    splits = {"train": square_set(32, seed=1, split="train"), "val": square_set(16, seed=2, split="val"),
              "test": square_set(16, seed=3)}
    model, record = load_or_train(config(), splits, cache_dir=tmp_path, device="cpu", progress=False)
    assert record["trained_on"] == "cpu" and next(model.parameters()).device.type == "cpu"
    assert config().digest() != config(device_type="cuda").digest(), "GPU weights never serve a CPU run"


def test_resolve_device(monkeypatch):
    from medlit.device import forward_batch, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("MEDLIT_DEVICE", "cpu")
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    assert forward_batch("cpu") == 64 and forward_batch("cuda") > 64
