"""Cubes: contract, NetCDF round trip, atomic writes, merging, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from medlit.cube import make_cube, merge_cubes, provenance, read_cube, validate_cube, write_cube
from medlit.explain import EXPLAINERS
from medlit.metrics import METRICS


def cube_for(methods, seed=0, n=5, dataset="cxr-phantom", model="m", not_applicable=None):
    rng = np.random.default_rng(seed)
    metrics = ["pointing_game", "deletion_auc"]
    scores = rng.random((len(methods), len(metrics), n))
    scores[0, 0, 0] = np.nan
    samples = {"sample_id": [f"s{i}" for i in range(n)], "label": np.ones(n, int), "finding": ["nodule"] * n,
               "box_area_fraction": np.full(n, 0.01), "probability": np.linspace(0.2, 0.9, n),
               "correct": np.linspace(0.2, 0.9, n) >= 0.5}
    if not_applicable:
        scores[[methods.index(m) for m in not_applicable]] = np.nan
    reasons = [f"needs x, which {model} does not offer" if m in (not_applicable or []) else "" for m in methods]
    return make_cube(dataset=dataset, model=model, model_kind=model, not_applicable=reasons,
                     methods=[EXPLAINERS[m] for m in methods],
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


def test_merge_names_the_cubes_of_two_trainings_of_one_model():
    a, b = cube_for(["gradcam"]), cube_for(["saliency"])
    a.attrs["source_file"], b.attrs["source_file"] = "old.nc", "new.nc"
    b["model_digest"] = b.model_digest.copy(data=[["def"]])
    with pytest.raises(ValueError, match=r"different trainings.*old\.nc \(model digest abc\).*new\.nc"):
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


def test_cubes_of_several_models_merge_along_model_with_the_union_of_methods(tmp_path):
    """A second model with another method set (as a ViT will have): aligned on the union of methods; a method
    its cubes lack is NaN with the reason 'not run on this model'; not-applicable reasons survive NetCDF."""
    cnn = merge_cubes([cube_for(["gradcam", "random"], model="cnn"), cube_for(["occlusion", "random"], model="cnn")])
    vit = cube_for(["saliency", "gradcam", "random"], seed=1, model="vit", not_applicable=["gradcam"])
    vit = read_cube(write_cube(vit, tmp_path / "vit.nc"))
    merged = merge_cubes([cnn, vit])
    assert list(merged.model.values) == ["cnn", "vit"]
    assert set(merged.explainer.values) == {"gradcam", "random", "occlusion", "saliency"}
    reasons = merged.not_applicable.sel(dataset="cxr-phantom")
    assert str(reasons.sel(model="vit", explainer="gradcam").values).startswith("needs x")
    assert str(reasons.sel(model="vit", explainer="occlusion").values) == "not run on this model"
    assert str(reasons.sel(model="cnn", explainer="saliency").values) == "not run on this model"
    assert str(reasons.sel(model="cnn", explainer="gradcam").values) == ""
    assert np.isnan(merged.score.sel(model="vit", explainer="occlusion")).all()
    np.testing.assert_array_equal(merged.score.sel(model="cnn", explainer="occlusion").values[0],
                                  cnn.score.sel(explainer="occlusion").values[0, 0])
    assert str(merged.family.sel(explainer="saliency").values) == "gradient"
    assert list(merged.model_kind.values) == ["cnn", "vit"]
    validate_cube(merged)
    write_cube(merged, tmp_path / "merged.nc")  # the merged cube is itself a valid cube


def test_a_model_explained_on_fewer_images_is_padded_and_paired_on_the_shared_ones(tmp_path):
    """A model capped by ``Profile.n_explain_by_model`` scores the first images of the others: merged, its other
    images are NaN (sample ids kept), summaries count only its own images, and other images are refused."""
    from medlit.model_comparison import model_comparison
    from medlit.summary import summarise

    cnn, vit = cube_for(["gradcam", "random"], model="cnn", n=6), cube_for(["gradcam", "random"], seed=3,
                                                                          model="vit", n=4)
    merged = merge_cubes([cnn, vit])
    assert merged.sizes["sample"] == 6 and list(merged.sample_id.values[0]) == [f"s{i}" for i in range(6)]
    assert bool(merged.score.sel(model="vit").isel(sample=slice(4, None)).isnull().all())
    np.testing.assert_array_equal(merged.score.sel(model="vit").isel(sample=slice(0, 4)).values,
                                  vit.score.sel(model="vit").values)
    table = summarise(merged, replicates=50)
    n = table[(table.method == "random") & (table.metric == "deletion_auc")].set_index("model").n
    assert (int(n["cnn"]), int(n["vit"])) == (6, 4)
    versus = model_comparison(merged, ["gradcam"], ["deletion_auc"], reference="cnn", other="vit", replicates=50)
    assert int(versus.n.iloc[0]) == 4
    write_cube(merged, tmp_path / "merged.nc")
    other = cube_for(["gradcam"], model="vit", n=4)
    other = other.assign_coords(sample_id=(("dataset", "sample"), [["t0", "t1", "t2", "t3"]]))
    with pytest.raises(ValueError, match="other images than model cnn"):
        merge_cubes([cnn, other])


def test_not_applicable_methods_read_as_such_in_every_table():
    from medlit.summary import cost_table, leaderboard, summarise, verdicts

    cube = cube_for(["gradcam", "saliency", "centre_prior"], model="vit", not_applicable=["gradcam"])
    summary = summarise(cube, replicates=50)
    assert not summary[summary.method == "gradcam"].applicable.any()
    assert summary[summary.method == "saliency"].applicable.all()
    board = leaderboard(summary)
    assert board.method.iloc[-1] == "gradcam", "a method that could not run is listed last"
    assert (board.iloc[-1][["pointing_game", "deletion_auc"]] == "not applicable").all()
    assert "**gradcam**: not applicable (needs x, which vit does not offer)" in verdicts(summary)
    assert "saliency** beats" in verdicts(summary)
    assert len(cost_table(cube)) == 3


def test_a_profile_caps_a_model_kind_below_the_data_sets_count():
    from medlit.profiles import PROFILES, Profile

    profile = Profile("t", image_size=64, n_train=8, n_val=8, n_test=8, epochs=1, batch_size=8, n_explain=10,
                      deletion_steps=4, bootstrap=10, n_sanity=2, n_explain_by_dataset=(("fundus-lesions", 6),),
                      n_explain_by_model=(("vit", 8),))
    assert profile.explain_count("cxr-phantom") == 10 and profile.explain_count("cxr-phantom", "vit") == 8
    assert profile.explain_count("fundus-lesions", "vit") == 6 and profile.explain_count("fundus-lesions") == 6
    assert profile.explain_count("cxr-phantom", "resnet10") == 10
    assert "n_explain_by_model" in profile.as_dict()
    assert "n_explain_by_model" not in PROFILES["smoke"].as_dict()  # unused: older cache keys stay valid
