"""Writers of tiny data sets in the official formats of the real-data adapters (used by tests/test_adapters.py).

Every image is 32 rows x 48 columns (so the letterbox pads 8 rows above and below), and one box per data set sits
at the half-open native box ``KNOWN_BOX`` = (10, 4, 18, 10): at ``image_size=24`` (scale 0.5, pad_y 8) it becomes
``KNOWN_BOX_24`` = (5, 6, 9, 9).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

H, W = 32, 48
KNOWN_BOX = (10.0, 4.0, 18.0, 10.0)
KNOWN_BOX_24 = (5.0, 6.0, 9.0, 9.0)
GREY = 200  # the uniform grey level of the PNG images


# --------------------------------------------------------------------------------------------------------------
# Primitive writers


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_png(path: Path, value: int = GREY, mode: str = "L", size: tuple[int, int] = (H, W)) -> Path:
    """A uniform image of grey ``value`` in PIL ``mode`` ("L", "RGB", "RGBA")."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    grey = np.full((h, w), value, dtype=np.uint8)
    if mode == "L":
        array = grey
    elif mode == "RGB":
        array = np.stack([grey] * 3, axis=-1)
    else:
        array = np.stack([grey] * 3 + [np.full((h, w), 255, dtype=np.uint8)], axis=-1)
    Image.fromarray(array, mode=mode).save(path)
    return path


def write_colour(path: Path, rgb=(180, 60, 20), size: tuple[int, int] = (H, W)) -> Path:
    """A uniform colour photograph (JPEG or PNG by suffix)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.empty((*size, 3), dtype=np.uint8)
    array[...] = rgb
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(array, mode="RGB").save(path, **options)
    return path


def write_dicom(path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME2", slope: float = 1.0,
                intercept: float = 0.0, window: tuple[float, float] | None = None) -> Path:
    """An uncompressed single-frame DICOM (Explicit VR Little Endian) with 16-bit unsigned stored values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    stored = np.asarray(stored, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = path.stem
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def chest_dicom(path: Path, *, photometric: str = "MONOCHROME2") -> Path:
    """A 32 x 48 DICOM: background stored 100, a dense block (rows 4-9, columns 10-17: ``KNOWN_BOX``).

    In MONOCHROME2 the block is stored high (1000); in MONOCHROME1 low (0), so after inversion it must be bright.
    Slope 2 and intercept -100 map stored s to modality 2 s - 100; the window (center 900, width 1801) maps
    modality m to (m + 0.5) / 1800 clipped, so MONOCHROME2's block (m = 1900) reads 1.0 and its background
    (m = 100) reads 100.5 / 1800.
    """
    stored = np.full((H, W), 100, dtype=np.uint16)
    if photometric == "MONOCHROME1":
        stored[:] = 1000
        stored[4:10, 10:18] = 0
    else:
        stored[4:10, 10:18] = 1000
    return write_dicom(path, stored, photometric=photometric, slope=2.0, intercept=-100.0, window=(900.0, 1801.0))


def garbage(path: Path) -> Path:
    """Bytes that are no image of any kind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image\x00\x01\x02" * 20)
    return path


# --------------------------------------------------------------------------------------------------------------
# NIH ChestX-ray14

NIH_BBOX_HEADER = ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "", "", ""]
NIH_ENTRY_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
                    "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", ""]
# (image, labels) of the unboxed images of patients 3..22; patient 1 and 2 have boxed images.
NIH_OTHER_LABELS = ["No Finding", "Infiltration", "Emphysema", "Mass|Emphysema", "No Finding", "Nodule",
                    "No Finding", "Pneumothorax", "Hernia", "No Finding"]


def nih_image_name(patient: int, follow_up: int) -> str:
    return f"{patient:08d}_{follow_up:03d}.png"


def make_nih(root: Path) -> dict:
    """Two boxed patients (1: one nodule box; 2: two boxes) and 20 unboxed patients; images in two folders."""
    entries, boxes = [], []

    def entry(patient: int, follow_up: int, labels: str) -> str:
        name = nih_image_name(patient, follow_up)
        entries.append([name, labels, follow_up, patient, 40 + patient, "M" if patient % 2 else "F", "PA",
                        2500, 2048, 0.143, 0.143, ""])
        folder = "images_001/images" if patient % 2 else "images_002/images"
        write_png(root / folder / name, mode="RGBA" if patient == 4 else "L")
        return name

    boxed = entry(1, 0, "Nodule")
    boxes.append([boxed, "Nodule", 10, 4, 8, 6, "", "", ""])
    entry(1, 1, "No Finding")
    entry(1, 2, "Effusion")  # unboxed positive of a boxed patient: excluded from test
    two = entry(2, 0, "Cardiomegaly|Effusion")
    boxes.append([two, "Cardiomegaly", 20.5, 10.25, 20, 12, "", "", ""])
    boxes.append([two, "Effusion", 2, 20, 6, 10, "", "", ""])
    for k in range(20):
        entry(3 + k, 0, NIH_OTHER_LABELS[k % len(NIH_OTHER_LABELS)])
    write_csv(root / "Data_Entry_2017.csv", NIH_ENTRY_HEADER, entries)
    write_csv(root / "BBox_List_2017.csv", NIH_BBOX_HEADER, boxes)
    return {"boxed": boxed, "two_boxes": two, "boxed_patients": {"1", "2"}}


# --------------------------------------------------------------------------------------------------------------
# RSNA Pneumonia

RSNA_HEADER = ["patientId", "x", "y", "width", "height", "Target"]


def make_rsna(root: Path, n_negative: int = 6) -> dict:
    """pos-a (one box, MONOCHROME1), pos-b (two boxes), and ``n_negative`` negatives."""
    rows = [["pos-a", 10, 4, 8, 6, 1], ["pos-b", 10, 4, 8, 6, 1], ["pos-b", 30, 12, 10, 10, 1]]
    chest_dicom(root / "stage_2_train_images" / "pos-a.dcm", photometric="MONOCHROME1")
    chest_dicom(root / "stage_2_train_images" / "pos-b.dcm")
    for k in range(n_negative):
        rows.append([f"neg-{k}", "", "", "", "", 0])
        chest_dicom(root / "stage_2_train_images" / f"neg-{k}.dcm")
    write_csv(root / "stage_2_train_labels.csv", RSNA_HEADER, rows)
    write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"],
              [[r[0], "Lung Opacity" if r[5] else "Normal"] for r in rows])
    return {"positives": ["pos-a", "pos-b"]}


# --------------------------------------------------------------------------------------------------------------
# VinDr-CXR

VINDR_HEADER = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]


def vindr_rows() -> list[list]:
    """agree: two readers' overlapping nodules + one 'No finding'; single: one reader's box; normal: none;
    apart: two readers' masses that do not overlap."""
    nf = ["No finding", 14]
    return [
        ["agree", "Nodule/Mass", 8, "R1", 10, 4, 18, 10],
        ["agree", "Nodule/Mass", 8, "R2", 11, 5, 19, 11],
        ["agree", *nf, "R3", "", "", "", ""],
        ["single", "Aortic enlargement", 0, "R1", 20, 8, 30, 20],
        ["single", *nf, "R2", "", "", "", ""],
        ["single", *nf, "R3", "", "", "", ""],
        ["normal", *nf, "R1", "", "", "", ""],
        ["normal", *nf, "R2", "", "", "", ""],
        ["normal", *nf, "R3", "", "", "", ""],
        ["apart", "Pleural effusion", 10, "R1", 2, 2, 8, 8],
        ["apart", "Pleural effusion", 10, "R2", 30, 20, 40, 30],
        ["apart", *nf, "R3", "", "", "", ""],
    ]


def make_vindr(root: Path) -> dict:
    rows = vindr_rows()
    for image_id in dict.fromkeys(r[0] for r in rows):
        chest_dicom(root / "train" / f"{image_id}.dicom")
    write_csv(root / "annotations_train.csv", VINDR_HEADER, rows)
    return {"images": ["agree", "single", "normal", "apart"]}


# --------------------------------------------------------------------------------------------------------------
# DDR (Pascal VOC)


def voc_xml(filename: str, objects: list[tuple], size=(H, W), depth: int = 3) -> str:
    """A VOC annotation; ``objects`` are (name, xmin, ymin, xmax, ymax) with 1-based inclusive indices."""
    parts = [f"<annotation><folder>x</folder><filename>{filename}</filename>",
             f"<size><width>{size[1]}</width><height>{size[0]}</height><depth>{depth}</depth></size>"]
    for name, *box in objects:
        coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))
        parts.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox>{coords}</bndbox></object>")
    return "".join(parts) + "</annotation>"


