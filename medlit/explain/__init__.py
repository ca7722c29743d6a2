"""Explainers: one module per method, each registering itself in ``EXPLAINERS``.

To add a method, write one module with a function decorated by ``register_explainer`` and import it below.
"""

from medlit.explain import controls, gradcam, saliency  # noqa: F401  (registration)
from medlit.explain.registry import EXPLAINERS, ExplainerSpec, register_explainer
from medlit.explain.run import explain_batched

__all__ = ["EXPLAINERS", "ExplainerSpec", "explain_batched", "register_explainer"]
