"""The chapter pipeline end to end on the smoke profile, and its cube cache."""

from __future__ import annotations

import numpy as np
import pytest

from medlit.benchmark import DEFAULT_METRICS, prepare, run_methods
from medlit.cube import read_cube


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDLIT_RESULTS", str(tmp_path_factory.mktemp("results")))
    yield prepare("smoke", progress=False)
    mp.undo()


def test_run_methods_writes_a_complete_cube_and_reuses_it(prepared, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDLIT_RESULTS", str(tmp_path))
    methods = ["gradcam", "centre_prior"]
    cube = run_methods(prepared, methods, chapter="t", progress=False)
    assert list(cube.explainer.values) == methods and list(cube.metric.values) == list(DEFAULT_METRICS)
    assert cube.sizes["sample"] == prepared.profile.n_explain
    assert (cube.label.values == 1).all()
    ranked = cube.score.sel(metric=["pointing_game", "pointing_game_strict", "auprc"])
    assert np.isfinite(ranked.values).all() and ((ranked >= 0) & (ranked <= 1)).all()
    energy = cube.score.sel(metric="energy_pointing_game").values  # NaN only for a map with no positive part
    assert ((energy[np.isfinite(energy)] >= 0) & (energy[np.isfinite(energy)] <= 1)).all()
    path = tmp_path / "smoke" / "cubes" / "t--cxr-phantom--resnet10.nc"
    stamp = path.stat().st_mtime_ns
    again = run_methods(prepared, methods, chapter="t", progress=False)
    assert path.stat().st_mtime_ns == stamp, "an up-to-date cube must be reused, not rewritten"
    assert again.identical(cube)
    run_methods(prepared, ["gradcam"], chapter="t", progress=False)
    assert list(read_cube(path).explainer.values) == ["gradcam"], "other methods: the cube is recomputed"


def test_an_unreadable_cube_is_set_aside_and_recomputed(prepared, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDLIT_RESULTS", str(tmp_path))
    path = tmp_path / "smoke" / "cubes" / "t--cxr-phantom--resnet10.nc"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="t--cxr-phantom--resnet10.nc"):
        cube = run_methods(prepared, ["random"], chapter="t", progress=False)
    assert (path.parent / "t--cxr-phantom--resnet10.nc.unreadable").read_bytes() == b"truncated"
    assert list(cube.explainer.values) == ["random"]


def test_a_method_scored_by_one_chapter_is_read_back_by_another(prepared, monkeypatch, tmp_path):
    from medlit import benchmark

    monkeypatch.setenv("MEDLIT_RESULTS", str(tmp_path))
    first = run_methods(prepared, ["centre_prior", "random"], chapter="a", progress=False)
    shards = sorted((tmp_path / "smoke" / "shards").glob("*.npz"))
    assert [p.name.split("--")[2] for p in shards] == ["centre_prior", "random"]
    scored = []
    score_method = benchmark.score_method
    monkeypatch.setattr(benchmark, "score_method", lambda model, data, method, *a, **k:
                        scored.append(method) or score_method(model, data, method, *a, **k))
    other = run_methods(prepared, ["random", "edge_map"], chapter="b", progress=False)
    assert scored == ["edge_map"]  # random came from its shard
    np.testing.assert_array_equal(other.score.sel(explainer="random").values,
                                  first.score.sel(explainer="random").values)
    assert other.seconds_per_image.sel(explainer="random").item() == first.seconds_per_image.sel(
        explainer="random").item()
    shards[1].write_bytes(b"torn")
    with pytest.warns(UserWarning, match="could not be read"):
        run_methods(prepared, ["random"], chapter="c", progress=False)
    assert scored == ["edge_map", "random"]
    run_methods(prepared, ["random"], chapter="d", force=True, progress=False)
    assert scored == ["edge_map", "random", "random"]


def test_unknown_method_is_named(prepared):
    with pytest.raises(KeyError, match="gradkam"):
        run_methods(prepared, ["gradkam"], chapter="t")


def test_budget_study_scores_every_setting_and_is_cached(prepared, monkeypatch, tmp_path):
    from medlit.studies import run_budget_study

    monkeypatch.setenv("MEDLIT_RESULTS", str(tmp_path))
    budgets = {"centre_prior": ("sigma_fraction", [0.1, 0.25, 0.5])}
    ds = run_budget_study(prepared, budgets, chapter="t", metrics=("pointing_game", "energy_pointing_game"),
                          progress=False)
    assert ds.score.sizes == {"explainer": 1, "budget": 3, "metric": 2, "sample": prepared.profile.n_sanity}
    assert list(ds.setting_value.values[0]) == [0.1, 0.25, 0.5]
    energy = ds.score.sel(metric="energy_pointing_game").mean("sample").values[0]
    assert energy[0] != energy[2], "the setting must reach the explainer"
    path = tmp_path / "smoke" / "checks" / "t--budget--cxr-phantom--resnet10.nc"
    stamp = path.stat().st_mtime_ns
    run_budget_study(prepared, budgets, chapter="t", metrics=("pointing_game", "energy_pointing_game"),
                     progress=False)
    assert path.stat().st_mtime_ns == stamp


def write_square_coco(root, n=40):
    """A COCO-format set of noise images; every other image carries a bright square, boxed (x, y, w, h)."""
    import json

    from PIL import Image

    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(n):
        pixels = rng.integers(40, 90, (40, 48)).astype(np.uint8)
        if i % 2:
            x, y = int(rng.integers(2, 36)), int(rng.integers(2, 28))
            pixels[y:y + 8, x:x + 8] = 230
            annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [x, y, 8, 8], "iscrowd": 0})
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / f"im{i:03d}.png")
        images.append({"id": i, "file_name": f"im{i:03d}.png", "width": 48, "height": 40})
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": [{"id": 1, "name": "square"}]}))


