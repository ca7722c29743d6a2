"""Leaderboards from cubes: means, bootstrap intervals, and the paired comparison with a control; the other
tables the chapters show (cost, data, studies) and the prose they compute from tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from medlit.stats import bootstrap_mean_ci, paired_bootstrap_difference


def _replicates(cube: xr.Dataset) -> int:
    settings = cube.attrs.get("profile_settings")
    return int(json.loads(settings)["bootstrap"]) if settings else 1000


def summarise(cube: xr.Dataset, *, baseline: str = "centre_prior", level: float = 0.95,
              replicates: int | None = None, by: str | None = None) -> pd.DataFrame:
    """One row per (dataset, model, explainer, metric): mean score, its bootstrap CI, and the paired difference
    from ``baseline`` with its CI, signed so that positive always means "better than the baseline".

    Tables are for readers, so the explainer's column is called ``method`` there.
    ``beats_baseline`` is True when the whole interval of that signed difference lies above 0. A method the model
    could not serve has ``applicable`` False, NaN scores and the reason in ``not_applicable``.
    With ``by`` (a per-sample coordinate such as ``"finding"``), rows are computed per group of images.
    """
    replicates = replicates or _replicates(cube)
    rows = []
    for dataset in cube.dataset.values:
        for model in cube.model.values:
            block = cube.sel(dataset=dataset, model=model)
            present = _present(block)  # merged cubes pad smaller data sets with empty samples
            groups = [(None, present)] if by is None else [
                (g, present & (block[by].values == g)) for g in pd.unique(block[by].values[present])]
            for group, keep in groups:
                for metric in block.metric.values:
                    rows.extend(_rows(block, metric, keep, baseline, replicates, level,
                                      {"dataset": dataset, "model": model} | ({by: group} if by else {})))
    table = pd.DataFrame(rows)
    if "beats_baseline" in table:
        table["beats_baseline"] = table["beats_baseline"].astype(bool)
    return table


def _present(block: xr.Dataset) -> np.ndarray:
    ids = block.sample_id.values
    return np.array([isinstance(i, str) and i != "" for i in ids.tolist()], dtype=bool)


def _rows(block: xr.Dataset, metric: str, keep: np.ndarray, baseline: str, replicates: int, level: float,
          key: dict) -> list[dict]:
    direction = str(block.direction.sel(metric=metric).values)
    sign = 1.0 if direction == "higher" else -1.0
    base = (block.score.sel(explainer=baseline, metric=metric).values[keep]
            if baseline in block.explainer.values else None)
    rows = []
    for method in block.explainer.values:
        values = block.score.sel(explainer=method, metric=metric).values[keep]
        mean, low, high, n = bootstrap_mean_ci(values, replicates=replicates, level=level)
        reason = str(block.not_applicable.sel(explainer=method).values) if "not_applicable" in block else ""
        row = key | {"method": method, "metric": metric, "family": str(block.family.sel(explainer=method).values),
                     "direction": direction, "mean": mean, "ci_low": low, "ci_high": high, "n": n,
                     "seconds_per_image": float(block.seconds_per_image.sel(explainer=method)),
                     "applicable": reason == "", "not_applicable": reason}
        if base is not None and method != baseline:
            d, dlo, dhi, _ = paired_bootstrap_difference(sign * values, sign * base, replicates=replicates,
                                                         level=level)
            row.update(gain_vs_baseline=d, gain_low=dlo, gain_high=dhi, beats_baseline=bool(dlo > 0))
        elif base is not None:  # the baseline against itself: no gain, never "beats"
            row.update(gain_vs_baseline=np.nan, gain_low=np.nan, gain_high=np.nan, beats_baseline=False)
        rows.append(row)
    return rows


def model_table(cube: xr.Dataset) -> pd.DataFrame:
    """The models' own test accuracy and AUROC, to read beside every explanation score."""
    return (xr.Dataset({"test AUROC": cube.model_auroc, "test accuracy": cube.model_accuracy})
            .to_dataframe().reset_index())


