"""DDR lesion detection {cite}`li2019ddr`: Pascal-VOC boxes of four diabetic-retinopathy lesions on fundus photos.

Files (under ``root``, any layout): one Pascal-VOC XML per image {cite}`everingham2010voc` (``<annotation>`` with
``<filename>``, ``<size><width><height><depth>`` and one ``<object>`` per lesion: ``<name>`` ma / he / ex / se and
``<bndbox><xmin><ymin><xmax><ymax>``) and the JPEG photographs, found by file name next to the XML or anywhere under
``root`` (the path sharing most folders with the XML wins).

Choices (also in ``data_cards/ddr_lesions.md``):

* **Labels.** 1 = the XML has at least one object of a chosen class (option ``classes``; default all four),
  0 = an XML without objects. Images whose objects are all of other classes are excluded and counted.
  The lesion images of DDR are almost all positive, so grade-0 images of DDR's grading lists can be added as
  negatives with ``grading_files`` (text files of ``<image name> <grade>`` lines; only grade 0 is used; an image
  that also has an XML keeps its XML).
* **Box coordinates.** VOC pixel indices are 1-based and inclusive, so ``(xmin, ymin, xmax, ymax)`` becomes the
  half-open 0-based box ``(xmin - 1, ymin - 1, xmax, ymax)``; a one-pixel lesion has ``xmin == xmax``. Files
  written with 0-based indices give ``xmin - 1 = -1``: that is within the 1-pixel tolerance and is clipped, and
  counted in the report.
* **Pixels.** RGB is kept (``channels=3``).
* **Splits.** ``split="hash"`` (default): the sha256 hash of the file stem. DDR publishes no patient ids, so two
  photographs of one patient (DDR has about 1.4 images per patient) may fall in different splits.
  ``split="official"`` keeps DDR's own ``train`` / ``valid`` / ``test`` folders (a path part, or a grading file's
  stem, must name the split).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from medlit.data.adapters.common import (
    BAD_XML, INCONSISTENT, MISSING_VALUE, NAMES, NON_NUMERIC, UNKNOWN_CLASS, AdapterError, Record, SkipReport,
    build_real_data, check_box, check_root, choice, index_files, join_classes, parse_number, pick_path,
    read_pil_image, register_adapter, stack_boxes,
)

NAME = "ddr-lesions"
LESIONS = {"ma": "microaneurysm", "he": "haemorrhage", "ex": "hard exudate", "se": "soft exudate"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
OFFICIAL_SPLITS = {"train": "train", "valid": "val", "val": "val", "test": "test"}
EXCLUDED_OTHER_CLASS = "lesions outside the chosen classes only"
EXCLUDED_DUPLICATE = "grading-list image that has an XML"
EXCLUDED_GRADE = "grading-list image with grade > 0 (no boxes)"

BOX_SEMANTICS = ("DDR lesion boxes (Pascal VOC, 1-based inclusive xmin..xmax) converted to half-open 0-based "
                 "(xmin-1, ymin-1, xmax, ymax) on the colour photograph")


def _text(node: ET.Element, path: str, where: str) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise AdapterError(f"{where}: required tag <{path}> is missing or empty", BAD_XML)
    return found.text.strip()


def _int(node: ET.Element, path: str, where: str) -> int:
    value = parse_number(_text(node, path, where), where, f"<{path}>")
    if value != int(value) or value < 1:
        raise AdapterError(f"{where}: <{path}> must be a positive integer, got {value:g}", NON_NUMERIC)
    return int(value)


def parse_voc(path: Path, root: Path) -> dict:
    """One VOC file: ``filename``, ``size`` (height, width) and ``objects`` [(class code, half-open box)]."""
    where = str(path.relative_to(root))
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as err:
        raise AdapterError(f"{where}: not a readable XML file ({err})", BAD_XML) from err
    node = tree.getroot()
    if node.tag != "annotation":
        raise AdapterError(f"{where}: the root element is <{node.tag}>, not <annotation>", BAD_XML)
    filename = _text(node, "filename", where)
    size = (_int(node, "size/height", where), _int(node, "size/width", where))
    objects = []
    for k, obj in enumerate(node.findall("object"), start=1):
        at = f"{where}: object {k}"
        code = _text(obj, "name", at).lower()
        if code not in LESIONS:
            raise AdapterError(f"{at}: lesion name {code!r} is not one of {sorted(LESIONS)}", UNKNOWN_CLASS)
        if obj.find("bndbox") is None:
            raise AdapterError(f"{at}: required tag <bndbox> is missing", BAD_XML)
        xmin, ymin, xmax, ymax = (parse_number(_text(obj, f"bndbox/{t}", at), at, t)
                                  for t in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((code, check_box((xmin - 1, ymin - 1, xmax, ymax), at)))  # VOC 1-based inclusive
    return {"filename": filename, "size": size, "objects": objects}


def official_split(path: Path, root: Path) -> str:
    """DDR's own split from a folder name (or a grading file's stem) in ``path``; always raises otherwise."""
    parts = [p.lower() for p in path.relative_to(root).with_suffix("").parts]
    for part in reversed(parts):
        if part in OFFICIAL_SPLITS:
            return OFFICIAL_SPLITS[part]
    raise AdapterError(f"{path}: split='official' needs a 'train', 'valid' or 'test' folder or file name in the path")


def find_image(name: str, near: Path, index: dict) -> Path:
    """The image called ``name`` (or with that stem, when ``name`` has no image suffix) closest to ``near``."""
    candidates = list(index.get(name, []))
    if not candidates and Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        candidates = [p for s in IMAGE_SUFFIXES for p in index.get(name + s, [])]
    return pick_path(candidates, near, near.parent / name)


def read_grading(path: Path, report: SkipReport, root: Path, index: dict, split_rule: str, known: set) -> list:
    """Grade-0 images of one grading list, as negative records."""
    if not path.is_file():
        raise AdapterError(f"{path}: DDR grading file not found")
    records = []
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path.name}:{line}"
        fields = text.split()
        name = fields[0]
        stem = Path(name).stem
        with report.guard(stem):
            if len(fields) < 2:
                raise AdapterError(f"{where}: expected '<image name> <grade>', got {text!r}", MISSING_VALUE)
            grade = parse_number(fields[1], where, "grade")
            if grade != 0:
                report.exclude(EXCLUDED_GRADE)
                continue
            if stem in known:
                report.exclude(EXCLUDED_DUPLICATE)
                continue
            split = official_split(path, root) if split_rule == "official" else None
            image = find_image(name, path, index)
            records.append(Record(stem, stem, 0, stack_boxes([]), "none", where, image, split=split,
                                  meta={"n_objects_all_classes": 0}))
    return records


@register_adapter(NAME, description="DDR: boxes of microaneurysms, haemorrhages and exudates on fundus photographs",
                  data_card="ddr_lesions.md", annotation_files=("**/*.xml",), image_suffixes=IMAGE_SUFFIXES,
                  optional_files=("**/*.txt",),
                  options={"classes": NAMES, "split": choice("hash", "official"), "grading_files": NAMES})
def load(root, *, image_size: int, max_per_split: dict | None = None, errors: str = "raise",
         progress: bool = True, classes=None, split: str = "hash", grading_files=()):
    """Load the DDR lesion-detection set as medlit splits (see the module docstring for every choice).

    Parameters
    ----------
    root : folder holding the VOC XMLs and the photographs (any depth)
    image_size, max_per_split, errors, progress : as for every adapter (see :mod:`medlit.data.adapters`)
    classes : lesion codes or names counted as findings (``"ma"`` or ``"microaneurysm"``, ...); ``None`` = all four
    split : ``"hash"`` (default) or ``"official"``
    grading_files : DDR grading lists (``<name> <grade>`` lines), relative to ``root``, whose grade-0 images are
        added as negatives
    """
    if split not in ("hash", "official"):
        raise ValueError(f"split must be 'hash' or 'official', got {split!r}")
    root = check_root(root)
    chosen = _chosen_codes(classes)
    report = SkipReport(NAME, errors)
    xmls = sorted(root.rglob("*.xml"))
    if not xmls:
        raise AdapterError(f"{root}: no Pascal-VOC XML files found")
    index = index_files(root, IMAGE_SUFFIXES)
    records, seen = [], {}
    for xml in xmls:
        stem = xml.stem
        with report.guard(stem):
            if stem in seen:
                raise AdapterError(f"{xml.relative_to(root)}: a second annotation of image {stem} (first: "
                                   f"{seen[stem].relative_to(root)})", INCONSISTENT)
            seen[stem] = xml
            voc = parse_voc(xml, root)
            objects = [(code, box) for code, box in voc["objects"] if code in chosen]
            if voc["objects"] and not objects:
                report.exclude(EXCLUDED_OTHER_CLASS)
                continue
            image = find_image(voc["filename"], xml, index)
            records.append(Record(stem, stem, int(bool(objects)), stack_boxes([b for _, b in objects]),
                                  join_classes(LESIONS[c] for c, _ in objects), str(xml.relative_to(root)), image,
                                  split=official_split(xml, root) if split == "official" else None,
                                  size=voc["size"], meta={"n_objects_all_classes": len(voc["objects"])}))
    for grading in grading_files:
        records += read_grading(root / grading, report, root, index, split, set(seen))
    attrs = {
        "label_mapping": (f"1 = at least one {'/'.join(LESIONS[c] for c in sorted(chosen))} box in the VOC XML; "
                          "0 = an XML without objects" + (" or a grade-0 image of the grading lists"
                                                          if grading_files else "")),
        "box_semantics": BOX_SEMANTICS,
        "options": {"classes": sorted(chosen), "split": split, "grading_files": [str(g) for g in grading_files]},
    }
    return build_real_data(NAME, records, report, root=root, image_size=image_size, max_per_split=max_per_split,
                           reader=lambda path: read_pil_image(path, 3), channels=3, progress=progress, attrs=attrs)


def _chosen_codes(classes) -> set:
    """Lesion codes from codes or names (case-insensitive); an unknown one is an error listing the valid ones."""
    if classes is None:
        return set(LESIONS)
    if isinstance(classes, str):
        classes = [classes]
    names = {v: k for k, v in LESIONS.items()}
    chosen = set()
    for original in classes:
        c = original.strip().lower()
        if c not in LESIONS and c not in names:
            raise AdapterError(f"unknown DDR lesion class {original!r}; use a code ({', '.join(sorted(LESIONS))}) or "
                               f"a name ({', '.join(sorted(names))})")
        chosen.add(c if c in LESIONS else names[c])
    if not chosen:
        raise AdapterError(f"DDR: classes is empty; use codes ({', '.join(sorted(LESIONS))}) or names")
    return chosen
