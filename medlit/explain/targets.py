"""What is explained: the class whose score every method attributes, and the score itself.

The benchmark explains the positive class ("finding present") on positive test images. The explained score is the
target's *centred logit*, ``z_t - mean_j z_j``: for the two-class models of the benchmark that is half the
log-odds of the finding, ``(z_1 - z_0) / 2 = log(p / (1 - p)) / 2``. Unlike the softmax probability it does not
saturate (the median probability on explained positives is above 0.99), and gradient methods, perturbation methods
and the insertion/deletion curves all use it. Building target and score in one place keeps every method, metric and
study explaining the same quantity.
"""

from __future__ import annotations

import torch

POSITIVE_CLASS = 1


def positive_class(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n,) int64 tensor of the positive class index, the target of every explanation in the benchmark."""
    return torch.full((n,), POSITIVE_CLASS, dtype=torch.long, device=device)


def explained_score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) centred logit of each row's ``target`` class from (N, K) ``logits``: half the log-odds when K = 2.

    Centring is idempotent, so a model that already returns centred logits (``ResNetClassifier``) gets its own
    output back.
    """
    if logits.ndim != 2:
        raise ValueError(f"explained_score: logits must be (N, K), got shape {tuple(logits.shape)}")
    centred = logits.float() - logits.float().mean(dim=1, keepdim=True)
    return centred.gather(1, target.view(-1, 1).to(logits.device, torch.long)).squeeze(1)