def leaderboard(summary: pd.DataFrame, metrics: list[str] | None = None, digits: int = 3) -> pd.DataFrame:
    """A wide table: methods as rows, one "mean [low, high]" column per metric, best first on the first metric.

    Where a metric was undefined (NaN) for some images, the cell ends with "n=k" images actually averaged; a
    method the model could not serve reads "not applicable" and is listed last.
    """
    table = summary if metrics is None else summary[summary.metric.isin(metrics)]
    fmt = f"{{:.{digits}f}}"
    full = table.groupby(["dataset", "model"])["n"].transform("max")

    def cell(r):
        if not r.get("applicable", True):
            return "not applicable"
        text = (f"{fmt.format(r['mean'])} [{fmt.format(r['ci_low'])}, {fmt.format(r['ci_high'])}]"
                if np.isfinite(r["ci_low"]) else fmt.format(r["mean"]))
        return text + (f" n={r['n']}" if r["n"] < r["full"] else "")

    cell = table.assign(full=full).apply(cell, axis=1)
    wide = table.assign(cell=cell).pivot_table(index=["dataset", "model", "method"], columns="metric",
                                               values="cell", aggfunc="first")
    order = metrics or list(dict.fromkeys(table.metric))
    first = order[0]
    ranking = table[table.metric == first].set_index(["dataset", "model", "method"])
    sign = -1 if (ranking.direction == "lower").all() else 1
    wide = wide[[m for m in order if m in wide.columns]]
    # best first within each data set and model; the data sets keep their order of appearance
    order_of_set = {d: i for i, d in enumerate(dict.fromkeys(table.dataset))}
    keys = (sign * ranking["mean"]).rename("score").reset_index()
    keys["set_order"] = keys.dataset.map(order_of_set)
    keys = keys.sort_values(["set_order", "model", "score"], ascending=[True, True, False], na_position="last")
    wide = wide.loc[pd.MultiIndex.from_frame(keys[["dataset", "model", "method"]])]
    wide.columns.name = None
    return wide.reset_index()


def verdicts(summary: pd.DataFrame, long_names: dict[str, str] | None = None, baseline: str = "the centre prior"
             ) -> str:
    """A Markdown list, one line per non-control method: the metrics on which it beats the baseline, and those
    on which it does not (``beats_baseline`` from ``summarise``); per data set, and per model where a data set has
    several. A method the model could not serve is said to be not applicable, with the reason."""
    long_names = long_names or {}
    several_models = {"dataset", "model"} <= set(summary) and summary.groupby("dataset").model.nunique().max() > 1
    keys = ["dataset", "model"] if several_models else ["dataset"]
    groups = list(summary.groupby(keys, sort=False)) if "dataset" in summary else [((None,), summary)]
    lines = []
    for key, rows_of_set in groups:
        key = key if isinstance(key, tuple) else (key,)
        if len(groups) > 1:
            lines.append(f"\nOn **{key[0]}**" + (f", model **{key[1]}**" if len(key) > 1 else "") + ":\n")
        for method, rows in rows_of_set[rows_of_set.family != "control"].groupby("method", sort=False):
            if "applicable" in rows and not rows.applicable.all():
                lines.append(f"- **{long_names.get(method, method)}**: not applicable "
                             f"({rows.not_applicable.iloc[0]}).")
                continue
            won = rows[rows.beats_baseline].metric.tolist()
            lost = rows[~rows.beats_baseline].metric.tolist()
            lines.append(f"- **{long_names.get(method, method)}** beats {baseline} on "
                         f"{', '.join(won) if won else 'no metric'}"
                         + (f"; not on {', '.join(lost)}." if lost else "."))
    return "\n".join(lines).strip()


def ranking_agreement(summary: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, float]:
    """Do methods rank the same way on every data set? The wide table of ``metric`` means (methods x data sets,
    controls included) and the Spearman rank correlation between the first two data sets' columns (NaN when
    there is only one data set)."""
    rows = summary[summary.metric == metric]
    wide = rows.pivot_table(index=["method", "family"], columns="dataset", values="mean")
    wide = wide[list(dict.fromkeys(rows.dataset))].reset_index()
    wide.columns.name = None
    datasets = list(dict.fromkeys(rows.dataset))
    if len(datasets) < 2:
        return wide, float("nan")
    pair = wide[datasets[:2]].dropna()
    return wide, float(pair[datasets[0]].rank().corr(pair[datasets[1]].rank()))


