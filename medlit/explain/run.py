"""Running an explainer over many images in batches, timed, on the model's device."""

from __future__ import annotations

import inspect
import time

import torch
from tqdm.auto import tqdm

from medlit.device import explain_batch, forward_batch, model_device
from medlit.explain import memo as _memo
from medlit.explain.registry import EXPLAINERS, is_per_image
from medlit.models.capabilities import missing_capabilities
from medlit.models.digest import model_digest


class NotApplicable(TypeError):
    """The model does not offer what the explainer needs (``ExplainerSpec.needs``)."""


class MissingDataInput(ValueError):
    """A data input the explainer declares (``ExplainerSpec.data_inputs``) was not given, or has the wrong length."""


def missing_data_inputs(name: str, data_inputs: dict | None) -> list[str]:
    """The data inputs explainer ``name`` declares that ``data_inputs`` lacks (in declaration order)."""
    given = data_inputs or {}
    return [d for d in EXPLAINERS[name].data_inputs if given.get(d) is None]


def required_data_inputs(name: str, data_inputs: dict | None, n_images: int) -> dict:
    """The entries of ``data_inputs`` that explainer ``name`` declares, checked against ``n_images`` images.

    Raises
    ------
    MissingDataInput
        if a declared input is absent (or None), or a per-image input does not have ``n_images`` entries.
    """
    missing = missing_data_inputs(name, data_inputs)
    if missing:
        raise MissingDataInput(f"explainer {name!r} needs data input(s) {', '.join(map(repr, missing))}, which "
                               f"were not given: pass data_inputs=medlit.explain.data_inputs_for(train, explained)")
    required = {d: data_inputs[d] for d in EXPLAINERS[name].data_inputs}
    for key, value in required.items():
        if is_per_image(key) and len(value) != n_images:
            raise MissingDataInput(f"explainer {name!r}: data input {key!r} has {len(value)} entries, "
                                   f"not one per image ({n_images})")
    return required


def not_applicable_reason(name: str, model) -> str:
    """"" when explainer ``name`` can run on ``model``, else why not (the capabilities the model lacks)."""
    missing = missing_capabilities(EXPLAINERS[name].needs, model)
    if not missing:
        return ""
    kind = getattr(model, "kind", type(model).__name__)
    return f"needs {', '.join(missing)}, which {kind} does not offer"


def _memo_keys(spec, model, x: torch.Tensor, target: torch.Tensor, settings: dict, required: dict) -> list | None:
    """The memo key of each image (``medlit.explain.memo``), or None when this call bypasses the memo."""
    passes = spec.forward_passes + spec.backward_passes
    # the defaults filled in, so that a setting given at its default value finds the maps made without it
    named = [p for p in list(inspect.signature(spec.fn).parameters.values())[3:]
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in required]
    settings_key = _memo.settings_key({**{p.name: settings.get(p.name, p.default) for p in named}, **settings})
    if required or passes < _memo.MIN_PASSES or settings_key is None:
        return None
    model_key = model_digest(model)
    return [(spec.name, spec.fn, settings_key, model_key, image, int(t))
            for image, t in zip(_memo.image_digests(x), target.tolist())]


