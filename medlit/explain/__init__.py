"""Explainers: one module per method, each registering itself in ``EXPLAINERS``.

To add a method, write one module with a function decorated by ``register_explainer`` (``register_cam`` for a
method read at a model's feature stages) and import it below. What every method explains is built once, in
``medlit.explain.targets``. Explainers that need facts about the data set (the controls' anatomy masks and box
prior) declare ``data_inputs``; ``data_inputs_for(train, explained)`` builds them for ``explain_batched``.
"""

from medlit.explain import (  # noqa: F401  (registration)
    chefer, controls, feature_ablation, gradcam, gradcam_pp, gradient_shap, guided, input_x_gradient,
    integrated_gradients, jacobian, lrp, occlusion, raw_attention, rise, rollout, saliency, scorecam, smoothgrad,
    superpixel_shap)
from medlit.explain.data_inputs import data_inputs_for
from medlit.explain.registry import DATA_INPUTS, EXPLAINERS, ExplainerSpec, register_cam, register_explainer
from medlit.explain.run import (MissingDataInput, NotApplicable, explain_batched, missing_data_inputs,
                                not_applicable_reason)
from medlit.explain.targets import positive_class

__all__ = ["DATA_INPUTS", "EXPLAINERS", "ExplainerSpec", "MissingDataInput", "NotApplicable", "data_inputs_for",
           "explain_batched", "missing_data_inputs", "not_applicable_reason", "positive_class", "register_cam",
           "register_explainer"]
