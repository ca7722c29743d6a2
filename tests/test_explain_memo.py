"""The explanation memo: a map is reused only for the same method, settings, weights, image and target."""

from __future__ import annotations

import copy

import pytest
import torch

from medlit.explain import EXPLAINERS, explain_batched
from medlit.explain import memo
from medlit.explain.memo import ExplanationMemo, image_digests, settings_key
from medlit.models.digest import model_digest


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(memo, "MEMO", ExplanationMemo())
    return memo.MEMO


@pytest.fixture
def counted(monkeypatch):
    """The number of images occlusion occludes, call by call."""
    from medlit.explain import occlusion

    calls, region_drops = [], occlusion.region_drops

    def counting(model, x, *args):
        calls.append(len(x))
        return region_drops(model, x, *args)

    monkeypatch.setattr(occlusion, "region_drops", counting)
    return calls


def test_a_repeated_call_reuses_every_map_and_reports_its_cost(tiny_model, squares, counted):
    x, target = squares.images[:6], torch.ones(6, dtype=torch.long)
    first, seconds = explain_batched("occlusion", tiny_model, x, target, window=8)
    again, seconds_again = explain_batched("occlusion", tiny_model, x, target, window=8)
    assert counted == [6]
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert seconds <= seconds_again < seconds + 0.05  # a reused map is not free in a cost table


def test_only_the_images_not_seen_are_computed_and_the_order_is_kept(tiny_model, squares, counted):
    x, target = squares.images[:6], torch.ones(6, dtype=torch.long)
    part, _ = explain_batched("occlusion", tiny_model, x[2:4], target[2:4], window=8)
    full, _ = explain_batched("occlusion", tiny_model, x, target, window=8)
    assert counted == [2, 4]
    torch.testing.assert_close(full[2:4], part, rtol=0, atol=0)
    alone, _ = explain_batched("occlusion", tiny_model, x, target, window=8, reuse=False)
    torch.testing.assert_close(full, alone, rtol=1e-5, atol=1e-6)


def test_a_setting_given_at_its_default_finds_the_maps_made_without_it(tiny_model, squares, monkeypatch):
    from medlit.explain import rise

    calls, rise_masks = [], rise.rise_masks
    monkeypatch.setattr(rise, "rise_masks", lambda *a, **k: calls.append(1) or rise_masks(*a, **k))
    x, target = squares.images[:2], torch.ones(2, dtype=torch.long)
    default, _ = explain_batched("rise", tiny_model, x, target)
    explicit, _ = explain_batched("rise", tiny_model, x, target, n_masks=2000)
    assert len(calls) == 1
    torch.testing.assert_close(explicit, default, rtol=0, atol=0)
    explain_batched("rise", tiny_model, x, target, n_masks=500)
    assert len(calls) == 2


def test_other_settings_targets_or_weights_are_computed_again(tiny_model, squares, counted):
    x, target = squares.images[:2], torch.ones(2, dtype=torch.long)
    explain_batched("occlusion", tiny_model, x, target, window=8)
    explain_batched("occlusion", tiny_model, x, target, window=4)
    explain_batched("occlusion", tiny_model, x, torch.zeros(2, dtype=torch.long), window=8)
    twin = copy.deepcopy(tiny_model)  # the same weights: the same maps
    explain_batched("occlusion", twin, x, target, window=8)
    assert counted == [2, 2, 2]
    with torch.no_grad():
        next(twin.parameters()).add_(0.5)  # modified in place: no longer the same model
    explain_batched("occlusion", twin, x, target, window=8)
    assert counted == [2, 2, 2, 2]


def test_a_model_digest_follows_in_place_changes(tiny_model):
    before = model_digest(tiny_model)
    assert model_digest(tiny_model) == before == model_digest(copy.deepcopy(tiny_model))
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.mul_(2)
    assert model_digest(tiny_model) != before


def test_cheap_methods_and_methods_with_data_inputs_bypass_the_memo(tiny_model, squares, fresh_memo):
    x, target = squares.images[:2], torch.ones(2, dtype=torch.long)
    explain_batched("saliency", tiny_model, x, target)
    assert EXPLAINERS["saliency"].forward_passes + EXPLAINERS["saliency"].backward_passes < memo.MIN_PASSES
    assert not fresh_memo.entries and fresh_memo.hits == fresh_memo.misses == 0
    assert settings_key({"baseline": torch.zeros(1)}) is None  # a tensor setting: bypass


def test_the_memo_is_bounded_least_recently_used_first_out():
    store = ExplanationMemo(max_bytes=3 * 16 * 4)
    maps = [torch.full((4, 4), float(i)) for i in range(4)]
    for i in range(3):
        store.put(i, maps[i], 0.1)
    assert store.get(0) is not None  # 0 is now the most recent
    store.put(3, maps[3], 0.1)
    assert set(store.entries) == {0, 2, 3} and store.bytes == 3 * 64


def test_image_digests_tell_images_apart():
    x = torch.zeros(3, 1, 4, 4)
    x[1, 0, 0, 0] = 1e-7
    digests = image_digests(x)
    assert digests[0] == digests[2] != digests[1]
