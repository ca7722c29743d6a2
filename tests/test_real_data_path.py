"""The real-data path as a new user meets it: exact masks of fractional boxes, class selections, validation when a
data set is registered (before any training), options on the command line, empty or one-class results,
file names that are not UTF-8, and broken COCO category lists.

The data sets are the tiny official-format sets of tests/adapter_fixtures.py (32 x 48 images; at ``image_size=24``
the letterbox pads 8 native rows above and below and halves every coordinate).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medlit.data.adapters import ADAPTERS, AdapterError, common, fingerprint, parse_data_option, parse_data_options
from medlit.data.adapters.common import hash_split
from medlit.data.sample import boxes_to_mask
from tests import adapter_fixtures as fx
from tests.test_adapters import MAKERS, SIZE, all_ids, find, load  # the format tests' loaders, shared


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the data-set registry, so registrations here do not leak into other tests."""
    from medlit.data import adapters, registry

    monkeypatch.setattr(registry.DATASETS, "_entries", dict(registry.DATASETS._entries))
    monkeypatch.setattr(adapters, "_REGISTERED", {})
    return registry


def edge_rule_mask(boxes: torch.Tensor, size) -> torch.Tensor:
    """The old rule, pixel c inside when x0 <= c < x1 (its left edge): kept here only to compare with."""
    h, w = size
    rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
    x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(4))
    return ((cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)).any(dim=1)


def area_iou(mask: np.ndarray, box) -> float:
    """IoU of a pixel mask (unit squares) with the continuous box, in area."""
    x0, y0, x1, y1 = box
    h, w = mask.shape
    cover_x = np.clip(np.minimum(np.arange(w) + 1, x1) - np.maximum(np.arange(w), x0), 0, 1)
    cover_y = np.clip(np.minimum(np.arange(h) + 1, y1) - np.maximum(np.arange(h), y0), 0, 1)
    inter = float((np.outer(cover_y, cover_x) * mask).sum())
    return inter / ((x1 - x0) * (y1 - y0) + mask.sum() - inter)


# --------------------------------------------------------------------------------------------------------------
# 1. Masks from fractional boxes: a pixel is in a box when its centre is


def test_a_fractional_box_takes_the_pixels_whose_centre_it_covers():
    box = (14.07, 2.3, 19.49, 5.4)  # the example of the issue (x), and rows 2.3 - 5.4
    mask = boxes_to_mask(torch.tensor([[box]]), (8, 24))[0].numpy()
    assert np.flatnonzero(mask.any(axis=0)).tolist() == [14, 15, 16, 17, 18]  # centres 14.5 .. 18.5
    assert np.flatnonzero(mask.any(axis=1)).tolist() == [2, 3, 4]  # centres 2.5, 3.5, 4.5; 5.5 is outside
    old = edge_rule_mask(torch.tensor([[box]]), (8, 24))[0].numpy()
    assert np.flatnonzero(old.any(axis=0)).tolist() == [15, 16, 17, 18, 19]
    assert area_iou(mask, box) > area_iou(old, box)


def test_fractional_masks_follow_the_centre_rule_and_fit_their_boxes_better():
    g = torch.Generator().manual_seed(0)
    n, size = 200, 64
    corner = torch.rand(n, 1, 2, generator=g) * (size - 12)
    extent = 1.0 + torch.rand(n, 1, 2, generator=g) * 10
    boxes = torch.cat([corner, corner + extent], dim=-1)
    masks = boxes_to_mask(boxes, (size, size)).numpy()
    centres = np.arange(size) + 0.5
    ious_new, ious_old = [], []
    old = edge_rule_mask(boxes, (size, size)).numpy()
    for i, (x0, y0, x1, y1) in enumerate(boxes[:, 0].tolist()):
        inside_x = (centres >= x0) & (centres < x1)
        inside_y = (centres >= y0) & (centres < y1)
        assert np.array_equal(masks[i], np.outer(inside_y, inside_x)), i
        ious_new.append(area_iou(masks[i], (x0, y0, x1, y1)))
        ious_old.append(area_iou(old[i], (x0, y0, x1, y1)))
    assert np.mean(ious_new) > np.mean(ious_old) + 0.05 and min(ious_new) > 0.3