def test_a_real_data_set_runs_through_the_chapter_pipeline_beside_the_embedded_ones(monkeypatch, tmp_path):
    """``--data coco=folder``: the set is registered, scored, and its cube says which data set it came from."""
    from medlit.benchmark import chapter_cube_paths, chapter_datasets, run_chapter
    from medlit.data import adapters, registry

    monkeypatch.setenv("MEDLIT_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(registry.DATASETS, "_entries", dict(registry.DATASETS._entries))
    monkeypatch.setattr(adapters, "_REGISTERED", {})
    monkeypatch.setattr(adapters, "_CALLS", {})
    write_square_coco(tmp_path / "coco")
    datasets = chapter_datasets(f"coco={tmp_path / 'coco'}")
    assert datasets == ["cxr-phantom", "fundus-lesions", "coco"]
    # what a cluster worker is sent to register the same set (medlit.cluster.ShardTask)
    assert adapters.registration("coco") == ((tmp_path / "coco").resolve(), {"errors": "raise"})
    assert adapters.registration("cxr-phantom") is None
    cube, prepared = run_chapter("smoke", ["gradcam", "centre_prior"], chapter="t", datasets=datasets,
                                 metrics=["pointing_game", "energy_pointing_game"])
    assert list(cube.dataset.values) == datasets
    assert list(cube.dataset_kind.values) == ["embedded", "embedded", "real"]
    assert str(cube.data_card.sel(dataset="coco").values) == "coco_boxes.md"
    real = read_cube(tmp_path / "results" / "smoke" / "cubes" / "t--coco--resnet10.nc")
    assert real.attrs["dataset_kind"] == "real" and len(real.attrs["dataset_fingerprint"]) == 16
    n_real = len(prepared["coco"].explained)
    assert 0 < n_real == real.sizes["sample"] and (real.label.values == 1).all()
    assert [p.name for p in chapter_cube_paths("smoke", f"coco={tmp_path / 'coco'}")] == [
        "t--cxr-phantom--resnet10.nc", "t--fundus-lesions--resnet10.nc", "t--coco--resnet10.nc"]
    assert [p.name for p in chapter_cube_paths("smoke")] == ["t--cxr-phantom--resnet10.nc",
                                                             "t--fundus-lesions--resnet10.nc"]
