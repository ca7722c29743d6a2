"""Figures: galleries of images and maps with boxes drawn (and the maps they show), and one altair chart per
figure of the chapters."""

from __future__ import annotations

import altair as alt
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.patches import Rectangle

from medlit.data.sample import SampleSet
from medlit.summary import budget_curves, randomisation_curve
from medlit.timing import phase

BOX_COLOUR = "#00e5ff"


def use_offline_charts() -> None:
    """Render altair charts as inline SVG (vl-convert), so the book needs no CDN when it is read."""
    alt.renderers.enable("svg")


def _draw_boxes(ax, boxes: torch.Tensor) -> None:
    for x0, y0, x1, y1 in boxes[~torch.isnan(boxes).any(dim=1)].tolist():
        # Half-open pixel boxes: pixel c spans [c - 0.5, c + 0.5] in imshow coordinates.
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.2, ec=BOX_COLOUR))


def _show_image(ax, image: torch.Tensor) -> None:
    """A (C, H, W) image in [0, 1]: greyscale when C = 1, colour when C = 3."""
    if image.shape[0] == 3:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    else:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)


def show_samples(data: SampleSet, n: int = 8, columns: int = 4, title_key: str = "finding"):
    """A grid of the first ``n`` images with their boxes and their finding type."""
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= min(n, len(data)):
            continue
        _show_image(ax, data.images[i])
        _draw_boxes(ax, data.boxes[i])
        label = data.meta[title_key][i] if title_key in data.meta else int(data.labels[i])
        ax.set_title(str(label), fontsize=9)
    fig.tight_layout()
    return fig


@phase("galleries")
def map_gallery(data: SampleSet, maps: dict[str, torch.Tensor], n: int = 4):
    """Rows of images; columns: the image, then each method's map over it (min-max scaled for display only)."""
    n = min(n, len(data))
    fig, axes = plt.subplots(n, len(maps) + 1, figsize=(2.1 * (len(maps) + 1), 2.2 * n), squeeze=False)
    for i in range(n):
        _show_image(axes[i, 0], data.images[i])
        _draw_boxes(axes[i, 0], data.boxes[i])
        axes[i, 0].set_ylabel(str(data.meta.get("finding", ["?"] * len(data))[i]), fontsize=9)
        for j, (name, m) in enumerate(maps.items(), start=1):
            shown = m[i].float()
            shown = (shown - shown.min()) / (shown.max() - shown.min() + 1e-12)
            # maps are drawn over the image's greyscale version, so the colour map reads the same on every set
            axes[i, j].imshow(data.images[i].mean(0), cmap="gray", vmin=0, vmax=1)
            axes[i, j].imshow(shown, cmap="inferno", alpha=0.6)
            _draw_boxes(axes[i, j], data.boxes[i])
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
        if i == 0:
            axes[i, 0].set_title("image + box", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def score_chart(summary: pd.DataFrame, metrics: list[str] | None = None, width: int = 220) -> alt.FacetChart:
    """Mean score and 95 % bootstrap interval per method, one panel per metric; controls drawn hollow."""
    table = summary if metrics is None else summary[summary.metric.isin(metrics)]
    table = table.assign(control=table.family == "control",
                         panel=table.metric + np.where(table.direction == "higher", " (higher is better)",
                                                       " (lower is better)"))
    base = alt.Chart(table).encode(y=alt.Y("method:N", sort=None, title=None))
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title="score (mean, 95 % CI)"),
                                               x2="ci_high:Q", color=alt.Color("family:N"))
    points = base.mark_point(size=70, filled=True).encode(
        x="mean:Q", color="family:N", shape=alt.Shape("control:N", title="control map"),
        tooltip=["method", "metric", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
                 alt.Tooltip("ci_high:Q", format=".3f"), "n"])
    return (alt.layer(bars, points, data=table).properties(width=width, height=alt.Step(18))
            .facet(facet=alt.Facet("panel:N", title=None, sort=list(dict.fromkeys(table.panel))), columns=3)
            .resolve_scale(x="independent"))


def finding_chart(summary: pd.DataFrame, metric: str, by: str = "finding", width: int = 360) -> alt.Chart:
    """One metric's mean and 95 % CI per method, split by a per-image group such as the finding type."""
    table = summary[summary.metric == metric]
    base = alt.Chart(table).encode(y=alt.Y("method:N", sort=None, title=None),
                                   yOffset=alt.YOffset(f"{by}:N"), color=alt.Color(f"{by}:N"))
    return (base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title=f"{metric} (mean, 95 % CI)"), x2="ci_high:Q")
            + base.mark_point(filled=True, size=50).encode(
                x="mean:Q", tooltip=["method", by, alt.Tooltip("mean:Q", format=".3f"), "n"])
            ).properties(width=width, height=alt.Step(12))


