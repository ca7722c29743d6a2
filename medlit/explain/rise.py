"""RISE {cite}`petsiuk2018rise`: the target probability averaged over random smooth masks, weighted by each mask."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from medlit.explain.registry import FORWARD_BATCH, register_explainer
from medlit.perturbation import substrate_value


@lru_cache(maxsize=4)
def rise_masks(height: int, width: int, n_masks: int = 2000, cells: int = 8, p_keep: float = 0.5,
               seed: int = 0) -> torch.Tensor:
    """(N, H, W) float32 masks on the CPU, made once per argument tuple and cached (the same object is returned).

    As in the reference implementation: a binary ``cells`` x ``cells`` grid, each cell kept with probability
    ``p_keep``, upsampled bilinearly to (cells + 1) x cell size, then cropped to H x W at a random shift of up to
    one cell. Bilinear upsampling is torch's (half-pixel centres, edge clamping), where the reference uses
    scikit-image's ``resize(order=1, mode="reflect")``; the two differ only within half a pixel of the border.
    """
    generator = torch.Generator().manual_seed(seed)
    cell_h, cell_w = -(-height // cells), -(-width // cells)
    grids = (torch.rand(n_masks, 1, cells, cells, generator=generator) < p_keep).float()
    shifts = torch.stack([torch.randint(0, cell_h, (n_masks,), generator=generator),
                          torch.randint(0, cell_w, (n_masks,), generator=generator)], dim=1).tolist()
    masks = torch.empty(n_masks, height, width)
    for start in range(0, n_masks, 256):
        up = F.interpolate(grids[start:start + 256], size=((cells + 1) * cell_h, (cells + 1) * cell_w),
                           mode="bilinear", align_corners=False)[:, 0]
        for i, mask in enumerate(up, start):
            dy, dx = shifts[i]
            masks[i] = mask[dy:dy + height, dx:dx + width]
    return masks


@register_explainer("rise", family="perturbation", citation="petsiuk2018rise", long_name="RISE",
                    forward_passes=2000, backward_passes=0)
def rise(model, x: torch.Tensor, target: torch.Tensor, n_masks: int = 2000, cells: int = 8, p_keep: float = 0.5,
         substrate: str = "mean", seed: int = 0, batch_size: int = FORWARD_BATCH) -> torch.Tensor:
    """sum_i f_t(x * M_i + s * (1 - M_i)) M_i / (N p_keep), f_t the softmax probability of the target.

    Parameters
    ----------
    n_masks, cells, p_keep : N, s and p1 of the paper (defaults 2000, 8, 0.5; the paper uses N = 4000-6000 on
        ImageNet; the cost study varies N)
    substrate : s where a mask is 0: ``"mean"`` (the image's mean intensity; a black region is itself an anomaly
        on a radiograph) or ``"zeros"`` (the paper)
    seed : the masks depend on ``seed`` and the image size only, so every image sees the same masks
    batch_size : masked images per forward pass
    """
    masks = rise_masks(x.shape[-2], x.shape[-1], n_masks, cells, p_keep, seed)
    fill = substrate_value(x, substrate)
    per_chunk = max(1, batch_size // len(x))
    probs = []
    with torch.no_grad():
        for start in range(0, n_masks, per_chunk):
            m = masks[start:start + per_chunk].to(device=x.device, dtype=x.dtype)[None, :, None]  # (1, m, 1, H, W)
            masked = (x[:, None] * m + fill[:, None] * (1 - m)).flatten(0, 1)  # (B * m, C, H, W)
            p = torch.softmax(model(masked).float(), dim=1).view(len(x), m.shape[1], -1)  # (B, m, classes)
            probs.append(p.gather(2, target.view(-1, 1, 1).expand(-1, p.shape[1], 1))[..., 0])
    probs = torch.cat(probs, dim=1)  # (B, N)
    saliency = probs @ masks.to(device=x.device, dtype=torch.float32).flatten(1)
    return (saliency / (n_masks * p_keep)).view(len(x), *x.shape[-2:]).detach()
