"""The forward engines: each equals the model (scores within 1e-5, the same pointing-game hits), is made once per
weights and shape, pads to fixed batch shapes, runs only where declared, and falls back with a warning."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medlit.explain.occlusion import occlusion
from medlit.metrics.faithfulness import insertion_auc
from medlit.metrics.localisation import pointing_game
from medlit.models import inference
from medlit.models.inference import (bucket, engine_for, engine_in_use, engine_setting, inference_forward,
                                     supports_frozen_inference)

ENGINES = ("frozen", "compiled")


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_equals_the_model_at_any_batch_size(tiny_model, engine):
    assert supports_frozen_inference(tiny_model)
    forward = inference_forward(tiny_model, engine)
    assert forward is not tiny_model
    assert engine_in_use(tiny_model, torch.rand(1, 1, 32, 32), engine) == engine
    with torch.no_grad():
        for n in (1, 5, 8):
            x = torch.rand(n, 1, 32, 32)
            out = forward(x)
            assert not out.is_inference()  # callers may keep and modify it outside inference mode
            torch.testing.assert_close(out, tiny_model(x), rtol=0, atol=1e-5)


def test_a_scored_method_is_the_same_whichever_engine_runs_it(tiny_model, monkeypatch):
    torch.manual_seed(0)
    x, target = torch.rand(6, 1, 32, 32), torch.ones(6, dtype=torch.int64)
    boxes = torch.zeros(6, 32, 32, dtype=torch.bool)
    boxes[:, 8:20, 10:24] = True
    results = {}
    for engine in ("eager", *ENGINES):
        monkeypatch.setenv("MEDLIT_ENGINE", engine)
        # batches of 8: the compiled engine reuses the one shape the test above compiled
        maps = occlusion(tiny_model, x, target, batch_size=8)
        results[engine] = (maps, insertion_auc(tiny_model, x, target, maps, steps=16, batch_size=8),
                           pointing_game(maps, boxes))
    for engine in ENGINES:
        maps, score, hits = results[engine]
        torch.testing.assert_close(maps, results["eager"][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(score, results["eager"][1], rtol=0, atol=1e-5, equal_nan=True)
        assert torch.equal(hits, results["eager"][2])


def test_the_compiled_engine_pads_to_powers_of_eight():
    assert [bucket(n) for n in (1, 7, 8, 9, 33, 64, 65, 512)] == [8, 8, 8, 64, 64, 64, 512, 512]


def test_the_compiled_engine_compiles_once_per_bucket_and_reuses_it_for_new_weights(tiny_model, monkeypatch):
    shapes = []
    compile_ = torch.compile

    def recording(module, **kwargs):
        compiled = compile_(module, **kwargs)
        return lambda x: shapes.append(len(x)) or compiled(x)

    monkeypatch.setattr(torch, "compile", recording)
    model = copy.deepcopy(tiny_model)
    x = torch.rand(16, 1, 32, 32)
    with torch.no_grad():
        forward = inference_forward(model, "compiled")
        for n in (3, 5, 8, 2):  # odd last batches all run at bucket 8
            forward(x[:n])
        forward(x)
        assert set(shapes) == {8, 64}
        forward(torch.rand(70, 1, 32, 32))  # longer than the CPU's forward batch (64): chunks of 64, then 6 -> 8
        assert shapes[-2:] == [64, 8]
        for p in model.parameters():
            p.mul_(0.5)  # e.g. a randomisation step: the old weights must not be used
        torch.testing.assert_close(inference_forward(model, "compiled")(x[:5]), model(x[:5]), rtol=0, atol=1e-5)


def test_a_frozen_copy_is_made_once_per_weights_and_follows_in_place_changes(tiny_model, monkeypatch):
    made, freeze = [], inference._BUILDERS["frozen"]
    monkeypatch.setitem(inference._BUILDERS, "frozen", lambda model, x: made.append(1) or freeze(model, x))
    model = copy.deepcopy(tiny_model)
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        inference_forward(model, "frozen")(x)
        inference_forward(model, "frozen")(x[:2])
        assert len(made) == 1
        for p in model.parameters():
            p.mul_(0.5)
        out = inference_forward(model, "frozen")(x)
        assert len(made) == 2
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)


def test_models_that_do_not_declare_it_run_as_they_are(tiny_model):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    assert inference_forward(plain) is plain
    undeclared = copy.deepcopy(tiny_model)
    undeclared.frozen_inference = False
    assert inference_forward(undeclared, "compiled") is undeclared
    assert inference_forward(tiny_model, "eager") is tiny_model


def test_the_engine_setting_is_checked_and_auto_follows_the_device(tiny_model, monkeypatch):
    monkeypatch.setenv("MEDLIT_ENGINE", "warp-drive")
    with pytest.raises(ValueError, match="unknown forward engine 'warp-drive'.*MEDLIT_ENGINE"):
        engine_setting()
    monkeypatch.setenv("MEDLIT_ENGINE", "auto")
    assert engine_for(tiny_model) == inference.AUTO_ENGINE["cpu"]


def test_an_engine_that_fails_hands_over_to_the_next_with_a_warning(tiny_model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    model = copy.deepcopy(tiny_model)
    x = torch.rand(2, 1, 32, 32)
    with pytest.warns(UserWarning, match="compiled forward unavailable.*no C\\+\\+ compiler here.*using frozen"):
        assert engine_in_use(model, x, "compiled") == "frozen"
    monkeypatch.setattr(torch.jit, "trace", broken)
    model = copy.deepcopy(tiny_model)
    inference._warned.clear()
    with pytest.warns(UserWarning, match="frozen forward unavailable"):
        assert engine_in_use(model, x, "compiled") == "eager"
    with torch.no_grad():
        torch.testing.assert_close(inference_forward(model, "compiled")(x), model(x))
