"""Does the benchmark's ViT have "attention sinks"? High-norm background tokens {cite}`darcet2024registers`.

Large ViTs trained long enough recycle a few uninformative background patches as scratch space: those tokens'
outputs have a far larger norm than the others and draw much of the CLS token's attention, so a raw attention map
points at the background. The check reads, on the explained images, the norm of every patch token at the output
of the last block and the last block's CLS attention (mean over heads), and relates both to the finding's box
and the anatomy (a patch is "in" a region when any of its pixels is).
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from medlit.models.capture import capture, capture_attention

# A token whose norm is this many times the image's median patch-token norm is an outlier; Darcet et al. report
# high-norm tokens near ten times the others.
OUTLIER_RATIO = 3.0


def patch_regions(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) bool -> (N, h*w) bool: whether each patch holds any pixel of the mask."""
    return F.adaptive_max_pool2d(masks[:, None].float(), grid)[:, 0].flatten(1) > 0


def token_statistics(model, images: torch.Tensor, boxes: torch.Tensor, anatomy: torch.Tensor,
                     batch_size: int = 64) -> pd.DataFrame:
    """One row per image: the largest patch-token norm over the median one, whether that token lies in the box and
    in the anatomy, the CLS attention's share on its most-attended patch, and whether that patch is the largest-norm
    one. ``boxes`` and ``anatomy`` are (N, H, W) bool masks."""
    grid, prefix = model.patch_grid, getattr(model, "prefix_tokens", 1)
    rows = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        tokens, _, _ = capture(model, model.token_layer, x)
        attentions, _, _ = capture_attention(model, x)
        norms = tokens[:, prefix:].norm(dim=-1)  # (B, h*w)
        cls = attentions[-1].mean(dim=1)[:, 0, prefix:]  # (B, h*w), the CLS row over the patches
        in_box = patch_regions(boxes[start:start + batch_size], grid)
        in_anatomy = patch_regions(anatomy[start:start + batch_size], grid)
        top_norm, top_attention = norms.argmax(dim=1), cls.argmax(dim=1)
        for i in range(len(x)):
            rows.append({"norm ratio": float(norms[i].max() / norms[i].median()),
                         "top-norm token in box": bool(in_box[i, top_norm[i]]),
                         "top-norm token in anatomy": bool(in_anatomy[i, top_norm[i]]),
                         "top patch's share of CLS attention": float(cls[i].max() / cls[i].sum()),
                         "most-attended patch in box": bool(in_box[i, top_attention[i]]),
                         "most-attended is top-norm": bool(top_attention[i] == top_norm[i])})
    return pd.DataFrame(rows)


def attention_sink_table(prepared_sets: dict) -> pd.DataFrame:
    """Per data set (``name -> Prepared`` of a ViT), the means of :func:`token_statistics` over the explained
    images, beside what chance would give (a uniform attention's share of one patch, the box's share of patches)."""
    out = []
    for name, prepared in prepared_sets.items():
        data, model = prepared.explained, prepared.model
        device = next(model.parameters()).device
        stats = token_statistics(model, data.images.to(device), data.box_masks().to(device),
                                 data.anatomy_masks.to(device))
        grid = model.patch_grid
        box_share = patch_regions(data.box_masks(), grid).float().mean().item()
        row = {"dataset": name, "images": len(stats),
               f"images with a token above {OUTLIER_RATIO:g}x the median norm": float(
                   (stats["norm ratio"] > OUTLIER_RATIO).mean())}
        row.update(stats.mean(numeric_only=True).to_dict())
        row["uniform attention's share of one patch"] = 1.0 / (grid[0] * grid[1])
        row["patches in the box (chance of 'in box')"] = box_share
        out.append(row)
    return pd.DataFrame(out).set_index("dataset")


def sink_sentence(table: pd.DataFrame) -> str:
    """A Markdown paragraph reading :func:`attention_sink_table`: per data set, whether outlier tokens appear and
    whether the CLS token's favourite patch lies in the box more often than chance."""
    outliers = f"images with a token above {OUTLIER_RATIO:g}x the median norm"
    parts = []
    for name, row in table.iterrows():
        sinks = (f"{row[outliers]:.0%} of the explained images have a patch token above {OUTLIER_RATIO:g} times the "
                 f"median norm (the largest is {row['norm ratio']:.2f} times the median on average)")
        in_box, chance = row["most-attended patch in box"], row["patches in the box (chance of 'in box')"]
        where = ("more often than" if in_box > chance else "no more often than")
        parts.append(f"On **{name}**, {sinks}; the patch the CLS token attends to most lies in the finding's box in "
                     f"{in_box:.0%} of the images, {where} a patch drawn at random ({chance:.0%}).")
    return " ".join(parts)
