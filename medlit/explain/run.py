"""Running an explainer over many images in batches, timed, on the model's device."""

from __future__ import annotations

import inspect
import time

import torch
from tqdm.auto import tqdm

from medlit.device import explain_batch, forward_batch, model_device
from medlit.explain.registry import EXPLAINERS
from medlit.models.capabilities import missing_capabilities


class NotApplicable(TypeError):
    """The model does not offer what the explainer needs (``ExplainerSpec.needs``)."""


def not_applicable_reason(name: str, model) -> str:
    """"" when explainer ``name`` can run on ``model``, else why not (the capabilities the model lacks)."""
    missing = missing_capabilities(EXPLAINERS[name].needs, model)
    if not missing:
        return ""
    kind = getattr(model, "kind", type(model).__name__)
    return f"needs {', '.join(missing)}, which {kind} does not offer"


def explain_batched(name: str, model, x: torch.Tensor, target: torch.Tensor, *, batch_size: int | None = None,
                    progress: bool = False, **settings) -> tuple[torch.Tensor, float]:
    """Maps (N, H, W) float32 of explainer ``name`` for every image, and the wall-clock seconds it took.

    The model is put in eval mode; batches go to the model's device and maps come back to the CPU,
    un-normalised, at input resolution. ``batch_size`` (images per call) defaults to the device's
    (``medlit.device.explain_batch``); an explainer with a ``batch_size`` setting of its own (images per forward
    pass) gets the device's ``forward_batch`` unless ``settings`` names one. ``settings`` are passed to the
    explainer (e.g. a perturbation budget); none means its defaults.

    Raises
    ------
    NotApplicable
        if the model lacks a capability the explainer needs.
    """
    spec = EXPLAINERS[name]
    reason = not_applicable_reason(name, model)
    if reason:
        raise NotApplicable(f"explainer {name!r} {reason}")
    model.eval()
    device = model_device(model)
    batch_size = batch_size or explain_batch(device)
    if "batch_size" in inspect.signature(spec.fn).parameters and "batch_size" not in settings:
        settings["batch_size"] = forward_batch(device)
    maps = []
    started = time.perf_counter()
    for start in tqdm(range(0, len(x), batch_size), desc=name, disable=not progress, leave=False):
        xb = x[start:start + batch_size].to(device)
        tb = target[start:start + batch_size].to(device)
        out = spec.fn(model, xb, tb, **settings)
        if out.shape != (xb.shape[0], *xb.shape[-2:]):
            raise RuntimeError(f"explainer {name!r} returned shape {tuple(out.shape)}, "
                               f"expected {(xb.shape[0], *xb.shape[-2:])}")
        maps.append(out.detach().float().cpu())
    seconds = time.perf_counter() - started  # .cpu() above waited for the device's kernels
    return torch.cat(maps), seconds
