"""Explainer metadata and registration.

An explainer is ``fn(model, x[B,C,H,W], target[B]) -> Tensor[B,H,W]``: float32, at input resolution,
not normalised (normalisation is a separate, recorded step). Controls (random, centre prior) are
explainers too, so every table carries them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medlit.registry import Registry

# Images per forward pass for methods that push many perturbed copies through the model. On a 2-core CPU the
# per-image forward cost is lowest at 32-64 images of 128 px and nearly doubles at 256
# (scripts/bench_perturbation.py measures it); on a GPU pass a larger batch_size.
FORWARD_BATCH = 64


@dataclass(frozen=True)
class ExplainerSpec:
    name: str
    fn: Callable
    family: str  # "gradient", "activation", "perturbation", "prototype", "attention", "control"
    citation: str  # BibTeX key in book/references.bib ("" for controls without one)
    forward_passes: int  # per image, for the cost model
    backward_passes: int
    long_name: str

    @property
    def is_control(self) -> bool:
        return self.family == "control"


EXPLAINERS: Registry[ExplainerSpec] = Registry("explainer")


def register_explainer(name: str, *, family: str, citation: str, long_name: str,
                       forward_passes: int = 1, backward_passes: int = 0):
    def decorate(fn: Callable) -> Callable:
        EXPLAINERS.add(name, ExplainerSpec(name, fn, family, citation, forward_passes, backward_passes,
                                           long_name))
        return fn

    return decorate
