"""Leaderboards from cubes: means with their intervals, paired comparisons with the strongest control and
between methods, rank intervals; the other tables the chapters show (cost, data, studies) and the prose they
compute from tables.

NaN policy
----------
A score is NaN only where it is undefined for the image: the image has no finding region (a localisation
metric), or the faithfulness curve cannot be defined on it. (A degenerate map is not undefined: it gets the
metric's worst value.) Means, intervals and ranks use the images where the score is defined, and every table
shows how many (``n``). A paired comparison uses the images where both scores are defined (``n_paired``), so a
gain never compares averages over different images. Padding samples of merged cubes (empty ``sample_id``) are
no images at all and are left out everywhere.

The protocol of ``summarise``
-----------------------------
* Interval of a mean: Wilson for hit-rate metrics (``medlit.stats.interval_kind``), percentile bootstrap over
  images otherwise (``interval`` says which).
* Every non-control method is compared, per metric, with the strongest control: the control-family map with the
  best mean in the metric's direction (or the ``baseline`` named). The gain is the paired mean difference,
  positive = better, with its bootstrap interval; ``p_value`` is the two-sided sign-flip permutation test.
* Multiplicity: the family is every (method, metric[, group]) comparison with a control for one (data set,
  model) in one ``summarise`` call; ``p_holm`` is Holm-adjusted over that family.
* ``beats_control``: ``p_holm < 0.05`` and ``gain >= MIN_EFFECT`` and ``gain_low > 0``, in a group of at least
  ``min_group`` images, for a method the model could serve.
* Ranks: 1 = best, controls included, with a bootstrap interval from images resampled jointly for all methods.
  ``tied_with_leader``: the leader, and every method whose paired test against it is not significant after Holm
  over the comparisons with the leader (per data set, model, group and metric).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from medlit.stats import (
    MIN_EFFECT,
    PERMUTATIONS,
    holm,
    interval_kind,
    percentile_interval,
    ranks,
    resample_weights,
    resampled_means,
    sign_flip_pvalues,
    wilson_interval,
)

ALPHA = 0.05  # the family-wise error rate the verdicts are read at


def _replicates(cube: xr.Dataset) -> int:
    settings = cube.attrs.get("profile_settings")
    return int(json.loads(settings)["bootstrap"]) if settings else 1000


def summarise(cube: xr.Dataset, *, baseline: str | None = None, level: float = 0.95,
              replicates: int | None = None, by: str | None = None, bins: int | None = None,
              bin_names: tuple[str, ...] | None = None, min_group: int = 5, permutations: int = PERMUTATIONS,
              seed: int = 0) -> pd.DataFrame:
    """One row per (dataset, model[, group], explainer, metric): the mean score and its interval, the paired
    comparison with the strongest control, and the method's rank with its interval (see the module docstring
    for the protocol and the NaN policy).

    Parameters
    ----------
    cube : xr.Dataset
        A cube or a merge of cubes.
    baseline : str, optional
        Compare with this explainer instead of the strongest control.
    level : float
        Confidence level of every interval.
    replicates : int, optional
        Bootstrap replicates; the cube's profile setting by default.
    by : str, optional
        A per-sample coordinate (dims ``(dataset, sample)`` or ``(dataset, model, sample)``, e.g. ``"finding"``
        or ``"correct"``): rows are computed per group of images.
    bins : int, optional
        With a numeric ``by`` (e.g. ``"box_area_fraction"``): split its values into ``bins`` quantile groups per
        data set and model, labelled with their names and ranges, e.g. ``"low (0.004-0.012)"``.
    bin_names : tuple of str, optional
        Names of the quantile groups, smallest first (default "low", "middle", "high" for 3, "Q1", ... else).
    min_group : int
        Groups of fewer images are kept but flagged ``small_group`` and never "beat" anything.
    permutations, seed
        Monte-Carlo sign patterns of the paired tests (exact below ``medlit.stats.EXACT_MAX`` images); seed of
        every resampling.

    Returns
    -------
    pd.DataFrame
        Columns ``dataset, model, [by,] method, metric, family, direction, n, mean, ci_low, ci_high, interval,
        control, n_paired, gain, gain_low, gain_high, p_value, p_holm, beats_control, rank, rank_low, rank_high,
        tied_with_leader, group_n, small_group, seconds_per_image, applicable, not_applicable``. Tables are for
        readers, so the explainer's column is called ``method``. A method the model could not serve has
        ``applicable`` False, NaN scores and the reason in ``not_applicable``. The control compared with has NaN
        gain and p; the other controls get a gain and p for the reader but stay out of the Holm family and never
        "beat" anything. ``group_n`` is the number of images in the row's group, ``n`` those with a defined score.
    """
    replicates = replicates or _replicates(cube)
    with _single_threaded_blas():
        rows = _summary_rows(cube, baseline, level, replicates, by, bins, bin_names, min_group, permutations, seed)
    return _verdicts_of(pd.DataFrame(rows))


def _single_threaded_blas():
    """The resampling matrices are small: threaded BLAS only adds contention, and is several times slower on a
    busy machine."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    return threadpool_limits(limits=1, user_api="blas")


