"""Running an explainer over many images in batches, timed."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from medlit.explain.registry import EXPLAINERS


def explain_batched(name: str, model, x: torch.Tensor, target: torch.Tensor, *, batch_size: int = 32,
                    progress: bool = False, **settings) -> tuple[torch.Tensor, float]:
    """Maps (N, H, W) float32 of explainer ``name`` for every image, and the wall-clock seconds it took.

    The model is put in eval mode; maps are returned on the CPU, un-normalised, at input resolution.
    ``settings`` are passed to the explainer (e.g. a perturbation budget); none means its defaults.
    """
    spec = EXPLAINERS[name]
    model.eval()
    device = next(model.parameters()).device
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
    seconds = time.perf_counter() - started
    return torch.cat(maps), seconds
