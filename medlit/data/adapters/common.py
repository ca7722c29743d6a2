"""Shared machinery of the real-data adapters.

Every adapter turns a detection data set into medlit's classification-with-boxes samples in the same four steps:

1. **parse** the annotation files into :class:`Record` objects (one per image: label, boxes in *native* pixels,
   patient id, where it came from). Every row is validated; a bad row raises :class:`AdapterError` naming the file,
   the line (or XML file, or annotation id) and the problem, or - with ``errors="skip"`` - its whole image is
   dropped and counted by reason in the :class:`SkipReport`. Missing files and missing columns always raise.
2. **split** by a stable hash of the patient id (:func:`hash_split`: sha256, never Python's salted ``hash``), so a
   patient never appears in two splits and the split never changes between runs or machines.
3. **choose** a deterministic subset per split (:func:`build_real_data`): candidates in hash order, as class-balanced
   as the data allow when ``max_per_split`` caps the size; an image that turns out to be unreadable is replaced by
   the next candidate, so a cap is met whenever the data allow.
4. **read and resize** each chosen image with its boxes together (:func:`letterbox`): pad to a square with zeros,
   centred, then resize to ``image_size``; the boxes get the same offset and scale, so they stay on the finding.

Box convention (as everywhere in medlit, see :mod:`medlit.data.sample`): ``(x0, y0, x1, y1)`` half-open, in
continuous pixel coordinates of the stored image; the finding mask holds the pixels whose centre lies in a box
(:func:`medlit.data.sample.boxes_to_mask`). A box may lie off the image by at most :data:`BOX_TOLERANCE_PX` native
pixels (rounding in the annotation tools); it is then clipped to the image and the clip is counted in the report.
Anything further off is an error: medlit never moves a box silently.

Checks that concern the whole data set rather than one sample always raise, with the skip counts: no usable sample
at all, or samples of one class only (:func:`build_real_data`). Every listed image is checked to exist before any is
read, so a missing file anywhere is found at once, not only when its turn comes. File names that are not valid
UTF-8 (archives unpacked on another system) are handled: hashes use their raw bytes, and ids, paths and messages
show the undecodable bytes as ``\\xNN`` (:func:`printable`).
"""

from __future__ import annotations

import contextvars
import csv
import hashlib
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medlit.data.sample import SampleSet, boxes_to_mask
from medlit.registry import Registry

__all__ = [
    "ADAPTERS", "LIST_SEPARATOR", "SPLITS", "AdapterError", "AdapterSpec", "Letterbox", "OptionType", "RealData",
    "Record", "SkipReport", "build_real_data", "hash_order", "hash_split", "letterbox", "printable",
    "read_dicom_image", "read_pil_image", "register_adapter",
]

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
SPLIT_SALT = "medlit-split/"  # fixed salts: changing one would reshuffle every real data set
ORDER_SALT = "medlit-order/"
BOX_TOLERANCE_PX = 1.0
CLASS_NAMES = ["no finding", "finding"]
SOURCE_MODULES = ("data/adapters", "data/dicom.py", "data/sample.py")
_MASK_CHUNK = 128  # samples rasterised at once: boxes_to_mask builds an (n, K, H, W) intermediate
_QUIET: contextvars.ContextVar = contextvars.ContextVar("medlit_adapters_quiet", default=False)

# Skip reasons: the keys of SkipReport.skipped and of attrs["skips"].
MISSING_VALUE = "missing value"
NON_NUMERIC = "non-numeric value"
EMPTY_BOX = "zero or negative box area"
BOX_OFF_IMAGE = "box off the image"
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
SIZE_MISMATCH = "image size mismatch"
BAD_XML = "malformed XML"
UNKNOWN_IMAGE = "unknown image"
UNKNOWN_CLASS = "unknown class"
INCONSISTENT = "inconsistent annotation"
SKIP_REASONS = (MISSING_VALUE, NON_NUMERIC, EMPTY_BOX, BOX_OFF_IMAGE, MISSING_IMAGE, UNREADABLE_IMAGE,
                SIZE_MISMATCH, BAD_XML, UNKNOWN_IMAGE, UNKNOWN_CLASS, INCONSISTENT)

LETTERBOX_NOTE = ("each image was padded with zeros to a centred square of its longer side, then resized to "
                  "image_size (area averaging when shrinking, bilinear when enlarging); boxes were shifted by the "
                  "padding and scaled by the same factor (meta letterbox_pad_x/_y in native pixels, "
                  "letterbox_scale in stored pixels per native pixel)")