def _summary_rows(cube, baseline, level, replicates, by, bins, bin_names, min_group, permutations, seed
                  ) -> list[dict]:
    rows = []
    for dataset in cube.dataset.values:
        for model in cube.model.values:
            block = cube.sel(dataset=dataset, model=model)
            present = _present(block)  # merged cubes pad smaller data sets with empty samples
            scores = block.score.transpose("metric", "explainer", "sample").values.astype(np.float64)
            for group, keep in _groups(block, present, by, bins, bin_names):
                weights = resample_weights(int(keep.sum()), replicates, seed) if keep.any() else None
                key = {"dataset": dataset, "model": model} | ({by: group} if by else {})
                for m, metric in enumerate(block.metric.values):
                    rows.extend(_metric_rows(block, str(metric), scores[m][:, keep], baseline, weights, level,
                                             permutations, seed, min_group, key))
    return rows


def _present(block: xr.Dataset) -> np.ndarray:
    """The images of one (data set, model) block: not padding of a smaller data set, and scored by this model (a
    model explained on fewer images has only NaN on the others)."""
    ids = block.sample_id.values
    named = np.array([isinstance(i, str) and i != "" for i in ids.tolist()], dtype=bool)
    scored = np.isfinite(block.score.transpose("sample", ...).values.reshape(len(ids), -1)).any(axis=1)
    return named & scored


def _groups(block: xr.Dataset, present: np.ndarray, by: str | None, bins: int | None,
            bin_names: tuple[str, ...] | None) -> list[tuple[object, np.ndarray]]:
    """(label, mask over samples) per group of the present images: all of them without ``by``."""
    if by is None:
        return [(None, present)]
    if by not in block.coords and by not in block:
        raise KeyError(f"summarise: by={by!r} is not a per-sample coordinate of the cube")
    values = block[by].values
    if values.shape != present.shape:
        raise ValueError(f"summarise: by={by!r} must vary over samples only (per data set and model), "
                         f"found dims {block[by].dims}")
    if bins is None:
        if values.dtype.kind == "f" and np.isin(values[present], (0.0, 1.0)).all():
            # a boolean (``correct``) that merging padded with NaN for a smaller data set: still two groups
            values = np.where(present, values == 1.0, False)
        if values.dtype.kind == "f":
            raise ValueError(f"summarise: by={by!r} is numeric; pass bins= to group it into quantiles")
        return [(g.item() if hasattr(g, "item") else g, present & (values == g)) for g in pd.unique(values[present])]
    return _quantile_groups(values.astype(np.float64), present, bins, bin_names)


