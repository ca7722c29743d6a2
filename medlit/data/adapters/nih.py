"""NIH ChestX-ray14 {cite}`wang2017chestxray14`: image labels for 112k radiographs, boxes for about 880 of them.

Files (under ``root``): ``Data_Entry_2017.csv`` (``Image Index, Finding Labels, Follow-up #, Patient ID, Patient
Age, Patient Gender, View Position, ...``; labels ``"A|B"`` or ``"No Finding"``), ``BBox_List_2017.csv`` (``Image
Index, Finding Label`` and the four numbers ``x, y, w, h``, whose header is split by its commas into ``Bbox [x``,
``y``, ``w``, ``h]``; some releases add empty trailing columns, so the numbers are read from the ``Bbox`` column
on), and the 1024 x 1024 PNGs, found by name anywhere under ``root`` (``images/`` or the twelve
``images_0NN/images/`` folders of the tarballs).

Choices (also in ``data_cards/nih_chestxray14.md``):

* **Box classes.** The eight findings that have boxes: atelectasis, cardiomegaly, effusion, infiltrate (called
  "Infiltration" in ``Data_Entry_2017.csv``), mass, nodule, pneumonia, pneumothorax.
* **Labels.** 1 = the image has at least one of the eight findings (other findings may co-occur); 0 = "No
  Finding". Images whose findings are all outside the eight (e.g. only "Emphysema") are excluded and counted.
  Option ``classes`` narrows the eight (e.g. ``["Nodule", "Mass"]``, case-insensitive, "Infiltration" accepted):
  only their boxes are kept, and images with findings of the eight but none chosen are excluded and counted; a
  name that is not one of the eight is an error listing them.
* **Splits.** Every boxed image is a test positive, and every image of a patient with a boxed image is in test,
  so no boxed patient is ever trained on. The other patients go to train/val/test by the sha256 patient hash. Test
  positives must carry boxes (the benchmark scores localisation on them), so an unboxed positive that falls in
  test is excluded and counted; train and val positives have no boxes (their finding masks are empty).
* **Box coordinates.** ``x, y, w, h`` are pixels of the 1024 x 1024 PNG with (x, y) the top-left corner, read as
  the half-open box ``(x, y, x + w, y + h)``. A boxed image that is not ``native_size`` square is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlit.data.adapters.common import (
    INCONSISTENT, MISSING_VALUE, NAMES, OPTIONAL_INTEGER, UNKNOWN_CLASS, UNKNOWN_IMAGE, AdapterError, Record,
    SkipReport, build_real_data, cell, check_box, check_root, hash_split, index_files, is_blank, join_classes,
    parse_number, pick_path, read_pil_image, read_table, register_adapter, stack_boxes,
)

NAME = "nih-cxr14"
BBOX_FILE = "BBox_List_2017.csv"
LABEL_FILE = "Data_Entry_2017.csv"
NATIVE_SIZE = 1024
BOX_FINDINGS = ("atelectasis", "cardiomegaly", "effusion", "infiltrate", "mass", "nodule", "pneumonia",
                "pneumothorax")
ALIASES = {"infiltration": "infiltrate"}  # Data_Entry's name for the box list's "Infiltrate"
NO_FINDING = "no finding"
EXCLUDED_OTHER = "findings outside the eight box classes only"
EXCLUDED_OTHER_CHOSEN = "findings outside the chosen classes only"
EXCLUDED_UNBOXED_TEST = "positive without a box in the test split"

LABEL_MAPPING = ("1 = at least one of atelectasis, cardiomegaly, effusion, infiltrate (Infiltration), mass, "
                 "nodule, pneumonia, pneumothorax in Data_Entry_2017.csv or a box in BBox_List_2017.csv; "
                 "0 = 'No Finding'; images with other findings only are excluded")
BOX_SEMANTICS = ("BBox_List_2017.csv boxes (x, y, w, h) drawn by a board-certified radiologist on the 1024x1024 "
                 "PNG, read as half-open (x, y, x+w, y+h); only test positives carry boxes")


@dataclass
class _Entry:
    line: int
    patient_id: str
    findings: tuple[str, ...]
    meta: dict


def normalise_finding(name: str) -> str:
    name = name.strip().lower()
    return ALIASES.get(name, name)


def chosen_findings(classes) -> tuple[str, ...]:
    """The box findings selected by ``classes`` (``None`` = all eight), in ``BOX_FINDINGS`` order.

    Raises
    ------
    AdapterError naming every name that is not one of the eight, and listing the eight.
    """
    if classes is None:
        return BOX_FINDINGS
    if isinstance(classes, str):
        classes = [classes]
    wanted = {normalise_finding(c): c for c in classes}
    wrong = [original for name, original in wanted.items() if name not in BOX_FINDINGS]
    if wrong or not wanted:
        raise AdapterError(f"NIH ChestX-ray14: unknown class(es) {', '.join(repr(c) for c in wrong) or 'none given'}"
                           f"; the eight box classes are {', '.join(BOX_FINDINGS)} ('Infiltration' is accepted "
                           f"for infiltrate)")
    return tuple(f for f in BOX_FINDINGS if f in wanted)


def read_data_entry(path: Path, report: SkipReport) -> dict[str, _Entry]:
    """Image name -> its labels, patient and acquisition facts, one validated row each."""
    table = read_table(path, "the NIH label table (Data_Entry_2017.csv)")
    col = {name: table.column(name) for name in ("Image Index", "Finding Labels", "Patient ID")}
    optional = {name: table.column(name) for name in ("Follow-up #", "Patient Age", "Patient Gender",
                                                      "View Position")
                if name in [h.strip() for h in table.header]}
    entries: dict[str, _Entry] = {}
    for line, row in table.rows:
        where = table.where(line)
        image = cell(row, col["Image Index"])
        key = image or where
        with report.guard(key):
            if not image:
                raise AdapterError(f"{where}: 'Image Index' is missing", MISSING_VALUE)
            if image in entries:
                raise AdapterError(f"{where}: image {image} is listed twice (first on line "
                                   f"{entries[image].line})", INCONSISTENT)
            patient = cell(row, col["Patient ID"])
            if is_blank(patient):
                raise AdapterError(f"{where}: 'Patient ID' is missing", MISSING_VALUE)
            labels = cell(row, col["Finding Labels"])
            if is_blank(labels):
                raise AdapterError(f"{where}: 'Finding Labels' is missing", MISSING_VALUE)
            findings = tuple(sorted({normalise_finding(x) for x in labels.split("|") if x.strip()}))
            if NO_FINDING in findings and len(findings) > 1:
                raise AdapterError(f"{where}: 'No Finding' together with other labels ({labels!r})", INCONSISTENT)
            meta = {
                "finding_labels": labels,
                "view_position": cell(row, optional["View Position"]) if "View Position" in optional else "",
                "patient_gender": cell(row, optional["Patient Gender"]) if "Patient Gender" in optional else "",
                "patient_age": _number_or_nan(cell(row, optional["Patient Age"])) if "Patient Age" in optional
                else float("nan"),
                "follow_up": _number_or_nan(cell(row, optional["Follow-up #"])) if "Follow-up #" in optional
                else float("nan"),
            }
            entries[image] = _Entry(line, patient.lstrip("0") or "0", findings, meta)
    return entries


def _number_or_nan(text: str) -> float:
    """Descriptive columns are kept but not validated: NaN when unparsable (some NIH ages are typos like 411)."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def read_bbox_list(path: Path, report: SkipReport) -> dict[str, list[tuple[int, str, np.ndarray]]]:
    """Image name -> its (line, finding, half-open box) rows, each validated."""
    table = read_table(path, "the NIH box list (BBox_List_2017.csv)")
    image_col, label_col = table.column("Image Index"), table.column("Finding Label")
    starts = [i for i, h in enumerate(table.header) if h.strip().lower().startswith("bbox")]
    if not starts or starts[0] + 4 > len(table.header):
        raise AdapterError(f"{path}: the box columns 'Bbox [x', 'y', 'w', 'h]' were not found "
                           f"(header: {table.header})")
    first = starts[0]
    boxes: dict[str, list] = {}
    for line, row in table.rows:
        where = table.where(line)
        image = cell(row, image_col)
        with report.guard(image or where):
            if not image:
                raise AdapterError(f"{where}: 'Image Index' is missing", MISSING_VALUE)
            finding = normalise_finding(cell(row, label_col))
            if finding not in BOX_FINDINGS:
                raise AdapterError(f"{where}: finding {cell(row, label_col)!r} is not one of the eight box "
                                   f"classes", UNKNOWN_CLASS)
            x, y, w, h = (parse_number(cell(row, first + i), where, name)
                          for i, name in enumerate(("box x", "box y", "box w", "box h")))
            box = check_box((x, y, x + w, y + h), where)
            boxes.setdefault(image, []).append((line, finding, box))
    return boxes


