"""Leaderboards from cubes: means, bootstrap intervals, and the paired comparison with a control."""

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
    ``beats_baseline`` is True when the whole interval of that signed difference lies above 0.
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
        row = key | {"method": method, "metric": metric, "family": str(block.family.sel(explainer=method).values),
                     "direction": direction, "mean": mean, "ci_low": low, "ci_high": high, "n": n,
                     "seconds_per_image": float(block.seconds_per_image.sel(explainer=method))}
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

    Where a metric was undefined (NaN) for some images, the cell ends with "n=k" images actually averaged.
    """
    table = summary if metrics is None else summary[summary.metric.isin(metrics)]
    fmt = f"{{:.{digits}f}}"
    full = table.groupby(["dataset", "model"])["n"].transform("max")

    def cell(r):
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
    keys = keys.sort_values(["set_order", "model", "score"], ascending=[True, True, False])
    wide = wide.loc[pd.MultiIndex.from_frame(keys[["dataset", "model", "method"]])]
    wide.columns.name = None
    return wide.reset_index()


def verdicts(summary: pd.DataFrame, long_names: dict[str, str] | None = None, baseline: str = "the centre prior"
             ) -> str:
    """A Markdown list, one line per non-control method: the metrics on which it beats the baseline, and those
    on which it does not (``beats_baseline`` from ``summarise``)."""
    long_names = long_names or {}
    datasets = list(dict.fromkeys(summary.dataset)) if "dataset" in summary else [None]
    lines = []
    for dataset in datasets:
        rows_of_set = summary if dataset is None else summary[summary.dataset == dataset]
        if len(datasets) > 1:
            lines.append(f"\nOn **{dataset}**:\n")
        for method, rows in rows_of_set[rows_of_set.family != "control"].groupby("method", sort=False):
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
