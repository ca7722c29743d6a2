"""The sample structures every data source produces and every chapter consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# Box convention used everywhere in medlit: (x0, y0, x1, y1) in continuous pixel coordinates of the stored image
# (pixel column c spans [c, c + 1)), half-open. A box becomes a mask by the pixel-centre rule: pixel (row r,
# column c) lies inside when x0 <= c + 0.5 < x1 and y0 <= r + 0.5 < y1. For integer boxes (the tight boxes of
# masks, x1 = last column + 1) that is the set x0 <= c < x1. A box too thin to cover a pixel centre along an axis
# keeps the column (row) that holds its centre, so no finding vanishes. Missing boxes are rows of NaN.
BOX_FIELDS = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class Sample:
    """One image with everything known about it.

    Attributes
    ----------
    image : (C, H, W) float32 array in [0, 1]
    label : 0 (no finding) or 1 (finding present)
    boxes : (K, 4) float32 array of boxes (see ``BOX_FIELDS``); K = 0 for negatives
    finding_mask : (H, W) bool array, the exact pixels of the findings (all False for negatives)
    anatomy_mask : (H, W) bool array, the organ where findings may plausibly lie (lung fields)
    meta : per-sample metadata (finding type, confounder flag, generator parameters, ...)
    """

    image: np.ndarray
    label: int
    boxes: np.ndarray
    finding_mask: np.ndarray
    anatomy_mask: np.ndarray
    meta: dict = field(default_factory=dict)


@dataclass
class SampleSet:
    """A batch-first collection of samples, the form every medlit kernel works on.

    Attributes
    ----------
    name : data set name, e.g. ``"cxr-phantom"``
    split : ``"train"``, ``"val"`` or ``"test"``
    images : (N, C, H, W) float32 tensor in [0, 1]
    labels : (N,) int64 tensor
    boxes : (N, K, 4) float32 tensor, NaN rows where a sample has fewer than K boxes
    finding_masks : (N, H, W) bool tensor
    anatomy_masks : (N, H, W) bool tensor
    meta : dict of per-sample numpy arrays of length N (e.g. ``finding``: str, ``confounder``: bool)
    attrs : data-set level facts (``original_size``, ``seed``, ``generator``, ``class_names``, ...)
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    finding_masks: torch.Tensor
    anatomy_masks: torch.Tensor
    meta: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        checks = {
            "labels": self.labels.shape == (n,),
            "boxes": self.boxes.ndim == 3 and self.boxes.shape[0] == n and self.boxes.shape[2] == 4,
            "finding_masks": self.finding_masks.shape == (n, *self.images.shape[2:]),
            "anatomy_masks": self.anatomy_masks.shape == (n, *self.images.shape[2:]),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if self.images.ndim != 4 or bad:
            raise ValueError(f"SampleSet {self.name}/{self.split}: inconsistent shapes in {bad or ['images']}")
        for key, values in self.meta.items():
            if len(values) != n:
                raise ValueError(f"SampleSet {self.name}/{self.split}: meta[{key!r}] has {len(values)} rows, not {n}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])

    def __getitem__(self, i: int) -> Sample:
        boxes = self.boxes[i]
        boxes = boxes[~torch.isnan(boxes).any(dim=1)]
        return Sample(
            image=self.images[i].numpy(),
            label=int(self.labels[i]),
            boxes=boxes.numpy(),
            finding_mask=self.finding_masks[i].numpy(),
            anatomy_mask=self.anatomy_masks[i].numpy(),
            meta={k: v[i] for k, v in self.meta.items()},
        )

    def subset(self, index) -> "SampleSet":
        """The samples at ``index`` (a boolean mask, a slice or integer positions), as a new set."""
        index = torch.as_tensor(np.asarray(index)) if not isinstance(index, slice) else index
        np_index = index.numpy() if isinstance(index, torch.Tensor) else index
        return SampleSet(
            name=self.name,
            split=self.split,
            images=self.images[index],
            labels=self.labels[index],
            boxes=self.boxes[index],
            finding_masks=self.finding_masks[index],
            anatomy_masks=self.anatomy_masks[index],
            meta={k: np.asarray(v)[np_index] for k, v in self.meta.items()},
            attrs=dict(self.attrs),
        )

    def box_masks(self) -> torch.Tensor:
        """(N, H, W) bool: the union of each sample's boxes, the ground truth of box-annotated data."""
        return boxes_to_mask(self.boxes, self.image_size)


def boxes_to_mask(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Rasterise (N, K, 4) half-open boxes (NaN rows ignored) into an (N, H, W) bool mask.

    A pixel belongs to a box when its centre does: column c when ``x0 <= c + 0.5 < x1``, row r when
    ``y0 <= r + 0.5 < y1`` (see ``BOX_FIELDS``). Fractional boxes - every real box after the letterbox resize -
    thus keep the pixels they cover at least half of along each axis, with no half-pixel shift; integer boxes give
    exactly ``x0 <= c < x1``. A box on the image too thin to cover any pixel centre along an axis keeps, along
    that axis, the one column (or row) holding the centre of its part on the image, so no box vanishes.
    """
    h, w = size
    boxes = boxes.float()

    def axis(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
        """(N, K, n) bool: the pixels of one axis whose centre lies in [lo, hi) (NaN: none)."""
        centres = torch.arange(n, dtype=torch.float32) + 0.5
        inside = (centres >= lo[..., None]) & (centres < hi[..., None])
        clo, chi = lo.clamp(0, n), hi.clamp(0, n)  # the box's part on the image (NaN stays NaN)
        missed = (chi > clo) & ~inside.any(dim=-1)  # on the image, but thinner than a pixel
        if bool(missed.any()):
            middle = ((clo + chi) / 2).floor().clamp(0, n - 1).nan_to_num(-1)
            inside |= (centres - 0.5 == middle[..., None]) & missed[..., None]
        return inside

    cols = axis(boxes[..., 0], boxes[..., 2], w)  # (N, K, W)
    rows = axis(boxes[..., 1], boxes[..., 3], h)  # (N, K, H)
    return (rows[..., :, None] & cols[..., None, :]).any(dim=1)


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """The tight half-open box (x0, y0, x1, y1) of a non-empty (H, W) bool mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_to_box: the mask is empty")
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) bool -> (N, K, 4) half-open tight boxes, NaN rows for empty masks (``mask_to_box`` semantics)."""
    n, k, h, w = masks.shape
    rows, cols = masks.any(dim=3), masks.any(dim=2)  # (N, K, H), (N, K, W)

    def first_last(a: torch.Tensor, length: int):
        idx = torch.arange(length).expand_as(a)
        first = torch.where(a, idx, length).min(dim=-1).values
        last = torch.where(a, idx, -1).max(dim=-1).values
        return first, last + 1

    y0, y1 = first_last(rows, h)
    x0, x1 = first_last(cols, w)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1).float()
    boxes[~rows.any(dim=-1)] = float("nan")
    return boxes