def test_integer_boxes_give_the_same_masks_as_before():
    """The embedded sets' tight boxes are integers: for them the centre rule is the edge rule, bit for bit."""
    g = torch.Generator().manual_seed(1)
    corner = torch.randint(0, 50, (64, 3, 2), generator=g).float()
    boxes = torch.cat([corner, corner + torch.randint(1, 14, (64, 3, 2), generator=g).float()], dim=-1)
    boxes[::4, 2] = float("nan")  # missing boxes
    assert torch.equal(boxes_to_mask(boxes, (64, 64)), edge_rule_mask(boxes, (64, 64)))


def test_a_box_thinner_than_a_pixel_keeps_the_pixels_holding_its_centre():
    boxes = torch.tensor([[[9.6, 13.6, 9.9, 13.9]], [[9.5, 13.5, 10.0, 14.0]], [[40.0, 4.0, 41.0, 8.0]],
                          [[3.2, 2.0, 3.4, 7.0]], [[-0.6, 5.2, 0.2, 5.4]]])
    masks = boxes_to_mask(boxes, (24, 24))
    assert [m.nonzero().tolist() for m in masks[:2]] == [[[13, 9]], [[13, 9]]]
    assert not masks[2].any()  # a box off the image stays off it
    assert masks[3].nonzero().tolist() == [[r, 3] for r in range(2, 7)]  # a thin strip: one column, rows 2-6
    assert masks[4].nonzero().tolist() == [[5, 0]]  # its part on the image is [0, 0.2) x [5.2, 5.4)


def test_real_finding_masks_of_fractional_boxes_use_the_centre_rule(tmp_path):
    root = tmp_path / "coco"
    fx.make_coco(root)
    data = load("coco", root)
    split, i = find(data, "2")  # boxes (0.75, 5.25, 3.25, 7.75) and (10, 9, 20, 16.5) at 24 px
    s = data.splits[split]
    expected = np.zeros((SIZE, SIZE), dtype=bool)
    expected[5:8, 1:3] = True  # row centres 5.5, 6.5, 7.5 and column centres 1.5, 2.5 (the old rule: 6-7, 1-3)
    expected[9:16, 10:20] = True  # rows 9.5 .. 15.5 (16.5 is not < 16.5)
    assert np.array_equal(s.finding_masks[i].numpy(), expected)
    assert torch.equal(s.finding_masks, s.box_masks())


# --------------------------------------------------------------------------------------------------------------
# 2. A class name that the data set does not have is an error listing the valid ones


@pytest.mark.parametrize("name, option, wrong, valid", [
    ("vindr-cxr", "classes", ["Nodule"], "Nodule/Mass"),
    ("ddr-lesions", "classes", ["drusen"], "microaneurysm"),
    ("coco", "categories", ["nodules"], "nodule"),
    ("nih-cxr14", "classes", ["Nodules"], "nodule"),
])
def test_an_unknown_class_is_rejected_naming_the_valid_ones(tmp_path, name, option, wrong, valid):
    root = tmp_path / name
    MAKERS[name](root)
    with pytest.raises(AdapterError) as info:
        load(name, root, **{option: wrong})
    message = str(info.value)
    assert repr(wrong[0]) in message and valid in message, message
    assert info.value.reason is None  # not skippable: the selection itself is wrong


def test_class_selections_are_case_insensitive_and_nih_selects_classes(tmp_path):
    root = tmp_path / "vindr"
    fx.make_vindr(root)
    assert all_ids(load("vindr-cxr", root, classes=["nodule/mass"])) == {"agree", "normal"}
    root = tmp_path / "nih"
    fx.make_nih(root)
    data = load("nih-cxr14", root, classes=["Nodule", "Mass"])
    findings = {f for s in data.splits.values() for f in s.meta["finding"]}
    assert findings <= {"nodule", "mass", "none"} and "nodule" in findings and "mass" in findings
    assert fx.nih_image_name(2, 0) not in all_ids(data)  # boxed cardiomegaly+effusion only: excluded
    assert data.report.excluded["findings outside the chosen classes only"] >= 1
    assert data.splits["test"].attrs["options"]["classes"] == ["mass", "nodule"]


# --------------------------------------------------------------------------------------------------------------
# 3. Bad real data is found when the data set is registered, before any model trains


def _nih_without_patient_id(root: Path) -> Path:
    fx.make_nih(root)
    fx.edit_csv(root / "Data_Entry_2017.csv", lambda h, rows: h.__setitem__(3, "Patient"))
    return root


