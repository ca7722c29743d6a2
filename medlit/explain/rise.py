"""RISE {cite}`petsiuk2018rise`: the explained score averaged over random smooth masks, weighted by each mask.

The score is the target's centred logit (:func:`medlit.explain.targets.explained_score`), and its mean over the
masks is subtracted before weighting. The paper's estimator ``sum_i s_i M_i / (N p)`` contains the term
``mean(s) * sum_i M_i / (N p)``: the mean score times each pixel's mask coverage, which is ~1 plus the sampling
noise of the coverage. With a saturated score that term dominated the map (energy share in the box divided by the
box's area 1.01-1.06, chance). Centring, ``sum_i (s_i - mean_j s_j) M_i / (N p)``, is the covariance of score and
mask over the masks divided by p: the expectation of the paper's map minus a constant, so the ranking of pixels
is the paper's in expectation, but an offset added to the model's score no longer enters the map at all.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from medlit.explain.registry import FORWARD_BATCH, register_explainer
from medlit.explain.targets import explained_score
from medlit.models.inference import inference_forward
from medlit.perturbation import PROTOCOL_SUBSTRATE, perturbation_fill


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
         substrate: str = PROTOCOL_SUBSTRATE, seed: int = 0, batch_size: int = FORWARD_BATCH) -> torch.Tensor:
    """sum_i (f_i - mean_j f_j) M_i / (N p_keep), f_i = f_t(x * M_i + s * (1 - M_i)), f_t the explained score.

    Parameters
    ----------
    n_masks, cells, p_keep : N, s and p1 of the paper (defaults 2000, 8, 0.5; the paper uses N = 4000-6000 on
        ImageNet; the cost study varies N)
    substrate : s where a mask is 0: ``"blur"`` (the protocol substrate, the blurred image), ``"mean"`` (the
        image's mean intensity) or ``"zeros"`` (the paper; a black region is itself an anomaly on a radiograph)
    seed : the masks depend on ``seed`` and the image size only, so every image sees the same masks
    batch_size : masked images per forward pass
    """
    masks = rise_masks(x.shape[-2], x.shape[-1], n_masks, cells, p_keep, seed)
    fill = perturbation_fill(x, substrate)
    per_chunk = max(1, batch_size // len(x))
    forward = inference_forward(model)  # a frozen copy on the CPU (medlit.models.inference)
    scores = []
    with torch.no_grad():
        for start in range(0, n_masks, per_chunk):
            m = masks[start:start + per_chunk].to(device=x.device, dtype=x.dtype)[None, :, None]  # (1, m, 1, H, W)
            masked = (x[:, None] * m + fill[:, None] * (1 - m)).flatten(0, 1)  # (B * m, C, H, W)
            owners = target.repeat_interleave(m.shape[1])  # masked copies are image-major
            scores.append(explained_score(forward(masked), owners).view(len(x), m.shape[1]))
    scores = torch.cat(scores, dim=1)  # (B, N)
    centred = scores - scores.mean(dim=1, keepdim=True)  # removes the mean score x mask-coverage offset
    saliency = centred @ masks.to(device=x.device, dtype=torch.float32).flatten(1)
    return (saliency / (n_masks * p_keep)).view(len(x), *x.shape[-2:]).detach()
