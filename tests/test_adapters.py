"""The real-data adapters on tiny data sets written here in each official format (see tests/adapter_fixtures.py).

Known answers: every fixture image is 32 x 48 (rows x columns), so at ``image_size=24`` the letterbox pads 8 native
rows above and below and halves everything: the native half-open box (10, 4, 18, 10) becomes (5, 6, 9, 9).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medlit.data import dicom
from medlit.data.adapters import (ADAPTERS, AdapterError, common, fingerprint, parse_data_option, parse_data_options,
                                   register_real_dataset)
from medlit.data.adapters.common import Record, SkipReport, build_real_data, hash_split, letterbox
from medlit.data.adapters.vindr import cluster_boxes, iou, merge_boxes
from tests import adapter_fixtures as fx

SIZE = 24
QUIET = {"progress": False}
NATIVE = {"nih-cxr14": {"native_size": None}, "rsna-pneumonia": {"native_size": None}}
MAKERS = {"nih-cxr14": fx.make_nih, "rsna-pneumonia": fx.make_rsna, "vindr-cxr": fx.make_vindr,
          "ddr-lesions": fx.make_ddr, "coco": fx.make_coco}


def load(name: str, root: Path, **kwargs):
    options = {**NATIVE.get(name, {}), **QUIET, **kwargs}
    return ADAPTERS[name].loader(root, image_size=SIZE, **options)


def find(data, sample_id: str):
    """(split, index) of ``sample_id`` in a RealData."""
    for split, samples in data.splits.items():
        ids = list(samples.meta["sample_id"])
        if sample_id in ids:
            return split, ids.index(sample_id)
    raise KeyError(sample_id)


def all_ids(data) -> set:
    return {str(i) for s in data.splits.values() for i in s.meta["sample_id"]}


def real_boxes(samples, i: int) -> np.ndarray:
    boxes = samples.boxes[i].numpy()
    return boxes[~np.isnan(boxes).any(axis=1)]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Each data set written once, read-only for the tests that share it."""
    roots = {}
    for name, make in MAKERS.items():
        roots[name] = tmp_path_factory.mktemp(name)
        make(roots[name])
    return roots


@pytest.fixture(scope="module")
def loaded(built) -> dict:
    return {name: load(name, root) for name, root in built.items()}


# --------------------------------------------------------------------------------------------------------------
# The contract every adapter fulfils


@pytest.mark.parametrize("name", list(MAKERS))
def test_sample_sets_follow_the_contract(loaded, name):
    data = loaded[name]
    assert set(data.splits) == {"train", "val", "test"}
    channels = 3 if name == "ddr-lesions" else 1
    for split, s in data.splits.items():
        n = len(s)
        assert s.name == name and s.split == split
        assert s.images.shape == (n, channels, SIZE, SIZE) and s.images.dtype == torch.float32
        assert s.labels.dtype == torch.int64 and s.boxes.dtype == torch.float32
        assert bool(((s.images >= 0) & (s.images <= 1)).all())
        assert torch.equal(s.finding_masks, s.box_masks()) and bool(s.anatomy_masks.all())
        for key in ("sample_id", "finding", "patient_id", "source_file", "n_boxes", "original_height",
                    "original_width", "letterbox_scale", "letterbox_pad_x", "letterbox_pad_y"):
            assert len(s.meta[key]) == n, key
        for key in ("original_size", "class_names", "adapter", "root", "label_mapping", "box_semantics", "skips",
                    "anatomy_mask"):
            assert key in s.attrs, key
        assert s.attrs["class_names"] == ["no finding", "finding"]
        assert s.attrs["anatomy_mask"] == "unknown (all pixels)"
        if n:
            n_boxes = (~torch.isnan(s.boxes[..., 0])).sum(1).numpy()
            assert np.array_equal(n_boxes, s.meta["n_boxes"])
            none = s.meta["finding"] == "none"
            assert np.array_equal(none, s.labels.numpy() == 0)
            assert set(s.meta["original_height"]) == {fx.H} and set(s.meta["original_width"]) == {fx.W}
    assert data.report.counts == {split: len(s) for split, s in data.splits.items()}


