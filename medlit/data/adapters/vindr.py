"""VinDr-CXR {cite}`nguyen2022vindr`: 15,000 training radiographs, each read by three radiologists (DICOM).

Files (under ``root``): ``annotations_train.csv`` (``image_id, class_name, rad_id, x_min, y_min, x_max, y_max``
and, in the Kaggle release, ``class_id``; one row per box per reader, and one "No finding" row, class_id 14,
without a box, for a reader who saw nothing) and the DICOMs ``train/<image_id>.dicom`` (found by name anywhere
under ``root``; ``.dcm`` also accepted).

Choices (also in ``data_cards/vindr_cxr.md``):

* **Labels.** 1 = at least one reader drew a box (of a chosen class, option ``classes``); 0 = every reader wrote
  "No finding". Images whose boxes are all of classes outside ``classes`` are excluded and counted. A chosen
  class that no box of the annotation file has (e.g. "Nodule" for "Nodule/Mass") is an error listing the file's
  box classes.
* **Merging the readers' boxes** (option ``merge``), per image and class:

  - ``"fuse"`` (default): boxes are clustered greedily, in a fixed order (reader id, then coordinates): a box joins
    the cluster whose current fused box overlaps it most, if that overlap is IoU >= ``iou`` (0.5) and the cluster
    has no box of the same reader yet (a reader's two boxes are two findings); otherwise it starts a new cluster.
    A cluster's box is the mean of its members' coordinates. Clusters of one reader are kept as they are.
  - ``"union"``: every reader's box, unmerged (overlapping duplicates included).
  - ``"majority"``: the fused clusters drawn by at least ``min_readers`` (2) different readers. An image with
    boxes but no such cluster is neither a clear positive nor a negative; it is **excluded** and counted under
    "findings without reader agreement", rather than labelled 0 (a reader did see something) or 1 (without a box
    the benchmark could not score it).
* **Box coordinates.** ``x_min, y_min, x_max, y_max`` are pixels of the DICOM image and are read as the half-open
  box ``(x_min, y_min, x_max, y_max)``; they are checked against the image size read from the DICOM.
* **Splits.** The sha256 hash of ``image_id``: the annotation tables carry no patient id.
* ``meta``: ``n_readers`` (readers with any row for the image), ``n_readers_with_box``, ``readers``, and
  ``box_readers`` (for each kept box, the number of readers whose boxes it merges, joined with ",").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medlit.data.adapters.common import (
    INCONSISTENT, INTEGER, MISSING_VALUE, NAMES, NUMBER, TEXT, VOI, AdapterError, Record, SkipReport,
    build_real_data, cell, check_box, check_root, choice, index_files, is_blank, join_classes, parse_number,
    pick_path, read_dicom_image, read_table, register_adapter, stack_boxes,
)

NAME = "vindr-cxr"
LABEL_FILE = "annotations_train.csv"
IMAGE_DIR = "train"
NO_FINDING = "no finding"
NO_FINDING_ID = "14"
MERGE_RULES = ("fuse", "union", "majority")
COORDS = ("x_min", "y_min", "x_max", "y_max")
COLUMNS = ("image_id", "class_name", "rad_id", *COORDS)  # class_id is optional
EXCLUDED_DISAGREEMENT = "findings without reader agreement (merge='majority')"
EXCLUDED_OTHER_CLASS = "findings outside the chosen classes only"

BOX_SEMANTICS = {
    "fuse": "readers' boxes of one class with IoU >= {iou} fused by averaging coordinates; unmatched boxes kept",
    "union": "every reader's box, unmerged",
    "majority": "fused boxes drawn by at least {min_readers} readers only",
}


@dataclass
class _Image:
    lines: list = field(default_factory=list)
    readers: set = field(default_factory=set)
    boxes: list = field(default_factory=list)  # (reader, class, box)


@dataclass
class Cluster:
    """Boxes of one class from different readers that mark the same finding."""

    finding: str
    members: list  # (reader, box)

    @property
    def box(self) -> np.ndarray:
        return np.mean([b for _, b in self.members], axis=0)

    @property
    def readers(self) -> set:
        return {r for r, _ in self.members}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two half-open boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def cluster_boxes(boxes: list[tuple[str, str, np.ndarray]], threshold: float = 0.5) -> list[Cluster]:
    """Greedy same-class clustering of (reader, class, box) triples (see the module docstring)."""
    clusters: list[Cluster] = []
    for reader, finding, box in sorted(boxes, key=lambda t: (t[1], t[0], tuple(t[2]))):
        best, best_iou = None, threshold
        for cluster in clusters:
            if cluster.finding != finding or reader in cluster.readers:
                continue
            overlap = iou(cluster.box, box)
            if overlap >= best_iou:
                best, best_iou = cluster, overlap
        if best is None:
            clusters.append(Cluster(finding, [(reader, box)]))
        else:
            best.members.append((reader, box))
    return clusters


def merge_boxes(boxes: list[tuple[str, str, np.ndarray]], merge: str, threshold: float = 0.5,
                min_readers: int = 2) -> list[tuple[str, np.ndarray, int]]:
    """The kept (class, box, number of readers) of one image under ``merge`` rule."""
    if merge == "union":
        return [(finding, box, 1) for _, finding, box in sorted(boxes, key=lambda t: (t[1], t[0], tuple(t[2])))]
    clusters = cluster_boxes(boxes, threshold)
    if merge == "majority":
        clusters = [c for c in clusters if len(c.readers) >= min_readers]
    return [(c.finding, c.box, len(c.readers)) for c in clusters]


def read_annotations(path: Path, report: SkipReport, class_names: dict | None = None) -> dict[str, _Image]:
    """image_id -> its readers and boxes, every row validated.

    ``class_names``, when given, is filled with the box classes the file names (lower case -> as written).
    """
    table = read_table(path, "the VinDr-CXR annotation table (annotations_train.csv)")
    col = {name: table.column(name) for name in COLUMNS}
    class_id = table.column("class_id") if "class_id" in [h.strip() for h in table.header] else None
    images: dict[str, _Image] = {}
    for line, row in table.rows:
        where = table.where(line)
        image_id = cell(row, col["image_id"])
        with report.guard(image_id or where):
            if not image_id:
                raise AdapterError(f"{where}: 'image_id' is missing", MISSING_VALUE)
            entry = images.setdefault(image_id, _Image())
            entry.lines.append(line)
            reader = cell(row, col["rad_id"])
            finding = cell(row, col["class_name"]).lower()
            if is_blank(reader) or not finding:
                raise AdapterError(f"{where}: 'rad_id' or 'class_name' is missing", MISSING_VALUE)
            entry.readers.add(reader)
            texts = [cell(row, col[name]) for name in COORDS]
            no_finding = finding == NO_FINDING
            if class_names is not None and not no_finding:
                class_names.setdefault(finding, cell(row, col["class_name"]))
            if class_id is not None and no_finding != (cell(row, class_id) == NO_FINDING_ID):
                raise AdapterError(f"{where}: class_name {cell(row, col['class_name'])!r} does not match class_id "
                                   f"{cell(row, class_id)!r}", INCONSISTENT)
            if no_finding:
                if not all(is_blank(t) for t in texts):
                    raise AdapterError(f"{where}: a 'No finding' row carries a box {texts}", INCONSISTENT)
                continue
            coords = [parse_number(t, where, name) for t, name in zip(texts, COORDS, strict=True)]
            entry.boxes.append((reader, finding, check_box(coords, where)))
    return images


def make_record(image_id: str, entry: _Image, path: Path, report: SkipReport, merge: str, threshold: float,
                min_readers: int, classes: set | None, table_name: str = LABEL_FILE) -> Record | None:
    """The record of one image under the merge rule, or ``None`` when it is excluded by design."""
    boxes = [b for b in entry.boxes if classes is None or b[1] in classes]
    if entry.boxes and not boxes:
        report.exclude(EXCLUDED_OTHER_CLASS)
        return None
    kept = merge_boxes(boxes, merge, threshold, min_readers)
    if boxes and not kept:
        report.exclude(EXCLUDED_DISAGREEMENT)
        return None
    meta = {
        "n_readers": len(entry.readers),
        "n_readers_with_box": len({r for r, _, _ in boxes}),
        "readers": ",".join(sorted(entry.readers)),
        "box_readers": ",".join(str(n) for _, _, n in kept),
        "merge": merge,
    }
    return Record(image_id, image_id, int(bool(kept)), stack_boxes([b for _, b, _ in kept]),
                  join_classes(f for f, _, _ in kept), f"{table_name}:{_lines(entry.lines)}", path, meta=meta)


def _lines(lines: list[int]) -> str:
    """Line numbers, compressed to first-last for a consecutive run (VinDr images have many rows)."""
    if lines == list(range(lines[0], lines[0] + len(lines))) and len(lines) > 2:
        return f"{lines[0]}-{lines[-1]}"
    return ",".join(map(str, lines))


@register_adapter(NAME, description="VinDr-CXR: 14 findings boxed by three radiologists per image (DICOM)",
                  data_card="vindr_cxr.md", annotation_files=("*.csv",), image_suffixes=(".dicom", ".dcm"),
                  options={"merge": choice(*MERGE_RULES), "iou_threshold": NUMBER, "min_readers": INTEGER,
                           "classes": NAMES, "annotations": TEXT, "voi": VOI, "fallback": choice("minmax", "bits")})
def load(root, *, image_size: int, max_per_split: dict | None = None, errors: str = "raise",
         progress: bool = True, merge: str = "fuse", iou_threshold: float = 0.5, min_readers: int = 2,
         classes=None, annotations: str = LABEL_FILE, voi="file", fallback: str = "minmax"):
    """Load VinDr-CXR as medlit splits (see the module docstring for every choice).

    Parameters
    ----------
    root : folder holding the annotation CSV and the DICOMs (any depth)
    image_size, max_per_split, errors, progress : as for every adapter (see :mod:`medlit.data.adapters`)
    merge : ``"fuse"`` (default), ``"union"`` or ``"majority"``
    iou_threshold : the IoU at which two readers' boxes of one class are the same finding
    min_readers : readers a cluster needs under ``merge="majority"``
    classes : class names (case-insensitive) that count as findings; ``None`` = all of the file's box classes.
        A name that no box of the file has is an error listing the file's classes
    annotations : the annotation CSV, relative to ``root`` (``annotations_test.csv`` has the same columns)
    voi, fallback : the display window, passed to :func:`medlit.data.dicom.to_unit_range`: ``voi`` is ``"file"``,
        ``"minmax"``, ``"bits"`` or ``(center, width)``; ``fallback`` (``"minmax"``: a 0.5-99.5 percentile stretch,
        or ``"bits"``) applies when ``voi="file"`` and the file has no window
    """
    if merge not in MERGE_RULES:
        raise ValueError(f"merge must be one of {MERGE_RULES}, got {merge!r}")
    if not 0 < iou_threshold <= 1 or min_readers < 1:
        raise ValueError(f"need 0 < iou_threshold <= 1 and min_readers >= 1, got {iou_threshold}, {min_readers}")
    root = check_root(root)
    report = SkipReport(NAME, errors)
    if isinstance(classes, str):
        classes = [classes]
    chosen = None if classes is None else {c.strip().lower() for c in classes}
    known: dict = {}
    images = read_annotations(root / annotations, report, known)
    if classes is not None:
        wrong = [c for c in classes if c.strip().lower() not in known]
        if wrong or not chosen:
            listed = ", ".join(repr(known[k]) for k in sorted(known)) or "none"
            raise AdapterError(f"{root / annotations}: class(es) {', '.join(repr(c) for c in wrong) or 'none given'}"
                               f" not found: no box of this file has that class_name; its box classes are {listed}")
    index = index_files(root, (".dicom", ".dcm"))
    records = []
    for image_id, entry in images.items():
        candidates = index.get(f"{image_id}.dicom", []) + index.get(f"{image_id}.dcm", [])
        path = pick_path(candidates, root / IMAGE_DIR, root / IMAGE_DIR / f"{image_id}.dicom")
        record = make_record(image_id, entry, path, report, merge, iou_threshold, min_readers, chosen,
                             Path(annotations).name)
        if record is not None:
            records.append(record)
    semantics = BOX_SEMANTICS[merge].format(iou=iou_threshold, min_readers=min_readers)
    attrs = {
        "label_mapping": ("1 = at least one reader drew a box" + (" of the chosen classes" if chosen else "")
                          + "; 0 = every reader wrote 'No finding'"
                          + ("; images without a box agreed by enough readers are excluded"
                             if merge == "majority" else "")),
        "box_semantics": f"radiologists' boxes (x_min, y_min, x_max, y_max) on the DICOM image, half-open; {semantics}",
        "options": {"merge": merge, "iou_threshold": iou_threshold, "min_readers": min_readers,
                    "classes": sorted(chosen) if chosen else "all", "annotations": annotations, "voi": str(voi),
                    "fallback": fallback},
    }
    return build_real_data(NAME, records, report, root=root, image_size=image_size, max_per_split=max_per_split,
                           reader=lambda path: read_dicom_image(path, voi, fallback), channels=1, progress=progress,
                           attrs=attrs)
