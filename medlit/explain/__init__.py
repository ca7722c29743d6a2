"""Explainers: one module per method, each registering itself in ``EXPLAINERS``.

To add a method, write one module with a function decorated by ``register_explainer`` and import it below.
"""

from medlit.explain import (  # noqa: F401  (registration)
    controls, feature_ablation, gradcam, gradcam_pp, gradient_shap, guided, input_x_gradient, integrated_gradients,
    jacobian, lrp, occlusion, rise, saliency, scorecam, smoothgrad, superpixel_shap)
from medlit.explain.registry import EXPLAINERS, ExplainerSpec, register_explainer
from medlit.explain.run import explain_batched

__all__ = ["EXPLAINERS", "ExplainerSpec", "explain_batched", "register_explainer"]