@pytest.mark.parametrize("name", list(MAKERS))
def test_splits_are_disjoint_by_patient_and_deterministic(built, loaded, name):
    data = loaded[name]
    patients = {split: set(s.meta["patient_id"]) for split, s in data.splits.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    again = load(name, built[name])
    for split in data.splits:
        a, b = data.splits[split], again.splits[split]
        assert list(a.meta["sample_id"]) == list(b.meta["sample_id"])
        assert torch.equal(a.images, b.images) and torch.equal(a.boxes.nan_to_num(-1), b.boxes.nan_to_num(-1))


def test_hash_split_is_stable_sha256():
    # Known answers: these values must never change, or every user's real splits would reshuffle.
    assert [hash_split(str(p)) for p in (1, 2, 7, 15)] == ["val", "train", "test", "val"]
    shares = np.array([hash_split(f"patient-{i}") for i in range(4000)])
    assert abs((shares == "train").mean() - 0.7) < 0.03 and abs((shares == "test").mean() - 0.2) < 0.03


# --------------------------------------------------------------------------------------------------------------
# Letterbox and the known box


def test_letterbox_moves_image_and_boxes_together():
    image = np.zeros((1, fx.H, fx.W), dtype=np.float32)
    image[0, 4:10, 10:18] = 1.0  # exactly the known box
    out, boxes, lb = letterbox(image, np.array([fx.KNOWN_BOX]), SIZE)
    assert (lb.scale, lb.pad_x, lb.pad_y) == (0.5, 0, 8)
    assert boxes.tolist() == [list(fx.KNOWN_BOX_24)]
    x0, y0, x1, y1 = (int(v) for v in fx.KNOWN_BOX_24)
    assert torch.all(out[0, y0:y1, x0:x1] == 1) and float(out.sum()) == (x1 - x0) * (y1 - y0)
    up, up_boxes, up_lb = letterbox(image, np.array([fx.KNOWN_BOX]), 96)  # enlarging: bilinear, same transform
    assert up_lb.scale == 2.0 and up_boxes.tolist() == [[20.0, 24.0, 36.0, 36.0]]
    assert float(up[0, 30, 28]) == 1.0 and float(up[0, 10, 10]) == 0.0


def test_nih_known_boxes_image_and_labels(loaded):
    data = loaded["nih-cxr14"]
    split, i = find(data, fx.nih_image_name(1, 0))
    s = data.splits[split]
    assert split == "test" and int(s.labels[i]) == 1 and s.meta["finding"][i] == "nodule"
    assert real_boxes(s, i).tolist() == [list(fx.KNOWN_BOX_24)]
    image = s.images[i, 0]
    assert torch.all(image[:4] == 0) and torch.all(image[20:] == 0)  # the letterbox padding
    assert torch.allclose(image[4:20], torch.tensor(fx.GREY / 255.0))
    split, i = find(data, fx.nih_image_name(2, 0))
    s = data.splits[split]
    assert s.meta["finding"][i] == "cardiomegaly+effusion" and s.meta["n_boxes"][i] == 2
    expected = [[10.25, 9.125, 20.25, 15.125], [1.0, 14.0, 4.0, 19.0]]  # (x+pad)*0.5 with pad_y 8
    assert real_boxes(s, i).tolist() == expected
    assert s.attrs["original_size"] == 1024


def test_nih_labels_splits_and_exclusions(loaded):
    data = loaded["nih-cxr14"]
    test = data.splits["test"]
    assert {"1", "2"} <= set(test.meta["patient_id"])
    for split in ("train", "val"):
        assert not {"1", "2"} & set(data.splits[split].meta["patient_id"])
    positives = test.labels == 1
    assert bool((test.meta["n_boxes"][positives.numpy()] > 0).all())  # every test positive has a box
    assert fx.nih_image_name(1, 2) not in all_ids(data)  # unboxed positive of a boxed patient
    train = data.splits["train"]
    findings = dict(zip(train.meta["sample_id"], train.meta["finding"], strict=True))
    assert findings[fx.nih_image_name(4, 0)] == "infiltrate"  # Data_Entry's "Infiltration", an RGBA PNG
    assert findings[fx.nih_image_name(6, 0)] == "mass"  # "Mass|Emphysema": positive
    assert fx.nih_image_name(5, 0) not in all_ids(data)  # "Emphysema" only: excluded
    assert data.report.excluded["findings outside the eight box classes only"] == 4
    assert data.report.excluded["positive without a box in the test split"] == 4
    i = list(train.meta["sample_id"]).index(fx.nih_image_name(4, 0))
    assert train.meta["image_mode"][i] == "RGBA" and torch.allclose(train.images[i, 0, 12], torch.tensor(200 / 255))
    assert int((train.labels == 1).sum()) and not bool(torch.isnan(train.boxes).logical_not().any())


def test_nih_native_size_is_checked(built):
    with pytest.raises(AdapterError, match=r"BBox_List_2017\.csv:\d.*1024x1024.*48x32"):
        load("nih-cxr14", built["nih-cxr14"], native_size=1024)


def test_capped_subsets_are_class_balanced(built, loaded):
    full = loaded["nih-cxr14"].splits["train"]
    assert int(full.labels.sum()) >= 2 and int((full.labels == 0).sum()) >= 2
    capped = load("nih-cxr14", built["nih-cxr14"], max_per_split={"train": 4, "val": 1, "test": 0})
    train = capped.splits["train"]
    assert len(train) == 4 and int(train.labels.sum()) == 2
    assert set(train.meta["sample_id"]) <= set(full.meta["sample_id"])
    assert len(capped.splits["val"]) == 1 and len(capped.splits["test"]) == 0
    assert capped.splits["test"].images.shape == (0, 1, SIZE, SIZE)


def fake_records(tmp_path: Path, n: int, n_pos: int) -> list[Record]:
    records = []
    for k in range(n):
        path = tmp_path / f"s{k}.png"
        path.touch()
        records.append(Record(f"s{k}", f"p{k}", int(k < n_pos), np.zeros((0, 4)), "x" if k < n_pos else "none",
                              f"t:{k}", path, split="train"))
    return records


def test_subset_fills_from_the_other_class_and_replaces_bad_images(tmp_path):
    records = fake_records(tmp_path, 30, 5)
    bad = {"s0", "s1"}  # two positives that cannot be read

    def reader(path):
        if path.stem in bad:
            raise AdapterError(f"{path}: broken", common.UNREADABLE_IMAGE)
        return np.full((1, 8, 8), 0.5, dtype=np.float32), {}

    data = build_real_data("fake", records[2:], SkipReport("fake"), root=tmp_path, image_size=8,
                           max_per_split={"train": 12}, reader=reader, channels=1, progress=False, attrs={})
    assert len(data.splits["train"]) == 12 and int(data.splits["train"].labels.sum()) == 3  # positives ran out
    report = SkipReport("fake", errors="skip")
    data = build_real_data("fake", records, report, root=tmp_path, image_size=8, max_per_split={"train": 6},
                           reader=reader, channels=1, progress=False, attrs={})
    train = data.splits["train"]
    assert len(train) == 6 and int(train.labels.sum()) == 3 and report.skipped == {common.UNREADABLE_IMAGE: 2}
    assert not bad & set(train.meta["sample_id"])
    order = [common.hash_order(i) for i in train.meta["sample_id"]]
    assert order == sorted(order)
    with pytest.raises(AdapterError, match="broken"):
        build_real_data("fake", records, SkipReport("fake"), root=tmp_path, image_size=8,
                        max_per_split={"train": 6}, reader=reader, channels=1, progress=False, attrs={})


# --------------------------------------------------------------------------------------------------------------
# DICOM: RSNA and the reader itself


def test_rsna_monochrome1_is_inverted_and_rescale_applied(loaded):
    data = loaded["rsna-pneumonia"]
    for sample_id, photometric in (("pos-a", "MONOCHROME1"), ("pos-b", "MONOCHROME2")):
        split, i = find(data, sample_id)
        s = data.splits[split]
        assert s.meta["photometric"][i] == photometric and s.meta["finding"][i] == "lung opacity"
        image = s.images[i, 0]
        x0, y0, x1, y1 = (int(v) for v in fx.KNOWN_BOX_24)
        assert torch.allclose(image[y0:y1, x0:x1], torch.tensor(1.0))  # dense = bright in both
        assert real_boxes(s, i)[0].tolist() == list(fx.KNOWN_BOX_24)
    split, i = find(data, "pos-b")
    background = float(data.splits[split].images[i, 0, 18, 20])  # native rows 28-29, columns 40-41
    assert background == pytest.approx(100.5 / 1800, abs=1e-6)  # stored 100 -> modality 100 -> window
    assert data.splits[split].meta["detailed_class"][i] == "Lung Opacity"


def test_dicom_window_formula_known_answer():
    values = np.array([-160.0, -159.5, 39.5, 239.0, 300.0])
    out = dicom.window(values, center=40.0, width=400.0)
    # PS3.3 C.11.2.1.2: low edge c - 0.5 - (w - 1) / 2 = -160, high edge -160 + 399 = 239
    assert out.tolist() == pytest.approx([0.0, 0.5 / 399, 199.5 / 399, 1.0, 1.0])
    with pytest.raises(ValueError):
        dicom.window(values, center=0.0, width=0.5)


def test_dicom_reader_modality_and_photometric(tmp_path):
    path = fx.chest_dicom(tmp_path / "m1.dcm", photometric="MONOCHROME1")
    image = dicom.read_dicom(path)
    assert image.photometric == "MONOCHROME1" and image.meta["view_position"] == "PA"
    assert float(image.modality_values[0, 0]) == 2 * 1000 - 100 and float(image.modality_values[5, 12]) == -100
    unit = dicom.read_dicom_unit(path)
    assert unit[5, 12] > 0.99 and unit[0, 0] < 0.01  # the low-stored block is the bright one
    stretched = dicom.to_unit_range(image, voi="minmax")
    assert stretched[5, 12] == 1.0 and stretched[0, 0] == 0.0


def test_dicom_full_bit_range_fallback(tmp_path):
    stored = np.zeros((2, 3), dtype=np.uint16)
    stored[0] = [0, 4095, 1000]
    path = fx.write_dicom(tmp_path / "plain.dcm", stored, slope=2.0, intercept=-10.0)  # 12 bits, no window
    image = dicom.read_dicom(path)
    assert dicom.to_unit_range(image, voi="file", fallback="bits")[0].tolist() == pytest.approx([0, 1, 1000 / 4095])
    assert dicom.to_unit_range(image, voi="bits").tolist() == dicom.to_unit_range(image, fallback="bits").tolist()
    assert dicom.to_unit_range(image)[0, 1] == 1.0  # the default fallback stretches percentiles
    with pytest.raises(ValueError, match="fallback"):
        dicom.to_unit_range(image, fallback="nope")


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    array = np.array([[0, 1000, 65535]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "deep.png")
    image, info = common.read_pil_image(tmp_path / "deep.png", 1)
    assert info["image_mode"].startswith("I") and image[0, 0].tolist() == pytest.approx([0, 1000 / 65535, 1])


def test_dicom_reader_rejects_non_dicom(tmp_path):
    bad = fx.garbage(tmp_path / "bad.dcm")
    with pytest.raises(dicom.DicomError, match=r"bad\.dcm"):
        dicom.read_dicom(bad)
    with pytest.raises(dicom.DicomError, match="not found"):
        dicom.read_dicom(tmp_path / "absent.dcm")


# --------------------------------------------------------------------------------------------------------------
# VinDr merge rules


def test_iou_and_greedy_clustering():
    a, b = np.array([10, 10, 20, 20.0]), np.array([11, 11, 21, 21.0])
    assert iou(a, b) == pytest.approx(81 / 119)
    boxes = [("R1", "nodule", a), ("R2", "nodule", b), ("R3", "nodule", np.array([12, 12, 22, 22.0])),
             ("R1", "nodule", np.array([30, 30, 40, 40.0])), ("R2", "mass", a.copy())]
    clusters = cluster_boxes(boxes, 0.5)
    sizes = sorted((c.finding, len(c.readers)) for c in clusters)
    assert sizes == [("mass", 1), ("nodule", 1), ("nodule", 3)]
    fused = next(c for c in clusters if len(c.readers) == 3)
    assert fused.box.tolist() == [11.0, 11.0, 21.0, 21.0]
    same_reader = [("R1", "nodule", a), ("R1", "nodule", b)]  # one reader's two boxes stay two findings
    assert len(merge_boxes(same_reader, "fuse")) == 2
    assert len(merge_boxes(boxes, "union")) == 5
    assert [(f, n) for f, _, n in merge_boxes(boxes, "majority")] == [("nodule", 3)]


@pytest.mark.parametrize("merge, expected", [
    ("fuse", {"agree": [[10.5, 4.5, 18.5, 10.5]], "single": [[20, 8, 30, 20]], "normal": [],
              "apart": [[2, 2, 8, 8], [30, 20, 40, 30]]}),
    ("union", {"agree": [[10, 4, 18, 10], [11, 5, 19, 11]], "single": [[20, 8, 30, 20]], "normal": [],
               "apart": [[2, 2, 8, 8], [30, 20, 40, 30]]}),
    ("majority", {"agree": [[10.5, 4.5, 18.5, 10.5]], "normal": []}),  # single and apart are excluded
])
def test_vindr_merge_rules(built, merge, expected):
    data = load("vindr-cxr", built["vindr-cxr"], merge=merge)
    assert all_ids(data) == set(expected)
    for image_id, native in expected.items():
        split, i = find(data, image_id)
        s = data.splits[split]
        assert int(s.labels[i]) == int(bool(native)) and s.meta["n_readers"][i] == 3
        want = [[(x0) * 0.5, (y0 + 8) * 0.5, x1 * 0.5, (y1 + 8) * 0.5] for x0, y0, x1, y1 in native]
        assert sorted(real_boxes(s, i).tolist()) == sorted(want)
    if merge == "majority":
        assert data.report.excluded["findings without reader agreement (merge='majority')"] == 2
        split, i = find(data, "agree")
        assert data.splits[split].meta["box_readers"][i] == "2"


def test_vindr_without_class_id_column(tmp_path):
    root = tmp_path / "vindr"
    fx.make_vindr(root)
    fx.edit_csv(root / "annotations_train.csv", lambda h, rows: [r.pop(2) for r in [h, *rows]])
    assert all_ids(load("vindr-cxr", root)) == {"agree", "single", "normal", "apart"}


def test_vindr_classes_option(built):
    data = load("vindr-cxr", built["vindr-cxr"], classes=["Nodule/Mass"])
    assert all_ids(data) == {"agree", "normal"}
    assert data.report.excluded["findings outside the chosen classes only"] == 2


# --------------------------------------------------------------------------------------------------------------
# DDR (VOC) and COCO


def test_ddr_voc_one_based_boxes_and_colour(loaded):
    data = loaded["ddr-lesions"]
    split, i = find(data, "007-0001-000")
    s = data.splits[split]
    assert real_boxes(s, i).tolist() == [list(fx.KNOWN_BOX_24)] and s.meta["finding"][i] == "microaneurysm"
    colour = s.images[i, :, 12, 12] * 255
    assert torch.allclose(colour, torch.tensor([180.0, 60.0, 20.0]), atol=4)  # RGB kept (JPEG, so approximate)
    split, i = find(data, "007-0002-000")
    boxes = sorted(real_boxes(data.splits[split], i).tolist())
    assert boxes == [[0.0, 4.0, 24.0, 20.0], [9.5, 13.5, 10.0, 14.0]]  # full image; the one-pixel exudate
    assert data.splits[split].meta["finding"][i] == "haemorrhage+hard exudate"
    split, i = find(data, "007-0003-000")  # image in a sibling folder, no objects: negative
    assert int(data.splits[split].labels[i]) == 0 and "images" in data.splits[split].meta["image_file"][i]


def test_ddr_official_split_and_grading_negatives(built, tmp_path):
    data = load("ddr-lesions", built["ddr-lesions"], split="official")
    assert set(data.splits["val"].meta["sample_id"]) == {"007-0004-000", "007-0005-000"}
    root = tmp_path / "ddr"
    fx.make_ddr(root)
    fx.write_colour(root / "DR_grading" / "train" / "20170001.jpg")
    fx.write_colour(root / "DR_grading" / "train" / "20170002.jpg")
    (root / "DR_grading" / "train.txt").write_text("20170001.jpg 0\n20170002.jpg 3\n007-0001-000.jpg 0\n")
    data = load("ddr-lesions", root, grading_files=["DR_grading/train.txt"], split="official")
    split, i = find(data, "20170001")
    assert split == "train" and int(data.splits[split].labels[i]) == 0
    assert data.report.excluded == {"grading-list image with grade > 0 (no boxes)": 1,
                                    "grading-list image that has an XML": 1}


def test_ddr_classes_and_zero_based_clip(tmp_path):
    root = tmp_path / "ddr"
    root.mkdir()
    (root / "a.xml").write_text(fx.voc_xml("a.jpg", [("ma", 0, 0, 5, 5)]))  # written 0-based: clipped by 1 px
    (root / "b.xml").write_text(fx.voc_xml("b.jpg", [("ex", 3, 3, 6, 6)]))
    (root / "c.xml").write_text(fx.voc_xml("c.jpg", []))  # a negative: a set of one class only is an error
    for stem in "abc":
        fx.write_colour(root / f"{stem}.jpg")
    data = load("ddr-lesions", root, classes=["microaneurysm"])
    assert all_ids(data) == {"a", "c"} and data.report.clipped == 1
    split, i = find(data, "a")
    assert real_boxes(data.splits[split], i).tolist() == [[0.0, 4.0, 2.5, 6.5]]


def test_coco_boxes_labels_and_channels(built, loaded, tmp_path):
    data = loaded["coco"]
    split, i = find(data, "1")
    s = data.splits[split]
    assert real_boxes(s, i).tolist() == [list(fx.KNOWN_BOX_24)] and s.meta["finding"][i] == "nodule"
    split, i = find(data, "2")
    assert data.splits[split].meta["finding"][i] == "mass+nodule"
    assert sorted(real_boxes(data.splits[split], i).tolist()) == [[0.75, 5.25, 3.25, 7.75], [10, 9, 20, 16.5]]
    restricted = load("coco", built["coco"], categories=["nodule", "mass"])
    assert "3" not in all_ids(restricted) and restricted.report.excluded["annotations of other categories only"] == 1
    as_negative = load("coco", built["coco"], categories=["nodule"], other_categories="negative")
    split, i = find(as_negative, "3")
    assert int(as_negative.splits[split].labels[i]) == 0
    root = tmp_path / "rgb"
    fx.make_coco(root, colour=True)
    rgb = load("coco", root, channels=3)
    assert rgb.splits["train"].images.shape[1] == 3


# --------------------------------------------------------------------------------------------------------------
# Malformed input: each case raises naming the file and row/id, or is skipped and counted


def _set_cell(path: Path, row: int, column: str, value) -> None:
    def edit(header, rows):
        rows[row][header.index(column)] = value

    fx.edit_csv(path, edit)


def nih_non_numeric(root):
    _set_cell(root / "BBox_List_2017.csv", 0, "y", "abc")
    return fx.nih_image_name(1, 0), "BBox_List_2017.csv:2"


def nih_zero_area(root):
    _set_cell(root / "BBox_List_2017.csv", 0, "w", "0")
    return fx.nih_image_name(1, 0), "BBox_List_2017.csv:2"


def nih_off_image(root):
    _set_cell(root / "BBox_List_2017.csv", 0, "Bbox [x", "45")  # x1 = 53 on a 48-wide image
    return fx.nih_image_name(1, 0), "BBox_List_2017.csv:2"


def nih_missing_image(root):
    (root / "images_001" / "images" / fx.nih_image_name(1, 0)).unlink()
    return fx.nih_image_name(1, 0), fx.nih_image_name(1, 0)


def nih_corrupt_png(root):
    path = root / "images_001" / "images" / fx.nih_image_name(1, 0)
    path.write_bytes(path.read_bytes()[:40])  # a truncated PNG
    return fx.nih_image_name(1, 0), fx.nih_image_name(1, 0)


def nih_patient_missing(root):
    _set_cell(root / "Data_Entry_2017.csv", 3, "Patient ID", "")
    return fx.nih_image_name(2, 0), "Data_Entry_2017.csv:5"


def rsna_nan_box(root):
    _set_cell(root / "stage_2_train_labels.csv", 0, "width", "nan")
    return "pos-a", "stage_2_train_labels.csv:2"


def rsna_corrupt_dicom(root):
    fx.garbage(root / "stage_2_train_images" / "pos-b.dcm")
    return "pos-b", "pos-b.dcm"


def rsna_missing_dicom(root):
    (root / "stage_2_train_images" / "neg-0.dcm").unlink()
    return "neg-0", "neg-0.dcm"


def vindr_non_numeric(root):
    _set_cell(root / "annotations_train.csv", 3, "x_min", "twenty")
    return "single", "annotations_train.csv:5"


def vindr_negative_area(root):
    _set_cell(root / "annotations_train.csv", 0, "x_max", "5")
    return "agree", "annotations_train.csv:2"


def ddr_missing_bndbox(root):
    xml = root / "lesion_detection" / "train" / "007-0001-000.xml"
    xml.write_text(xml.read_text().replace("<bndbox>", "<box>").replace("</bndbox>", "</box>"))
    return "007-0001-000", "007-0001-000.xml: object 1"


def ddr_broken_xml(root):
    xml = root / "lesion_detection" / "test" / "007-0006-000.xml"
    xml.write_text(xml.read_text()[:60])
    return "007-0006-000", "007-0006-000.xml"


def ddr_unknown_lesion(root):
    xml = root / "lesion_detection" / "valid" / "007-0004-000.xml"
    xml.write_text(xml.read_text().replace("<name>se</name>", "<name>drusen</name>"))
    return "007-0004-000", "007-0004-000.xml: object 1"


def ddr_missing_image(root):
    (root / "lesion_detection" / "test" / "007-0006-000.jpg").unlink()
    return "007-0006-000", "007-0006-000.jpg"


def coco_bad_image_id(root):
    fx.edit_json(root / "annotations" / "instances.json",
                 lambda d: d["annotations"].append({"id": 99, "image_id": 42, "category_id": 1, "bbox": [1, 1, 2, 2]}))
    return "annotation 99", "annotation id 99"


def coco_short_bbox(root):
    fx.edit_json(root / "annotations" / "instances.json",
                 lambda d: d["annotations"][0].update(bbox=[10, 4, 8]))
    return "1", "annotation id 10"


def coco_size_mismatch(root):
    fx.edit_json(root / "annotations" / "instances.json", lambda d: d["images"][4].update(width=64))
    return "5", "image id 5"


MALFORMED = [
    ("nih-cxr14", nih_non_numeric, common.NON_NUMERIC),
    ("nih-cxr14", nih_zero_area, common.EMPTY_BOX),
    ("nih-cxr14", nih_off_image, common.BOX_OFF_IMAGE),
    ("nih-cxr14", nih_missing_image, common.MISSING_IMAGE),
    ("nih-cxr14", nih_corrupt_png, common.UNREADABLE_IMAGE),
    ("nih-cxr14", nih_patient_missing, common.MISSING_VALUE),
    ("rsna-pneumonia", rsna_nan_box, common.MISSING_VALUE),
    ("rsna-pneumonia", rsna_corrupt_dicom, common.UNREADABLE_IMAGE),
    ("rsna-pneumonia", rsna_missing_dicom, common.MISSING_IMAGE),
    ("vindr-cxr", vindr_non_numeric, common.NON_NUMERIC),
    ("vindr-cxr", vindr_negative_area, common.EMPTY_BOX),
    ("ddr-lesions", ddr_missing_bndbox, common.BAD_XML),
    ("ddr-lesions", ddr_broken_xml, common.BAD_XML),
    ("ddr-lesions", ddr_unknown_lesion, common.UNKNOWN_CLASS),
    ("ddr-lesions", ddr_missing_image, common.MISSING_IMAGE),
    ("coco", coco_bad_image_id, common.UNKNOWN_IMAGE),
    ("coco", coco_short_bbox, common.NON_NUMERIC),
    ("coco", coco_size_mismatch, common.SIZE_MISMATCH),
]


@pytest.mark.parametrize("name, mutate, reason", MALFORMED, ids=[m.__name__ for _, m, _ in MALFORMED])
def test_malformed_input_raises_or_is_skipped(tmp_path, capsys, name, mutate, reason):
    root = tmp_path / name
    MAKERS[name](root)
    sample_id, where = mutate(root)
    with pytest.raises(AdapterError) as info:
        load(name, root)
    assert where in str(info.value) and info.value.reason == reason
    data = load(name, root, errors="skip")
    assert dict(data.report.skipped) == {reason: 1}
    assert data.report.examples[reason] == [str(info.value)]
    assert sample_id not in all_ids(data)
    assert all(s.attrs["skips"] == {reason: 1} for s in data.splits.values())
    assert f"skipped 1 ({reason} 1)" in capsys.readouterr().out


def test_box_off_by_at_most_one_pixel_is_clipped_and_counted(tmp_path):
    root = tmp_path / "nih"
    fx.make_nih(root)
    _set_cell(root / "BBox_List_2017.csv", 0, "Bbox [x", "-0.5")
    data = load("nih-cxr14", root)
    split, i = find(data, fx.nih_image_name(1, 0))
    assert data.report.clipped == 1 and data.splits[split].attrs["clipped_boxes"] == 1
    assert real_boxes(data.splits[split], i)[0].tolist() == [0.0, 6.0, 3.75, 9.0]  # x0 0, x1 7.5 * 0.5


MISSING = [
    ("nih-cxr14", lambda r: (r / "BBox_List_2017.csv").unlink(), "BBox_List_2017.csv: the NIH box list"),
    ("nih-cxr14", lambda r: fx.edit_csv(r / "Data_Entry_2017.csv", lambda h, rows: h.__setitem__(3, "Patient")),
     "column 'Patient ID' not found"),
    ("nih-cxr14", lambda r: fx.edit_csv(r / "BBox_List_2017.csv", lambda h, rows: h.__setitem__(2, "box")),
     "'Bbox [x'"),
    ("rsna-pneumonia", lambda r: (r / "stage_2_train_labels.csv").unlink(), "stage_2_train_labels.csv"),
    ("rsna-pneumonia", lambda r: fx.edit_csv(r / "stage_2_train_labels.csv", lambda h, rows: h.__setitem__(5, "T")),
     "column 'Target' not found"),
    ("vindr-cxr", lambda r: fx.edit_csv(r / "annotations_train.csv", lambda h, rows: h.__setitem__(3, "reader")),
     "column 'rad_id' not found"),
    ("ddr-lesions", lambda r: [p.unlink() for p in r.rglob("*.xml")], "no Pascal-VOC XML files"),
    ("coco", lambda r: fx.edit_json(r / "annotations" / "instances.json", lambda d: d.pop("annotations")),
     "'annotations' is missing"),
]


@pytest.mark.parametrize("name, mutate, message", MISSING, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(MISSING)])
def test_missing_files_and_columns_always_raise(tmp_path, name, mutate, message):
    root = tmp_path / name
    MAKERS[name](root)
    mutate(root)
    with pytest.raises(AdapterError, match=message.replace("[", r"\[").replace(".", r"\.")) as info:
        load(name, root, errors="skip")
    assert info.value.reason is None


# --------------------------------------------------------------------------------------------------------------
# Registration, fingerprint, command-line option


def test_fingerprint_tracks_annotations_images_and_options(tmp_path):
    root = tmp_path / "coco"
    fx.make_coco(root)
    first = fingerprint("coco", root)
    assert first == fingerprint("coco", root) and len(first) == 16
    assert fingerprint("coco", root, {"categories": ["nodule"]}) != first
    fx.write_png(root / "images" / "extra.png")
    second = fingerprint("coco", root)
    assert second != first
    fx.edit_json(root / "annotations" / "instances.json", lambda d: d["images"].pop())
    assert fingerprint("coco", root) != second


def test_register_real_dataset(tmp_path, monkeypatch):
    from medlit.data import adapters, registry
    from medlit.profiles import PROFILES

    monkeypatch.setattr(registry.DATASETS, "_entries", dict(registry.DATASETS._entries))
    monkeypatch.setattr(adapters, "_REGISTERED", {})
    root = tmp_path / "vindr"
    fx.make_vindr(root)
    name = register_real_dataset("vindr-cxr", root, merge="union")
    assert name == "vindr-cxr" and register_real_dataset("vindr-cxr", root, merge="union") == name
    spec = registry.DATASETS[name]
    assert spec.kind == "real" and spec.data_card == "vindr_cxr.md" and len(spec.fingerprint) == 16
    assert spec.source_modules == ("data/adapters", "data/dicom.py", "data/sample.py")
    with pytest.raises(AdapterError, match="already registered"):
        register_real_dataset("vindr-cxr", tmp_path)
    profile = PROFILES["smoke"]
    splits = registry.load_dataset(name, profile)
    assert splits["train"].image_size == (profile.image_size, profile.image_size)
    assert splits["test"].attrs["options"]["merge"] == "union"
    assert registry.load_dataset(name, profile)["train"] is splits["train"]  # read once per profile


def test_parse_data_option(tmp_path):
    assert parse_data_option(f"nih-cxr14={tmp_path}") == ("nih-cxr14", tmp_path.resolve(), {})
    with pytest.raises(AdapterError, match=r"unknown data set adapter 'chexpert'.*nih-cxr14"):
        parse_data_option(f"chexpert={tmp_path}")
    with pytest.raises(AdapterError, match="does not exist"):
        parse_data_option(f"coco={tmp_path / 'absent'}")
    with pytest.raises(AdapterError, match=r"ADAPTER=FOLDER\[:KEY=VALUE"):
        parse_data_option("nih-cxr14")
    other = tmp_path / "v"
    other.mkdir()
    assert parse_data_options(f"nih-cxr14={tmp_path}, vindr-cxr={other}") == [
        ("nih-cxr14", tmp_path.resolve(), {}), ("vindr-cxr", other.resolve(), {})]
    with pytest.raises(AdapterError, match="more than once"):
        parse_data_options(f"coco={tmp_path},coco={other}")


def test_every_adapter_has_a_data_card():
    from medlit.paths import project_root

    for name in ADAPTERS.names():
        card = project_root() / "data_cards" / ADAPTERS[name].data_card
        assert card.is_file(), card
        text = card.read_text()
        assert text.count("\n# ") + text.startswith("# ") == 1  # one title
        assert f"make book DATA={name}=" in text
