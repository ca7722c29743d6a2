"""Explainer metadata and registration.

An explainer is ``fn(model, x[B,C,H,W], target[B]) -> Tensor[B,H,W]``: float32, at input resolution,
not normalised (normalisation is a separate, recorded step). Controls (random, centre prior) are
explainers too, so every table carries them. An explainer declares what it ``needs`` from a model
(``medlit.models.capabilities``); the pipeline records it as not applicable on a model that lacks it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from medlit.device import FORWARD_BATCH as _FORWARD_BATCH
from medlit.models.capabilities import CAM_STAGES, feature_map
from medlit.registry import Registry

# The CPU's images per forward pass, the default ``batch_size`` of perturbation methods; ``explain_batched``
# passes the batch size of the model's device (``medlit.device.forward_batch``).
FORWARD_BATCH = _FORWARD_BATCH["cpu"]


@dataclass(frozen=True)
class ExplainerSpec:
    name: str
    fn: Callable
    family: str  # "gradient", "activation", "perturbation", "prototype", "attention", "control"
    citation: str  # BibTeX key in book/references.bib ("" for controls without one)
    forward_passes: int  # per image, for the cost model
    backward_passes: int
    long_name: str
    needs: tuple[str, ...] = ()  # capabilities the model must offer (medlit.models.capabilities)

    @property
    def is_control(self) -> bool:
        return self.family == "control"


EXPLAINERS: Registry[ExplainerSpec] = Registry("explainer")


def register_explainer(name: str, *, family: str, citation: str, long_name: str,
                       forward_passes: int = 1, backward_passes: int = 0, needs=()):
    def decorate(fn: Callable) -> Callable:
        EXPLAINERS.add(name, ExplainerSpec(name, fn, family, citation, forward_passes, backward_passes,
                                           long_name, tuple(needs)))
        return fn

    return decorate


STAGE_WORDS = {"last": "", "last-1": ", one stage earlier", "last-2": ", two stages earlier"}


def stage_name(name: str, stage: str) -> str:
    """The registered name of CAM method ``name`` at ``stage``: ``gradcam``, ``gradcam_stage-1``, ..."""
    return name if stage == "last" else f"{name}_stage{stage[4:]}"


def register_cam(name: str, *, family: str, citation: str, long_name: str, forward_passes, backward_passes: int,
                 needs=()):
    """Register a CAM method ``fn(model, x, target, stage=...)`` once per stage of ``CAM_STAGES``.

    ``forward_passes`` is an int or a dict stage -> int (Score-CAM's cost grows with the stage's channels).
    Each variant needs the feature map of its stage, plus ``needs``.
    """
    def decorate(fn: Callable) -> Callable:
        for stage in CAM_STAGES:
            passes = forward_passes[stage] if isinstance(forward_passes, dict) else forward_passes
            variant = functools.partial(fn, stage=stage)
            functools.update_wrapper(variant, fn)
            register_explainer(stage_name(name, stage), family=family, citation=citation,
                               long_name=long_name + STAGE_WORDS[stage], forward_passes=passes,
                               backward_passes=backward_passes, needs=(feature_map(stage), *needs))(variant)
        return fn

    return decorate
