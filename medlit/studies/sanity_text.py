"""Sentences and tables that report a sanity check on one data set.

A check runs on one data set's model, so what it says about "the best localiser" must name that data set's best
localiser, not the leader of several data sets pooled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from medlit.studies.randomisation import DEPENDS, FAILS, NOT_CHECKED, UNDECIDED


def _verdict_words(verdict: pd.DataFrame) -> pd.Series:
    """The verdict in words (``medlit.studies.randomisation.DEPENDS`` ...): its ``verdict`` column, else read from
    ``depends_on_model`` or the older ``changes``."""
    if "verdict" in verdict:
        return verdict["verdict"].astype(str)
    column = "depends_on_model" if "depends_on_model" in verdict else "changes"
    return pd.Series(np.where(verdict[column].astype(bool), DEPENDS, FAILS), index=verdict.index)


def _numbers(verdict: pd.DataFrame, method: str) -> str:
    """" (SSIM 0.58 against 0.60 between two untrained networks)" when the verdict has both numbers, else ""."""
    row = verdict.loc[method]
    observed = row.get("ssim_full", row.get("ssim_observed", np.nan))
    null = row.get("ssim_null", np.nan)
    if not (np.isfinite(observed) and np.isfinite(null)):
        return ""
    return f" (SSIM {observed:.2f}, against {null:.2f} between two untrained networks)"


def best_localiser(summary: pd.DataFrame, dataset: str, metric: str, among=None) -> str | None:
    """The non-control method with the highest ``mean`` of ``metric`` on ``dataset`` in ``summary`` rows
    (columns dataset, method, metric, family, mean), among the methods ``among`` when given; None if there is
    none. Ties go to the first row."""
    rows = summary[(summary.dataset == dataset) & (summary.metric == metric) & (summary.family != "control")]
    if among is not None:
        rows = rows[rows.method.isin(list(among))]
    rows = rows.dropna(subset=["mean"])
    if rows.empty:
        return None
    return str(rows.method.iloc[int(np.argmax(rows["mean"].to_numpy()))])


def sanity_sentence(verdict: pd.DataFrame, summary: pd.DataFrame, dataset: str, *, long_names: dict | None = None,
                    metric: str = "pointing_game", check: str = "the randomisation check",
                    other_model: str = "a randomised network's") -> str:
    """Markdown for one data set: the non-control methods that fail ``check`` and whether the data set's best
    localiser passes it.

    Parameters
    ----------
    verdict : the check's verdict on ``dataset`` (``sanity_verdict``, ``data_randomisation_verdict``; indexed by
        explainer, with ``family`` and ``verdict``, ``depends_on_model`` or ``changes``); methods it calls
        undecided are named in a sentence of their own
    summary : summary rows (columns dataset, method, metric, family, mean); only those of ``dataset`` are read
    metric : the metric that ranks the localisers
    check, other_model : how the sentence names the check and the model the maps are compared with (for the data
        randomisation test: ``"the data randomisation test"``, ``"a model trained on shuffled labels'"``)

    The best localiser is the non-control method with the highest mean ``metric`` on ``dataset``. When it was not
    checked, the sentence says so and judges the best of the checked methods instead.

    Raises
    ------
    ValueError
        if ``summary`` has no non-control row of ``metric`` for ``dataset``.
    """
    long_names = long_names or {}

    def named(method: str) -> str:
        return f"**{long_names.get(method, method)}**"

    words = _verdict_words(verdict)
    checked_methods = [m for m in verdict.index if verdict.loc[m, "family"] != "control"]
    failing = [m for m in checked_methods if words[m] == FAILS]
    undecided = [m for m in checked_methods if words[m] == UNDECIDED]
    best = best_localiser(summary, dataset, metric)
    if best is None:
        raise ValueError(f"no non-control {metric!r} rows for data set {dataset!r} in the summary")
    text = (f"On {dataset}, methods whose maps are no further from {other_model} than two untrained "
            f"networks' maps are from each other (they fail {check}): "
            f"{', '.join(named(m) for m in failing) if failing else 'none'}. ")
    if undecided:
        text += (f"Undecided (their maps on two untrained networks are less alike than the trained model's are to "
                 f"{other_model}): {', '.join(named(m) for m in undecided)}. ")
    what = f"The best localiser on {dataset} by the {metric.replace('_', ' ')}, {named(best)},"

    def judged(method: str) -> str:
        said = {DEPENDS: "passes it", UNDECIDED: "is undecided by it",
                NOT_CHECKED: "could not run on this model, so it was not checked"}.get(
            words[method], "fails it: its localisation owes much to the image itself, not only to the model")
        return said + _numbers(verdict, method) + "."

    if best in verdict.index:
        return text + f"{what} {judged(best)}"
    checked = best_localiser(summary, dataset, metric, among=verdict.index)
    text += f"{what} was not checked."
    if checked is not None:
        text += f" The best checked localiser, {named(checked)}, {judged(checked)}"
    return text


def localisation_baseline_table(ds: xr.Dataset, metric: str, *, digits: int = 2) -> pd.DataFrame:
    """Per method, ``metric`` on the trained model beside the same method on the model that learned nothing
    (fully randomised, or trained on shuffled labels), as "mean [low, high]", with the drop of the means.

    ``ds`` is a result of ``run_randomisation_check`` or ``run_data_randomisation_check`` (its ``localisation_*``
    variables).
    """
    if "localisation_mean" not in ds:
        raise ValueError("this check result holds no localisation scores (it was run without regions)")
    cells = {}
    for model in ds["model"].values:
        mean, low, high = (ds[f"localisation_{part}"].sel(metric=metric, model=model).values
                           for part in ("mean", "low", "high"))
        cells[str(model)] = [f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(m) else "n/a"
                             for m, lo, hi in zip(mean, low, high)]
    means = ds["localisation_mean"].sel(metric=metric)
    table = pd.DataFrame(cells, index=pd.Index(ds["explainer"].values, name="method"))
    table["drop"] = np.round(means.isel(model=0).values - means.isel(model=1).values, digits)
    table.insert(0, "family", ds["family"].values)
    return table
