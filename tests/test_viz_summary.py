"""The chapters' tables, charts and computed prose (medlit.summary, medlit.viz) on small hand-made inputs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from medlit.summary import (adapter_table, beats_control_lines, best_versus_lines, box_areas, box_size_table,
                            budget_cost_table, budget_curves, called_positive_by_finding, class_balance, cost_table,
                            cube_provenance, dataset_table, explained_sets_table, finding_removal_table,
                            model_record_table, randomisation_curve, randomisation_sentence)
from medlit.viz import (box_area_chart, boundary_distance_chart, budget_chart, explain_examples, randomisation_chart,
                        ranking_scatter, training_curve_chart)
from medlit.explain import EXPLAINERS
from tests.conftest import square_set
from tests.test_cube import cube_for


def summary_rows(means: dict[str, dict[str, float]], metric: str = "pointing_game", beats: set = frozenset(),
                 families: dict[str, str] | None = None, control: str = "centre_prior") -> pd.DataFrame:
    """A ``summarise``-like table: data set -> {method: mean}; ``beats`` holds (data set, method) pairs that beat
    ``control``."""
    families = families or {"random": "control", "centre_prior": "control"}
    return pd.DataFrame([{"dataset": d, "model": "m", "method": m, "metric": metric, "mean": v, "direction": "higher",
                          "family": families.get(m, "gradient"), "control": control, "beats_control": (d, m) in beats}
                         for d, row in means.items() for m, v in row.items()])


# --- tables -----------------------------------------------------------------------------------------------------


def test_cost_table_has_one_row_per_method_with_its_seconds_and_passes():
    cube = cube_for(["gradcam", "saliency", "centre_prior"])
    cube["seconds_per_image"][:] = np.array([3.0, 1.0, 2.0])[None, None]
    table = cost_table(cube)
    assert table.method.tolist() == ["saliency", "centre_prior", "gradcam"]  # cheapest first
    assert list(table.columns) == ["method", "family", "forward passes", "backward passes",
                                   "seconds per image, cxr-phantom"]
    assert table["seconds per image, cxr-phantom"].tolist() == [1.0, 2.0, 3.0]
    row = table.set_index("method").loc["gradcam"]
    declared = cube.sel(explainer="gradcam")
    assert (row.family, row["forward passes"], row["backward passes"]) == (
        "activation", int(declared.forward_passes), int(declared.backward_passes))


def test_cost_table_of_merged_cubes_has_a_seconds_column_per_data_set():
    from medlit.cube import merge_cubes

    a = cube_for(["gradcam", "centre_prior"])
    b = cube_for(["gradcam", "centre_prior"], seed=2, n=3, dataset="fundus-lesions")
    b["seconds_per_image"][:] = 5.0
    table = cost_table(merge_cubes([a, b]))
    assert len(table) == 2
    assert table["seconds per image, cxr-phantom"].tolist() == [1.0, 1.0]
    assert table["seconds per image, fundus-lesions"].tolist() == [5.0, 5.0]


def test_box_areas_count_boxes_and_measure_their_area():
    data = square_set(n=6)
    positives = data.subset((data.labels == 1).numpy())
    areas = box_areas(positives, label="lesions")
    assert list(areas.columns) == ["lesions", "boxes", "box area fraction"] and len(areas) == 3
    assert areas.boxes.tolist() == [1, 1, 1]
    assert areas["box area fraction"].tolist() == pytest.approx([36 / 32 ** 2] * 3)  # 6 x 6 squares
    sizes = box_size_table(areas, by="lesions")
    assert sizes.loc["square"].tolist() == pytest.approx([3, 1.0, 36 / 32 ** 2])


def test_class_balance_counts_findings_per_split():
    splits = {"train": square_set(n=4, split="train"), "test": square_set(n=6)}
    balance = class_balance(splits)
    assert balance.loc["train"].tolist() == [2, 2] and balance.loc["test"].tolist() == [3, 3]


def test_record_and_explained_sets_tables():
    record = {"name": "resnet", "test_auroc": 0.9, "test_accuracy": 0.8, "train_seconds": 12.0}
    assert model_record_table(record).iloc[0].tolist() == ["resnet", 0.9, 0.8, 12.0]
    data = square_set(n=6)
    data.attrs["generator"] = "squares"
    prepared = SimpleNamespace(splits={"test": data}, explained=data.subset(slice(0, 2)), record=record)
    table = explained_sets_table({"squares": prepared})
    assert table.iloc[0].tolist() == ["squares", "squares", 2, 0.9]


def test_cube_provenance_has_one_row_per_cube_file(tmp_path):
    from medlit.cube import write_cube

    paths = [write_cube(cube_for(["gradcam"]), tmp_path / "a.nc"),
             write_cube(cube_for(["gradcam"], dataset="fundus-lesions"), tmp_path / "b.nc")]
    table = cube_provenance(paths)
    assert table.cube.tolist() == ["a.nc", "b.nc"] and table["data set"].tolist() == ["cxr-phantom", "fundus-lesions"]
    assert table.chapter.tolist() == ["t", "t"] and table.profile.tolist() == ["smoke", "smoke"]


class BrightnessModel(torch.nn.Module):
    """Calls an image positive the brighter it is: logits (0, 40 * (max - 0.7))."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))

    def forward(self, x):
        score = self.scale * (x.flatten(1).amax(1) - 0.7)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_called_positive_by_finding_is_the_fraction_over_threshold_per_type():
    table = called_positive_by_finding(BrightnessModel(), square_set(n=8))
    assert table.loc["square"].tolist() == [1.0, 4] and table.loc["none"].tolist() == [0.0, 4]


