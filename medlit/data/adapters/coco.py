"""Any box-annotated data set in the COCO json format {cite}`lin2014coco`.

File: one json with ``images`` (``id, file_name, width, height``), ``annotations`` (``id, image_id, category_id,
bbox``) and ``categories`` (``id, name``). ``bbox`` is ``[x, y, w, h]`` in pixels with (x, y) the top-left corner,
as floats on a continuous pixel grid, so the half-open box is ``(x, y, x + w, y + h)``. Images are found at
``file_name`` relative to ``image_dir``, the root or the json's folder, else by name anywhere under the root.

Choices (also in ``data_cards/coco_boxes.md``):

* **Labels.** 1 = at least one annotation of a chosen category (option ``categories``, names; default all);
  0 = an image without any annotation. An image whose annotations are all of other categories is excluded and
  counted (``other_categories="exclude"``, default) or counted as a negative (``"negative"``).
* **Validation.** A category id listed twice with two names is an error (one finding would silently be renamed
  into the other); listed twice with the same name, it is one category. An annotation pointing at an unknown image
  id is an error naming its annotation id; with
  ``errors="skip"`` only that annotation is dropped (no sample depends on it). A malformed annotation of a known
  image (bad bbox, unknown category) drops the whole image, so no image is kept with some of its boxes missing.
  Each image's declared ``width``/``height`` is checked against the file.
* **Splits.** The sha256 hash of the image id, or of a per-image field named by ``patient_field`` (e.g. a patient
  id the data set adds to its ``images`` entries), so that one patient's images share a split.
* **Pixels.** ``channels=1`` (grey, default) or ``3`` (RGB).
"""

from __future__ import annotations

import json
from pathlib import Path

from medlit.data.adapters.common import (
    INCONSISTENT, MISSING_VALUE, NAMES, NON_NUMERIC, TEXT, UNKNOWN_CLASS, UNKNOWN_IMAGE, AdapterError, Record,
    SkipReport, build_real_data, check_box, check_root, choice, index_files, join_classes, pick_path,
    read_pil_image, register_adapter, stack_boxes,
)

NAME = "coco"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
EXCLUDED_OTHER_CATEGORY = "annotations of other categories only"


def find_annotation_file(root: Path, annotations) -> Path:
    """The json named by ``annotations`` (relative to ``root`` or absolute), else the only json under ``root``."""
    if annotations is not None:
        path = Path(annotations)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise AdapterError(f"{path}: COCO annotation file not found")
        return path
    found = sorted(root.rglob("*.json"))
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(root)) for p in found[:5]) or "none"
        raise AdapterError(f"{root}: expected exactly one COCO .json file, found {len(found)} ({listed}); "
                           f"name it with annotations=...")
    return found[0]


def read_coco(path: Path) -> dict:
    """The parsed json, with its three lists present (a broken file or a missing list always raises)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterError(f"{path}: not a readable json file ({err})") from err
    if not isinstance(data, dict):
        raise AdapterError(f"{path}: the top level is not a json object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AdapterError(f"{path}: the list {key!r} is missing")
    return data


def _field(entry: dict, key: str, where: str):
    value = entry.get(key) if isinstance(entry, dict) else None
    if value is None or value == "":
        raise AdapterError(f"{where}: field {key!r} is missing", MISSING_VALUE)
    return value


def _positive_int(value, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise AdapterError(f"{where}: {what} must be a positive integer, got {value!r}", NON_NUMERIC)
    return int(value)


def parse_bbox(value, where: str):
    """COCO ``[x, y, w, h]`` -> half-open (x0, y0, x1, y1), checked."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise AdapterError(f"{where}: bbox must be a list of four numbers, got {value!r}", NON_NUMERIC)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise AdapterError(f"{where}: bbox has a non-numeric entry {value!r}", NON_NUMERIC)
    x, y, w, h = (float(v) for v in value)
    return check_box((x, y, x + w, y + h), where)


@register_adapter(NAME, description="any COCO-format box annotations (json), as finding present / absent",
                  data_card="coco_boxes.md", annotation_files=("**/*.json",), image_suffixes=IMAGE_SUFFIXES,
                  options={"annotations": TEXT, "image_dir": TEXT, "categories": NAMES,
                           "channels": choice("1", "3", convert=int), "other_categories": choice("exclude", "negative"),
                           "patient_field": TEXT})