def make_records(entries: dict[str, _Entry], boxes: dict[str, list], report: SkipReport, image_paths,
                 native_size: int | None, chosen: tuple[str, ...] = BOX_FINDINGS) -> list[Record]:
    """Boxed images -> test positives; the rest labelled from Data_Entry and split by patient.

    ``chosen``: the box findings that count (all eight by default); a boxed patient stays in test whatever the
    class of its boxes.
    """
    records = []
    other = EXCLUDED_OTHER if set(chosen) == set(BOX_FINDINGS) else EXCLUDED_OTHER_CHOSEN
    boxed_patients = {entries[image].patient_id for image in boxes if image in entries}
    for image, all_rows in boxes.items():
        lines = ",".join(str(line) for line, _, _ in all_rows)
        source = f"{BBOX_FILE}:{lines}"
        with report.guard(image):
            entry = entries.get(image)
            if entry is None:
                raise AdapterError(f"{source}: image {image} has boxes but no row in {LABEL_FILE}", UNKNOWN_IMAGE)
            rows = [row for row in all_rows if row[1] in chosen]
            if not rows:
                report.exclude(other)
                continue
            size = (native_size, native_size) if native_size else None
            records.append(Record(image, entry.patient_id, 1, stack_boxes([b for _, _, b in rows]),
                                  join_classes(f for _, f, _ in rows), source, image_paths(image), split="test",
                                  size=size, meta={**entry.meta, "boxed": True}))
    for image, entry in entries.items():
        if image in boxes:
            continue
        found = [f for f in entry.findings if f in chosen]
        if entry.findings == (NO_FINDING,):
            label = 0
        elif found:
            label = 1
        elif any(f in BOX_FINDINGS for f in entry.findings):
            report.exclude(other)
            continue
        else:
            report.exclude(EXCLUDED_OTHER)
            continue
        split = "test" if entry.patient_id in boxed_patients else hash_split(entry.patient_id)
        if split == "test" and label == 1:
            report.exclude(EXCLUDED_UNBOXED_TEST)
            continue
        records.append(Record(image, entry.patient_id, label, stack_boxes([]), join_classes(found),
                              f"{LABEL_FILE}:{entry.line}", image_paths(image), split=split,
                              meta={**entry.meta, "boxed": False}))
    return records