def brightness_prepared(name: str, data):
    from medlit.benchmark import Prepared
    from medlit.profiles import get_profile

    record = {"digest": "brightness-model", "name": "brightness", "config": {"arch": "brightness"}}
    return Prepared(get_profile("smoke"), name, {"test": data}, BrightnessModel(), record)


def test_finding_removal_table_covers_generated_sets_only(results):
    generated, real = square_set(n=6), square_set(n=6, seed=1)
    generated.attrs["generator"] = "squares"
    sets = {name: brightness_prepared(name, data) for name, data in (("generated", generated), ("real", real))}
    table = finding_removal_table(sets)
    assert table.index.names == ["data set", "finding pixels replaced by"]
    by_fill = table.xs("generated")["mean probability of finding"]
    assert set(table.index.get_level_values(0)) == {"generated"}
    assert by_fill.iloc[0] > 0.99 and by_fill.filter(like="black").iloc[0] < 0.5  # the square was the evidence


def test_finding_removal_is_computed_once_and_read_back_equal(results, monkeypatch):
    from medlit.studies import substrate_check

    data = square_set(n=6)
    data.attrs["generator"] = "squares"
    first = substrate_check.run_finding_removal(brightness_prepared("generated", data))
    monkeypatch.setattr(substrate_check, "finding_removal", lambda *a: pytest.fail("recomputed a cached table"))
    again = substrate_check.run_finding_removal(brightness_prepared("generated", data))
    pd.testing.assert_frame_equal(again, first)
    assert again["substrate"].iloc[0] is None and again["substrate"].iloc[1:].notna().all()


def test_registry_tables_list_every_entry():
    from medlit.data import DATASETS
    from medlit.data.adapters import ADAPTERS

    assert adapter_table().adapter.tolist() == list(ADAPTERS)
    table = dataset_table(["cxr-phantom"])
    assert table["data set"].tolist() == list(DATASETS)
    assert table.set_index("data set")["scored by the method chapters"].to_dict() == {
        name: name == "cxr-phantom" for name in DATASETS}


# --- charts -----------------------------------------------------------------------------------------------------


def test_box_area_and_training_charts_hold_their_rows():
    data = square_set(n=6)
    areas = box_areas(data.subset((data.labels == 1).numpy()))
    assert len(box_area_chart(areas).data) == 3
    history = [{"epoch": e, "val_auroc": 0.5 + 0.1 * e} for e in range(1, 4)]
    chart = training_curve_chart(history)
    assert chart.data.val_auroc.tolist() == pytest.approx([0.6, 0.7, 0.8])
    chart.to_dict()  # a valid Vega-Lite spec


def randomisation_result() -> xr.Dataset:
    similarity = np.ones((2, 3, 2, 4))
    similarity[0, 1:] = 0.2  # saliency changes with the model; the centre prior does not
    return xr.Dataset({"similarity": (("explainer", "randomised", "measure", "sample"), similarity)},
                      coords={"explainer": ["saliency", "centre_prior"], "randomised": ["none", "fc", "+layer4"],
                              "measure": ["ssim", "spearman"], "family": ("explainer", ["gradient", "control"])})