def _quantile_groups(values: np.ndarray, present: np.ndarray, bins: int, bin_names: tuple[str, ...] | None
                     ) -> list[tuple[str, np.ndarray]]:
    """Quantile groups of the present, defined ``values``; tied quantiles merge groups, so fewer may come back."""
    if bins < 2:
        raise ValueError(f"summarise: bins must be at least 2, not {bins}")
    defined = present & ~np.isnan(values)
    if not defined.any():
        return []
    edges = np.unique(np.quantile(values[defined], np.linspace(0, 1, bins + 1)))
    codes = np.searchsorted(edges[1:-1], values, side="right")  # group k holds edges[k] <= v < edges[k + 1]
    k = max(len(edges) - 1, 1)
    names = bin_names or {2: ("low", "high"), 3: ("low", "middle", "high")}.get(k) or [f"Q{i + 1}" for i in range(k)]
    if len(names) < k:
        raise ValueError(f"summarise: {k} groups need {k} bin_names, got {len(names)}")
    groups = []
    for i in range(k):
        keep = defined & (codes == i)
        if keep.any():
            lo, hi = values[keep].min(), values[keep].max()
            groups.append((f"{names[i]} ({lo:.3g}-{hi:.3g})", keep))
    return groups


def _strongest_control(names, families, applicable, means, sign, baseline: str | None) -> int | None:
    """Index of the control compared with: ``baseline`` when named, else the control with the best mean."""
    if baseline is not None:
        if baseline not in names:
            raise ValueError(f"summarise: baseline {baseline!r} is not an explainer of the cube {list(names)}")
        return names.index(baseline)
    candidates = [i for i, f in enumerate(families) if f == "control" and applicable[i] and np.isfinite(means[i])]
    return max(candidates, key=lambda i: sign * means[i]) if candidates else None