def make_ddr(root: Path) -> dict:
    """lesion_detection/{train,valid,test}: XMLs next to JPEGs, except two JPEGs kept in a sibling images/ folder."""
    base = root / "lesion_detection"
    items = {
        "train/007-0001-000": [("ma", 11, 5, 18, 10)],  # VOC 1-based -> half-open KNOWN_BOX
        "train/007-0002-000": [("he", 1, 1, 48, 32), ("ex", 20, 20, 20, 20)],  # full image; a one-pixel exudate
        "train/007-0003-000": [],
        "valid/007-0004-000": [("se", 5, 5, 12, 12)],
        "valid/007-0005-000": [],
        "test/007-0006-000": [("ma", 30, 10, 33, 13)],
        "test/007-0007-000": [],
        "test/007-0008-000": [],
    }
    for rel, objects in items.items():
        split, stem = rel.split("/")
        (base / split).mkdir(parents=True, exist_ok=True)
        (base / split / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", objects))
        image_folder = base / split / "images" if stem.endswith(("3-000", "7-000")) else base / split
        write_colour(image_folder / f"{stem}.jpg")
    return {"base": base, "items": items}


# --------------------------------------------------------------------------------------------------------------
# COCO


def make_coco(root: Path, *, colour: bool = False) -> dict:
    """Images 1..8 (1: one nodule at KNOWN_BOX; 2: nodule + mass; 3: a 'device' only; the rest negatives)."""
    images, annotations = [], []
    for image_id in range(1, 9):
        name = f"img_{image_id:02d}.png"
        images.append({"id": image_id, "file_name": name, "width": W, "height": H})
        if colour:
            write_colour(root / "images" / name)
        else:
            write_png(root / "images" / name)
    annotations.append({"id": 10, "image_id": 1, "category_id": 1, "bbox": [10.0, 4.0, 8.0, 6.0], "iscrowd": 0})
    annotations.append({"id": 11, "image_id": 2, "category_id": 1, "bbox": [1.5, 2.5, 5.0, 5.0], "iscrowd": 0})
    annotations.append({"id": 12, "image_id": 2, "category_id": 2, "bbox": [20, 10, 20, 15], "iscrowd": 0})
    annotations.append({"id": 13, "image_id": 3, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 0})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "nodule"}, {"id": 2, "name": "mass"}, {"id": 3, "name": "device"}]}
    path = root / "annotations" / "instances.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return {"json": path, "data": data}


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def edit_csv(path: Path, edit) -> None:
    """Apply ``edit(header, rows)`` (in place) to a CSV file."""
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    edit(header, rows)
    write_csv(path, header, rows)