# --- tables the chapters show -------------------------------------------------------------------------------


def cost_table(cube: xr.Dataset) -> pd.DataFrame:
    """What each method costs: its family, the forward and backward passes it declares, and the measured
    seconds per explained image on each data set of ``cube``.

    Parameters
    ----------
    cube : xr.Dataset
        One cube or a merge of several (``medlit.cube.merge_cubes``).

    Returns
    -------
    pd.DataFrame
        One row per method, cheapest first on the first data set's column ``"seconds per image, <data set>"``
        (data set columns in alphabetical order).
    """
    columns = ["dataset", "model"] if cube.sizes["model"] > 1 else "dataset"  # one column per model where several
    seconds = cube.seconds_per_image.to_dataframe().reset_index().pivot_table(
        index="explainer", columns=columns, values="seconds_per_image")
    if cube.sizes["model"] > 1:
        seconds.columns = [f"{d}, {m}" for d, m in seconds.columns]
    cost = pd.DataFrame({"method": cube.explainer.values, "family": cube.family.values,
                         "forward passes": cube.forward_passes.values, "backward passes": cube.backward_passes.values})
    cost = cost.join(seconds.add_prefix("seconds per image, "), on="method")
    return cost.sort_values(cost.columns[-len(seconds.columns)]).reset_index(drop=True)


def explained_sets_table(prepared_sets: dict) -> pd.DataFrame:
    """One row per data set a chapter scores: its kind (the generator, or "real data"), how many images are
    explained and the model's test AUROC.

    Parameters
    ----------
    prepared_sets : dict
        Data set name -> ``medlit.benchmark.Prepared``, as ``run_chapter`` returns them.
    """
    return pd.DataFrame([{"data set": name, "kind": p.splits["test"].attrs.get("generator", "real data"),
                          "explained images": len(p.explained), "model test AUROC": p.record["test_auroc"]}
                         for name, p in prepared_sets.items()])


def class_balance(splits: dict) -> pd.DataFrame:
    """Image counts per split (rows) and finding type (columns) of a data set's ``splits``."""
    counts = pd.DataFrame([{"split": name, "finding": f} for name, s in splits.items() for f in s.meta["finding"]])
    return counts.value_counts(["split", "finding"]).unstack(fill_value=0)


def box_areas(data, label: str = "finding") -> pd.DataFrame:
    """Per image of the SampleSet ``data``: its finding type (in column ``label``), its number of boxes and the
    fraction of the image its boxes cover."""
    return pd.DataFrame({label: data.meta["finding"],
                         "boxes": (~np.isnan(data.boxes[..., 0].numpy())).sum(1),
                         "box area fraction": data.box_masks().float().mean(dim=(1, 2)).numpy()})


def box_size_table(areas: pd.DataFrame, by: str = "finding") -> pd.DataFrame:
    """Per finding type of a ``box_areas`` table: images, mean boxes per image and median box area fraction."""
    return areas.groupby(by).agg(images=("boxes", "size"), boxes_per_image=("boxes", "mean"),
                                 median_box_area=("box area fraction", "median"))


def model_record_table(record: dict) -> pd.DataFrame:
    """One row: the model's name, test AUROC, test accuracy and training time (from ``load_or_train``)."""
    return pd.DataFrame([{"model": record["name"], "test AUROC": record["test_auroc"],
                          "test accuracy": record["test_accuracy"], "training time (s)": record["train_seconds"]}])


def called_positive_by_finding(model, data, threshold: float = 0.5) -> pd.DataFrame:
    """Per finding type of the SampleSet ``data``: the fraction of images ``model`` calls positive (probability
    at least ``threshold``; the sensitivity for findings, the false-positive rate for ``"none"``) and their
    number."""
    from medlit.models.training import predict_proba

    called = pd.DataFrame({"finding": data.meta["finding"],
                           "predicted positive": predict_proba(model, data.images).numpy() >= threshold})
    return called.groupby("finding")["predicted positive"].agg(["mean", "size"]).rename(
        columns={"mean": "fraction called positive", "size": "images"})


