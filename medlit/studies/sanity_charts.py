"""Charts of the randomisation check: each method's similarity curve with its interval, beside its null."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr


def sanity_curve_table(ds: xr.Dataset, measure: str = "ssim") -> pd.DataFrame:
    """Long form of a ``run_randomisation_check`` result: one row per (method, step) with the mean similarity and
    its 95 % interval, and the method's null (mean, low, high) repeated on each row. Steps a method skipped
    (``steps="full"``) are left out."""
    rows = []
    for name in ds["explainer"].values:
        for position, step in enumerate(ds["randomised"].values):
            mean = float(ds["similarity_mean"].sel(explainer=name, randomised=step, measure=measure))
            if not np.isfinite(mean):
                continue
            row = {"method": str(name), "randomised": str(step), "position": position, "mean": mean,
                   "low": float(ds["similarity_low"].sel(explainer=name, randomised=step, measure=measure)),
                   "high": float(ds["similarity_high"].sel(explainer=name, randomised=step, measure=measure))}
            if "null_similarity_mean" in ds:
                row.update({f"null_{part}": float(ds[f"null_similarity_{part}"].sel(explainer=name, measure=measure))
                            for part in ("mean", "low", "high")})
            rows.append(row)
    return pd.DataFrame(rows)


def sanity_curve_chart(ds: xr.Dataset, methods: list[str], measure: str = "ssim", columns: int = 5) -> alt.FacetChart:
    """One small panel per method (in the order of ``methods``): the mean similarity to the trained model's map at
    each randomisation step with its 95 % interval (band), and the null, the similarity between two independently
    initialised networks, as a grey band with its mean dashed. A method depends on the model where its last point
    lies clearly below the dashed line."""
    table = sanity_curve_table(ds.sel(explainer=methods), measure)
    steps = list(ds["randomised"].values)
    x = alt.X("randomised:N", sort=steps, title="layers randomised (cumulative, from the output)")
    base = alt.Chart().encode(x=x)
    layers = [
        base.mark_area(opacity=0.25).encode(y=alt.Y("low:Q", title=f"{measure} to the trained model's map",
                                                    scale=alt.Scale(domain=[-0.2, 1])), y2="high:Q"),
        base.mark_line(point=True).encode(y="mean:Q", tooltip=["method", "randomised",
                                                               alt.Tooltip("mean:Q", format=".3f"),
                                                               alt.Tooltip("low:Q", format=".3f"),
                                                               alt.Tooltip("high:Q", format=".3f")]),
    ]
    if "null_mean" in table:
        layers = [alt.Chart().mark_rect(color="grey", opacity=0.15).encode(y="min(null_low):Q", y2="max(null_high):Q"),
                  alt.Chart().mark_rule(color="grey", strokeDash=[4, 3]).encode(y="mean(null_mean):Q"), *layers]
    return alt.layer(*layers, data=table).properties(width=150, height=120).facet(
        facet=alt.Facet("method:N", sort=methods, title=None), columns=columns)