def printable(text: str) -> str:
    """``text`` as valid UTF-8: the undecodable bytes of a file name (Python's surrogate escapes) become ``\\xNN``.

    A name that is valid UTF-8 is returned unchanged. Ids, paths and messages pass through this, so that a file
    named in another encoding can be printed, stored in a cube and hashed like any other.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (e.g. from a json "\\ud800")
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _utf8_bytes(text: str) -> bytes:
    """The bytes to hash for ``text``: UTF-8, with a file name's undecodable bytes restored as they were on disk."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


class AdapterError(ValueError):
    """A problem with the user's data files; the message names the file, the row or id, and the problem.

    ``reason`` is one of the skip reasons when the problem concerns one sample (it can then be skipped with
    ``errors="skip"``), and ``None`` when the whole data set is unusable (a missing file or column, no usable
    sample, one class only, a wrong option). The message is always valid UTF-8 (see :func:`printable`).
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(printable(str(message)))
        self.reason = reason


@dataclass
class SkipReport:
    """What an adapter dropped, and why.

    Attributes
    ----------
    skipped : reason -> number of samples skipped for a data problem (only with ``errors="skip"``)
    examples : reason -> the first few messages of that reason
    excluded : reason -> number of images left out *by design* (e.g. an NIH image whose only findings have no
        box class); these are documented choices, not errors, and happen with either ``errors`` setting
    clipped : number of boxes clipped by at most ``BOX_TOLERANCE_PX`` native pixels, with ``clip_examples``
    counts : split -> number of samples delivered (filled in at the end)
    """

    adapter: str
    errors: str = "raise"
    skipped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    excluded: Counter = field(default_factory=Counter)
    clipped: int = 0
    clip_examples: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    max_examples: int = 3
    _skipped_keys: set = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if self.errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {self.errors!r}")

    @contextmanager
    def guard(self, key: str) -> Iterator[None]:
        """Run a block that validates sample ``key``: re-raise its :class:`AdapterError` or record a skip."""
        try:
            yield
        except AdapterError as err:
            if self.errors == "raise" or err.reason is None:
                raise
            self.skip(key, err)

    def skip(self, key: str, err: AdapterError) -> None:
        """Count sample ``key`` as skipped for ``err.reason`` (once per sample, whatever else is wrong with it)."""
        if key in self._skipped_keys:
            return
        self._skipped_keys.add(key)
        self.skipped[err.reason] += 1
        shown = self.examples.setdefault(err.reason, [])
        if len(shown) < self.max_examples:
            shown.append(str(err))

    def is_skipped(self, key: str) -> bool:
        return key in self._skipped_keys

    def exclude(self, reason: str, n: int = 1) -> None:
        self.excluded[reason] += n

    def note_clip(self, message: str) -> None:
        self.clipped += 1
        if len(self.clip_examples) < self.max_examples:
            self.clip_examples.append(message)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line: what was delivered, skipped, excluded and clipped."""
        sizes = ", ".join(f"{split} {n}" for split, n in self.counts.items())
        parts = [f"{self.adapter}: {sum(self.counts.values())} samples ({sizes})"]
        if self.skipped:
            detail = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
            parts.append(f"skipped {self.n_skipped} ({detail})")
        if self.excluded:
            detail = ", ".join(f"{reason} {n}" for reason, n in sorted(self.excluded.items()))
            parts.append(f"excluded by design {sum(self.excluded.values())} ({detail})")
        if self.clipped:
            parts.append(f"clipped {self.clipped} boxes by <= {BOX_TOLERANCE_PX:g} px")
        return "; ".join(parts)


@dataclass
class RealData:
    """What a loader returns: ``splits`` ({"train", "val", "test"} -> SampleSet) and the ``report``."""

    splits: dict
    report: SkipReport