def test_a_missing_column_stops_the_book_before_any_training(tmp_path, registry, monkeypatch):
    from medlit import benchmark, book

    root = _nih_without_patient_id(tmp_path / "nih")
    trained = []

    def no_training(*args, **kwargs):
        trained.append(args)
        raise RuntimeError("a model was prepared before the real data were checked")

    monkeypatch.setattr(benchmark, "prepare", no_training)
    monkeypatch.setattr(book, "execute_chapter", no_training)
    with pytest.raises(AdapterError, match=r"Data_Entry_2017\.csv: column 'Patient ID' not found"):
        book.build_book("smoke", data=f"nih-cxr14={root}", log=lambda *_: None)
    assert trained == []


def test_registration_parses_every_row_and_opens_a_sample_of_images(tmp_path, registry):
    from medlit.data.adapters import register_real_dataset

    root = tmp_path / "nih"
    fx.make_nih(root)
    fx.edit_csv(root / "BBox_List_2017.csv", lambda h, rows: rows[1].__setitem__(4, "wide"))
    with pytest.raises(AdapterError, match=r"BBox_List_2017\.csv:3: box w is not a number"):
        register_real_dataset("nih-cxr14", root, native_size=None)
    assert "nih-cxr14" not in registry.DATASETS
    root = tmp_path / "nih2"
    fx.make_nih(root)
    boxed = root / "images_001" / "images" / fx.nih_image_name(1, 0)
    boxed.write_bytes(boxed.read_bytes()[:40])  # a truncated PNG of a boxed test image
    with pytest.raises(AdapterError, match=f"{boxed.name}: not a readable image"):
        register_real_dataset("nih-cxr14", root, native_size=None)


def test_every_missing_image_is_found_and_counted_when_registering(tmp_path, registry):
    from medlit.data.adapters import register_real_dataset

    root = tmp_path / "nih"
    fx.make_nih(root)
    for patient in (3, 7, 9):  # unboxed "No Finding" images that a capped sample need not open
        (root / "images_001" / "images" / fx.nih_image_name(patient, 0)).unlink()
    with pytest.raises(AdapterError, match=r"not found.*2 further images are missing too.*errors=skip") as info:
        register_real_dataset("nih-cxr14", root, native_size=None)
    assert info.value.reason == common.MISSING_IMAGE
    name = register_real_dataset("nih-cxr14", root, native_size=None, errors="skip")
    from medlit.profiles import PROFILES

    splits = registry.load_dataset(name, PROFILES["smoke"])
    assert splits["train"].attrs["skips"] == {common.MISSING_IMAGE: 3}


# --------------------------------------------------------------------------------------------------------------
# 4. Adapter options on the command line: adapter=folder[:key=value...], lists separated by "|"


def test_data_options_carry_typed_adapter_options(tmp_path):
    item = parse_data_option(f"vindr-cxr={tmp_path}:merge=union:classes=Nodule/Mass|Aortic enlargement"
                             f":min_readers=3:iou_threshold=0.4:errors=skip")
    assert item.name == "vindr-cxr" and item.root == tmp_path.resolve()
    assert item.options == {"merge": "union", "classes": ["Nodule/Mass", "Aortic enlargement"], "min_readers": 3,
                            "iou_threshold": 0.4, "errors": "skip"}
    assert parse_data_option(f"nih-cxr14={tmp_path}:native_size=none").options == {"native_size": None}
    assert parse_data_option(f"rsna-pneumonia={tmp_path}:voi=40|400").options == {"voi": (40.0, 400.0)}
    assert parse_data_option(f"coco={tmp_path}:channels=3:categories=a b|c").options == {
        "channels": 3, "categories": ["a b", "c"]}
    assert parse_data_option(f"ddr-lesions={tmp_path}").options == {}
    other = tmp_path / "v"
    other.mkdir()
    items = parse_data_options(f"nih-cxr14={tmp_path}:errors=skip, vindr-cxr={other}:merge=majority")
    assert [(i.name, i.options) for i in items] == [("nih-cxr14", {"errors": "skip"}),
                                                     ("vindr-cxr", {"merge": "majority"})]


@pytest.mark.parametrize("text, message", [
    ("nih-cxr14={root}:merge=union", r"unknown option 'merge' for nih-cxr14 \(options: classes, errors, native_size\)"),
    ("rsna-pneumonia={root}:classes=x", r"unknown option 'classes' for rsna-pneumonia"),
    ("vindr-cxr={root}:min_readers=two", r"min_readers=two: expected an integer"),
    ("vindr-cxr={root}:merge=fusion", r"merge=fusion: expected one of fuse, union, majority"),
    ("nih-cxr14={root}:errors=ignore", r"errors=ignore: expected one of raise, skip"),
    ("vindr-cxr={root}:merge=union:merge=fuse", r"option 'merge' given twice"),
    ("vindr-cxr={root}:merge", r"options are written :KEY=VALUE"),
    ("coco={root}:classes=", r"unknown option 'classes' for coco \(options: .*categories"),
])
def test_bad_data_options_are_rejected_naming_the_valid_ones(tmp_path, text, message):
    with pytest.raises(AdapterError, match=message):
        parse_data_option(text.format(root=tmp_path))


