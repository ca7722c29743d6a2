"""Adapters that read real box-annotated data sets from the user's disk into medlit's samples.

Nothing is downloaded: each adapter reads a data set in its official layout from a folder the user names, and
turns its detection annotations into classification-with-boxes samples (:class:`medlit.data.sample.SampleSet`):
label 1 = a finding is present, with its boxes; label 0 = none. Each adapter documents its label mapping, box
conventions, reader merging and splits in its module docstring and its data card under ``data_cards/``.

======================  ==================================  ==========================
name                    data set                            data card
======================  ==================================  ==========================
``nih-cxr14``           NIH ChestX-ray14 (PNG)              ``nih_chestxray14.md``
``rsna-pneumonia``      RSNA Pneumonia Detection (DICOM)    ``rsna_pneumonia.md``
``vindr-cxr``           VinDr-CXR (DICOM, 3 readers)        ``vindr_cxr.md``
``ddr-lesions``         DDR lesion detection (VOC XML)      ``ddr_lesions.md``
``coco``                any COCO-format json                ``coco_boxes.md``
======================  ==================================  ==========================

Every loader has the signature ``load(root, *, image_size, max_per_split=None, errors="raise", progress=True,
**options) -> RealData`` (``.splits``: {"train", "val", "test"} -> SampleSet; ``.report``: what was skipped,
excluded and clipped). ``errors="raise"`` stops at the first malformed sample with an :class:`AdapterError` naming
the file, the row or id and the problem; ``errors="skip"`` drops such samples and counts them by reason. Missing
files and columns always raise.

To use a data set in the book, :func:`register_real_dataset` registers it as a medlit data set (``kind="real"``)
whose loader follows the profile's image size and split sizes. Registering checks the data at once, before any
model trains (:func:`check_real_dataset`): every annotation file is parsed and every row validated, every listed
image is checked to exist, a class-balanced sample of images of each split is opened, and the splits must be
usable by the benchmark (train: both classes; val: not empty; test: a positive with a box).

:func:`parse_data_option` reads the command line's ``ADAPTER=FOLDER[:KEY=VALUE[:KEY=VALUE...]]`` (e.g.
``nih-cxr14=/data/nih:errors=skip``; a list value separates its items with ``|``, e.g.
``classes=Nodule/Mass|Aortic enlargement``), :func:`parse_data_options` a comma-separated list of them. Each
adapter declares its options and their types (:attr:`AdapterSpec.options`); an unknown option or a value of the
wrong type is an error naming the valid ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import NamedTuple

import torch

from medlit.data.adapters import coco, ddr, nih, rsna, vindr  # noqa: F401  (each registers its adapter)
from medlit.data.adapters.common import (
    ADAPTERS, LIST_SEPARATOR, SOURCE_MODULES, SPLITS, AdapterError, AdapterSpec, RealData, SkipReport, _utf8_bytes,
    check_root, printable, quiet, register_adapter,
)

__all__ = ["ADAPTERS", "LIST_SEPARATOR", "AdapterError", "AdapterSpec", "DataOption", "RealData", "SkipReport",
           "check_real_dataset", "check_splits", "fingerprint", "load_real", "parse_data_option",
           "parse_data_options", "register_adapter", "register_real_dataset"]

CHECK_IMAGE_SIZE = 32  # the size the registration check reads its sample of images at
CHECK_SAMPLE = 6  # images opened per split by the registration check (half positives where the data allow)

_REGISTERED: dict[str, tuple] = {}  # data-set name -> (root, errors, options) it was registered with
_CALLS: dict[str, tuple] = {}  # data-set name -> the (root, keyword arguments) of its registration


def load_real(name: str, root, **kwargs) -> RealData:
    """``ADAPTERS[name].loader(root, **kwargs)``."""
    return ADAPTERS[name].loader(root, **kwargs)


def _options_text(options: dict) -> str:
    return json.dumps(options, sort_keys=True, default=str)


def fingerprint(name: str, root, options: dict | None = None) -> str:
    """A short sha256 of a data set's files: annotation bytes, and the image file names with their sizes.

    Changing, adding or removing any annotation file or image changes it (so cached models and cubes of the old
    data are not reused); so do ``options`` that change the samples (e.g. VinDr's ``merge``). Image contents are
    not hashed - reading 100k images would take minutes - only their relative paths and byte sizes.
    """
    spec = ADAPTERS[name]
    root = check_root(root)
    digest = hashlib.sha256(f"{name}\n".encode())
    files = []
    for pattern in spec.annotation_files:
        found = sorted(p for p in root.glob(pattern) if p.is_file())
        if not found:
            raise AdapterError(f"{root}: no annotation file matches {pattern!r} (adapter {name})")
        files += found
    for pattern in spec.optional_files:
        files += sorted(p for p in root.glob(pattern) if p.is_file())
    for path in sorted(set(files)):  # names as their bytes on disk, whatever their encoding
        digest.update(_utf8_bytes(f"annotation {path.relative_to(root).as_posix()}\n"))
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    suffixes = {s.lower() for s in spec.image_suffixes}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file():
            digest.update(_utf8_bytes(f"image {path.relative_to(root).as_posix()} {path.stat().st_size}\n"))
    if options:
        digest.update(f"options {_options_text(options)}\n".encode())
    return digest.hexdigest()[:16]


def _available(splits: dict) -> str:
    """``"train 40 positive / 12 negative, val ..."``: what each split offered before any cap."""
    parts = []
    for split in SPLITS:
        available = splits[split].attrs.get("available", {})
        parts.append(f"{split} {available.get('positive', 0)} positive / {available.get('negative', 0)} negative")
    return ", ".join(parts)


def check_splits(name: str, root: Path, data: RealData) -> None:
    """Raise an :class:`AdapterError` unless the benchmark can use the splits of ``data``.

    The model trains on train (it needs both classes) and is checked on val (not empty); the chapters explain
    and score test positives that carry a box (at least one). The message gives what each split offered and the
    skip and exclusion counts.
    """
    splits, problems = data.splits, []
    train = splits["train"].labels
    if not len(train):
        problems.append("the train split is empty")
    else:
        for label, what in ((1, "positive"), (0, "negative")):
            if not bool((train == label).any()):
                problems.append(f"the train split has no {what} sample (label {label})")
    if not len(splits["val"]):
        problems.append("the val split is empty")
    test = splits["test"]
    boxed = ~torch.isnan(test.boxes[..., 0]).all(dim=1)
    if not bool(((test.labels == 1) & boxed).any()):
        problems.append("the test split has no positive sample with a box to explain")
    if problems:
        raise AdapterError(f"{name} ({printable(str(root))}): the benchmark cannot use this data set: "
                           f"{'; '.join(problems)}. Available per split: {_available(splits)}. Loaded: "
                           f"{data.report.summary()}")


def check_real_dataset(name: str, root, *, errors: str = "raise", **options) -> RealData:
    """Check a real data set before anything trains on it; return the check's (small) RealData.

    Runs the adapter on everything but the pixels of most images: every annotation file is parsed and every row
    validated, every listed image is checked to exist, and :data:`CHECK_SAMPLE` images per split (class-balanced)
    are opened and resized to :data:`CHECK_IMAGE_SIZE` px; then :func:`check_splits`. Any problem raises an
    :class:`AdapterError` naming the file and row (with ``errors="skip"``, only what makes the data set unusable).
    """
    spec = ADAPTERS[name]
    spec.check_option_names(["errors", *options])
    root = check_root(root)
    with quiet():
        data = spec.loader(root, image_size=CHECK_IMAGE_SIZE, max_per_split=dict.fromkeys(SPLITS, CHECK_SAMPLE),
                           errors=errors, progress=False, **options)
    check_splits(name, root, data)
    report = data.report
    opened = sum(report.counts.values())
    notes = "".join(f"; {part}" for part in report.summary().split("; ")[1:])
    print(f"{name}: {printable(str(root))} checked ({_available(data.splits)}; {opened} images opened){notes}")
    return data


def register_real_dataset(name: str, root, *, errors: str = "raise", **options) -> str:
    """Register the data set of adapter ``name`` at ``root`` as a medlit data set; return its name.

    The data are checked first (:func:`check_real_dataset`), so bad files stop the caller here, before any model
    trains. Its loader takes a profile and calls the adapter with ``image_size=profile.image_size`` and
    ``max_per_split`` from ``profile.n_train/n_val/n_test``, then :func:`check_splits`; the last result is kept in
    memory, so chapters that load the same profile twice read the images once. Registering the same root and
    options again is a no-op; another root (or other options) under a name already registered raises, and so does
    an option the adapter does not have (the message lists its options).
    """
    spec = ADAPTERS[name]
    spec.check_option_names(["errors", *options])
    root = check_root(root)
    key = (root, errors, _options_text(options))
    from medlit.data.registry import DATASETS, register_dataset

    if name in DATASETS:
        if _REGISTERED.get(name) == key:
            return name
        before = _REGISTERED.get(name)
        where = f"root {before[0]} (errors={before[1]!r}, options {before[2]})" if before else "a built-in data set"
        raise AdapterError(f"data set {name!r} is already registered with {where}; cannot register {root} "
                           f"(errors={errors!r}, options {key[2]})")
    check_real_dataset(name, root, errors=errors, **options)
    cache: dict = {}

    def loader(profile) -> dict:
        sizes = {"train": profile.n_train, "val": profile.n_val, "test": profile.n_test}
        wanted = (profile.image_size, tuple(sizes.items()))
        if wanted not in cache:
            cache.clear()  # keep one profile's images, not every size ever asked for
            data = spec.loader(root, image_size=profile.image_size, max_per_split=sizes, errors=errors,
                               progress=True, **options)
            check_splits(name, root, data)
            cache[wanted] = data.splits
        return dict(cache[wanted])

    register_dataset(name, description=f"{spec.description} (from {printable(str(root))})", data_card=spec.data_card,
                     source_modules=SOURCE_MODULES, fingerprint=fingerprint(name, root, {"errors": errors, **options}),
                     kind="real")(loader)
    _REGISTERED[name] = key
    _CALLS[name] = (root, {"errors": errors, **options})
    return name


def registration(name: str) -> tuple | None:
    """``(root, keyword arguments)`` that registered real data set ``name`` in this process, None for data sets
    that are not real: what another process (a cluster worker) needs to register it the same way."""
    return _CALLS.get(name)


class DataOption(NamedTuple):
    """One real data set of the command line: adapter name, folder and the adapter's options."""

    name: str
    root: Path
    options: dict


# ``:key=`` starts an option; any other colon belongs to the folder name
_OPTION_START = re.compile(r":(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")
DATA_SYNTAX = (f"ADAPTER=FOLDER[:KEY=VALUE[:KEY=VALUE...]], e.g. nih-cxr14=/data/nih:errors=skip or "
               f"vindr-cxr=/data/vindr:merge=majority:classes=Nodule/Mass{LIST_SEPARATOR}Aortic enlargement")


def parse_data_option(text: str) -> DataOption:
    """``"nih-cxr14=/data/nih:errors=skip"`` -> ``DataOption("nih-cxr14", Path("/data/nih"), {"errors": "skip"})``.

    The form is ``ADAPTER=FOLDER[:KEY=VALUE[:KEY=VALUE...]]``. ``KEY`` is one of the adapter's options (its data
    card lists them; ``errors`` is ``raise`` or ``skip`` for every adapter) and ``VALUE`` is read by the option's
    type: integers, numbers, ``none``, choices, and lists whose items are separated by ``|`` (e.g.
    ``classes=Nodule/Mass|Aortic enlargement``). A colon in the folder name is kept unless it is followed by
    ``KEY=``.

    Raises
    ------
    AdapterError for a malformed option, an unknown adapter, a folder that does not exist, an unknown option
    (naming the valid ones), an option given twice or a value of the wrong type.
    """
    known = ", ".join(ADAPTERS.names())
    first, *rest = _OPTION_START.split(text)
    name, sep, folder = first.partition("=")
    name, folder = name.strip(), folder.strip()
    if not sep or not name or not folder:
        raise AdapterError(f"--data {text!r}: expected {DATA_SYNTAX} (adapters: {known})")
    if name not in ADAPTERS:
        raise AdapterError(f"--data {text!r}: unknown data set adapter {name!r} (adapters: {known})")
    spec = ADAPTERS[name]
    options: dict = {}
    for item in rest:
        key, _, value = item.partition("=")
        key = key.strip()
        spec.check_option_names([key], where=f"--data {text!r}: ")
        if key in options:
            raise AdapterError(f"--data {text!r}: option {key!r} given twice")
        try:
            options[key] = spec.options[key].read(value)
        except ValueError as err:
            raise AdapterError(f"--data {text!r}: {key}={value.strip()}: {err}") from None
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        hint = (f" (options are written :KEY=VALUE after the folder: {DATA_SYNTAX})" if ":" in folder else "")
        raise AdapterError(f"--data {text!r}: folder {path} does not exist{hint}")
    return DataOption(name, path, options)


def parse_data_options(text: str) -> list[DataOption]:
    """``"nih-cxr14=/a:errors=skip,vindr-cxr=/b"`` -> one checked :class:`DataOption` per comma-separated item
    (no adapter twice).

    The form of ``make book DATA=...``; a folder whose name contains a comma cannot be given this way.
    """
    items = [parse_data_option(part) for part in text.split(",") if part.strip()]
    names = [item.name for item in items]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise AdapterError(f"--data {text!r}: adapter(s) {', '.join(repeated)} given more than once")
    return items