def test_randomisation_chart_holds_the_mean_similarity_per_method_step_and_measure():
    ds = randomisation_result()
    curve = randomisation_curve(ds)
    assert len(curve) == 2 * 3 * 2 and "method" in curve
    assert curve.set_index(["method", "randomised", "measure"]).similarity[("saliency", "fc", "ssim")] == 0.2
    chart = randomisation_chart(ds, ["saliency", "centre_prior"])
    assert len(chart.data) == 12
    chart.to_dict()


def test_boundary_distance_chart_marks_correct_images():
    stability = pd.DataFrame({"finding": ["nodule", "mass", "mass"], "label": [1, 1, 1], "predicted": [1, 0, 1],
                              "boundary_distance": [0.5, -0.1, 2.0], "sigma_1": [1.0, 2.0, 3.0]})
    chart = boundary_distance_chart(stability)
    assert chart.data.correct.tolist() == [True, False, True]
    assert "correct" not in stability  # the caller's table is left as it was
    chart.to_dict()


def budget_study() -> xr.Dataset:
    score = np.arange(2 * 3 * 2 * 4, dtype=float).reshape(2, 3, 2, 4)
    setting_value = np.array([[250.0, 500.0, 1000.0], [32.0, 16.0, np.nan]])  # occlusion: two settings only
    seconds = np.array([[0.1, 0.2, 0.4], [0.05, 0.1, np.nan]])
    score[1, 2] = np.nan
    return xr.Dataset({"score": (("explainer", "budget", "metric", "sample"), score),
                       "seconds_per_image": (("explainer", "budget"), seconds),
                       "setting_value": (("explainer", "budget"), setting_value)},
                      coords={"explainer": ["rise", "occlusion"], "budget": [0, 1, 2],
                              "metric": ["pointing_game", "deletion_auc"], "sample": np.arange(4),
                              "setting": ("explainer", ["n_masks", "window"]),
                              "direction": ("metric", ["higher", "lower"])})


def test_budget_curves_drop_unused_slots_and_label_methods_with_their_setting():
    curves = budget_curves(budget_study())
    assert len(curves) == (3 + 2) * 2
    assert set(curves.method) == {"rise (n_masks)", "occlusion (window)"}
    rise = curves[(curves.explainer == "rise") & (curves.budget == 1) & (curves.metric == "deletion_auc")].iloc[0]
    assert (rise.score, rise.setting_value, rise.seconds_per_image) == (np.mean([12, 13, 14, 15]), 500.0, 0.2)
    cost = budget_cost_table(budget_study())
    assert cost["budget setting"].tolist() == [250.0, 500.0, 1000.0, 32.0, 16.0]
    assert cost["seconds per image"].tolist() == [0.1, 0.2, 0.4, 0.05, 0.1]


def test_budget_chart_holds_one_row_per_method_budget_and_metric():
    chart = budget_chart(budget_study())
    assert len(chart.data) == 10
    chart.to_dict()


def test_ranking_scatter_holds_one_point_per_method():
    wide = pd.DataFrame({"method": ["a", "b", "c"], "family": ["f", "f", "control"], "one": [0.1, 0.5, 0.9],
                         "two": [0.2, 0.3, 0.4]})
    chart = ranking_scatter(wide, "one", "two")
    spec = chart.to_dict()
    assert len(chart.data) == 3 and spec["encoding"]["x"]["title"] == "pointing game, one"


def test_explain_examples_explains_the_first_images_for_the_positive_class(monkeypatch):
    import medlit.explain

    calls = []

    def fake_explain(name, model, images, target, data_inputs=None):
        calls.append((name, model, images, target))
        assert data_inputs["anatomy_masks"].shape == (len(images), *images.shape[-2:])  # for the data-aware controls
        return torch.zeros(len(images), *images.shape[-2:]), 0.0

    monkeypatch.setattr(medlit.explain, "explain_batched", fake_explain)
    data = square_set(n=6)
    prepared = SimpleNamespace(explained=data, model="the model", splits={"train": square_set(n=8)})
    shown, maps = explain_examples(prepared, ["saliency", "gradcam"], n=4)
    assert len(shown) == 4 and list(maps) == ["saliency", "gradcam"] and maps["gradcam"].shape == (4, 32, 32)
    name, model, images, target = calls[0]
    assert model == "the model" and torch.equal(images, data.images[:4])
    assert target.tolist() == [1, 1, 1, 1] and target.dtype == torch.long
    shown, _ = explain_examples(prepared, ["saliency"], n=10)  # fewer images than asked
    assert len(shown) == 6 and len(calls[-1][3]) == 6


