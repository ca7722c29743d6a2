"""Reading DICOM images into medlit's [0, 1] intensity convention.

The steps follow the DICOM standard's pixel pipeline (PS3.3 C.11): stored values -> *modality* values (Rescale
Slope/Intercept or a Modality LUT; Hounsfield units on CT) -> *VOI* window (Window Center/Width or a VOI LUT; the
reader's display setting) -> display, with MONOCHROME1 ("white is zero", common on CR/DX) inverted so that dense
tissue is always bright. Every failure names the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DicomError", "DicomImage", "read_dicom", "to_unit_range", "read_dicom_unit", "window"]


class DicomError(ValueError):
    """A DICOM file that cannot be turned into an image; the message names the file and the reason."""


@dataclass
class DicomImage:
    """A decoded single-frame DICOM image.

    Attributes
    ----------
    path : the file it came from
    modality_values : (H, W) float32, stored values after the modality transform (HU on CT)
    photometric : ``"MONOCHROME1"`` or ``"MONOCHROME2"``
    dataset : the pydicom Dataset (for the VOI LUT and any other tag)
    meta : a few tags worth keeping per sample (modality, spacing, body part, view)
    """

    path: Path
    modality_values: np.ndarray
    photometric: str
    dataset: object = field(repr=False)
    meta: dict = field(default_factory=dict)


def read_dicom(path: str | Path) -> DicomImage:
    """Decode ``path`` and apply the modality transform; raise :class:`DicomError` naming the file otherwise."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    path = Path(path)
    if not path.is_file():
        raise DicomError(f"{path}: DICOM file not found")
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as err:
        raise DicomError(f"{path}: not a readable DICOM file ({err})") from err
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(f"{path}: photometric interpretation {photometric!r} is not a greyscale image")
    try:
        stored = ds.pixel_array
    except Exception as err:  # pydicom raises many types (missing handler, bad length, missing tags)
        raise DicomError(f"{path}: the pixel data cannot be decoded ({type(err).__name__}: {err})") from err
    if stored.ndim != 2:
        raise DicomError(f"{path}: expected one 2-D frame, got pixel data of shape {stored.shape}")
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    meta = {
        "modality": str(getattr(ds, "Modality", "")),
        "pixel_spacing": [float(v) for v in getattr(ds, "PixelSpacing", [])] or None,
        "body_part": str(getattr(ds, "BodyPartExamined", "")),
        "view_position": str(getattr(ds, "ViewPosition", "")),
    }
    return DicomImage(path, values, photometric, ds, meta)


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The linear VOI window of DICOM PS3.3 C.11.2.1.2, mapped to [0, 1]."""
    if width < 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    low = center - 0.5 - (width - 1) / 2
    return np.clip((values - low) / (width - 1), 0.0, 1.0).astype(np.float32)


def to_unit_range(image: DicomImage, *, voi: str | tuple[float, float] = "file",
                  percentiles: tuple[float, float] = (0.5, 99.5), fallback: str = "minmax") -> np.ndarray:
    """(H, W) float32 in [0, 1], bright = dense.

    ``voi="file"`` applies the file's own VOI LUT or first window when it has one and otherwise the ``fallback``;
    ``voi=(center, width)`` applies that window; ``voi="minmax"`` always stretches the ``percentiles`` of the
    modality values to [0, 1]; ``voi="bits"`` maps the full range of the stored values (``BitsStored``, signed or
    not, through the rescale) linearly to [0, 1], which reproduces an image that was already windowed for display
    before it was stored (e.g. an 8-bit image converted to DICOM). ``fallback`` is ``"minmax"`` or ``"bits"``.
    """
    ds = image.dataset
    values = image.modality_values
    if fallback not in ("minmax", "bits"):
        raise ValueError(f"fallback must be 'minmax' or 'bits', got {fallback!r}")
    has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
    if voi == "file" and not has_voi:
        voi = fallback
    if isinstance(voi, tuple):
        out = window(values, *voi)
    elif voi == "bits":
        out = _full_range(image)
    elif voi == "file" and "VOILUTSequence" in ds:
        from pydicom.pixels import apply_voi_lut

        try:
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            shown = np.asarray(apply_voi_lut(values, ds, prefer_lut=True), dtype=np.float32)
        except Exception as err:
            raise DicomError(f"{image.path}: its VOI LUT cannot be applied ({err})") from err
        out = np.clip(shown / float(2 ** bits - 1), 0, 1)
    elif voi == "file" and "WindowCenter" in ds and "WindowWidth" in ds:
        out = window(values, _first(ds.WindowCenter), _first(ds.WindowWidth))
    elif voi == "minmax":
        lo, hi = np.percentile(values, percentiles)
        out = np.clip((values - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(values)
    else:
        raise ValueError(f"voi must be 'file', 'minmax', 'bits' or (center, width), got {voi!r}")
    if image.photometric == "MONOCHROME1":
        out = 1.0 - out
    return np.asarray(out, dtype=np.float32)


def _full_range(image: DicomImage) -> np.ndarray:
    """The modality values scaled so that the smallest and largest storable values map to 0 and 1."""
    ds = image.dataset
    if "ModalityLUTSequence" in ds:
        raise DicomError(f"{image.path}: voi='bits' needs a linear rescale, but the file has a Modality LUT")
    try:
        bits = int(ds.BitsStored)
    except (AttributeError, TypeError, ValueError) as err:
        raise DicomError(f"{image.path}: BitsStored is missing, so the stored range is unknown") from err
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    slope, intercept = float(getattr(ds, "RescaleSlope", 1.0)), float(getattr(ds, "RescaleIntercept", 0.0))
    low, high = sorted((low * slope + intercept, high * slope + intercept))
    return np.clip((image.modality_values - low) / (high - low), 0, 1)


def _first(value) -> float:
    """The first of a multi-valued window tag (files may list several windows)."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def read_dicom_unit(path: str | Path, **kwargs) -> np.ndarray:
    """``to_unit_range(read_dicom(path), **kwargs)``: the displayed image in [0, 1]."""
    return to_unit_range(read_dicom(path), **kwargs)