def adapter_table() -> pd.DataFrame:
    """Every real-data adapter: its name, the data set it reads, its data card and the files it expects."""
    from medlit.data.adapters import ADAPTERS

    return pd.DataFrame([{"adapter": spec.name, "data set": spec.description, "data card": spec.data_card,
                          "annotation files": ", ".join(spec.annotation_files)} for spec in ADAPTERS.values()])


def dataset_table(used: list[str]) -> pd.DataFrame:
    """Every data set medlit knows: kind, description, data card, and whether it is in ``used`` (scored by the
    method chapters)."""
    from medlit.data import DATASETS

    return pd.DataFrame([{"data set": name, "kind": DATASETS[name].kind, "description": DATASETS[name].description,
                          "data card": DATASETS[name].data_card, "scored by the method chapters": name in used}
                         for name in DATASETS])


def finding_removal_table(prepared_sets: dict) -> pd.DataFrame:
    """``medlit.studies.finding_removal`` on the test split of every embedded data set in ``prepared_sets``
    (only generated sets know their lesion pixels exactly), indexed by data set and substrate."""
    from medlit.studies import finding_removal

    removal = pd.concat([finding_removal(p.model, p.splits["test"]).assign(**{"data set": name})
                         for name, p in prepared_sets.items() if p.splits["test"].attrs.get("generator")])
    return removal.set_index(["data set", "finding pixels replaced by"])


def randomisation_curve(randomisation: xr.Dataset) -> pd.DataFrame:
    """Mean similarity over images per (method, randomisation step, measure) of a ``cascading_randomisation``
    result, in long form with a ``method`` column."""
    return (randomisation.similarity.mean("sample").to_dataframe().reset_index()
            .rename(columns={"explainer": "method"}))


def budget_curves(study: xr.Dataset) -> pd.DataFrame:
    """Mean score per (method, budget, metric) of a ``run_budget_study`` result, with the budget setting's value,
    the seconds per image, and ``method`` labelled with its setting, e.g. ``"rise (n_masks)"``.

    Budget slots a method did not use (it has fewer settings than the longest) are dropped.
    """
    key = ["explainer", "budget"]
    curves = (study.score.mean("sample").to_dataframe().reset_index()[[*key, "metric", "score"]]
              .merge(study.setting_value.to_dataframe().reset_index()[[*key, "setting_value"]], on=key)
              .merge(study.seconds_per_image.to_dataframe().reset_index()[[*key, "seconds_per_image"]], on=key)
              .dropna(subset=["setting_value"]))
    setting = dict(zip(study.explainer.values.tolist(), study.setting.values.tolist()))
    return curves.assign(method=curves.explainer + " (" + curves.explainer.map(setting) + ")")


def budget_cost_table(study: xr.Dataset) -> pd.DataFrame:
    """Seconds per image of each method at each budget setting of a ``run_budget_study`` result."""
    curves = budget_curves(study)
    cost = curves.drop_duplicates(["explainer", "budget"])[["method", "setting_value", "seconds_per_image"]]
    return cost.rename(columns={"setting_value": "budget setting", "seconds_per_image": "seconds per image"})


def cube_provenance(paths: list) -> pd.DataFrame:
    """One row per cube file: its data set and where it came from (chapter, profile, device, commit, time)."""
    from medlit.cube import read_cube

    cubes = {p: read_cube(p) for p in paths}
    return pd.DataFrame([{"cube": p.name, "data set": str(c.dataset.values[0]),
                          **{k: c.attrs.get(k) for k in ("chapter", "profile", "device", "git_commit", "created")}}
                         for p, c in cubes.items()])


# --- prose computed from tables -------------------------------------------------------------------------------