def dataset_caption(name: str) -> str:
    """One line naming a data set and its card, printed above every per-data-set table and figure."""
    from medlit.data import DATASETS

    if name not in DATASETS:
        return f"**Data set: {name}**"
    spec = DATASETS[name]
    kind = "generated, exact ground truth" if spec.kind == "embedded" else "real data read by an adapter"
    return f"**Data set: {name}**: {spec.description} ({kind}; data card `{spec.data_card}`)."


def per_dataset(table: pd.DataFrame, render, datasets: list[str] | None = None) -> None:
    """Display ``render(rows of one data set)`` for each data set, each under its ``dataset_caption``; where a
    data set has rows of several models (a ``model`` column), once per model, the model named in the caption."""
    from IPython.display import Markdown, display

    for name in datasets or list(dict.fromkeys(table.dataset)):
        rows = table[table.dataset == name]
        models = list(dict.fromkeys(rows.model)) if "model" in rows else []
        if len(models) <= 1:
            display(Markdown(dataset_caption(name)))
            display(render(rows))
            continue
        for model in models:
            display(Markdown(f"{dataset_caption(name)} Model: **{model}**."))
            display(render(rows[rows.model == model]))


# --- galleries ------------------------------------------------------------------------------------------------


@phase("galleries")
def explain_examples(prepared, methods: list[str], n: int = 4) -> tuple[SampleSet, dict[str, torch.Tensor]]:
    """Explain the first ``n`` explained images of ``prepared`` for the positive class with each method.

    Parameters
    ----------
    prepared : medlit.benchmark.Prepared
        The data set and model (``prepared.explained`` gives the images, ``prepared.model`` the model).
    methods : list of str
        Explainer names, in the order the gallery shows them.
    n : int
        How many images (fewer when fewer are explained).

    Returns
    -------
    shown : SampleSet
        The images explained.
    maps : dict
        Method name -> (n, H, W) maps, ready for ``map_gallery``.
    """
    from medlit.explain import explain_batched
    from medlit.explain.data_inputs import data_inputs_for
    from medlit.explain.targets import positive_class

    shown = prepared.explained.subset(slice(0, n))
    target = positive_class(len(shown))
    inputs = data_inputs_for(prepared.splits["train"], shown)  # what the data-aware controls need
    return shown, {name: explain_batched(name, prepared.model, shown.images, target, data_inputs=inputs)[0]
                   for name in methods}


# --- charts ---------------------------------------------------------------------------------------------------


def box_area_chart(areas: pd.DataFrame) -> alt.Chart:
    """Histogram of the box area fraction, coloured by finding type, of a ``medlit.summary.box_areas`` table."""
    return alt.Chart(areas).mark_bar().encode(
        x=alt.X("box area fraction:Q", bin=alt.Bin(maxbins=30)), y="count()", color="finding:N"
    ).properties(width=480, height=200)


def training_curve_chart(history) -> alt.Chart:
    """Validation AUROC per epoch, from a model record's ``history`` (list of per-epoch dicts or a DataFrame)."""
    return alt.Chart(pd.DataFrame(history)).mark_line(point=True).encode(
        x="epoch:Q", y=alt.Y("val_auroc:Q", scale=alt.Scale(zero=False), title="validation AUROC")
    ).properties(width=420, height=200)


def randomisation_chart(randomisation, methods: list[str]) -> alt.FacetChart:
    """Mean similarity to the trained model's map as layers are randomised, one line per method (coloured in
    the order of ``methods``), one panel per similarity measure, from ``cascading_randomisation``'s result."""
    curve = randomisation_curve(randomisation)
    return alt.Chart(curve).mark_line(point=True).encode(
        x=alt.X("randomised:N", sort=list(randomisation.randomised.values),
                title="layers randomised (cumulative, from the output)"),
        y=alt.Y("similarity:Q", title="similarity to the trained model's map", scale=alt.Scale(domain=[-1, 1])),
        color=alt.Color("method:N", sort=methods, scale=alt.Scale(scheme="tableau20")),
        tooltip=["method", "randomised", alt.Tooltip("similarity:Q", format=".3f")],
    ).properties(width=300, height=220).facet(column=alt.Column("measure:N", title=None))