# --- prose --------------------------------------------------------------------------------------------------------


def test_best_versus_lines_name_the_best_non_reference_method_per_data_set():
    summary = summary_rows({"one": {"saliency": 0.8, "smoothgrad": 0.6, "gradcam": 0.9, "random": 0.95,
                                    "centre_prior": 0.3},
                            "two": {"saliency": 0.1, "smoothgrad": 0.4, "gradcam": 0.2, "random": 0.0,
                                    "centre_prior": 0.25}})
    text = best_versus_lines(summary, "pointing_game", {"saliency": "Saliency", "gradcam": "Grad-CAM"})
    assert text == ("- **one**: Saliency hits 0.80 of the images, Grad-CAM 0.90, the centre prior 0.30; Saliency "
                    "does not clearly beat the centre prior.\n"
                    "- **two**: smoothgrad hits 0.40 of the images, Grad-CAM 0.20, the centre prior 0.25; smoothgrad "
                    "does not clearly beat the centre prior.")
    # the control named is the one summarise compared with; a named baseline is shown without a verdict
    summary = summary_rows({"one": {"saliency": 0.8, "gradcam": 0.9, "random": 0.5, "centre_prior": 0.3}},
                           beats={("one", "saliency")}, control="random")
    assert best_versus_lines(summary).endswith("the random map 0.50; saliency beats the random map.")
    assert best_versus_lines(summary, baseline="centre_prior", baseline_name="the prior").endswith("the prior 0.30.")


def test_randomisation_sentence_names_failing_methods_and_judges_the_best_localiser():
    verdict = pd.DataFrame({"family": ["gradient", "gradient", "control"], "changes": [True, False, False]},
                           index=pd.Index(["saliency", "guided_backprop", "centre_prior"], name="explainer"))
    names = {"saliency": "Saliency", "guided_backprop": "Guided backprop"}
    summary = summary_rows({"one": {"saliency": 0.7, "guided_backprop": 0.5, "centre_prior": 0.9}})
    text = randomisation_sentence(verdict, summary, names)
    assert text == ("Methods whose maps stay similar after the whole network is randomised (they fail the check): "
                    "**Guided backprop**. The best localiser by the pointing game, **Saliency**, passes it.")
    summary = summary_rows({"one": {"saliency": 0.4, "guided_backprop": 0.5, "centre_prior": 0.9}})
    assert randomisation_sentence(verdict, summary, names).endswith(
        "**Guided backprop**, fails the check: its good localisation owes much to the image itself, not only to "
        "the model.")
    unchecked = summary_rows({"one": {"saliency": 0.4, "gradcam_stage-1": 0.6, "centre_prior": 0.9}})
    assert randomisation_sentence(verdict, unchecked, names).endswith("**gradcam_stage-1**, was not part of the check.")
    verdict["changes"] = [True, True, False]  # the control never counts as failing
    assert "(they fail the check): none." in randomisation_sentence(verdict, summary, names)


def test_beats_control_lines_name_only_the_methods_that_beat_the_control():
    summary = pd.concat([
        summary_rows({"one": {"saliency": 0.8, "gradcam": 0.5, "centre_prior": 0.4}},
                     beats={("one", "saliency"), ("one", "centre_prior")}),
        summary_rows({"one": {"saliency": 0.3, "gradcam": 0.2, "centre_prior": 0.4}}, metric="energy_pointing_game"),
        summary_rows({"one": {"saliency": 0.3, "gradcam": 0.2, "centre_prior": 0.4}}, metric="iou_otsu",
                     beats={("one", "gradcam")})])
    text = beats_control_lines(summary, ["pointing_game", "energy_pointing_game"])
    assert text == ("- one, pointing_game: beat the centre prior: saliency\n"
                    "- one, energy_pointing_game: no method beats the centre prior")
    against_random = summary_rows({"one": {"saliency": 0.8, "random": 0.4}}, beats={("one", "saliency")},
                                  control="random")
    assert beats_control_lines(against_random, ["pointing_game"]) == "- one, pointing_game: beat the random map: saliency"