def load(root, *, image_size: int, max_per_split: dict | None = None, errors: str = "raise",
         progress: bool = True, annotations=None, image_dir=None, categories=None, channels: int = 1,
         other_categories: str = "exclude", patient_field: str | None = None):
    """Load a COCO-format data set as medlit splits (see the module docstring for every choice).

    Parameters
    ----------
    root : folder holding the json and the images
    image_size, max_per_split, errors, progress : as for every adapter (see :mod:`medlit.data.adapters`)
    annotations : the json file (relative to ``root`` or absolute); default: the only ``.json`` under ``root``
    image_dir : folder the ``file_name`` entries are relative to (default: the root, then the json's folder)
    categories : category names that count as findings; ``None`` = all
    channels : 1 (grey) or 3 (RGB)
    other_categories : ``"exclude"`` or ``"negative"``: images annotated only with other categories
    patient_field : a key of the ``images`` entries to split by instead of the image id
    """
    if other_categories not in ("exclude", "negative"):
        raise ValueError(f"other_categories must be 'exclude' or 'negative', got {other_categories!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    root = check_root(root)
    path = find_annotation_file(root, annotations)
    data = read_coco(path)
    report = SkipReport(NAME, errors)
    jname = path.name

    names = {}
    for k, cat in enumerate(data["categories"]):  # a broken category list always raises
        where = f"{jname}: category {k}"
        category_id, category = _field(cat, "id", where), str(_field(cat, "name", where))
        if names.get(category_id, category) != category:
            raise AdapterError(f"{jname}: category id {category_id!r} is listed twice, as {names[category_id]!r} and "
                               f"{category!r}; one finding would be renamed into the other")
        names[category_id] = category
    if isinstance(categories, str):
        categories = [categories]
    chosen = set(names.values()) if categories is None else set(categories)
    unknown = chosen - set(names.values())
    if unknown:
        raise AdapterError(f"{path}: categories {sorted(unknown)} are not among {sorted(set(names.values()))}")

    images: dict = {}
    for k, entry in enumerate(data["images"]):
        where = f"{jname}: image entry {k}"
        key = str(entry["id"]) if isinstance(entry, dict) and "id" in entry else f"image entry {k}"
        with report.guard(key):
            image_id = _field(entry, "id", where)
            where = f"{jname}: image id {image_id}"
            if image_id in images:
                raise AdapterError(f"{where}: image id {image_id} is listed twice", INCONSISTENT)
            size = (_positive_int(_field(entry, "height", where), where, "height"),
                    _positive_int(_field(entry, "width", where), where, "width"))
            patient = str(_field(entry, patient_field, where)) if patient_field else str(image_id)
            images[image_id] = {"file_name": str(_field(entry, "file_name", where)), "size": size,
                                "patient": patient, "boxes": [], "classes": [], "ann_ids": [], "n_other": 0}

    for k, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", f"#{k}") if isinstance(ann, dict) else f"#{k}"
        where = f"{jname}: annotation id {ann_id}"
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id not in images:
            with report.guard(f"annotation {ann_id}"):
                if image_id is not None and report.is_skipped(str(image_id)):
                    continue  # its image entry was already skipped and counted
                raise AdapterError(f"{where}: image_id {image_id!r} is not in 'images'", UNKNOWN_IMAGE)
            continue
        with report.guard(str(image_id)):
            category = names.get(ann.get("category_id"))
            if category is None:
                raise AdapterError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'",
                                   UNKNOWN_CLASS)
            box = parse_bbox(_field(ann, "bbox", where), where)
            entry = images[image_id]
            if category in chosen:
                entry["boxes"].append(box)
                entry["classes"].append(category)
                entry["ann_ids"].append(str(ann_id))
            else:
                entry["n_other"] += 1

    folders = [Path(image_dir) if image_dir is not None and Path(image_dir).is_absolute()
               else root / (image_dir or ""), path.parent]
    index = index_files(root, IMAGE_SUFFIXES)
    records = []
    for image_id, entry in images.items():
        if entry["n_other"] and not entry["boxes"] and other_categories == "exclude":
            report.exclude(EXCLUDED_OTHER_CATEGORY)
            continue
        file_name = entry["file_name"]
        image = next((f / file_name for f in folders if (f / file_name).is_file()), None)
        if image is None:
            image = pick_path(index.get(Path(file_name).name, []), folders[0], folders[0] / file_name)
        ids = ",".join(entry["ann_ids"])
        source = f"{jname}: image id {image_id}" + (f", annotation ids {ids}" if ids else "")
        records.append(Record(str(image_id), entry["patient"], int(bool(entry["boxes"])),
                              stack_boxes(entry["boxes"]), join_classes(entry["classes"]), source, image,
                              size=entry["size"], meta={"image_id": str(image_id), "file_name": file_name}))
    attrs = {
        "label_mapping": (f"1 = at least one annotation of {'any category' if categories is None else sorted(chosen)};"
                          f" 0 = no annotation; images with other categories only: {other_categories}"),
        "box_semantics": "COCO bbox [x, y, w, h] (top-left corner, pixels) read as half-open (x, y, x+w, y+h)",
        "options": {"annotations": str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
                    "categories": sorted(chosen), "channels": channels, "other_categories": other_categories,
                    "patient_field": patient_field or "image id"},
    }
    return build_real_data(NAME, records, report, root=root, image_size=image_size, max_per_split=max_per_split,
                           reader=lambda p: read_pil_image(p, channels), channels=channels, progress=progress,
                           attrs=attrs)
