"""Shared fixtures: tiny hand-made data and models, so unit tests do not depend on the phantom's look."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlit.data.sample import SampleSet, mask_to_box


def square_set(n: int = 16, size: int = 32, seed: int = 0, split: str = "test") -> SampleSet:
    """Noise images; positives carry a bright square whose box is known exactly."""
    g = torch.Generator().manual_seed(seed)
    images = 0.3 + 0.05 * torch.randn(n, 1, size, size, generator=g)
    labels = torch.tensor([i % 2 for i in range(n)])
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    boxes = torch.full((n, 1, 4), float("nan"))
    for i in range(n):
        if labels[i]:
            r, c = torch.randint(2, size - 8, (2,), generator=g).tolist()
            masks[i, r:r + 6, c:c + 6] = True
            boxes[i, 0] = torch.from_numpy(mask_to_box(masks[i].numpy()))
    images = torch.where(masks[:, None], torch.tensor(0.9), images).clamp(0, 1).float()
    findings = np.array(["square" if label else "none" for label in labels.tolist()])
    return SampleSet(name="squares", split=split, images=images, labels=labels, boxes=boxes,
                     finding_masks=masks, anatomy_masks=torch.ones(n, size, size, dtype=torch.bool),
                     meta={"finding": findings, "sample_id": np.array([f"sq-{i}" for i in range(n)])},
                     attrs={"original_size": size})


@pytest.fixture
def squares() -> SampleSet:
    return square_set()


@pytest.fixture
def tiny_model():
    from medlit.models import ModelConfig, build_model

    config = ModelConfig(dataset="squares", image_size=32, n_train=16, n_val=8, epochs=1, batch_size=8)
    model = build_model(config)
    model.eval()
    return model


@pytest.fixture
def results(tmp_path, monkeypatch):
    """Send every result (models, cubes) to a temporary folder."""
    monkeypatch.setenv("MEDLIT_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"
