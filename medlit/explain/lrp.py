"""Layer-wise relevance propagation {cite}`bach2015lrp` {cite}`montavon2019lrp`, through captum's LRP.

LRP runs on the model's LRP-ready copy (``model.lrp_ready()``, the ``lrp_rewrite`` capability; for the ResNet
see ``medlit.models.resnet_lrp``): batch norm and the input normalisation folded into convolutions, every ReLU
and residual addition a module of its own. captum attaches
a rule to every leaf module and removes its hooks and rules after each call; the caller's model is never
touched. LRP is registered in the "gradient" family: it is a modified backward pass (captum implements it
as gradient × input with rule-specific hooks), and the benchmark's families have no "relevance".

Rules common to both variants: ReLUs pass relevance through (captum's only option for them); max pooling
gives it to the winner, average pooling and ``Add`` split it in proportion to the inputs' contributions,
padding and flattening pass it on (all LRP-0 with captum's 1e-9 stabiliser; ``lrp_epsilon`` adds its
epsilon at ``Add``). Relevance reaching the grey padding of the first convolution is dropped, like relevance
absorbed by biases and by epsilon.
"""

from __future__ import annotations

from typing import Callable

import torch
from captum.attr import LRP
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, PropagationRule  # not re-exported
from torch import nn

from medlit.explain.registry import register_explainer
from medlit.models.capabilities import GRADIENTS, LRP_REWRITE
from medlit.models.resnet_lrp import Add


def relevance(model, x: torch.Tensor, target: torch.Tensor, rule_for: Callable[[nn.Module], PropagationRule],
              return_convergence_delta: bool = False):
    """(B, C, H, W) input relevance with ``rule_for(layer)`` on every leaf of the LRP-ready copy but ReLUs.

    With ``return_convergence_delta`` also captum's (B,) delta, f_target(x) - sum of the input relevance.
    """
    canonical = model.lrp_ready()
    for layer in canonical.modules():
        if len(list(layer.children())) == 0 and not isinstance(layer, nn.ReLU):
            layer.rule = rule_for(layer)
    out = LRP(canonical).attribute(x, target=target, return_convergence_delta=return_convergence_delta)
    return tuple(o.detach() for o in out) if return_convergence_delta else out.detach()


def epsilon_rules(epsilon: float) -> Callable[[nn.Module], PropagationRule]:
    """LRP-epsilon on every convolution, dense layer and addition; LRP-0 on parameter-free layers."""
    return lambda layer: EpsilonRule(epsilon) if isinstance(layer, (nn.Conv2d, nn.Linear, Add)) else EpsilonRule()


def composite_rules(epsilon: float) -> Callable[[nn.Module], PropagationRule]:
    """z+ (alpha1-beta0, biases ignored) on convolutions, LRP-epsilon on dense layers, LRP-0 elsewhere."""
    def rule_for(layer: nn.Module) -> PropagationRule:
        if isinstance(layer, nn.Conv2d):
            return Alpha1_Beta0_Rule(set_bias_to_zero=True)
        return EpsilonRule(epsilon) if isinstance(layer, nn.Linear) else EpsilonRule()

    return rule_for


@register_explainer("lrp_epsilon", family="gradient", citation="bach2015lrp", long_name="LRP-ε",
                    forward_passes=2, backward_passes=1, needs=(GRADIENTS, LRP_REWRITE))
def lrp_epsilon(model, x: torch.Tensor, target: torch.Tensor, epsilon: float = 0.25) -> torch.Tensor:
    """LRP-epsilon, R_i = sum_j x_i w_ij / (z_j + epsilon sign(z_j)) R_j, on every convolution, dense
    layer and residual addition (LRP-0 on parameter-free layers); channel sum, signed.

    Parameters
    ----------
    epsilon : 0.25, i.e. 0.25 standard deviations of the activations as in the example of
        {cite}`montavon2019lrp`, the activations here being batch-normalised (about unit scale); it absorbs
        weak and contradictory relevance. As epsilon -> 0 LRP-epsilon of a ReLU network is exactly
        input × gradient (a test checks it), which is registered separately.

    Notes
    -----
    The family is "gradient": LRP is a modified backward pass. Relevance is conserved layer to layer only
    up to what biases and epsilon absorb (a test checks conservation for a bias-free model with epsilon -> 0).
    """
    return relevance(model, x, target, epsilon_rules(epsilon)).sum(dim=1)


@register_explainer("lrp_composite", family="gradient", citation="montavon2019lrp",
                    long_name="LRP composite (ε dense, z+ conv)", forward_passes=2, backward_passes=1,
                    needs=(GRADIENTS, LRP_REWRITE))
def lrp_composite(model, x: torch.Tensor, target: torch.Tensor, epsilon: float = 0.25) -> torch.Tensor:
    """LRP-epsilon on the dense layer, z+ (alpha1-beta0) on every convolution; channel sum, signed.

    Parameters
    ----------
    epsilon : of the dense layer, 0.25 as for ``lrp_epsilon``

    Notes
    -----
    A composite by layer type in the spirit of {cite}`montavon2019lrp` (zennit's EpsilonPlus). The input
    layer also uses z+, which is well defined because the folded first convolution reads the image in
    [0, 1] (zennit's EpsilonPlusFlat uses the flat rule there and the paper z^B; captum has neither). z+
    conserves relevance over a convolution with non-negative inputs (every one here: the image and post-ReLU
    activations) and drops the bias, so mainly the dense layer's epsilon and bias and the padding absorb
    relevance (and units before a residual addition with no positive input, a small loss). The family is
    "gradient" (a modified backward pass).
    """
    return relevance(model, x, target, composite_rules(epsilon)).sum(dim=1)