@dataclass
class Record:
    """One image as the annotations describe it, before its pixels are read.

    Attributes
    ----------
    sample_id : unique within the data set (the image's name or id)
    patient_id : the unit of splitting: all images of one patient land in the same split
    label : 1 finding present, 0 none
    boxes : (K, 4) float64, half-open (x0, y0, x1, y1) in native pixels; K = 0 for negatives and for positives
        whose findings have no box
    finding : box or label class names joined with "+", "none" for negatives
    source : annotation file and line(s), XML file or annotation ids, for messages and ``meta["source_file"]``
    image_path : where the image is expected (it may be missing; that is checked when it is read)
    split : a forced split (NIH boxed images go to test), else ``None`` for the hash split
    size : (height, width) the annotations declare, checked against the image; ``None`` when they declare none
    meta : adapter-specific per-sample facts; every record of one adapter carries the same keys
    """

    sample_id: str
    patient_id: str
    label: int
    boxes: np.ndarray
    finding: str
    source: str
    image_path: Path
    split: str | None = None
    size: tuple[int, int] | None = None
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------
# Adapter options as text (the command line's ``--data adapter=folder:key=value``)

LIST_SEPARATOR = "|"  # separates the items of a list option; it occurs in no class name (NIH uses it between labels)


@dataclass(frozen=True)
class OptionType:
    """How an adapter option is read from text: ``parse(text) -> value``, raising ValueError when it is not
    ``description`` (shown in the error message)."""

    description: str
    parse: Callable[[str], object]

    def read(self, text: str):
        try:
            return self.parse(text.strip())
        except (ValueError, TypeError):
            raise ValueError(f"expected {self.description}") from None


def _text(value: str) -> str:
    if not value:
        raise ValueError(value)
    return value


def _integer(value: str) -> int:
    return int(value)