def boundary_distance_chart(stability: pd.DataFrame) -> alt.Chart:
    """One tick per image at its signed first-order distance to the decision boundary, a row per finding type,
    coloured by whether the model classifies it correctly (a ``stability_table`` with a ``finding`` column)."""
    table = stability.assign(correct=stability.label == stability.predicted)
    return alt.Chart(table).mark_tick(thickness=2, size=14).encode(
        x=alt.X("boundary_distance:Q", title="first-order distance to the decision boundary (signed)"),
        y=alt.Y("finding:N", title=None), color=alt.Color("correct:N", title="classified correctly"),
        tooltip=["finding", alt.Tooltip("boundary_distance:Q", format=".3f"), alt.Tooltip("sigma_1:Q", format=".3f")],
    ).properties(width=460, height=alt.Step(28))


def budget_chart(study) -> alt.FacetChart:
    """Mean score against the budget setting (log scale), one line per metric, one panel per method, from
    ``run_budget_study``'s result (see ``medlit.summary.budget_curves``)."""
    return alt.Chart(budget_curves(study)).mark_line(point=True).encode(
        x=alt.X("setting_value:Q", scale=alt.Scale(type="log"), title="budget setting"),
        y=alt.Y("score:Q", title="mean score"), color=alt.Color("metric:N"),
        tooltip=["method", "metric", "setting_value", alt.Tooltip("score:Q", format=".3f"),
                 alt.Tooltip("seconds_per_image:Q", format=".3f")],
    ).properties(width=170, height=150).facet(facet=alt.Facet("method:N", title=None), columns=4
    ).resolve_scale(x="independent")


