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
whose loader follows the profile's image size and split sizes; :func:`parse_data_option` reads the
``NAME=PATH`` form of the command line (:func:`parse_data_options` a comma-separated list of them).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medlit.data.adapters import coco, ddr, nih, rsna, vindr  # noqa: F401  (each registers its adapter)
from medlit.data.adapters.common import (
    ADAPTERS, SOURCE_MODULES, AdapterError, AdapterSpec, RealData, SkipReport, check_root, register_adapter,
)

__all__ = ["ADAPTERS", "AdapterError", "AdapterSpec", "RealData", "SkipReport", "fingerprint", "load_real",
           "parse_data_option", "parse_data_options", "register_adapter", "register_real_dataset"]

_REGISTERED: dict[str, tuple] = {}  # data-set name -> (root, errors, options) it was registered with


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
    for path in sorted(set(files)):
        digest.update(f"annotation {path.relative_to(root).as_posix()}\n".encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    suffixes = {s.lower() for s in spec.image_suffixes}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file():
            digest.update(f"image {path.relative_to(root).as_posix()} {path.stat().st_size}\n".encode())
    if options:
        digest.update(f"options {_options_text(options)}\n".encode())
    return digest.hexdigest()[:16]


def register_real_dataset(name: str, root, *, errors: str = "raise", **options) -> str:
    """Register the data set of adapter ``name`` at ``root`` as a medlit data set; return its name.

    Its loader takes a profile and calls the adapter with ``image_size=profile.image_size`` and
    ``max_per_split`` from ``profile.n_train/n_val/n_test``; the last result is kept in memory, so chapters that
    load the same profile twice read the images once. Registering the same root and options again is a no-op;
    another root (or other options) under a name already registered raises.
    """
    spec = ADAPTERS[name]
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
    cache: dict = {}

    def loader(profile) -> dict:
        sizes = {"train": profile.n_train, "val": profile.n_val, "test": profile.n_test}
        wanted = (profile.image_size, tuple(sizes.items()))
        if wanted not in cache:
            cache.clear()  # keep one profile's images, not every size ever asked for
            cache[wanted] = spec.loader(root, image_size=profile.image_size, max_per_split=sizes, errors=errors,
                                        progress=True, **options).splits
        return dict(cache[wanted])

    register_dataset(name, description=f"{spec.description} (from {root})", data_card=spec.data_card,
                     source_modules=SOURCE_MODULES, fingerprint=fingerprint(name, root, {"errors": errors, **options}),
                     kind="real")(loader)
    _REGISTERED[name] = key
    return name


def parse_data_option(text: str) -> tuple[str, Path]:
    """``"nih-cxr14=/path/to/nih"`` -> ``("nih-cxr14", Path("/path/to/nih"))``, checked.

    Raises
    ------
    AdapterError for a malformed option, an unknown adapter or a folder that does not exist.
    """
    known = ", ".join(ADAPTERS.names())
    name, sep, folder = text.partition("=")
    name, folder = name.strip(), folder.strip()
    if not sep or not name or not folder:
        raise AdapterError(f"--data {text!r}: expected NAME=FOLDER, e.g. nih-cxr14=/data/nih (adapters: {known})")
    if name not in ADAPTERS:
        raise AdapterError(f"--data {text!r}: unknown data set adapter {name!r} (adapters: {known})")
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise AdapterError(f"--data {text!r}: folder {path} does not exist")
    return name, path


def parse_data_options(text: str) -> list[tuple[str, Path]]:
    """``"nih-cxr14=/a,vindr-cxr=/b"`` -> one checked ``(name, folder)`` per comma-separated item (no repeats).

    The form of ``make book DATA=...``; a folder whose name contains a comma cannot be given this way.
    """
    items = [parse_data_option(part) for part in text.split(",") if part.strip()]
    names = [name for name, _ in items]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise AdapterError(f"--data {text!r}: adapter(s) {', '.join(repeated)} given more than once")
    return items