def explain_batched(name: str, model, x: torch.Tensor, target: torch.Tensor, *, data_inputs: dict | None = None,
                    batch_size: int | None = None, progress: bool = False, reuse: bool = True,
                    **settings) -> tuple[torch.Tensor, float]:
    """Maps (N, H, W) float32 of explainer ``name`` for every image, and the wall-clock seconds it took.

    The model is put in eval mode; batches go to the model's device and maps come back to the CPU,
    un-normalised, at input resolution. ``batch_size`` (images per call) defaults to the device's
    (``medlit.device.explain_batch``); an explainer with a ``batch_size`` setting of its own (images per forward
    pass) gets the device's ``forward_batch`` unless ``settings`` names one. ``settings`` are passed to the
    explainer (e.g. a perturbation budget); none means its defaults.

    ``data_inputs`` maps names of ``medlit.explain.registry.DATA_INPUTS`` to tensors (``data_inputs_for`` builds
    them); each one the explainer declares is passed as a keyword argument, per-image inputs sliced to the
    batch, data-set inputs whole, both on the model's device. Inputs it does not declare are ignored.

    ``reuse``: maps this process already computed for the same method, settings, model weights, image and target
    are taken from ``medlit.explain.memo`` instead of being computed again (expensive methods without data inputs
    only); the seconds returned include the recorded cost of every reused map.

    Raises
    ------
    NotApplicable
        if the model lacks a capability the explainer needs.
    MissingDataInput
        (a ``ValueError``) if a data input the explainer declares is absent or has the wrong number of images.
    ValueError
        if ``settings`` names a data input (it would be silently replaced).
    """
    spec = EXPLAINERS[name]
    reason = not_applicable_reason(name, model)
    if reason:
        raise NotApplicable(f"explainer {name!r} {reason}")
    required = required_data_inputs(name, data_inputs, len(x))
    clash = sorted(set(required) & set(settings))
    if clash:
        raise ValueError(f"explainer {name!r}: {', '.join(clash)} must be given in data_inputs, not as a setting")
    model.eval()
    device = model_device(model)
    batch_size = batch_size or explain_batch(device)
    if "batch_size" in inspect.signature(spec.fn).parameters and "batch_size" not in settings:
        settings["batch_size"] = forward_batch(device)
    keys = _memo_keys(spec, model, x, target, settings, required) if reuse else None
    found = [_memo.MEMO.get(key) for key in keys] if keys is not None else [None] * len(x)
    todo = [i for i, hit in enumerate(found) if hit is None]
    everything = len(todo) == len(x)
    computed, seconds = _run(spec, model, x if everything else x[todo], target if everything else target[todo],
                             required, todo, len(x), batch_size, progress, settings)
    if keys is None:
        return computed, seconds
    reused_seconds = sum(hit[1] for hit in found if hit is not None)
    per_image = seconds / max(len(todo), 1)
    for i, explanation in zip(todo, computed):
        found[i] = (explanation.clone(), per_image)  # a copy: a row of `computed` would keep the whole batch alive
        _memo.MEMO.put(keys[i], *found[i])
    return (torch.stack([m for m, _ in found]) if len(x) else computed), seconds + reused_seconds


def _run(spec, model, x, target, required, rows, n_all, batch_size, progress, settings) -> tuple[torch.Tensor, float]:
    """The explainer over ``x`` in batches: maps on the CPU and seconds. ``rows`` are the positions of ``x`` among
    the ``n_all`` images of the call (per-image data inputs are indexed by them)."""
    if len(rows) < n_all:
        required = {key: (value[rows] if is_per_image(key) else value) for key, value in required.items()}
    device = model_device(model)
    maps = []
    started = time.perf_counter()
    for start in tqdm(range(0, len(x), batch_size), desc=spec.name, disable=not progress, leave=False):
        xb = x[start:start + batch_size].to(device)
        tb = target[start:start + batch_size].to(device)
        inputs = {key: (value[start:start + batch_size] if is_per_image(key) else value).to(device)
                  for key, value in required.items()}
        out = spec.fn(model, xb, tb, **inputs, **settings)
        if out.shape != (xb.shape[0], *xb.shape[-2:]):
            raise RuntimeError(f"explainer {spec.name!r} returned shape {tuple(out.shape)}, "
                               f"expected {(xb.shape[0], *xb.shape[-2:])}")
        maps.append(out.detach().float().cpu())
    seconds = time.perf_counter() - started  # .cpu() above waited for the device's kernels
    if not maps:
        return torch.empty(0, *x.shape[-2:]), seconds
    return torch.cat(maps), seconds
