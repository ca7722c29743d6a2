"""Cubes: contract, NetCDF round trip, atomic writes, merging, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from medlit.cube import make_cube, merge_cubes, provenance, read_cube, validate_cube, write_cube
from medlit.explain import EXPLAINERS
from medlit.metrics import METRICS


def cube_for(methods, seed=0, n=5, dataset="cxr-phantom"):
    rng = np.random.default_rng(seed)
    metrics = ["pointing_game", "deletion_auc"]
    scores = rng.random((len(methods), len(metrics), n))
    scores[0, 0, 0] = np.nan
    samples = {"sample_id": [f"s{i}" for i in range(n)], "label": np.ones(n, int), "finding": ["nodule"] * n,
               "box_area_fraction": np.full(n, 0.01), "probability": np.linspace(0.2, 0.9, n),
               "correct": np.linspace(0.2, 0.9, n) >= 0.5}
    return make_cube(dataset=dataset, model="m", methods=[EXPLAINERS[m] for m in methods],
                     metrics=[METRICS[m] for m in metrics], scores=scores, seconds_per_image=np.ones(len(methods)),
                     samples=samples, model_record={"test_auroc": 0.9, "test_accuracy": 0.8, "digest": "abc"},
                     metric_params={"pointing_game": {"tolerance_px": 7.5}},
                     attrs=provenance("smoke", 0, "cpu") | {"chapter": "t", "data_card": f"{dataset}.md"})


def test_cube_has_the_contract_dims_and_metadata():
    cube = cube_for(["gradcam", "random"])
    assert cube.score.dims == ("dataset", "model", "explainer", "metric", "sample")
    assert list(cube.direction.values) == ["higher", "lower"]
    assert cube.family.sel(explainer="random") == "control"
    assert {"profile", "seed", "device", "git_commit", "created", "versions"} <= set(cube.attrs)


def test_netcdf_round_trip_is_identical(tmp_path):
    cube = cube_for(["gradcam", "random"])
    path = write_cube(cube, tmp_path / "c.nc")
    back = read_cube(path)
    back.attrs.pop("source_file")
    xr.testing.assert_identical(back, cube)
    assert back.correct.dtype == bool
    assert not list(tmp_path.glob("*.tmp*")), "the temporary file must be renamed away"


def test_read_cube_names_the_file(tmp_path):
    bad = tmp_path / "broken.nc"
    bad.write_bytes(b"not netcdf")
    with pytest.raises(ValueError, match="broken.nc"):
        read_cube(bad)
    with pytest.raises(FileNotFoundError, match="missing.nc"):
        read_cube(tmp_path / "missing.nc")


def test_validate_rejects_a_foreign_dataset():
    with pytest.raises(ValueError, match="missing .*score"):
        validate_cube(xr.Dataset({"x": ("a", [1])}), "foreign.nc")


def test_merge_keeps_shared_controls_once_and_checks_them():
    a, b = cube_for(["gradcam", "random"]), cube_for(["saliency", "random"])
    b["score"].loc[{"explainer": "random"}] = a.score.sel(explainer="random").values
    merged = merge_cubes([a, b])
    assert list(merged.explainer.values) == ["gradcam", "random", "saliency"]
    assert merged.model_auroc.dims == ("dataset", "model") and float(merged.model_auroc.squeeze()) == 0.9
    xr.testing.assert_equal(merged.score.sel(explainer="saliency"), b.score.sel(explainer="saliency"))


def test_merge_refuses_disagreeing_duplicates():
    a, b = cube_for(["gradcam", "random"]), cube_for(["random"], seed=1)
    with pytest.raises(ValueError, match="random"):
        merge_cubes([a, b])


def test_merge_stacks_data_sets_of_different_sizes_and_summaries_skip_the_padding(tmp_path):
    from medlit.summary import summarise

    a = cube_for(["gradcam", "centre_prior"], n=5)
    b = cube_for(["gradcam", "centre_prior"], seed=2, n=3, dataset="fundus-lesions")
    merged = merge_cubes([a, b])
    assert list(merged.dataset.values) == ["cxr-phantom", "fundus-lesions"]
    assert merged.sizes["sample"] == 5 and list(merged.data_card.values) == ["cxr-phantom.md", "fundus-lesions.md"]
    padded = merged.score.sel(dataset="fundus-lesions").isel(sample=slice(3, None))
    assert bool(padded.isnull().all()) and list(merged.sample_id.sel(dataset="fundus-lesions").values[3:]) == ["", ""]
    xr.testing.assert_equal(merged.score.sel(dataset="cxr-phantom", drop=True),
                            a.score.sel(dataset="cxr-phantom", drop=True))
    table = summarise(merged, replicates=50)
    fundus = table[(table.dataset == "fundus-lesions") & (table.method == "gradcam") & (table.metric == "deletion_auc")]
    assert int(fundus.n.iloc[0]) == 3
    by = summarise(merged, replicates=50, by="finding")
    assert set(by.finding) == {"nodule"}, "padded samples must not form a group of their own"
    write_cube(merged, tmp_path / "merged.nc")  # a merged cube is still a valid, writable cube
