"""Reading a layer's activations and gradients, and the gradients of the logits with respect to the input.

``capture`` is the one hook helper of the package: CAM methods and model inspection use it; the hook is always
removed. ``logit_gradient`` and ``jacobian`` give input gradients in one forward pass for a whole batch (the
Jacobian maps and the Jacobian stability study use them).
A ``reshape`` turns a layer output that is not a grid (a transformer's token sequence) into (B, C, h, w); the
gradient is taken with respect to the layer's own output and reshaped the same way.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn


def capture(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None, *,
            reshape: Callable[[torch.Tensor], torch.Tensor] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Activations A of ``layer`` for ``x``, d(sum_b logit_b[target_b]) / dA when ``target`` is given, and logits.

    Returns ``(activations, gradients or None, logits)``, all detached. Images of a batch are independent in
    eval mode, so the gradient of the batch sum is every image's own gradient (one backward for the batch).
    """
    store = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: store.setdefault("A", output))
    try:
        with torch.set_grad_enabled(target is not None):
            logits = model(x)
            gradients = None
            if target is not None:
                score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
                gradients = torch.autograd.grad(score, store["A"])[0].detach()
    finally:
        handle.remove()
    activations = store["A"].detach()
    if reshape is not None:
        activations = reshape(activations)
        gradients = None if gradients is None else reshape(gradients)
    return activations, gradients, logits.detach()


@contextlib.contextmanager
def eval_mode(model):
    """Put ``model`` in eval mode for the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def logit_gradient(model, x: torch.Tensor, weights_fn) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of ``sum_k w_k f_k(x)`` for each image, with ``w = weights_fn(logits)`` of shape (B, K).

    One forward and one backward pass for the whole batch: in eval mode the images do not interact, so the
    gradient of the batch sum is each image's own gradient. Returns the gradient (B, C, H, W) and the
    logits (B, K), both detached.
    """
    with eval_mode(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        weights = weights_fn(logits.detach())
        grad, = torch.autograd.grad((logits * weights).sum(), x)
    return grad.detach(), logits.detach()


def jacobian(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact Jacobian (B, K, C, H, W) of the logits at each image, and the logits (B, K).

    One forward and K backward passes for the whole batch (row k is the gradient of the batch sum of logit k).
    """
    with eval_mode(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        k = logits.shape[1]
        rows = [torch.autograd.grad(logits[:, i].sum(), x, retain_graph=i < k - 1)[0] for i in range(k)]
    return torch.stack(rows, dim=1).detach(), logits.detach()


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are ``model``'s per-block softmax attention; a clear error when it has none."""
    layers = getattr(model, "attention_layers", None)
    if not layers:
        raise TypeError(f"{type(model).__name__} offers no attention (no attention_layers)")
    return list(layers)


def capture_attention(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, torch.Tensor]:
    """Every block's attention (B, heads, N, N), first block first, for ``x``; with ``target``, the gradient of
    ``sum_b logit_b[target_b]`` with respect to each of them; and the logits. All detached; hooks removed.

    The attention is read at the output of each block's attention dropout (identity in eval mode), where it is
    still part of the graph; MONAI's ``save_attn`` stores a detached copy only.
    """
    layers = attention_layers(model)
    store: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(lambda module, inputs, output: store.append(output)) for layer in layers]
    try:
        with eval_mode(model), torch.set_grad_enabled(target is not None):
            logits = model(x)
            gradients = None
            if target is not None:
                score = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
                gradients = [g.detach() for g in torch.autograd.grad(score, store)]
    finally:
        for handle in handles:
            handle.remove()
    if len(store) != len(layers):
        raise RuntimeError(f"{type(model).__name__}: {len(store)} attention matrices for {len(layers)} blocks "
                           "(an attention module ran more or less than once per forward)")
    return [a.detach() for a in store], gradients, logits.detach()