def ranking_scatter(wide: pd.DataFrame, first: str, second: str, metric: str = "pointing game") -> alt.Chart:
    """Each method placed by its mean ``metric`` on data set ``first`` (x) and ``second`` (y), coloured by family
    (the wide table of ``medlit.summary.ranking_agreement``)."""
    return alt.Chart(wide).mark_point(filled=True, size=60).encode(
        x=alt.X(f"{first}:Q", title=f"{metric}, {first}", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y(f"{second}:Q", title=f"{metric}, {second}", scale=alt.Scale(domain=[0, 1])),
        color="family:N",
        tooltip=["method", alt.Tooltip(f"{first}:Q", format=".3f"), alt.Tooltip(f"{second}:Q", format=".3f")],
    ).properties(width=320, height=320)


# --- reader-facing tables ---------------------------------------------------------------------------------------


def leaderboard_table(summary: pd.DataFrame, metrics: list[str] | None = None, digits: int = 3):
    """The leaderboard as a reader reads it: one table per model of a data set, methods by their long names with
    their family, one "mean [low, high]" column per metric headed by its name and its better direction (↑ / ↓),
    the controls set apart at the bottom, the data set, model and image count in the caption, inside a box that
    scrolls sideways rather than being cut off by the page.

    ``summary`` holds the rows of one data set (``per_dataset`` passes them); returns an ``IPython.display.HTML``.
    """
    from IPython.display import HTML

    from medlit.explain import EXPLAINERS
    from medlit.metrics import METRICS
    from medlit.summary import leaderboard

    metrics = metrics or list(dict.fromkeys(summary.metric))
    direction = summary.drop_duplicates("metric").set_index("metric").direction
    heads = {m: f"{METRICS[m].heading if m in METRICS else m} {'↑' if direction[m] == 'higher' else '↓'}"
             for m in metrics}
    family = summary.drop_duplicates("method").set_index("method").family
    parts = []
    for (dataset, model), rows in leaderboard(summary, metrics, digits).groupby(["dataset", "model"], sort=False):
        is_control = rows.method.map(family).eq("control")
        rows = pd.concat([rows[~is_control], rows[is_control]])
        n = int(summary[(summary.dataset == dataset) & (summary.model == model)].n.max())
        table = pd.DataFrame({"method": [EXPLAINERS[m].long_name if m in EXPLAINERS else m for m in rows.method],
                              "family": rows.method.map(family).values})
        for m in metrics:
            table[heads[m]] = rows[m].values
        first_control = int((~is_control).sum())
        caption = (f"{dataset}, model {model}: mean [95 % interval] over {n} explained images; ↑ higher is better, "
                   "↓ lower is better; the controls are set apart at the bottom.")
        styled = (table.style.hide(axis="index")
                  .apply(lambda r: ["color: #555; font-style: italic"
                                    + ("; border-top: 2px solid #999" if r.name == first_control else "")] * len(r)
                         if r.family == "control" else [""] * len(r), axis=1)
                  .set_table_styles([{"selector": "th, td", "props": "padding: 2px 8px; white-space: nowrap"}]))
        # the caption stays outside the scrolling box, so it wraps to the page instead of scrolling away
        parts.append(f'<p class="medlit-caption"><em>{caption}</em></p>'
                     f'<div style="overflow-x: auto; max-width: 100%">{styled.to_html()}</div>')
    return HTML("\n".join(parts))


def pointing_curve_table(cube, dataset: str, model: str | None = None) -> pd.DataFrame:
    """Mean pointing-game hit per (method, tolerance) on one data set, from the cube's ``pointing_curve``."""
    block = cube.sel(dataset=dataset, model=model or cube.model.values[0])
    present = np.array([isinstance(i, str) and i != "" for i in block.sample_id.values.tolist()])
    present &= np.isfinite(block.pointing_curve.transpose("sample", ...).values.reshape(len(present), -1)).any(1)
    hits = block.pointing_curve.isel(sample=np.flatnonzero(present)).mean("sample", skipna=True)
    table = hits.to_dataframe(name="hit_rate").reset_index()[["explainer", "tolerance", "hit_rate"]]
    family = dict(zip(block.explainer.values.tolist(), block.family.values.tolist()))
    return table.rename(columns={"explainer": "method"}).assign(
        family=lambda t: t.method.map(family), dataset=dataset)


def pointing_curve_chart(table: pd.DataFrame, width: int = 420) -> alt.Chart:
    """Hit rate against the tolerance (share of the image side) per method; controls dashed.

    A method whose curve stays under a control's at every tolerance has not localised anything, however near its
    misses are.
    """
    table = table.assign(control=table.family == "control")
    return (alt.Chart(table).mark_line(point=True).encode(
        x=alt.X("tolerance:Q", title="tolerance (share of the image side)"),
        y=alt.Y("hit_rate:Q", title="pointing-game hit rate", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("method:N"), strokeDash=alt.StrokeDash("control:N", title="control map"),
        tooltip=["method", alt.Tooltip("tolerance:Q", format=".3f"), alt.Tooltip("hit_rate:Q", format=".3f")])
        .properties(width=width, height=260))


def rank_chart(summary: pd.DataFrame, metric: str, width: int = 320) -> alt.Chart:
    """Each method's rank by ``metric`` (1 = best) with its 95 % interval from resampling the images."""
    table = summary[summary.metric == metric].sort_values("rank")
    base = alt.Chart(table).encode(y=alt.Y("method:N", sort=None, title=None), color=alt.Color("family:N"))
    return (base.mark_rule(strokeWidth=2).encode(x=alt.X("rank_low:Q", title=f"rank by {metric} (95 % interval)"),
                                                 x2="rank_high:Q")
            + base.mark_point(filled=True, size=60).encode(
                x="rank:Q", tooltip=["method", "rank", "rank_low", "rank_high"])
            ).properties(width=width, height=alt.Step(16))


def model_difference_chart(table: pd.DataFrame, reference: str, other: str, metrics: list[str],
                           width: int = 260) -> alt.FacetChart:
    """Per method, the paired difference ``other - reference`` of one data set's scores with its 95 % interval,
    one panel per metric, a rule at zero (``medlit.model_comparison.model_comparison``)."""
    rows = table[table.metric.isin(metrics)]
    rows = rows.assign(panel=rows.metric + np.where(rows.direction == "higher", " (higher is better)",
                                                    " (lower is better)"))
    base = alt.Chart().encode(y=alt.Y("method:N", sort=None, title=None))
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title=f"{other} minus {reference} (mean, 95 % CI)"), x2="ci_high:Q",
        color=alt.Color("family:N"))
    points = base.mark_point(size=60, filled=True).encode(
        x="difference:Q", color="family:N",
        tooltip=["method", "metric", alt.Tooltip(f"{reference}:Q", format=".3f"),
                 alt.Tooltip(f"{other}:Q", format=".3f"), alt.Tooltip("difference:Q", format=".3f"),
                 alt.Tooltip("p_holm:Q", format=".3g"), "n"])
    zero = alt.Chart().mark_rule(color="grey", strokeDash=[4, 3]).encode(x=alt.datum(0))
    return (alt.layer(bars, points, zero, data=rows).properties(width=width, height=alt.Step(18))
            .facet(facet=alt.Facet("panel:N", title=None, sort=list(dict.fromkeys(rows.panel))), columns=3)
            .resolve_scale(x="independent"))
