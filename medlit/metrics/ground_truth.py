"""Which ground truth a localisation score is computed against: the union of the boxes, or the exact mask.

Real data sets mostly have boxes only, so every localisation metric is scored against the box union (its plain
name, e.g. ``auprc``). Where the exact finding pixels are known (the embedded sets), the chapters also score some
metrics against the mask, under the name ``<metric>@mask`` (e.g. ``auprc@mask``): a box holds healthy pixels
around a round or thin finding, so the two can rank methods differently.
"""

from __future__ import annotations

from medlit.metrics.registry import METRICS, MetricSpec

MASK_SUFFIX = "@mask"
GROUND_TRUTHS = ("box", "mask")


def scored_name(metric: str, ground_truth: str = "box") -> str:
    """The cube's name of ``metric`` scored against ``ground_truth``: ``auprc`` or ``auprc@mask``."""
    if ground_truth not in GROUND_TRUTHS:
        raise ValueError(f"unknown ground truth {ground_truth!r}; choose one of {', '.join(GROUND_TRUTHS)}")
    return metric if ground_truth == "box" else metric + MASK_SUFFIX


def split_name(name: str) -> tuple[str, str]:
    """``"auprc@mask"`` -> ``("auprc", "mask")``; ``"auprc"`` -> ``("auprc", "box")``."""
    return (name[: -len(MASK_SUFFIX)], "mask") if name.endswith(MASK_SUFFIX) else (name, "box")


def metric_spec(name: str) -> MetricSpec:
    """The registered metric behind a cube metric name, with its names and heading saying which ground truth.

    Raises KeyError for an unknown metric, and ValueError for a mask variant of a metric that does not compare a
    map with a region (faithfulness metrics have no ground truth).
    """
    base, ground_truth = split_name(name)
    spec = METRICS[base]
    if ground_truth == "box":
        return spec
    if spec.kind != "localisation":
        raise ValueError(f"metric {name!r}: only localisation metrics can be scored against a mask, "
                         f"{base!r} is a {spec.kind} metric")
    return MetricSpec(name, spec.fn, spec.kind, spec.direction, spec.long_name + ", against the exact mask",
                      spec.citation, spec.normalisation, spec.range,
                      (spec.short_name or spec.long_name) + " (mask)")