def _number(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _optional_integer(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def _names(value: str) -> list[str]:
    names = [part.strip() for part in value.split(LIST_SEPARATOR)]
    if not value or not all(names):
        raise ValueError(value)
    return names


def _voi(value: str):
    if value in ("file", "minmax", "bits"):
        return value
    centre, width = value.split(LIST_SEPARATOR)
    return (_number(centre), _number(width))


def choice(*values: str, convert: Callable[[str], object] = str) -> OptionType:
    """One of ``values`` (compared as text), converted by ``convert``."""

    def parse(value: str):
        if value not in values:
            raise ValueError(value)
        return convert(value)

    return OptionType("one of " + ", ".join(values), parse)


TEXT = OptionType("a non-empty text", _text)
INTEGER = OptionType("an integer", _integer)
NUMBER = OptionType("a number", _number)
OPTIONAL_INTEGER = OptionType("an integer or none", _optional_integer)
NAMES = OptionType(f"one or more names separated by {LIST_SEPARATOR!r}", _names)
VOI = OptionType(f"file, minmax, bits or CENTER{LIST_SEPARATOR}WIDTH", _voi)
ERRORS = choice("raise", "skip")


@dataclass(frozen=True)
class AdapterSpec:
    """A registered adapter.

    Attributes
    ----------
    loader : ``load(root, *, image_size, max_per_split=None, errors="raise", progress=True, **options)``
    data_card : file name under ``data_cards/``
    annotation_files : glob patterns (relative to the root) of the files the fingerprint hashes; a pattern
        without a match is an error
    image_suffixes : the image files the fingerprint lists (name and size)
    optional_files : further annotation patterns hashed when present
    options : option name -> :class:`OptionType`: every keyword option of the loader (``errors`` included), as it
        is read from the command line; no other option is accepted
    """

    name: str
    loader: Callable[..., RealData]
    description: str
    data_card: str
    annotation_files: tuple[str, ...]
    image_suffixes: tuple[str, ...] = ()
    optional_files: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)

    def check_option_names(self, names: Iterable[str], where: str = "") -> None:
        """Raise an :class:`AdapterError` naming the valid options when a name is not one of them."""
        valid = ", ".join(sorted(self.options))
        for key in names:
            if key not in self.options:
                raise AdapterError(f"{where}unknown option {key!r} for {self.name} (options: {valid})")


ADAPTERS: Registry[AdapterSpec] = Registry("adapter")


def register_adapter(name: str, *, description: str, data_card: str, annotation_files: tuple[str, ...],
                     image_suffixes: tuple[str, ...], optional_files: tuple[str, ...] = (),
                     options: dict | None = None):
    """Register the decorated loader as adapter ``name``; ``options`` are its keyword options (``errors`` is
    added) with their :class:`OptionType`."""

    def decorate(loader: Callable) -> Callable:
        ADAPTERS.add(name, AdapterSpec(name, loader, description, data_card, tuple(annotation_files),
                                       tuple(image_suffixes), tuple(optional_files),
                                       {"errors": ERRORS, **(options or {})}))
        return loader

    return decorate


# --------------------------------------------------------------------------------------------------------------
# Files and tables


def check_root(root: str | Path) -> Path:
    """``root`` as an absolute path; raise when it is not a folder."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise AdapterError(f"{path}: data folder not found")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` when it is a file; otherwise an (always raised) error naming it and what it should hold."""
    if not path.is_file():
        raise AdapterError(f"{path}: {what} not found")
    return path


def index_files(root: Path, suffixes: Iterable[str]) -> dict[str, list[Path]]:
    """File name -> every path under ``root`` with that name (suffix compared case-insensitively), sorted.

    Data sets arrive unpacked in different layouts (NIH's twelve ``images_0NN/images`` folders, DDR's
    ``train/valid/test``), so images are found by name rather than by a fixed path.
    """
    wanted = {s.lower() for s in suffixes}
    index: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in wanted and path.is_file():
            index.setdefault(path.name, []).append(path)
    return index


def pick_path(candidates: list[Path], near: Path, fallback: Path) -> Path:
    """The candidate sharing the longest leading path with ``near`` (ties: sorted order), else ``fallback``."""
    if not candidates:
        return fallback

    def shared(path: Path) -> int:
        return sum(1 for _ in _common_prefix(path.parts, near.parts))

    return max(sorted(candidates), key=shared)  # max keeps the first of equals: ties go to sorted order


def _common_prefix(a: tuple, b: tuple) -> Iterator:
    for x, y in zip(a, b, strict=False):  # the shorter path ends the prefix
        if x != y:
            return
        yield x


@dataclass
class Table:
    """A CSV file's header and rows, each row with its 1-based line number (the header is line 1)."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]

    def column(self, name: str) -> int:
        """The index of column ``name`` (compared after stripping blanks); a missing column always raises."""
        stripped = [h.strip() for h in self.header]
        if name not in stripped:
            shown = ", ".join(repr(h) for h in stripped if h)
            raise AdapterError(f"{self.path}: column {name!r} not found (columns: {shown})")
        return stripped.index(name)

    def where(self, line: int) -> str:
        return f"{self.path.name}:{line}"


def read_table(path: Path, what: str) -> Table:
    """Read a CSV file (a UTF-8 byte-order mark is tolerated); blank lines are ignored."""
    require_file(path, what)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise AdapterError(f"{path}: the file is empty (expected {what})")
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise AdapterError(f"{path}: not a readable CSV file ({err})") from err
    return Table(path, header, rows)


def cell(row: list[str], index: int) -> str:
    """The stripped text of a cell; a short row reads as empty cells."""
    return row[index].strip() if index < len(row) else ""


def is_blank(text: str) -> bool:
    return text.strip().lower() in ("", "nan", "none", "null")


def parse_number(text: str, where: str, what: str) -> float:
    """A finite float from ``text``; an error naming ``where`` and ``what`` for blank, NaN or non-numeric text."""
    if is_blank(text):
        raise AdapterError(f"{where}: {what} is missing", MISSING_VALUE)
    try:
        value = float(text)
    except ValueError:
        raise AdapterError(f"{where}: {what} is not a number ({text!r})", NON_NUMERIC) from None
    if not math.isfinite(value):
        raise AdapterError(f"{where}: {what} is not a finite number ({text!r})", NON_NUMERIC)
    return value


def check_box(box: tuple[float, float, float, float], where: str) -> np.ndarray:
    """A half-open (x0, y0, x1, y1) box as an array, after checking that it has a positive area."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise AdapterError(f"{where}: box {box} has a non-finite coordinate", NON_NUMERIC)
    if x1 <= x0 or y1 <= y0:
        raise AdapterError(f"{where}: box (x0, y0, x1, y1) = ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has zero or "
                           f"negative area", EMPTY_BOX)
    return np.array([x0, y0, x1, y1], dtype=np.float64)


def stack_boxes(boxes: list[np.ndarray]) -> np.ndarray:
    return np.stack(boxes).astype(np.float64) if boxes else np.zeros((0, 4), dtype=np.float64)


def fit_boxes(boxes: np.ndarray, height: int, width: int, where: str, report: SkipReport) -> np.ndarray:
    """Check native boxes against the image; clip those off by at most ``BOX_TOLERANCE_PX`` (counted).

    Raises
    ------
    AdapterError (reason ``BOX_OFF_IMAGE``) for a box further off the image, or one with no area left inside it.
    """
    out = boxes.copy()
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        over = max(-x0, -y0, x1 - width, y1 - height, 0.0)
        if over > BOX_TOLERANCE_PX:
            raise AdapterError(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies {over:g} px off the "
                               f"{width}x{height} image", BOX_OFF_IMAGE)
        clipped = np.clip([x0, y0, x1, y1], 0, [width, height, width, height])
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise AdapterError(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area inside the "
                               f"{width}x{height} image", BOX_OFF_IMAGE)
        if over > 0:
            report.note_clip(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) clipped to the {width}x{height} image")
        out[k] = clipped
    return out


# --------------------------------------------------------------------------------------------------------------
# Images


def read_pil_image(path: Path, channels: int = 1) -> tuple[np.ndarray, dict]:
    """A PNG/JPEG/... file as (C, H, W) float32 in [0, 1]: grey (``channels=1``) or RGB (``channels=3``).

    8-bit images are converted by PIL (RGB/RGBA to grey by the ITU-R 601 luma weights, the alpha channel
    dropped); 16-bit greyscale is divided by 65535 rather than converted, because PIL's conversion to 8-bit
    would clip it.
    """
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode.startswith("I;16") or mode == "I":
                if channels == 3:
                    raise AdapterError(f"{path}: a 16-bit greyscale image cannot be read as RGB", UNREADABLE_IMAGE)
                array = np.asarray(im, dtype=np.float64)
                if array.min() < 0 or array.max() > 65535:
                    raise AdapterError(f"{path}: integer pixel values outside 0..65535", UNREADABLE_IMAGE)
                array = (array / 65535.0)[None]
            elif mode == "F":
                raise AdapterError(f"{path}: floating-point images (PIL mode 'F') are not supported",
                                   UNREADABLE_IMAGE)
            else:
                converted = im.convert("L" if channels == 1 else "RGB")
                array = np.asarray(converted, dtype=np.float64) / 255.0
                array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    except AdapterError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # UnidentifiedImageError and truncated files are OSErrors; broken chunks may raise the others.
        raise AdapterError(f"{path}: not a readable image ({type(err).__name__}: {err})", UNREADABLE_IMAGE) from err
    return np.ascontiguousarray(array, dtype=np.float32), {"image_mode": mode}


def read_dicom_image(path: Path, voi="file", fallback: str = "minmax") -> tuple[np.ndarray, dict]:
    """A DICOM file as (1, H, W) float32 in [0, 1], bright = dense (see :func:`medlit.data.dicom.to_unit_range`)."""
    from medlit.data.dicom import DicomError, read_dicom, to_unit_range

    try:
        image = read_dicom(path)
        array = to_unit_range(image, voi=voi, fallback=fallback)
    except DicomError as err:  # its message already names the file
        raise AdapterError(str(err), UNREADABLE_IMAGE) from err
    except ValueError as err:  # e.g. a window width < 1 in the file
        raise AdapterError(f"{path}: not a usable DICOM image ({err})", UNREADABLE_IMAGE) from err
    info = {"photometric": image.photometric, "view_position": image.meta.get("view_position", "")}
    return array[None], info


def _missing_image(record: Record) -> AdapterError:
    path = record.image_path
    return AdapterError(f"{record.source}: image {path.name} not found (expected at {path}, also searched for by "
                        f"name under the data folder)", MISSING_IMAGE)


def load_image(record: Record, reader: Callable[[Path], tuple[np.ndarray, dict]]) -> tuple[np.ndarray, dict]:
    """Read the record's image, with the missing-file, finiteness and declared-size checks."""
    path = record.image_path
    if not path.is_file():
        raise _missing_image(record)
    array, info = reader(path)
    if not np.isfinite(array).all():
        raise AdapterError(f"{path}: the image has non-finite pixel values", UNREADABLE_IMAGE)
    if record.size is not None and tuple(array.shape[1:]) != tuple(record.size):
        (h, w), (ah, aw) = record.size, array.shape[1:]
        raise AdapterError(f"{record.source}: the annotations give a {w}x{h} image (width x height) but "
                           f"{path.name} is {aw}x{ah}", SIZE_MISMATCH)
    return array, info


@dataclass(frozen=True)
class Letterbox:
    """The letterbox transform: ``stored = (native + pad) * scale`` on each axis."""

    scale: float
    pad_x: int
    pad_y: int

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float64)
        return (boxes + offset) * self.scale


