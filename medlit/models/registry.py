"""Model kinds: registered by name with a builder, a training recipe and the capabilities they offer.

A model kind is one module that defines a builder ``build(config) -> nn.Module`` decorated with
``register_model_kind``; ``ModelConfig.arch`` names it. ``build_model`` seeds, builds and tags the model with
its kind and capabilities; ``medlit.models.training.load_or_train`` trains it with the kind's recipe or loads
it from the cache. Explainers that need a capability the kind does not offer are recorded as not applicable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from medlit.models.config import ModelConfig
from medlit.registry import Registry


@dataclass(frozen=True)
class ModelKind:
    name: str
    build: Callable[[ModelConfig], nn.Module]  # an untrained model (the caller seeds the RNG)
    recipe: Callable  # recipe(model, config, train, val, *, device, progress) -> history (list of dicts)
    capabilities: frozenset[str]  # see medlit.models.capabilities
    long_name: str
    citation: str  # BibTeX key of the architecture ("" if none)
    # The kind this one is fine-tuned from ("" if trained from scratch): its trained model is prepared first and
    # named in ModelConfig.base, so that the recipe can start from it.
    base: str = ""


MODEL_KINDS: Registry[ModelKind] = Registry("model kind")


def register_model_kind(name: str, *, recipe: Callable, capabilities, long_name: str, citation: str = "",
                        base: str = ""):
    """Decorator registering a builder ``build(config) -> nn.Module`` as model kind ``name`` (fine-tuned from
    kind ``base`` when given)."""
    def decorate(build: Callable) -> Callable:
        MODEL_KINDS.add(name, ModelKind(name, build, recipe, frozenset(capabilities), long_name, citation, base))
        return build

    return decorate


def build_model(config: ModelConfig) -> nn.Module:
    """An untrained model of kind ``config.arch``, seeded so that its initial weights are reproducible.

    The model carries ``kind`` (its registered name) and ``capabilities`` (what it offers explainers).
    """
    if config.arch not in MODEL_KINDS:
        raise ValueError(f"unknown architecture {config.arch!r}; choose one of {', '.join(MODEL_KINDS)}")
    kind = MODEL_KINDS[config.arch]
    torch.manual_seed(config.seed)
    model = kind.build(config)
    model.kind, model.capabilities = kind.name, kind.capabilities
    return model