def best_versus_lines(summary: pd.DataFrame, metric: str = "pointing_game", long_names: dict | None = None,
                      reference: str = "gradcam", controls: tuple = ("random", "centre_prior"),
                      baseline: str = "centre_prior", baseline_name: str = "the centre prior") -> str:
    """A Markdown list, one line per data set: the best method on ``metric`` (neither ``reference`` nor a
    control) beside ``reference`` and ``baseline``.

    Parameters
    ----------
    summary : pd.DataFrame
        Rows of ``summarise`` (one model per data set).
    metric : str
        A hit-rate metric (the line reads "hits 0.80 of the images").
    long_names : dict, optional
        Method -> the name written in the text; methods not in it are written as they are.
    reference, controls, baseline, baseline_name
        The method the best is compared with, the methods that cannot be "best", and the control shown last.
    """
    long_names = long_names or {}
    lines = []
    for name, rows in summary[summary.metric == metric].groupby("dataset", sort=False):
        scores = rows.set_index("method")["mean"]
        best = scores.drop([reference, *controls]).idxmax()
        lines.append(f"- **{name}**: {long_names.get(best, best)} hits {scores[best]:.2f} of the images, "
                     f"{long_names.get(reference, reference)} {scores[reference]:.2f}, "
                     f"{baseline_name} {scores[baseline]:.2f}.")
    return "\n".join(lines)


def randomisation_sentence(verdict: pd.DataFrame, summary: pd.DataFrame, long_names: dict | None = None,
                           metric: str = "pointing_game") -> str:
    """Markdown naming the non-control methods that fail the randomisation check (``changes`` False in
    ``medlit.studies.sanity_verdict``) and whether the best localiser by ``metric`` (over all rows of
    ``summary``) is one of them."""
    long_names = long_names or {}
    failing = [m for m, changes, family in zip(verdict.index, verdict.changes, verdict.family)
               if not changes and family != "control"]
    localisers = summary[(summary.metric == metric) & (summary.family != "control")]
    best = localisers.sort_values("mean", ascending=False).method.iloc[0]
    named = ", ".join(f"**{long_names.get(m, m)}**" for m in failing) if failing else "none"
    return ("Methods whose maps stay similar after the whole network is randomised (they fail the check): "
            f"{named}. The best localiser by the {metric.replace('_', ' ')}, **{long_names.get(best, best)}**, "
            + ("was not part of the check." if best not in verdict.index else
               "fails the check: its good localisation owes much to the image itself, not only to the model."
               if best in failing else "passes it."))


def beats_control_lines(summary: pd.DataFrame, metrics: list[str], baseline_name: str = "the centre prior") -> str:
    """A Markdown list, one line per (data set, metric): the non-control methods whose gain over the baseline is
    clearly positive (``beats_baseline`` from ``summarise``), or that none is."""
    gains = summary[(summary.family != "control") & summary.metric.isin(metrics)]
    lines = []
    for (dataset, metric), rows in gains.groupby(["dataset", "metric"], sort=False):
        winners = [m for m, b in zip(rows.method, rows.beats_baseline) if b]
        lines.append(f"- {dataset}, {metric}: " + (f"beat {baseline_name}: {', '.join(winners)}" if winners
                                                    else f"no method beats {baseline_name}"))
    return "\n".join(lines)


def cam_stage_table(summary: pd.DataFrame, prepared_sets: dict, methods: list[str], metrics: list[str],
                    digits: int = 3) -> pd.DataFrame:
    """CAM methods read at each feature stage, beside the grid that stage has: one row per (data set, method,
    stage), one "mean [low, high]" column per metric.

    Parameters
    ----------
    summary : rows of ``summarise`` holding ``methods`` and their stage variants (``gradcam_stage-1``, ...)
    prepared_sets : data set -> ``Prepared``, whose model gives each stage's grid on an explained image
    methods : the CAM methods' names at the last stage (``"gradcam"``, ...)
    """
    from medlit.explain.registry import stage_name
    from medlit.models.capabilities import CAM_STAGES
    from medlit.models.inspect import feature_grid

    fmt = f"{{:.{digits}f}}"
    rows = []
    for dataset, prepared in prepared_sets.items():
        x = prepared.explained.images[:1].to(prepared.device)
        grids = {stage: "{} x {}".format(*feature_grid(prepared.model, x, stage)) for stage in CAM_STAGES}
        for method in methods:
            for stage in CAM_STAGES:
                name = stage_name(method, stage)
                picked = summary[(summary.dataset == dataset) & (summary.method == name)].set_index("metric")
                if picked.empty:
                    continue
                row = {"data set": dataset, "method": method, "stage": stage, "feature grid": grids[stage]}
                for metric in metrics:
                    r = picked.loc[metric]
                    row[metric] = f"{fmt.format(r['mean'])} [{fmt.format(r['ci_low'])}, {fmt.format(r['ci_high'])}]"
                rows.append(row)
    return pd.DataFrame(rows)


