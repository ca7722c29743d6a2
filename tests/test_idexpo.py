"""ID-ExpO's differentiable insertion and deletion (medlit.idexpo) against the hard curves they soften."""

from __future__ import annotations

import pytest
import torch

from medlit.idexpo import idexpo_terms, soft_insertion_deletion_curves, soft_masks, soft_thresholds
from medlit.metrics.faithfulness import insertion_deletion_curves, step_counts


def permutation_maps(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Maps whose values are 0..size²-1 in random places: no ties, every gap between sorted values 1."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(size * size, generator=g).float().view(size, size) for _ in range(n)])


def test_each_threshold_keeps_exactly_the_steps_pixel_count_above_it():
    maps = permutation_maps(3, 16)
    thresholds, scale = soft_thresholds(maps, steps=8)
    above = (maps.flatten(1)[:, None, :] > thresholds[:, :, None]).sum(dim=2)
    assert torch.equal(above, step_counts(256, 8).expand(3, -1))
    torch.testing.assert_close(scale, torch.ones(3))


def test_the_masks_are_soft_at_a_low_temperature_and_increase_with_the_map():
    maps = permutation_maps(1, 8)
    alpha = soft_masks(maps, steps=4, temperature=1.0)
    assert alpha.shape == (1, 5, 8, 8)
    half = alpha[0, 2].flatten()[maps.flatten().argsort()]  # step 2 of 4: the top 32 of 64 values
    assert bool((half.diff() >= 0).all())
    # the two values beside the threshold (31 and 32, half a gap from it): sigmoid(-/+0.5), not 0 or 1
    torch.testing.assert_close(half[31:33], torch.sigmoid(torch.tensor([-0.5, 0.5])))


def test_a_constant_map_gets_a_finite_scale():
    thresholds, scale = soft_thresholds(torch.full((2, 8, 8), 0.3), steps=4)
    assert bool(torch.isfinite(thresholds).all()) and torch.equal(scale, torch.ones(2))


def test_at_a_high_temperature_the_soft_curves_are_medlits_hard_curves(tiny_model):
    """Known answer: with no ties and unit gaps, T = 80 puts every mask within 1e-17 of the hard step."""
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([1, 0, 1])
    maps = permutation_maps(3, 32, seed=2)
    with torch.no_grad():
        soft_ins, soft_del = soft_insertion_deletion_curves(tiny_model, x, target, maps, steps=8, temperature=80.0,
                                                            substrate="blur", quantity="score")
    for mode, soft in (("insertion", soft_ins), ("deletion", soft_del)):
        hard = insertion_deletion_curves(tiny_model, x, target, maps, mode=mode, steps=8, substrate="blur")
        torch.testing.assert_close(soft, hard, rtol=0, atol=1e-4)


def test_at_the_papers_temperature_the_soft_curves_differ_from_the_hard_ones(tiny_model):
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    maps = permutation_maps(2, 32, seed=2)
    with torch.no_grad():
        soft, _ = soft_insertion_deletion_curves(tiny_model, x, torch.tensor([1, 1]), maps, steps=8,
                                                 temperature=1.0, quantity="score")
    hard = insertion_deletion_curves(tiny_model, x, torch.tensor([1, 1]), maps, mode="insertion", steps=8)
    assert float((soft - hard).abs().max()) > 1e-3  # a test of the previous one: the temperature matters


def test_gradients_of_the_terms_are_finite_and_reach_the_map_and_the_parameters(tiny_model):
    tiny_model.train(False)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    maps = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    terms = idexpo_terms(tiny_model, x, torch.tensor([1, 0]), maps, steps=8)
    assert set(terms) == {"c_ins", "c_del", "penalty"}
    (terms["c_ins"] + terms["c_del"] + 1e-4 * terms["penalty"]).backward()
    assert bool(torch.isfinite(maps.grad).all()) and float(maps.grad.abs().sum()) > 0
    grads = [p.grad for p in tiny_model.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="temperature"):
        soft_masks(torch.rand(1, 4, 4), steps=2, temperature=0)
    with pytest.raises(ValueError, match="quantity"):
        soft_insertion_deletion_curves(None, torch.rand(1, 1, 4, 4), torch.tensor([0]), torch.rand(1, 4, 4),
                                       quantity="probability")


def finetune_setup():
    from dataclasses import replace

    from medlit.models import ModelConfig
    from tests.conftest import square_set

    splits = {"train": square_set(16, seed=0, split="train"), "val": square_set(8, seed=1, split="val"),
              "test": square_set(8, seed=2)}
    base = ModelConfig(dataset="squares", image_size=32, n_train=16, n_val=8, epochs=1, batch_size=8)
    kinds = {kind: replace(base, arch=kind, base=f"{base.name}-{base.digest()}")
             for kind in ("resnet10_idexpo", "resnet10_finetuned")}
    return splits, base, kinds


def test_the_fine_tuned_kinds_start_from_the_base_and_differ_by_the_regulariser_only(results):
    from medlit.models import load_or_train

    splits, base, kinds = finetune_setup()
    with pytest.raises(FileNotFoundError, match="not in the model cache"):
        load_or_train(kinds["resnet10_idexpo"], splits, progress=False)
    start, _ = load_or_train(base, splits, progress=False)
    tuned = {kind: load_or_train(config, splits, progress=False) for kind, config in kinds.items()}
    (idexpo, record), (control, control_record) = tuned["resnet10_idexpo"], tuned["resnet10_finetuned"]
    assert record["history"][0]["lambda1"] == 0.01 and control_record["history"][0]["lambda1"] == 0.0
    assert record["history"][0]["train_c_ins"] > 0 and control_record["history"][0]["train_c_ins"] == 0.0
    weights = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    assert not torch.equal(weights(idexpo), weights(start)) and not torch.equal(weights(control), weights(start))
    assert not torch.equal(weights(idexpo), weights(control))


def test_fine_tuning_is_deterministic_by_seed(tmp_path, monkeypatch):
    from medlit.models import load_or_train

    splits, base, kinds = finetune_setup()
    runs = []
    for folder in ("a", "b"):
        monkeypatch.setenv("MEDLIT_RESULTS", str(tmp_path / folder))
        load_or_train(base, splits, progress=False)
        model, _ = load_or_train(kinds["resnet10_idexpo"], splits, progress=False)
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(p, q) for p, q in zip(*runs))


def test_a_fine_tuned_kinds_config_names_the_exact_model_it_starts_from():
    import hashlib
    import json

    from medlit.benchmark import model_config
    from medlit.profiles import get_profile

    profile = get_profile("smoke")
    base = model_config(profile, "cxr-phantom")
    tuned = model_config(profile, "cxr-phantom", model="resnet10_idexpo")
    assert tuned.base == f"{base.name}-{base.digest()}" and base.base == ""
    assert tuned.digest() != model_config(profile, "cxr-phantom", model="resnet10_finetuned").digest()
    reseeded = model_config(profile.with_seed(1), "cxr-phantom", model="resnet10_idexpo")
    assert reseeded.base != tuned.base  # another base model, another fine-tuned model
    # a model trained from scratch keeps the digest it had before the field existed (its cache entry stays valid)
    fields = {k: v for k, v in base.as_dict().items() if k not in ("base", "label_shuffle_seed")}
    assert base.digest() == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
