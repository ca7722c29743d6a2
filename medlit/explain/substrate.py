"""What perturbation methods put where they hide pixels.

On a radiograph black is air, and a black patch inside a lung is itself an abnormality, so the default is
each image's own mean intensity; ``"zeros"`` keeps the black substrate of the original papers.
"""

from __future__ import annotations

import torch

SUBSTRATES = ("mean", "zeros")


def substrate_value(x: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, 1, 1, 1) per-image fill value for images ``x`` (B, C, H, W)."""
    if kind == "mean":
        return x.mean(dim=(1, 2, 3), keepdim=True)
    if kind == "zeros":
        return torch.zeros(len(x), 1, 1, 1, device=x.device, dtype=x.dtype)
    raise ValueError(f"substrate must be one of {', '.join(SUBSTRATES)}, not {kind!r}")


def substrate_images(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The substrate as full images shaped like ``x`` (captum's ``baselines``)."""
    return substrate_value(x, kind).expand_as(x).contiguous()