def test_python_registration_rejects_unknown_options_too(tmp_path, registry):
    from medlit.data.adapters import register_real_dataset

    root = tmp_path / "rsna"
    fx.make_rsna(root)
    with pytest.raises(AdapterError, match=r"unknown option 'classes' for rsna-pneumonia \(options: errors, fallback"):
        register_real_dataset("rsna-pneumonia", root, classes=["x"])


def test_declared_options_are_the_loaders_keywords():
    import inspect

    for spec in ADAPTERS.values():
        keywords = {p.name for p in inspect.signature(spec.loader).parameters.values()
                    if p.kind is p.KEYWORD_ONLY} - {"image_size", "max_per_split", "progress"}
        assert set(spec.options) == keywords, spec.name


def test_every_option_is_documented_in_its_data_card():
    from medlit.paths import project_root

    for spec in ADAPTERS.values():
        card = (project_root() / "data_cards" / spec.data_card).read_text()
        assert "## Options" in card and "pixel-centre rule" in card, spec.data_card
        for option in spec.options:
            assert f"| `{option}` |" in card, (spec.data_card, option)


def test_errors_skip_from_the_command_line_lets_a_partial_download_through(tmp_path, registry):
    from medlit.benchmark import chapter_datasets
    from medlit.profiles import PROFILES

    root = tmp_path / "nih"
    fx.make_nih(root)
    (root / "images_002" / "images" / fx.nih_image_name(4, 0)).unlink()
    with pytest.raises(AdapterError, match=r"00000004_000\.png not found"):
        chapter_datasets(f"nih-cxr14={root}:native_size=none")
    assert chapter_datasets(f"nih-cxr14={root}:native_size=none:errors=skip")[-1] == "nih-cxr14"
    splits = registry.load_dataset("nih-cxr14", PROFILES["smoke"])
    assert splits["train"].attrs["skips"] == {common.MISSING_IMAGE: 1}
    assert fx.nih_image_name(4, 0) not in {i for s in splits.values() for i in s.meta["sample_id"]}


def test_command_line_options_reach_the_adapter(tmp_path, registry):
    from medlit.benchmark import chapter_datasets
    from medlit.profiles import PROFILES

    root = tmp_path / "vindr"
    fx.make_vindr(root)
    chapter_datasets(f"vindr-cxr={root}:merge=union:classes=Nodule/Mass|Aortic enlargement|Pleural effusion")
    splits = registry.load_dataset("vindr-cxr", PROFILES["smoke"])
    assert splits["test"].attrs["options"]["merge"] == "union"
    assert splits["test"].attrs["options"]["classes"] == ["aortic enlargement", "nodule/mass", "pleural effusion"]