def test_cam_stage_table_reads_each_stage_with_its_grid(tiny_model, squares):
    from medlit.summary import cam_stage_table

    summary = pd.DataFrame([{"dataset": "squares", "method": name, "metric": "pointing_game", "mean": mean,
                             "ci_low": mean - 0.1, "ci_high": mean + 0.1}
                            for name, mean in (("gradcam", 0.2), ("gradcam_stage-1", 0.4), ("gradcam_stage-2", 0.6))])
    prepared = SimpleNamespace(explained=squares, model=tiny_model, device=torch.device("cpu"))
    table = cam_stage_table(summary, {"squares": prepared}, ["gradcam"], ["pointing_game"])
    assert list(table.stage) == ["last", "last-1", "last-2"]
    assert list(table["feature grid"]) == ["1 x 1", "2 x 2", "4 x 4"]  # 32 px images
    assert list(table.pointing_game) == ["0.200 [0.100, 0.300]", "0.400 [0.300, 0.500]", "0.600 [0.500, 0.700]"]


def test_in_short_names_the_best_method_and_counts_the_winners():
    from medlit.summary import in_short, short_list, summarise

    cube = cube_for(["gradcam", "saliency", "centre_prior"])
    summary = summarise(cube, replicates=50)
    findings = in_short(summary)
    assert len(findings) == 2 and findings[0].startswith("On **cxr-phantom**, ")
    best = summary[(summary.metric == "pointing_game") & (summary.family != "control")].sort_values("mean").iloc[-1]
    assert EXPLAINERS[best.method].long_name in findings[0] and "centre prior" in findings[0]
    assert "of 2 methods beat the centre prior" in findings[1] and "Holm" in findings[1]
    assert "separate" in findings[0] or "leads" in findings[0], "the sentence says whether the leaders separate"
    assert short_list(findings).count("\n- ") == 1


def test_chapter_references_list_every_cited_work():
    from medlit.summary import chapter_references, cited_keys

    assert cited_keys("see {cite}`a2020,b2021` and {cite:p}`c2022`; {cite:t}`a2020`") == ["a2020", "b2021", "c2022"]
    refs = chapter_references("10_gradient_activation")
    assert "Selvaraju" in refs and "Adebayo" in refs and refs.count("\n- ") >= 10


def test_leaderboard_table_is_compact_and_sets_the_controls_apart():
    from medlit.summary import summarise
    from medlit.viz import leaderboard_table

    html = leaderboard_table(summarise(cube_for(["random", "gradcam", "saliency"]), replicates=50)).data
    assert "Grad-CAM" in html and "Pointing game" in html and "↑" in html and "↓" in html
    assert "overflow-x: auto" in html and "cxr-phantom, model m" in html
    assert html.index("Random map") > html.index("Grad-CAM"), "controls come last"
    assert "<th" in html and ">0<" not in html, "no integer index column"


def test_inverted_metrics_lose_their_verdicts_on_their_data_set_only():
    from medlit.summary import drop_inverted, inverted_notes

    rows = pd.DataFrame({"dataset": ["a", "a", "b"], "metric": ["deletion_auc", "pointing_game", "deletion_auc"]})
    kept = drop_inverted(rows, {"a": {"deletion_auc": "blur raises the score"}, "b": {}})
    assert kept.values.tolist() == [["a", "pointing_game"], ["b", "deletion_auc"]]
    assert inverted_notes({"a": {"deletion_auc": "blur raises the score"}}) == (
        "- **a**, deletion auc: blur raises the score")
    assert "No faithfulness verdict is withheld" in inverted_notes({"a": {}})


def test_per_dataset_renders_each_model_of_a_data_set_apart(monkeypatch):
    import IPython.display
    import pandas as pd

    from medlit.viz import per_dataset

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(getattr(obj, "data", obj)))

    table = pd.DataFrame({"dataset": ["cxr-phantom"] * 3 + ["fundus-lesions"], "model": ["a", "b", "b", "a"],
                          "mean": [1, 2, 3, 4]})
    seen = []
    per_dataset(table, lambda rows: seen.append((rows.dataset.iloc[0], tuple(rows.model))) or "")
    assert seen == [("cxr-phantom", ("a",)), ("cxr-phantom", ("b", "b")), ("fundus-lesions", ("a",))]
    captions = [text for text in shown if isinstance(text, str) and "Data set" in text]
    assert len(captions) == 3 and "Model: **a**" in captions[0] and "Model: **b**" in captions[1]
    assert "Model" not in captions[2]  # one model on the fundus set: no model in its caption
