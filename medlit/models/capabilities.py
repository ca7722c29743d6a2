"""What a model offers to explainers, by name.

An explainer declares what it needs (``register_explainer(..., needs=...)``); a model kind declares what it
offers (``register_model_kind(..., capabilities=...)``). The pipeline runs a method only on the models that offer
everything it needs and records the others as not applicable, with the reason, instead of failing inside captum.

Capabilities and how a model provides them:

``gradients``
    the logits are differentiable with respect to the input (every torch model here).
``feature_map:<stage>``
    a spatial feature map at ``stage`` (``"last"``, ``"last-1"``, ``"last-2"``: the last stage and the one or two
    before it), for CAM methods: the model's ``feature_layers`` dict maps each stage to its module, and an optional
    ``feature_grid(stage, output)`` turns that module's output into (B, C, h, w) (a ViT's tokens into a grid).
``lrp_rewrite``
    ``model.lrp_ready()`` returns an equivalent copy made of modules LRP can attach rules to.
``attention``, ``prototypes``
    per-block attention matrices, native prototype similarity maps (model kinds to come).
"""

from __future__ import annotations

import torch
from torch import nn

GRADIENTS = "gradients"
LRP_REWRITE = "lrp_rewrite"
ATTENTION = "attention"
PROTOTYPES = "prototypes"
# The stages CAM methods are registered on, from the last one backwards. At 128 px the benchmark ResNet's last stage
# is a 4 x 4 grid, the two before it 8 x 8 and 16 x 16: the grid limits a CAM map more than the method does.
CAM_STAGES = ("last", "last-1", "last-2")
# What any torch module offers without declaring anything: forward passes and input gradients.
PLAIN_MODULE = frozenset({GRADIENTS})


def feature_map(stage: str = "last") -> str:
    """The capability name of a feature map at ``stage`` (one of ``CAM_STAGES``)."""
    if stage not in CAM_STAGES:
        raise ValueError(f"unknown feature stage {stage!r}; choose one of {', '.join(CAM_STAGES)}")
    return f"feature_map:{stage}"


def capabilities_of(model: nn.Module) -> frozenset[str]:
    """What ``model`` offers: the capabilities its kind registered (set by ``build_model``), or, for a module
    that was not built through the model registry (a test's toy network), ``PLAIN_MODULE`` plus a feature map
    for every stage it lists in ``feature_layers``."""
    declared = getattr(model, "capabilities", None)
    if declared is not None:
        return frozenset(declared)
    stages = getattr(model, "feature_layers", {}) or {}
    return PLAIN_MODULE | {feature_map(stage) for stage in stages}


def missing_capabilities(needs, model: nn.Module) -> list[str]:
    """The capabilities in ``needs`` that ``model`` does not offer, in the order they were asked for."""
    offered = capabilities_of(model)
    return [need for need in needs if need not in offered]


def feature_layer(model: nn.Module, stage: str = "last") -> nn.Module:
    """The module whose output is the feature map at ``stage``; a clear error when the model has none."""
    layers = getattr(model, "feature_layers", None) or {}
    if stage not in layers:
        raise TypeError(f"{type(model).__name__} offers no feature map at stage {stage!r} "
                        f"(it offers: {', '.join(layers) or 'none'})")
    return layers[stage]


def feature_grid(model: nn.Module, stage: str, output: torch.Tensor) -> torch.Tensor:
    """The output of ``feature_layer(model, stage)`` as a (B, C, h, w) grid (unchanged for a CNN)."""
    to_grid = getattr(model, "feature_grid", None)
    return output if to_grid is None else to_grid(stage, output)