def test_the_book_command_documents_the_option_syntax(capsys):
    from medlit.cli import main

    with pytest.raises(SystemExit):
        main(["book", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert ":KEY=VALUE" in out and "errors=skip" in out and "|" in out


# --------------------------------------------------------------------------------------------------------------
# 5. No usable sample, or one class only: said, with the skip counts


def test_everything_skipped_is_an_error_with_the_skip_counts(tmp_path):
    root = tmp_path / "nih"
    fx.make_nih(root)
    for path in root.rglob("*.png"):
        path.unlink()
    with pytest.raises(AdapterError, match=r"no usable sample.*skipped (\d+) \(missing image \1\)") as info:
        load("nih-cxr14", root, errors="skip")
    assert info.value.reason is None


def test_one_class_only_is_an_error_with_the_skip_counts(tmp_path):
    root = tmp_path / "coco"
    fx.make_coco(root)
    for k in range(4, 9):  # every negative image is broken
        fx.garbage(root / "images" / f"img_{k:02d}.png")
    with pytest.raises(AdapterError, match=r"only positive samples \(label 1\).*skipped 5 \(unreadable image 5\)"):
        load("coco", root, errors="skip")


def _coco_by_split(root: Path, wanted: dict) -> None:
    """A COCO set of 32 x 48 images whose ids are picked by their hash split: wanted[(split, label)] = count."""
    images, annotations, k = [], [], 0
    need = dict(wanted)
    while any(need.values()):
        k += 1
        key = (hash_split(str(k)), k % 2)
        if need.get(key, 0) <= 0:
            continue
        need[key] -= 1
        fx.write_png(root / f"{k}.png")
        images.append({"id": k, "file_name": f"{k}.png", "width": fx.W, "height": fx.H})
        if k % 2:
            annotations.append({"id": k, "image_id": k, "category_id": 1, "bbox": [10, 4, 8, 6]})
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": [{"id": 1, "name": "nodule"}]}))


@pytest.mark.parametrize("wanted, message", [
    ({("train", 1): 3, ("val", 0): 1, ("val", 1): 1, ("test", 1): 2, ("test", 0): 2},
     r"train split has no negative sample \(label 0\)"),
    ({("train", 1): 3, ("train", 0): 3, ("test", 1): 2, ("test", 0): 2}, r"val split is empty"),
    ({("train", 1): 3, ("train", 0): 3, ("val", 0): 1, ("test", 0): 3},
     r"test split has no positive sample with a box"),
])
def test_a_set_the_benchmark_cannot_use_is_rejected_when_registered(tmp_path, registry, wanted, message):
    from medlit.data.adapters import register_real_dataset

    root = tmp_path / "coco"
    _coco_by_split(root, wanted)
    with pytest.raises(AdapterError, match=message):
        register_real_dataset("coco", root)


# --------------------------------------------------------------------------------------------------------------
# 6. File names that are not valid UTF-8


LATIN1 = os.fsdecode(b"l\xe9sion")  # "lésion" written in Latin-1: not UTF-8, decoded with surrogate escapes


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_fingerprint_hashes_file_names_that_are_not_utf8(tmp_path):
    root = tmp_path / "coco"
    fx.make_coco(root)
    before = fingerprint("coco", root)
    fx.write_png(root / "images" / f"{LATIN1}.png")
    after = fingerprint("coco", root)
    assert after != before and after == fingerprint("coco", root)


def test_an_image_and_a_folder_named_in_latin1_load_with_printable_ids(tmp_path):
    root = tmp_path / "ddr"
    fx.make_ddr(root)
    folder = root / "lesion_detection" / "train"
    (folder / f"{LATIN1}-01.xml").write_text(fx.voc_xml("lesion-01.jpg", [("ma", 11, 5, 18, 10)]))
    fx.write_colour(folder / "lesion-01.jpg")
    data = load("ddr-lesions", root)
    assert "l\\xe9sion-01" in all_ids(data)
    for s in data.splits.values():
        for values in s.meta.values():
            assert all(_utf8(str(v)) for v in values)
    root = tmp_path / os.fsdecode(b"donn\xe9es") / "nih"
    fx.make_nih(root)
    data = load("nih-cxr14", root)
    for s in data.splits.values():
        assert all(_utf8(v) for v in s.meta["image_file"]) and _utf8(s.attrs["root"])
        assert "donn\\xe9es" in s.attrs["root"]


def test_an_error_about_a_latin1_file_names_it_printably(tmp_path):
    root = tmp_path / "ddr"
    fx.make_ddr(root)
    (root / f"{LATIN1}.xml").write_text("<annotation><filename>")  # broken XML
    with pytest.raises(AdapterError) as info:
        load("ddr-lesions", root)
    message = str(info.value)
    assert _utf8(message) and "l\\xe9sion.xml" in message and info.value.reason == common.BAD_XML


# --------------------------------------------------------------------------------------------------------------
# 7. A COCO category id listed twice


def test_a_coco_category_id_listed_twice_with_two_names_is_rejected(tmp_path):
    root = tmp_path / "coco"
    fx.make_coco(root)
    fx.edit_json(root / "annotations" / "instances.json",
                 lambda d: d["categories"].append({"id": 2, "name": "effusion"}))
    with pytest.raises(AdapterError, match=r"instances\.json: category id 2 is listed twice, as 'mass' and "
                                           r"'effusion'") as info:
        load("coco", root, errors="skip")
    assert info.value.reason is None
    fx.make_coco(root)
    fx.edit_json(root / "annotations" / "instances.json",
                 lambda d: d["categories"].append({"id": 2, "name": "mass"}))  # the same pair twice: harmless
    assert "2" in all_ids(load("coco", root))
