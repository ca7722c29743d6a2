"""The same method on two models: paired differences of their scores on the same images.

Two model kinds explained on the same images (every method chapter explains the first positive test images of a
data set, whatever the model; a kind the profile caps gets the first of them) can be compared method by method, on
the images both were explained on. The difference mixes the model and the method:
a ViT's occlusion map can localise worse than the CNN's because the ViT uses the image differently, not because
occlusion works worse on transformers. The tables say so; the numbers cannot separate the two.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from medlit.stats import holm, paired_bootstrap_difference, sign_flip_test

CAVEAT = ("A difference between two models' scores for one method mixes the model and the method: it says how the "
          "method's maps of these two trained models differ, not which architecture the method suits.")


def model_of_kind(cube: xr.Dataset, kind: str) -> str:
    """The cube's ``model`` label of model kind ``kind``; a clear error when the cube has none or several."""
    kinds = [str(k) for k in cube.model_kind.values]
    labels = [str(m) for m in cube.model.values][:len(kinds)]
    found = [label for label, k in zip(labels, kinds) if k == kind]
    if len(found) != 1:
        raise ValueError(f"model_of_kind: the cube holds {len(found)} models of kind {kind!r} "
                         f"(models: {', '.join(f'{m} ({k})' for m, k in zip(labels, kinds))})")
    return found[0]


def model_comparison(cube: xr.Dataset, methods: list[str], metrics: list[str], *, reference: str, other: str,
                     replicates: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per data set, method and metric: each model's mean score on the images both scored, and the paired
    difference ``other - reference`` with its 95 % bootstrap interval and a sign-flip p-value, Holm-adjusted over
    the methods of one data set and metric.

    ``reference`` and ``other`` are model kinds (e.g. ``"resnet10"``, ``"vit"``). Methods that either model could
    not serve, or that neither cube holds, are left out. Columns: ``dataset, metric, method, family, n,
    <reference>, <other>, difference, ci_low, ci_high, p, p_holm, direction``.
    """
    first, second = model_of_kind(cube, reference), model_of_kind(cube, other)
    rows = []
    for dataset in cube.dataset.values:
        for metric in metrics:
            for method in methods:
                if method not in cube.explainer.values:
                    continue
                a = cube.score.sel(dataset=dataset, model=second, explainer=method, metric=metric).values
                b = cube.score.sel(dataset=dataset, model=first, explainer=method, metric=metric).values
                both = ~(np.isnan(a) | np.isnan(b))
                if both.sum() < 2:
                    continue
                mean, low, high, n = paired_bootstrap_difference(a[both], b[both], replicates=replicates, seed=seed)
                rows.append({"dataset": str(dataset), "metric": metric, "method": method,
                             "family": str(cube.family.sel(explainer=method).values), "n": int(n),
                             reference: float(b[both].mean()), other: float(a[both].mean()),
                             "difference": mean, "ci_low": low, "ci_high": high,
                             "p": sign_flip_test(a[both], b[both], seed=seed),
                             "direction": str(cube.direction.sel(metric=metric).values)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = np.nan
    for _, index in table.groupby(["dataset", "metric"], sort=False).groups.items():
        table.loc[index, "p_holm"] = holm(table.loc[index, "p"].to_numpy())
    return table


def comparison_lines(table: pd.DataFrame, reference: str, other: str, metric: str, *, level: float = 0.05) -> str:
    """A Markdown list: per data set, the methods whose ``metric`` is clearly better or worse on ``other`` than on
    ``reference`` (Holm-adjusted p below ``level``), and those with no clear difference; the caveat last."""
    lines = []
    rows = table[table.metric == metric]
    for dataset, of_set in rows.groupby("dataset", sort=False):
        sign = 1.0 if of_set.direction.iloc[0] == "higher" else -1.0
        clear = of_set.p_holm < level
        better = of_set[clear & (sign * of_set.difference > 0)].method.tolist()
        worse = of_set[clear & (sign * of_set.difference < 0)].method.tolist()
        same = of_set[~clear].method.tolist()
        parts = [f"better on {other}: {', '.join(better) or 'none'}", f"better on {reference}: {', '.join(worse) or 'none'}",
                 f"no clear difference: {', '.join(same) or 'none'}"]
        lines.append(f"- **{dataset}**, {metric}: " + "; ".join(parts) + ".")
    lines.append(f"\n{CAVEAT}")
    return "\n".join(lines)
