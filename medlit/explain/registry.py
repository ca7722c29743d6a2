"""Explainer metadata and registration.

An explainer is ``fn(model, x[B,C,H,W], target[B], **data_inputs) -> Tensor[B,H,W]``: float32, at input
resolution, not normalised (normalisation is a separate, recorded step). Controls (random, centre prior, edge
map, anatomy and box priors) are explainers too, so every table carries them. An explainer declares what it
``needs`` from a model (``medlit.models.capabilities``); the pipeline records it as not applicable on a model
that lacks it.

Data inputs
-----------
Some explainers need facts about the data set that are neither the images nor the model: the anatomy mask of
each image, or a prior learnt from the training split. An explainer names them in ``data_inputs`` (a tuple of
names of :data:`DATA_INPUTS`; empty for ordinary methods) and receives each as a keyword argument of the same
name. :func:`medlit.explain.run.explain_batched` takes them as ``data_inputs={name: tensor}``: a *per-image*
input (first dimension = the number of images) is sliced to each batch, a *data-set* input is passed whole;
both are moved to the model's device. A required input that is absent raises ``MissingDataInput`` (a
``ValueError``) naming the explainer and the input; inputs an explainer does not declare are ignored, so one
dictionary serves every method. :func:`medlit.explain.data_inputs.data_inputs_for` builds the dictionary from
a prepared data set. An input's scope (per image or data set) is declared in :data:`DATA_INPUTS`, not guessed
from its shape: an (H, W) prior whose H happens to equal the number of images must not be sliced.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from medlit.device import FORWARD_BATCH as _FORWARD_BATCH
from medlit.models.capabilities import CAM_STAGES, feature_map
from medlit.registry import Registry

# The data inputs an explainer may declare: name -> (per_image, what it is). ``per_image`` inputs have one entry
# per explained image (first dimension N) and are sliced with the images; the others are one tensor for the
# data set. A new input is declared here and built in ``medlit.explain.data_inputs.data_inputs_for``.
DATA_INPUTS: dict[str, tuple[bool, str]] = {
    "anatomy_masks": (True, "(N, H, W) bool: each explained image's anatomy mask (the organ)"),
    "box_prior": (False, ("(H, W) float32: the fraction of the training split's boxed positive images whose box "
                          "covers each pixel")),
}


def is_per_image(input_name: str) -> bool:
    """Whether data input ``input_name`` has one entry per image (else one tensor for the data set)."""
    return DATA_INPUTS[input_name][0]


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
    data_inputs: tuple[str, ...] = ()  # names of DATA_INPUTS, passed as keyword arguments (module docstring)

    @property
    def is_control(self) -> bool:
        return self.family == "control"


EXPLAINERS: Registry[ExplainerSpec] = Registry("explainer")


def register_explainer(name: str, *, family: str, citation: str, long_name: str,
                       forward_passes: int = 1, backward_passes: int = 0, needs=(), data_inputs=()):
    """Register ``fn`` as explainer ``name``; ``data_inputs`` names the :data:`DATA_INPUTS` it takes as keywords.

    Raises
    ------
    ValueError
        if a name in ``data_inputs`` is not declared in :data:`DATA_INPUTS` (a typo would otherwise surface only
        when the input is found missing at run time).
    """
    data_inputs = (data_inputs,) if isinstance(data_inputs, str) else tuple(data_inputs)
    unknown = [d for d in data_inputs if d not in DATA_INPUTS]
    if unknown:
        raise ValueError(f"explainer {name!r} declares unknown data input(s) {', '.join(map(repr, unknown))}; "
                         f"declared inputs are {', '.join(DATA_INPUTS)}")

    def decorate(fn: Callable) -> Callable:
        EXPLAINERS.add(name, ExplainerSpec(name, fn, family, citation, forward_passes, backward_passes,
                                           long_name, tuple(needs), data_inputs))
        return fn

    return decorate


STAGE_WORDS = {"last": "", "last-1": ", one stage earlier", "last-2": ", two stages earlier"}


def stage_name(name: str, stage: str) -> str:
    """The registered name of CAM method ``name`` at ``stage``: ``gradcam``, ``gradcam_stage-1``, ..."""
    return name if stage == "last" else f"{name}_stage{stage[4:]}"


def register_cam(name: str, *, family: str, citation: str, long_name: str, forward_passes, backward_passes: int,
                 needs=(), data_inputs=()):
    """Register a CAM method ``fn(model, x, target, stage=...)`` once per stage of ``CAM_STAGES``.

    ``forward_passes`` is an int or a dict stage -> int (Score-CAM's cost grows with the stage's channels).
    Each variant needs the feature map of its stage, plus ``needs``, and takes ``data_inputs`` like any explainer.
    """
    def decorate(fn: Callable) -> Callable:
        for stage in CAM_STAGES:
            passes = forward_passes[stage] if isinstance(forward_passes, dict) else forward_passes
            variant = functools.partial(fn, stage=stage)
            functools.update_wrapper(variant, fn)
            register_explainer(stage_name(name, stage), family=family, citation=citation,
                               long_name=long_name + STAGE_WORDS[stage], forward_passes=passes,
                               backward_passes=backward_passes, needs=(feature_map(stage), *needs),
                               data_inputs=data_inputs)(variant)
        return fn

    return decorate
