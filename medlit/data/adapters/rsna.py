"""RSNA Pneumonia Detection Challenge {cite}`shih2019rsna`: lung-opacity boxes on 26,684 NIH radiographs (DICOM).

Files (under ``root``): ``stage_2_train_labels.csv`` (``patientId, x, y, width, height, Target``: one row per box;
a negative image has one row with ``Target`` 0 and an empty box), optionally ``stage_2_detailed_class_info.csv``
(``patientId, class``: "Lung Opacity", "No Lung Opacity / Not Normal" or "Normal", kept as ``meta["detailed_class"]``)
and the DICOMs ``stage_2_train_images/<patientId>.dcm`` (found by name anywhere under ``root``), 1024 x 1024.

Choices (also in ``data_cards/rsna_pneumonia.md``):

* **Labels.** 1 = ``Target`` 1 (at least one "Lung Opacity" box), 0 = ``Target`` 0, which includes the "No Lung
  Opacity / Not Normal" images: *negative* here means "no pneumonia-like opacity", not "normal".
* **Consistency.** A ``Target`` 1 row needs a full box, a ``Target`` 0 row must have none, and one patientId must
  not mix both; anything else is an error.
* **Splits.** The sha256 hash of ``patientId``. In this release a patientId is one image and the original NIH
  patient identities are not given, so images of one NIH patient may still fall into different splits.
* **Pixels.** The DICOM pipeline of :mod:`medlit.data.dicom` (modality rescale, the file's window or VOI LUT;
  MONOCHROME1 inverted), option ``voi``. Without a window in the file the full stored range is mapped to [0, 1]
  (``fallback="bits"``): the RSNA DICOMs were made from NIH's display-ready 8-bit images, so this reproduces them
  as shown, where a per-image percentile stretch would change every image's contrast differently.
"""

from __future__ import annotations

from pathlib import Path

from medlit.data.adapters.common import (
    INCONSISTENT, MISSING_VALUE, NON_NUMERIC, OPTIONAL_INTEGER, VOI, AdapterError, Record, SkipReport,
    build_real_data, cell, check_box, check_root, choice, index_files, is_blank, parse_number, pick_path,
    read_dicom_image, read_table, register_adapter, stack_boxes,
)

NAME = "rsna-pneumonia"
LABEL_FILE = "stage_2_train_labels.csv"
CLASS_FILE = "stage_2_detailed_class_info.csv"
IMAGE_DIR = "stage_2_train_images"
NATIVE_SIZE = 1024
FINDING = "lung opacity"
BOX_FIELDS = ("x", "y", "width", "height")

LABEL_MAPPING = ("1 = Target 1 (at least one 'Lung Opacity' box); 0 = Target 0, i.e. no pneumonia-like opacity, "
                 "which includes 'No Lung Opacity / Not Normal' images")
BOX_SEMANTICS = ("RSNA/STR radiologists' boxes of lung opacities suspicious for pneumonia, (x, y, width, height) "
                 "on the 1024x1024 image, read as half-open (x, y, x+width, y+height)")


def read_labels(path: Path, report: SkipReport) -> dict[str, dict]:
    """patientId -> {"lines", "target", "boxes"}, every row validated."""
    table = read_table(path, "the RSNA label table (stage_2_train_labels.csv)")
    col = {name: table.column(name) for name in ("patientId", *BOX_FIELDS, "Target")}
    groups: dict[str, dict] = {}
    for line, row in table.rows:
        where = table.where(line)
        pid = cell(row, col["patientId"])
        with report.guard(pid or where):
            if not pid:
                raise AdapterError(f"{where}: 'patientId' is missing", MISSING_VALUE)
            target_text = cell(row, col["Target"])
            if target_text not in ("0", "1"):
                reason = MISSING_VALUE if is_blank(target_text) else NON_NUMERIC
                raise AdapterError(f"{where}: 'Target' must be 0 or 1, got {target_text!r}", reason)
            target = int(target_text)
            group = groups.setdefault(pid, {"lines": [], "target": target, "boxes": []})
            group["lines"].append(line)
            if group["target"] != target:
                raise AdapterError(f"{where}: patientId {pid} has rows with Target 0 and Target 1", INCONSISTENT)
            texts = [cell(row, col[name]) for name in BOX_FIELDS]
            if target == 0:
                if not all(is_blank(t) for t in texts):
                    raise AdapterError(f"{where}: a Target 0 row carries a box {texts}", INCONSISTENT)
                continue
            x, y, w, h = (parse_number(t, where, name) for t, name in zip(texts, BOX_FIELDS, strict=True))
            group["boxes"].append(check_box((x, y, x + w, y + h), where))
    return groups


def read_detailed_classes(path: Path) -> dict[str, str]:
    """patientId -> detailed class; empty when the optional file is absent (its columns are required if present)."""
    if not path.is_file():
        return {}
    table = read_table(path, "the RSNA detailed class table")
    pid_col, class_col = table.column("patientId"), table.column("class")
    return {cell(row, pid_col): cell(row, class_col) for _, row in table.rows}


@register_adapter(NAME, description="RSNA Pneumonia Detection: lung-opacity boxes on NIH radiographs (DICOM)",
                  data_card="rsna_pneumonia.md", annotation_files=(LABEL_FILE,), image_suffixes=(".dcm",),
                  optional_files=(CLASS_FILE,),
                  options={"native_size": OPTIONAL_INTEGER, "voi": VOI, "fallback": choice("bits", "minmax")})
def load(root, *, image_size: int, max_per_split: dict | None = None, errors: str = "raise",
         progress: bool = True, native_size: int | None = NATIVE_SIZE, voi="file", fallback: str = "bits"):
    """Load the RSNA Pneumonia training set as medlit splits (see the module docstring for every choice).

    Parameters
    ----------
    root : folder holding ``stage_2_train_labels.csv`` and the DICOMs (any depth)
    image_size, max_per_split, errors, progress : as for every adapter (see :mod:`medlit.data.adapters`)
    native_size : the side every positive image must have (the box coordinates refer to it); ``None`` = no check
    voi, fallback : the display window, passed to :func:`medlit.data.dicom.to_unit_range`: ``voi`` is ``"file"``,
        ``"minmax"``, ``"bits"`` or ``(center, width)``; ``fallback`` (``"bits"`` or ``"minmax"``) applies when
        ``voi="file"`` and the file has no window
    """
    root = check_root(root)
    report = SkipReport(NAME, errors)
    groups = read_labels(root / LABEL_FILE, report)
    detailed = read_detailed_classes(root / CLASS_FILE)
    index = index_files(root, (".dcm",))
    records = []
    for pid, group in groups.items():
        name = f"{pid}.dcm"
        path = pick_path(index.get(name, []), root / IMAGE_DIR, root / IMAGE_DIR / name)
        label = group["target"]
        size = (native_size, native_size) if native_size and label else None
        records.append(Record(pid, pid, label, stack_boxes(group["boxes"]), FINDING if label else "none",
                              f"{LABEL_FILE}:{','.join(map(str, group['lines']))}", path, size=size,
                              meta={"detailed_class": detailed.get(pid, "unknown")}))
    attrs = {"label_mapping": LABEL_MAPPING, "box_semantics": BOX_SEMANTICS,
             "options": {"native_size": native_size, "voi": str(voi), "fallback": fallback}}
    return build_real_data(NAME, records, report, root=root, image_size=image_size, max_per_split=max_per_split,
                           reader=lambda path: read_dicom_image(path, voi, fallback), channels=1, progress=progress,
                           attrs=attrs, original_size=NATIVE_SIZE)
