"""Stable seeds for the generated data sets: one root seed per ``(generator, seed, split)``, one per internal chunk.

The generators (``phantom``, ``fundus``, ``ct``) draw per-image parameters from a numpy generator seeded with the
root seed and pixel noise from one torch generator per chunk of images. Both seeds are pure functions of the
arguments (sha256, not Python's salted ``hash``), so the same call gives bit-identical output in any process, and
the splits of one seed are different draws. Changing anything here changes every generated image.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["CHUNK_STRIDE", "SEED_MASK", "chunk_generator", "chunk_seed", "split_seed"]

SEED_MASK = (1 << 63) - 1  # seeds are 63-bit: non-negative for numpy and for torch's manual_seed
CHUNK_STRIDE = 1_000_003  # chunk k of a phantom or CT split is seeded root + CHUNK_STRIDE * (k + 1)


def split_seed(generator: str, seed: int, split: str) -> int:
    """A stable 63-bit seed for ``(generator, seed, split)``: the first 8 bytes (little-endian) of the sha256 of
    ``"generator|seed|split"``.

    Parameters
    ----------
    generator : the generator's fixed key, e.g. ``"medlit.cxr-phantom"`` (part of the hash, never rename it)
    seed : the user's seed (an integer)
    split : ``"train"``, ``"val"``, ``"test"`` or any other split name
    """
    digest = hashlib.sha256(f"{generator}|{int(seed)}|{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & SEED_MASK


def chunk_seed(root: int, index: int, *, stride: int = CHUNK_STRIDE, offset: int = 1) -> int:
    """The seed of chunk ``index`` (0-based) of a split with root seed ``root``: ``root + stride (index + offset)``,
    wrapped to 63 bits.

    The phantom and CT generators use the defaults; the fundus generator was released with ``stride=1, offset=0``
    (``root + index``) and keeps it, so that its images do not change.
    """
    return (root + stride * (index + offset)) & SEED_MASK


def chunk_generator(root: int, index: int, *, stride: int = CHUNK_STRIDE, offset: int = 1) -> torch.Generator:
    """A CPU torch generator seeded with :func:`chunk_seed` ``(root, index, stride=stride, offset=offset)``."""
    return torch.Generator().manual_seed(chunk_seed(root, index, stride=stride, offset=offset))