@register_adapter(NAME, description="NIH ChestX-ray14: 8 findings, radiologist boxes on ~880 test images",
                  data_card="nih_chestxray14.md", annotation_files=(BBOX_FILE, LABEL_FILE),
                  image_suffixes=(".png",), options={"native_size": OPTIONAL_INTEGER, "classes": NAMES})
def load(root, *, image_size: int, max_per_split: dict | None = None, errors: str = "raise",
         progress: bool = True, native_size: int | None = NATIVE_SIZE, classes=None):
    """Load NIH ChestX-ray14 as medlit splits (see the module docstring for every choice).

    Parameters
    ----------
    root : folder holding ``Data_Entry_2017.csv``, ``BBox_List_2017.csv`` and the PNGs (any depth)
    image_size : side of the stored square images
    max_per_split : cap per split, e.g. the profile's ``n_train/n_val/n_test``; ``None`` reads everything
    errors : ``"raise"`` (default) or ``"skip"`` malformed samples, counted in the report
    progress : show a progress bar while reading images
    native_size : the side every boxed PNG must have (the box coordinates refer to it); ``None`` = no check
    classes : box findings that count (names of the eight, case-insensitive); ``None`` = all eight

    Returns
    -------
    RealData with ``.splits`` and ``.report``
    """
    chosen = chosen_findings(classes)
    root = check_root(root)
    report = SkipReport(NAME, errors)
    entries = read_data_entry(root / LABEL_FILE, report)
    boxes = read_bbox_list(root / BBOX_FILE, report)
    index = index_files(root, (".png",))

    def image_paths(name: str) -> Path:
        return pick_path(index.get(name, []), root / "images", root / "images" / name)

    records = make_records(entries, boxes, report, image_paths, native_size, chosen)
    mapping = LABEL_MAPPING if chosen == BOX_FINDINGS else (
        f"1 = at least one of {', '.join(chosen)} in Data_Entry_2017.csv or a box of them in BBox_List_2017.csv; "
        f"0 = 'No Finding'; images with other findings only are excluded")
    attrs = {"label_mapping": mapping, "box_semantics": BOX_SEMANTICS, "box_classes": list(chosen),
             "split_note": "every boxed image, and every image of its patient, is in test",
             "options": {"native_size": native_size, "classes": sorted(chosen)}}
    return build_real_data(NAME, records, report, root=root, image_size=image_size, max_per_split=max_per_split,
                           reader=lambda path: read_pil_image(path, 1), channels=1, progress=progress,
                           attrs=attrs, original_size=NATIVE_SIZE)
