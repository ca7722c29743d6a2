"""Training, the model cache, and safe loading."""

from __future__ import annotations

import pytest
import torch

from medlit.models import ModelConfig, load_or_train
from tests.conftest import square_set


def config(**kw):
    base = dict(dataset="squares", image_size=32, n_train=64, n_val=32, epochs=2, batch_size=16)
    return ModelConfig(**(base | kw))


def splits():
    return {"train": square_set(64, seed=1, split="train"), "val": square_set(32, seed=2, split="val"),
            "test": square_set(32, seed=3)}


def test_train_then_load_from_cache_gives_the_same_model(tmp_path):
    model, record = load_or_train(config(), splits(), cache_dir=tmp_path, progress=False)
    assert {"test_auroc", "test_accuracy", "val_auroc", "history", "digest"} <= set(record)
    assert len(record["history"]) == 2 and record["test_auroc"] > 0.5  # a bright square is easy to learn
    again, record2 = load_or_train(config(), splits(), cache_dir=tmp_path, progress=False)
    assert record2 == record
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_different_config_is_a_different_cache_entry(tmp_path):
    assert config().digest() != config(seed=1).digest()
    load_or_train(config(epochs=1), splits(), cache_dir=tmp_path, progress=False)
    load_or_train(config(epochs=1, seed=1), splits(), cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_a_corrupt_cache_file_is_reported_by_name(tmp_path):
    load_or_train(config(epochs=1), splits(), cache_dir=tmp_path, progress=False)
    weights = next(tmp_path.glob("*.safetensors"))
    weights.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=weights.name):
        load_or_train(config(epochs=1), splits(), cache_dir=tmp_path, progress=False)
    assert weights.read_bytes() == b"garbage", "the file is left for inspection, not silently replaced"


def test_unknown_architecture_is_a_clear_error():
    from medlit.models import build_model

    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        build_model(config(arch="vgg"))


def test_every_model_explains_the_centred_logit_half_the_log_odds(tiny_model, squares):
    from medlit.explain.targets import explained_score

    with torch.no_grad():
        logits = tiny_model(squares.images[:4])
    torch.testing.assert_close(logits.sum(dim=1), torch.zeros(4), atol=1e-6, rtol=0)  # centred
    p = torch.softmax(logits, dim=1)[:, 1]
    half_log_odds = 0.5 * torch.log(p / (1 - p))
    torch.testing.assert_close(explained_score(logits, torch.ones(4, dtype=torch.long)), half_log_odds,
                               rtol=1e-4, atol=1e-5)
    shifted = torch.tensor([[2.0, 5.0], [0.0, -1.0]])  # an uncentred head gets centred: the same score
    torch.testing.assert_close(explained_score(shifted, torch.tensor([1, 0])), torch.tensor([1.5, 0.5]))