def letterbox(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray, Letterbox]:
    """Pad (C, H, W) ``image`` to a centred square with zeros, resize it to ``size``, and move ``boxes`` with it.

    Padding keeps the aspect ratio (stretching would distort anatomy and box shapes). The resize uses area
    averaging when shrinking - an anti-aliased mean over each output pixel's footprint - and bilinear
    interpolation (half-pixel centres) when enlarging; both map a continuous coordinate ``u`` to ``u * scale``,
    which is the transform applied to the half-open box edges. Odd padding puts the extra pixel right/bottom.
    """
    c, h, w = image.shape
    side = max(h, w)
    lb = Letterbox(scale=size / side, pad_x=(side - w) // 2, pad_y=(side - h) // 2)
    canvas = torch.zeros(1, c, side, side)
    canvas[0, :, lb.pad_y:lb.pad_y + h, lb.pad_x:lb.pad_x + w] = torch.from_numpy(image)
    if side == size:
        resized = canvas
    elif side > size:
        resized = F.interpolate(canvas, size=(size, size), mode="area")
    else:
        resized = F.interpolate(canvas, size=(size, size), mode="bilinear", align_corners=False)
    return resized[0].clamp_(0, 1), lb.apply(boxes), lb


# --------------------------------------------------------------------------------------------------------------
# Splits and subsets


def _hash_unit(salt: str, key: str) -> float:
    digest = hashlib.sha256(_utf8_bytes(salt + key)).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def hash_split(patient_id: str) -> str:
    """``"train"``, ``"val"`` or ``"test"`` (about 70/10/20 %) from a sha256 of the patient id."""
    u = _hash_unit(SPLIT_SALT, str(patient_id))
    if u < SPLIT_FRACTIONS["train"]:
        return "train"
    if u < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["val"]:
        return "val"
    return "test"


def hash_order(sample_id: str) -> str:
    """The sort key of the deterministic order in which candidates are taken (a sha256 hex digest)."""
    return hashlib.sha256(_utf8_bytes(ORDER_SALT + str(sample_id))).hexdigest()


def check_max_per_split(max_per_split: dict | None) -> dict:
    """Split -> cap (``None`` = no cap), validated."""
    caps: dict = dict.fromkeys(SPLITS)
    if max_per_split is None:
        return caps
    unknown = set(max_per_split) - set(SPLITS)
    if unknown:
        raise ValueError(f"max_per_split: unknown splits {sorted(unknown)}; use {SPLITS}")
    for split, cap in max_per_split.items():
        if cap is not None and (int(cap) != cap or cap < 0):
            raise ValueError(f"max_per_split[{split!r}] must be a non-negative integer or None, got {cap!r}")
        caps[split] = None if cap is None else int(cap)
    return caps


@dataclass
class _Loaded:
    record: Record
    image: torch.Tensor
    boxes: np.ndarray
    letterbox: Letterbox
    native: tuple[int, int]
    info: dict


def _read_candidates(candidates: deque, want: int, reader, image_size: int, report: SkipReport,
                     bar) -> list[_Loaded]:
    """Read candidates in order until ``want`` images were read; a skipped image is replaced by the next one."""
    loaded: list[_Loaded] = []
    while candidates and len(loaded) < want:
        record = candidates.popleft()
        with report.guard(record.sample_id):
            array, info = load_image(record, reader)
            h, w = array.shape[1:]
            native = fit_boxes(record.boxes, h, w, record.source, report)
            image, boxes, lb = letterbox(array, native, image_size)
            loaded.append(_Loaded(record, image, boxes, lb, (h, w), info))
            bar.update(1)
    return loaded


def _choose_and_read(candidates: list[Record], cap: int | None, reader, image_size: int, report: SkipReport,
                     bar) -> list[_Loaded]:
    """Uncapped: every candidate. Capped: half positives, half negatives where the data allow (hash order)."""
    if cap is None:
        return _read_candidates(deque(candidates), len(candidates), reader, image_size, report, bar)
    positives = deque(r for r in candidates if r.label == 1)
    negatives = deque(r for r in candidates if r.label == 0)
    want_pos = min(len(positives), cap - min(len(negatives), cap // 2))
    loaded = _read_candidates(positives, want_pos, reader, image_size, report, bar)
    loaded += _read_candidates(negatives, cap - len(loaded), reader, image_size, report, bar)
    loaded += _read_candidates(positives, cap - len(loaded), reader, image_size, report, bar)  # negatives ran out
    return sorted(loaded, key=lambda item: hash_order(item.record.sample_id))


def _meta_array(values: list):
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        return np.array(values, dtype=np.float64)
    return np.array([str(v) for v in values], dtype=str)


def _sample_set(name: str, split: str, loaded: list[_Loaded], image_size: int, channels: int,
                attrs: dict, keys: list[str]) -> SampleSet:
    n = len(loaded)
    k = max([1] + [len(item.boxes) for item in loaded])
    images = torch.zeros(n, channels, image_size, image_size)
    boxes = torch.full((n, k, 4), float("nan"))
    for i, item in enumerate(loaded):
        images[i] = item.image
        if len(item.boxes):
            boxes[i, :len(item.boxes)] = torch.from_numpy(item.boxes).float()
    masks = torch.zeros(n, image_size, image_size, dtype=torch.bool)
    for i0 in range(0, n, _MASK_CHUNK):
        masks[i0:i0 + _MASK_CHUNK] = boxes_to_mask(boxes[i0:i0 + _MASK_CHUNK], (image_size, image_size))
    rows = [_meta_row(item) for item in loaded]
    meta = {key: _meta_array([row.get(key, "") for row in rows]) if rows else np.array([], dtype=str)
            for key in keys}
    labels = torch.tensor([item.record.label for item in loaded], dtype=torch.int64)
    return SampleSet(name=name, split=split, images=images, labels=labels.reshape(n), boxes=boxes,
                     finding_masks=masks, anatomy_masks=torch.ones(n, image_size, image_size, dtype=torch.bool),
                     meta=meta, attrs=dict(attrs))


def _meta_row(item: _Loaded) -> dict:
    """The per-sample facts every adapter records, then the adapter's own, then the reader's."""
    r = item.record
    row = {
        "sample_id": r.sample_id,
        "finding": r.finding,
        "patient_id": r.patient_id,
        "source_file": r.source,
        "image_file": printable(str(r.image_path)),
        "n_boxes": len(item.boxes),
        "original_height": int(item.native[0]),
        "original_width": int(item.native[1]),
        "letterbox_scale": float(item.letterbox.scale),
        "letterbox_pad_x": int(item.letterbox.pad_x),
        "letterbox_pad_y": int(item.letterbox.pad_y),
    }
    row.update(r.meta)
    row.update(item.info)
    return {key: printable(value) if isinstance(value, str) else value for key, value in row.items()}


@contextmanager
def quiet() -> Iterator[None]:
    """Within this block, loaders do not print their one-line summary (used by the check at registration)."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def _printable_tree(value):
    """``value`` with every string in it (in dicts, lists and tuples too) passed through :func:`printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_printable_tree(k): _printable_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_printable_tree(v) for v in value)
    return value


def _printable_record(record: Record) -> Record:
    """The record with valid UTF-8 ids and source (see :func:`printable`); its image path is kept as it is."""
    record.sample_id, record.patient_id = printable(str(record.sample_id)), printable(str(record.patient_id))
    record.finding, record.source = printable(record.finding), printable(record.source)
    return record


def check_images_exist(records: list[Record], report: SkipReport) -> list[Record]:
    """The records whose image file exists; every missing one is found here, before any image is read.

    With ``errors="raise"`` the first missing image raises, its message saying how many more are missing; with
    ``errors="skip"`` each is skipped and counted (reason ``MISSING_IMAGE``).
    """
    missing = [r for r in records if not r.image_path.is_file()]
    if not missing:
        return records
    if report.errors == "raise":
        first, more = _missing_image(missing[0]), len(missing) - 1
        if not more:
            raise first
        raise AdapterError(f"{first}; {more} further images are missing too (errors=skip leaves them all out "
                           f"and counts them)", MISSING_IMAGE)
    for record in missing:
        report.skip(record.sample_id, _missing_image(record))
    return [r for r in records if not report.is_skipped(r.sample_id)]


def _first_examples(report: SkipReport) -> str:
    shown = [f"{reason}: {examples[0]}" for reason, examples in sorted(report.examples.items()) if examples]
    return f". First of each skip reason - {'; '.join(shown)}" if shown else ""


def check_classes(name: str, root: Path, loaded: dict, caps: dict, report: SkipReport) -> None:
    """Raise when a load ends with no sample at all, or with samples of one class only (with the skip counts).

    Neither can train or score a classifier. Caps that ask for nothing (all 0) or for at most one image per split
    (the class balance then cannot hold) are not checked.
    """
    labels = [item.record.label for items in loaded.values() for item in items]
    where = f"{name} ({printable(str(root))})"
    if not labels and any(cap is None or cap > 0 for cap in caps.values()):
        raise AdapterError(f"{where}: no usable sample: {report.summary()}{_first_examples(report)}")
    if len(set(labels)) == 1 and any(cap is None or cap >= 2 for cap in caps.values()):
        only = "positive samples (label 1)" if labels[0] == 1 else "negative samples (label 0)"
        raise AdapterError(f"{where}: only {only} - a classifier needs both classes: {report.summary()}"
                           f"{_first_examples(report)}")


def build_real_data(name: str, records: list[Record], report: SkipReport, *, root: Path, image_size: int,
                    max_per_split: dict | None, reader: Callable[[Path], tuple[np.ndarray, dict]], channels: int,
                    progress: bool, attrs: dict, original_size: int | None = None) -> RealData:
    """Split, subsample, read and resize ``records``; return the three SampleSets and the report.

    Every record's image is checked to exist first (:func:`check_images_exist`); the load ends with an error when
    no sample, or samples of one class only, are left (:func:`check_classes`).

    Parameters
    ----------
    records : every parsed record (those already skipped in ``report`` are dropped here)
    reader : path -> ((C, H, W) float32 in [0, 1], per-sample info added to ``meta``)
    attrs : adapter-specific attributes (``label_mapping``, ``box_semantics``, options, ...)
    original_size : the nominal native size for the pointing-game tolerance; ``None`` = the median longer side
        of the images read (the side the letterbox maps onto ``image_size``)
    """
    from tqdm.auto import tqdm

    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    caps = check_max_per_split(max_per_split)
    records = [_printable_record(r) for r in records if not report.is_skipped(r.sample_id)]
    records = check_images_exist(records, report)
    by_split: dict[str, list[Record]] = {split: [] for split in SPLITS}
    for record in records:
        by_split[record.split or hash_split(record.patient_id)].append(record)
    for split in SPLITS:
        by_split[split].sort(key=lambda r: hash_order(r.sample_id))
    total = sum(len(v) if caps[s] is None else min(caps[s], len(v)) for s, v in by_split.items())
    loaded = {}
    with tqdm(total=total, desc=f"{name}: reading images", unit="img", disable=not progress) as bar:
        for split in SPLITS:
            loaded[split] = _choose_and_read(by_split[split], caps[split], reader, int(image_size), report, bar)
    sides = [max(item.native) for items in loaded.values() for item in items]
    median_side = int(np.median(sides)) if sides else 0
    common = {
        "adapter": name,
        "root": printable(str(root)),
        "original_size": int(original_size) if original_size else median_side,
        "native_size_median": median_side,
        "class_names": list(CLASS_NAMES),
        "anatomy_mask": "unknown (all pixels)",
        "letterbox": LETTERBOX_NOTE,
        "split_rule": (f"sha256 of '{SPLIT_SALT}' + patient id -> train/val/test "
                       f"{SPLIT_FRACTIONS['train']:.0%}/{SPLIT_FRACTIONS['val']:.0%}/{SPLIT_FRACTIONS['test']:.0%}"),
        "subset_rule": ("candidates in sha256 order; with a cap per split, half positives and half negatives "
                        "where the data allow, unreadable images replaced by the next candidate"),
        "size": int(image_size),
        "channels": int(channels),
        "skips": dict(report.skipped),
        "exclusions": dict(report.excluded),
        "clipped_boxes": report.clipped,
        **_printable_tree(attrs),
    }
    first = next((items[0] for items in loaded.values() if items), None)
    keys = list(_meta_row(first)) if first else ["sample_id", "finding", "patient_id", "source_file", "image_file",
                                                 "n_boxes", "original_height", "original_width"]
    splits = {}
    for split in SPLITS:
        available = {"positive": sum(r.label == 1 for r in by_split[split]),
                     "negative": sum(r.label == 0 for r in by_split[split])}
        splits[split] = _sample_set(name, split, loaded[split], int(image_size), channels,
                                    {**common, "available": available}, keys)
        report.counts[split] = len(splits[split])
    check_classes(name, root, loaded, caps, report)
    if not _QUIET.get():
        print(report.summary())
    return RealData(splits, report)


def join_classes(classes: Iterable[str]) -> str:
    """Sorted unique class names joined with "+", or "none"."""
    names = sorted(set(classes))
    return "+".join(names) if names else "none"
