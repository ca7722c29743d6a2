"""Where models train and explain: one setting, ``auto``, ``cpu`` or ``cuda``.

``auto`` takes the first CUDA GPU when torch sees one, else the CPU. The setting comes from the command line
(``medlit book --device``), a chapter's papermill parameter ``device``, or the environment variable
``MEDLIT_DEVICE``, in that order. Models and batches go to the device; maps and scores come back to the CPU.
Batch sizes are per device: the CPU ones are tuned for two cores (``scripts/bench_perturbation.py``).
"""

from __future__ import annotations

import os

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
ENVIRONMENT_VARIABLE = "MEDLIT_DEVICE"
# Images per forward pass for methods that push many perturbed copies through the model, and for the
# faithfulness metrics. On a 2-core CPU the per-image cost is lowest at 32-64 images of 128 px and nearly doubles
# at 256; a GPU wants far larger batches.
FORWARD_BATCH = {"cpu": 64, "cuda": 512}
# Images per call of an explainer (gradient methods hold one graph per image of the batch).
EXPLAIN_BATCH = {"cpu": 32, "cuda": 128}


def resolve_device(name: str | None = None) -> torch.device:
    """The torch device for ``name`` (``auto``/``cpu``/``cuda``; None or "" reads ``$MEDLIT_DEVICE``, default auto).

    Raises ValueError for an unknown name, and for ``cuda`` when torch sees no CUDA GPU.
    """
    name = (name or os.environ.get(ENVIRONMENT_VARIABLE) or "auto").strip().lower()
    if name not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU (use --device auto or cpu)")
    return torch.device(name)


def forward_batch(device: torch.device | str) -> int:
    """Perturbed images per forward pass on ``device``."""
    return FORWARD_BATCH.get(torch.device(device).type, FORWARD_BATCH["cpu"])


def explain_batch(device: torch.device | str) -> int:
    """Images per explainer call on ``device``."""
    return EXPLAIN_BATCH.get(torch.device(device).type, EXPLAIN_BATCH["cpu"])


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a parameter-free model)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