def _metric_rows(block: xr.Dataset, metric: str, x: np.ndarray, baseline: str | None, weights, level: float,
                 permutations: int, seed: int, min_group: int, key: dict) -> list[dict]:
    """The rows of one metric: ``x`` holds its scores, (explainers, images of the group)."""
    direction = str(block.direction.sel(metric=metric).values)
    sign = 1.0 if direction == "higher" else -1.0
    names = [str(e) for e in block.explainer.values]
    families = [str(f) for f in block.family.values]
    reasons = ([str(r) for r in block.not_applicable.values] if "not_applicable" in block else [""] * len(names))
    applicable = [r == "" for r in reasons]
    group_n = x.shape[1]
    defined = ~np.isnan(x)
    n = defined.sum(axis=1)
    with np.errstate(invalid="ignore"):
        means = np.where(n > 0, np.where(defined, x, 0).sum(axis=1) / np.maximum(n, 1), np.nan)
    boot = resampled_means(x, weights) if weights is not None else np.full((1, len(names)), np.nan)
    low, high, kind = _mean_intervals(x, n, boot, metric, level)

    control = _strongest_control(names, families, applicable, means, sign, baseline)
    gain = gain_low = gain_high = p = np.full(len(names), np.nan)
    n_paired = np.zeros(len(names), dtype=int)
    if control is not None:
        diff = sign * (x - x[control])  # positive = better than the control
        diff[control] = np.nan  # the control against itself is no comparison
        n_paired = (~np.isnan(diff)).sum(axis=1)
        with np.errstate(invalid="ignore"):
            gain = np.where(n_paired > 0, np.nansum(diff, axis=1) / np.maximum(n_paired, 1), np.nan)
        gain_low, gain_high = percentile_interval(resampled_means(diff, weights), level) if weights is not None \
            else (gain.copy(), gain.copy())
        p = sign_flip_pvalues(diff, permutations=permutations, seed=seed)

    observed_rank, rank_low, rank_high = _rank_intervals(means, boot, direction, level)
    tied = _tied_with_leader(x, sign, observed_rank, permutations, seed)
    seconds = block.seconds_per_image.values
    rows = []
    for i, method in enumerate(names):
        rows.append(key | {
            "method": method, "metric": metric, "family": families[i], "direction": direction,
            "n": int(n[i]), "mean": float(means[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
            "interval": kind, "control": names[control] if control is not None else "",
            "n_paired": int(n_paired[i]), "gain": float(gain[i]), "gain_low": float(gain_low[i]),
            "gain_high": float(gain_high[i]), "p_value": float(p[i]),
            "rank": observed_rank[i], "rank_low": rank_low[i], "rank_high": rank_high[i],
            "tied_with_leader": bool(tied[i]), "group_n": group_n, "small_group": group_n < min_group,
            "seconds_per_image": float(seconds[i]), "applicable": applicable[i], "not_applicable": reasons[i]})
    return rows


def _mean_intervals(x: np.ndarray, n: np.ndarray, boot: np.ndarray, metric: str, level: float):
    """Per row of ``x``: (low, high) and the interval's name, Wilson for hit rates, bootstrap otherwise."""
    kind = interval_kind(metric)
    if kind == "proportion":
        finite = x[~np.isnan(x)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise ValueError(f"summarise: {metric} is read as a hit rate but has scores outside [0, 1]")
        bounds = np.array([wilson_interval(float(np.nansum(row)), int(k), level) for row, k in zip(x, n)])
        return bounds[:, 0], bounds[:, 1], "wilson"
    low, high = percentile_interval(boot, level)
    few = n < 2  # one image has no spread to resample
    return np.where(few, np.nan, low), np.where(few, np.nan, high), "bootstrap"


def _rank_intervals(means: np.ndarray, boot: np.ndarray, direction: str, level: float):
    """Observed ranks and their bootstrap percentile interval; NaN for methods without a defined mean."""
    defined = np.isfinite(means)
    observed = np.where(defined, ranks(means, direction), np.nan)
    replicated = ranks(np.where(defined, boot, np.nan), direction)  # undefined methods rank last, never ahead
    alpha = (1 - level) / 2
    low = np.quantile(replicated, alpha, axis=0, method="lower")
    high = np.quantile(replicated, 1 - alpha, axis=0, method="higher")
    return observed, np.where(defined, low, np.nan), np.where(defined, high, np.nan)


def _tied_with_leader(x: np.ndarray, sign: float, observed_rank: np.ndarray, permutations: int, seed: int
                      ) -> np.ndarray:
    """True for the leader (rank 1, the first in order on ties) and the methods its Holm-adjusted paired tests
    cannot separate from it."""
    tied = np.zeros(len(x), dtype=bool)
    if not np.isfinite(observed_rank).any():
        return tied
    leader = int(np.nanargmin(observed_rank))
    diff = sign * (x[leader] - x)
    diff[leader] = np.nan
    adjusted = holm(sign_flip_pvalues(diff, permutations=permutations, seed=seed))
    tied = adjusted >= ALPHA  # NaN (no image in common, or not applicable) is not "tied"
    tied[leader] = True
    return tied


def _verdicts_of(table: pd.DataFrame) -> pd.DataFrame:
    """Holm over each (data set, model)'s family of control comparisons, then the ``beats_control`` verdict."""
    if table.empty:
        return table
    compared = (table.family != "control") & table.p_value.notna()
    table["p_holm"] = np.nan
    for index in table[compared].groupby(["dataset", "model"], sort=False).groups.values():
        table.loc[index, "p_holm"] = holm(table.loc[index, "p_value"].to_numpy())
    table["beats_control"] = (compared & (table.p_holm < ALPHA) & (table.gain >= MIN_EFFECT)
                              & (table.gain_low > 0) & ~table.small_group & table.applicable).astype(bool)
    order = [c for c in table.columns if c not in ("p_holm", "beats_control")]
    at = order.index("p_value") + 1
    return table[order[:at] + ["p_holm", "beats_control"] + order[at:]]


def leader_group(summary: pd.DataFrame, dataset: str, model: str, metric: str) -> list[str]:
    """The methods that cannot be separated from the leader on ``metric`` (``tied_with_leader``), best first."""
    rows = summary[(summary.dataset == dataset) & (summary.model == model) & (summary.metric == metric)
                   & summary.tied_with_leader]
    if rows.empty:
        raise ValueError(f"leader_group: no rows for {dataset}, {model}, {metric} (or no defined mean)")
    return rows.sort_values(["rank", "mean"], ascending=[True, rows.direction.iloc[0] == "lower"]).method.tolist()


def pairwise_table(cube: xr.Dataset, dataset: str, model: str, metric: str, methods: list[str] | None = None, *,
                   level: float = 0.95, replicates: int | None = None, permutations: int = PERMUTATIONS,
                   seed: int = 0) -> pd.DataFrame:
    """Every pair of ``methods`` compared on ``metric``, for the reader who asks "is A really better than B?".

    Parameters
    ----------
    cube, dataset, model, metric
        Where to read the scores.
    methods : list of str, optional
        The methods to compare (every explainer by default), in the order their pairs are listed.

    Returns
    -------
    pd.DataFrame
        One row per pair (``method``, ``versus``): ``n_paired`` images where both are defined, ``gain`` (the
        paired mean difference, positive = ``method`` better), ``gain_low``, ``gain_high``, the sign-flip
        ``p_value`` and ``p_holm``, Holm-adjusted over the pairs of this table.
    """
    block = cube.sel(dataset=dataset, model=model)
    methods = methods or [str(e) for e in block.explainer.values]
    missing = [m for m in methods if m not in block.explainer.values]
    if missing:
        raise ValueError(f"pairwise_table: {missing} are not explainers of the cube")
    keep = _present(block)
    sign = 1.0 if str(block.direction.sel(metric=metric).values) == "higher" else -1.0
    x = block.score.sel(metric=metric, explainer=methods).transpose("explainer", "sample").values[:, keep]
    pairs = [(i, j) for i in range(len(methods)) for j in range(i + 1, len(methods))]
    if not pairs:
        return pd.DataFrame(columns=["method", "versus", "n_paired", "gain", "gain_low", "gain_high", "p_value",
                                     "p_holm"])
    diff = np.array([sign * (x[i] - x[j]) for i, j in pairs], dtype=np.float64)
    weights = resample_weights(int(keep.sum()), replicates or _replicates(cube), seed)
    with _single_threaded_blas():
        low, high = percentile_interval(resampled_means(diff, weights), level)
        p = sign_flip_pvalues(diff, permutations=permutations, seed=seed)
    n_paired = (~np.isnan(diff)).sum(axis=1)
    return pd.DataFrame({"method": [methods[i] for i, _ in pairs], "versus": [methods[j] for _, j in pairs],
                         "n_paired": n_paired, "gain": [float(np.nanmean(d)) if k else np.nan
                                                        for d, k in zip(diff, n_paired)],
                         "gain_low": low, "gain_high": high, "p_value": p, "p_holm": holm(p)})


def model_table(cube: xr.Dataset) -> pd.DataFrame:
    """The models' own test accuracy and AUROC, to read beside every explanation score."""
    return (xr.Dataset({"test AUROC": cube.model_auroc, "test accuracy": cube.model_accuracy})
            .to_dataframe().reset_index())


def _cell(row, digits: int, full: int) -> str:
    """ "mean [low, high]" (the interval one digit shorter than the mean), "n=k" when fewer than ``full`` images."""
    if not row.get("applicable", True):
        return "not applicable"
    if not np.isfinite(row["mean"]):
        return "undefined"
    short = max(digits - 1, 1)
    text = (f"{row['mean']:.{digits}f} [{row['ci_low']:.{short}f}, {row['ci_high']:.{short}f}]"
            if np.isfinite(row["ci_low"]) else f"{row['mean']:.{digits}f}")
    return text + (f" n={row['n']}" if row["n"] < full else "")


def leaderboard(summary: pd.DataFrame, metrics: list[str] | None = None, digits: int = 3) -> pd.DataFrame:
    """A wide table: methods as rows, one "mean [low, high]" column per metric, best first on the first metric.

    The interval is the one ``summarise`` chose (Wilson for hit rates, bootstrap otherwise, see its
    ``interval`` column). Where a metric was undefined (NaN) for some images, the cell ends with "n=k" images
    actually averaged; a method the model could not serve reads "not applicable" and is listed last.
    """
    table = summary if metrics is None else summary[summary.metric.isin(metrics)]
    full = table.groupby(["dataset", "model"])["n"].transform("max")
    cell = pd.Series([_cell(r, digits, f) for (_, r), f in zip(table.iterrows(), full)], index=table.index,
                     dtype=object)
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


def control_name(method: str) -> str:
    """How prose names a control map: "the centre prior" for ``centre_prior``, the name itself if unknown."""
    from medlit.explain import EXPLAINERS

    if method not in EXPLAINERS:
        return method
    import re

    # long names mark controls with a parenthesis, "(control)" or "(control, no model)": prose leaves it out
    return "the " + re.sub(r"\s*\(control[^)]*\)", "", EXPLAINERS[method].long_name).lower()


def _versus(rows: pd.DataFrame, fallback: str) -> dict[str, str]:
    """Metric -> the name of the control its comparison was made against (``fallback`` without a control column)."""
    if "control" not in rows:
        return {m: fallback for m in rows.metric}
    return {m: control_name(c) if c else fallback for m, c in zip(rows.metric, rows.control)}


def _beats(rows: pd.DataFrame) -> pd.Series:
    return rows["beats_control"].fillna(False).astype(bool)


def verdicts(summary: pd.DataFrame, long_names: dict[str, str] | None = None, baseline: str | None = None) -> str:
    """A Markdown list, one line per non-control method: the metrics on which it beats the strongest control
    (``beats_control`` from ``summarise``: Holm-significant, a gain of at least ``MIN_EFFECT``, its interval
    above 0), and those on which it does not; per data set, and per model where a data set has several.

    The control compared with is named (per metric when the strongest control differs between metrics);
    ``baseline`` overrides that name. A method the model could not serve is said to be not applicable, with the
    reason."""
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
            versus = {m: baseline for m in rows.metric} if baseline else _versus(rows, "the control")
            beats = _beats(rows)
            won, lost = rows[beats].metric.tolist(), rows[~beats].metric.tolist()
            if len(set(versus.values())) == 1:
                lines.append(f"- **{long_names.get(method, method)}** beats {next(iter(versus.values()))} on "
                             f"{', '.join(won) if won else 'no metric'}"
                             + (f"; not on {', '.join(lost)}." if lost else "."))
                continue
            won_text, lost_text = (", ".join(f"{m} ({versus[m]})" for m in ms) for ms in (won, lost))
            lines.append(f"- **{long_names.get(method, method)}** beats the strongest control on "
                         f"{won_text or 'no metric'}" + (f"; not on {lost_text}." if lost else "."))
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
    (only generated sets know their lesion pixels exactly), indexed by data set and substrate; computed once per
    data set and model and shared by the chapters (``run_finding_removal``)."""
    from medlit.studies.substrate_check import run_finding_removal

    removal = pd.concat([run_finding_removal(p).assign(**{"data set": name})
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


def _by_set(summary: pd.DataFrame):
    """(label, rows) per data set, or per (data set, model) where a data set has several models."""
    several = "model" in summary and summary.groupby("dataset").model.nunique().max() > 1
    if not several:
        return [(d, rows) for d, rows in summary.groupby("dataset", sort=False)]
    return [(f"{d}, model {m}", rows) for (d, m), rows in summary.groupby(["dataset", "model"], sort=False)]


def _compared_control(rows: pd.DataFrame, fallback: str) -> str:
    """The control the rows of one (data set, model, metric) were compared with (``fallback`` if none is named)."""
    named = [c for c in rows.get("control", pd.Series(dtype=object)).dropna() if c]
    return named[0] if named else fallback


def best_versus_lines(summary: pd.DataFrame, metric: str = "pointing_game", long_names: dict | None = None,
                      reference: str = "gradcam", controls: tuple = ("random", "centre_prior"),
                      baseline: str | None = None, baseline_name: str | None = None) -> str:
    """A Markdown list, one line per data set (and model, where a data set has several): the best method on
    ``metric`` (neither ``reference`` nor a control) beside ``reference`` and the control it was compared with,
    and whether it beats that control (``beats_control``) when the summary says.

    Parameters
    ----------
    summary : pd.DataFrame
        Rows of ``summarise``.
    metric : str
        A hit-rate metric (the line reads "hits 0.80 of the images").
    long_names : dict, optional
        Method -> the name written in the text; methods not in it are written as they are.
    reference, controls
        The method the best is compared with, and methods that cannot be "best" (besides the control family).
    baseline, baseline_name
        The control shown last and its name in the text; by default the control ``summarise`` compared with (the
        strongest), else ``"centre_prior"``.
    """
    long_names = long_names or {}
    lines = []
    for name, rows in _by_set(summary[summary.metric == metric]):
        scores = rows.set_index("method")["mean"]
        excluded = set(controls) | {reference} | set(rows.method[rows.family == "control"])
        candidates = scores.drop([m for m in scores.index if m in excluded]).dropna()
        lower = "direction" in rows and (rows.direction == "lower").all()
        best = candidates.idxmin() if lower else candidates.idxmax()
        control = baseline or _compared_control(rows, "centre_prior")
        control_text = baseline_name or control_name(control)
        line = (f"- **{name}**: {long_names.get(best, best)} hits {scores[best]:.2f} of the images, "
                f"{long_names.get(reference, reference)} {scores[reference]:.2f}, {control_text} {scores[control]:.2f}")
        if "beats_control" in rows and baseline is None:
            beats = bool(rows.set_index("method").beats_control.get(best, False))
            line += f"; {long_names.get(best, best)} " + ("beats" if beats else "does not clearly beat") + \
                f" {control_text}"
        lines.append(line + ".")
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


def beats_control_lines(summary: pd.DataFrame, metrics: list[str], baseline_name: str | None = None) -> str:
    """A Markdown list, one line per (data set[, model], metric): the non-control methods that beat the control
    they were compared with (``beats_control`` from ``summarise``: Holm-adjusted p < 0.05, a gain of at least
    ``medlit.stats.MIN_EFFECT`` with its interval above 0), or that none does. The control is named from the
    summary's ``control`` column (``baseline_name`` overrides it)."""
    lines = []
    for name, of_set in _by_set(summary[summary.metric.isin(metrics)]):
        for metric, rows in of_set.groupby("metric", sort=False):
            control = baseline_name or control_name(_compared_control(rows, "centre_prior"))
            methods = rows[rows.family != "control"]
            winners = methods.method[_beats(methods)].tolist()
            lines.append(f"- {name}, {metric}: " + (f"beat {control}: {', '.join(winners)}" if winners
                                                     else f"no method beats {control}"))
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
    if not np.isfinite(row["ci_low"]):
        return f"{row['mean']:.2f}"
    return f"{row['mean']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def _leaders_clause(of_set: pd.DataFrame, best: pd.Series, listed: int = 3) -> str:
    """What the paired tests say about the top of the ranking, for the sentence on the best method: whether a
    control leads, and which methods (the first ``listed`` by rank, then a count) cannot be separated from it."""
    if "tied_with_leader" not in of_set:
        return ""
    ranked = of_set.dropna(subset=["rank"]).sort_values("rank")
    leader = ranked.iloc[0]
    if leader.method != best.method:
        return (f"; {control_name(leader.method) if leader.family == 'control' else _long(leader.method)} leads, "
                f"and {_long(best.method)} " + ("cannot be separated from it" if best.tied_with_leader
                                                else "is below it (paired sign-flip test, Holm-adjusted)"))
    tied = ranked[ranked.tied_with_leader & (ranked.method != best.method)]
    if tied.empty:
        return "; the paired tests separate it from every other method"
    methods = [_long(m) for m in tied.method[tied.family != "control"]]
    controls = [control_name(m) for m in tied.method[tied.family == "control"]]
    named = ", ".join(methods[:listed]) + (f" and {len(methods) - listed} more" if len(methods) > listed else "")
    parts = ([f"{len(methods)} other method{'s' if len(methods) > 1 else ''} ({named})"] if methods else []) + (
        [f"{len(controls)} control{'s' if len(controls) > 1 else ''} ({', '.join(controls)})"] if controls else [])
    return f"; the paired tests (Holm-adjusted) cannot separate it from {' or '.join(parts)}"


def in_short(summary: pd.DataFrame, metric: str = "pointing_game", baseline: str | None = None) -> list[str]:
    """Findings of a chapter, computed from its summary: per data set (and model, where several), the best method
    on ``metric`` against the control it was compared with (the strongest control, or ``baseline``), whether the
    leaders can be separated, and how many methods beat that control on it (``beats_control``)."""
    findings = []
    rows = summary[summary.metric == metric]
    for name, of_set in _by_set(rows):
        methods = of_set[of_set.family != "control"].dropna(subset=["mean"])
        if methods.empty:
            continue
        best = methods.sort_values("mean", ascending=(of_set.direction.iloc[0] == "lower")).iloc[0]
        compared = _compared_control(of_set, "centre_prior")  # what beats_control was decided against
        shown = baseline or compared
        base = of_set[of_set.method == shown]
        versus = (f", against {_interval(base.iloc[0])} for the {control_name(shown).removeprefix('the ')}"
                  if len(base) else "")
        what = metric.replace("_", " ")
        findings.append(f"On **{name}**, {_long(best.method)} scores best on the {what}: "
                        f"{_interval(best)}{versus}{_leaders_clause(of_set, best)}.")
        said = control_name(compared).removeprefix("the ")
        findings.append(f"On **{name}**, {int(_beats(methods).sum())} of {len(methods)} methods beat the {said} on "
                        f"the {what} (paired sign-flip test, Holm-adjusted p < {ALPHA}, gain at least {MIN_EFFECT}).")
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
        venue = venue.replace("{", "").replace("}", "")
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


def drop_inverted(summary: pd.DataFrame, inverted: dict) -> pd.DataFrame:
    """``summary`` without the rows of metrics that the substrate check found inverted on their data set.

    ``inverted`` is ``medlit.studies.substrate_check.inverted_metrics``: data set -> {metric: reason}. Verdicts are
    computed from what is left, so no sentence claims that a method is faithful by a metric whose substrate does
    not remove the finding's evidence on that data set; the numbers stay in the tables.
    """
    drop = np.zeros(len(summary), dtype=bool)
    for dataset, metrics in inverted.items():
        drop |= ((summary.dataset == dataset) if dataset is not None else True) & summary.metric.isin(list(metrics))
    return summary[~drop]


def inverted_notes(inverted: dict) -> str:
    """A Markdown list of the metrics whose verdicts are withheld, with the reason per data set ("" if none)."""
    lines = [f"- **{dataset}**, {metric.replace('_', ' ')}: {reason}"
             for dataset, metrics in inverted.items() for metric, reason in metrics.items()]
    return "\n".join(lines) or ("- No faithfulness verdict is withheld: on every data set, the substrates the "
                                 "faithfulness metrics use lower the explained score when the finding is removed.")
