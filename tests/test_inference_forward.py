"""The frozen no-grad forward: equal to the model, made once per weights and shape, and only where declared."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medlit.models import inference
from medlit.models.inference import inference_forward, supports_frozen_inference


def test_the_frozen_forward_equals_the_model_at_any_batch_size(tiny_model):
    assert supports_frozen_inference(tiny_model)
    forward = inference_forward(tiny_model)
    assert forward is not tiny_model
    with torch.no_grad():
        for n in (1, 5, 16):
            x = torch.rand(n, 1, 32, 32)
            torch.testing.assert_close(forward(x), tiny_model(x), rtol=1e-4, atol=1e-5)


def test_a_copy_is_made_once_per_weights_and_follows_in_place_changes(tiny_model, monkeypatch):
    made, freeze = [], inference._freeze
    monkeypatch.setattr(inference, "_freeze", lambda model, x: made.append(1) or freeze(model, x))
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        inference_forward(tiny_model)(x)
        inference_forward(tiny_model)(x[:2])
        assert len(made) == 1
        for p in tiny_model.parameters():
            p.mul_(0.5)  # e.g. a randomisation step: the old copy must not be used
        out = inference_forward(tiny_model)(x)
        assert len(made) == 2
        torch.testing.assert_close(out, tiny_model(x), rtol=1e-4, atol=1e-5)


def test_models_that_do_not_declare_it_run_as_they_are(tiny_model):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    assert inference_forward(plain) is plain
    undeclared = copy.deepcopy(tiny_model)
    undeclared.frozen_inference = False
    assert inference_forward(undeclared) is undeclared


def test_a_model_the_tracer_cannot_handle_falls_back_with_a_warning(tiny_model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(torch.jit, "trace", broken)
    model = copy.deepcopy(tiny_model)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad(), pytest.warns(UserWarning, match="cannot trace this"):
        out = inference_forward(model)(x)
    torch.testing.assert_close(out, model(x))
