"""What is explained: the class whose score every method attributes.

The benchmark explains the positive class ("finding present") on positive test images. Building that target
in one place keeps every method, metric and study explaining the same quantity.
"""

from __future__ import annotations

import torch

POSITIVE_CLASS = 1


def positive_class(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n,) int64 tensor of the positive class index, the target of every explanation in the benchmark."""
    return torch.full((n,), POSITIVE_CLASS, dtype=torch.long, device=device)