# --- chapter endings and the landing page -----------------------------------------------------------------------


def _long(method: str) -> str:
    from medlit.explain import EXPLAINERS

    return EXPLAINERS[method].long_name if method in EXPLAINERS else method


def _interval(row) -> str:
    return f"{row['mean']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def in_short(summary: pd.DataFrame, metric: str = "pointing_game", baseline: str = "centre_prior") -> list[str]:
    """Findings of a chapter, computed from its summary: per data set, the best method on ``metric`` against the
    baseline, and how many methods beat the baseline on it (``beats_baseline``)."""
    findings = []
    rows = summary[summary.metric == metric]
    for dataset, of_set in rows.groupby("dataset", sort=False):
        methods = of_set[of_set.family != "control"].dropna(subset=["mean"])
        if methods.empty:
            continue
        best = methods.sort_values("mean", ascending=(of_set.direction.iloc[0] == "lower")).iloc[0]
        base = of_set[of_set.method == baseline]
        control = _long(baseline).replace(" (control)", "").lower()
        versus = f", against {_interval(base.iloc[0])} for the {control}" if len(base) else ""
        findings.append(f"On **{dataset}**, {_long(best.method)} scores best on the {metric.replace('_', ' ')}: "
                        f"{_interval(best)}{versus}.")
        findings.append(f"On **{dataset}**, {int(methods.beats_baseline.sum())} of {len(methods)} methods beat the "
                        f"{control} on the {metric.replace('_', ' ')} (paired bootstrap interval above zero).")
    return findings


def short_list(findings: list[str]) -> str:
    """Markdown bullet list of computed findings (an "In short" section)."""
    return "\n".join(f"- {f}" for f in findings)


def cited_keys(text: str) -> list[str]:
    """BibTeX keys cited with ``{cite}`` / ``{cite:p}`` / ``{cite:t}`` roles in ``text``, in order of first use."""
    import re

    keys = []
    for group in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", text):
        keys.extend(k.strip() for k in group.split(","))
    return list(dict.fromkeys(keys))


def chapter_references(chapter: str) -> str:
    """Markdown list of the works a chapter cites (its markdown cells' ``{cite}`` roles), formatted from
    ``book/references.bib``: authors, year, title, venue."""
    import json

    from pybtex.database import parse_file

    from medlit.paths import project_root

    root = project_root()
    notebook = json.loads((root / "chapters" / f"{chapter}.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    bib = parse_file(str(root / "book" / "references.bib")).entries
    lines = []
    for key in cited_keys(text):
        if key not in bib:
            raise KeyError(f"{chapter}: cites {key!r}, which book/references.bib does not hold")
        entry = bib[key]
        people = [" ".join(p.last_names) for p in entry.persons.get("author", [])]
        authors = people[0] + (" et al." if len(people) > 2 else f" and {people[1]}" if len(people) == 2 else "") \
            if people else entry.fields.get("organization", "")
        venue = entry.fields.get("journal") or entry.fields.get("booktitle") or entry.fields.get("publisher") or ""
        title = entry.fields.get("title", "").replace("{", "").replace("}", "")
        lines.append(f"- {authors} ({entry.fields.get('year', 'n.d.')}). {title}." + (f" *{venue}*." if venue else ""))
    return "\n".join(lines)


def headline(cube: xr.Dataset, metric: str = "pointing_game") -> str:
    """The landing page's headline results, from the merged cubes: per data set the model's AUROC, the best
    method on ``metric`` against the centre prior, and how many methods beat it."""
    models = model_table(cube)
    summary = summarise(cube)
    lines = []
    for dataset in dict.fromkeys(summary.dataset):
        auroc = models[models.dataset == dataset]["test AUROC"]
        findings = " ".join(in_short(summary[summary.dataset == dataset], metric))
        lines.append(f"- **{dataset}** (model test AUROC {float(auroc.iloc[0]):.3f}): "
                     + findings.replace(f"On **{dataset}**, ", ""))
    return "\n".join(lines)
