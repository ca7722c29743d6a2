"""Metric metadata and registration.

Three calling conventions, declared by ``kind``:

* ``"localisation"``: ``fn(maps[B,H,W], regions[B,H,W] bool, **params) -> Tensor[B]``; regions are the union of
  the boxes or the exact finding mask, of any shape.
* ``"lesion"``: ``fn(maps[B,H,W], boxes[B,K,4], **params) -> Tensor[B]``; one box per lesion in
  :data:`medlit.data.sample.BOX_FIELDS` convention, in pixels of the maps, NaN rows for missing boxes.
* ``"faithfulness"``: ``fn(model, x[B,C,H,W], target[B], maps[B,H,W], **params) -> Tensor[B]``

Every function is vectorised over the batch and returns float32 scores, NaN only where the ground truth leaves
the score undefined (an empty region, an image without boxes); a map that gives a metric nothing to work with
scores the metric's worst value (or chance level), never NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medlit.registry import Registry

#: The calling conventions of the module docstring.
METRIC_KINDS = ("localisation", "lesion", "faithfulness")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable
    kind: str  # one of METRIC_KINDS: "localisation" | "lesion" | "faithfulness"
    direction: str  # "higher" | "lower": which way is better
    long_name: str
    citation: str  # BibTeX key in book/references.bib
    normalisation: str  # what the metric does to a raw map before scoring it (recorded in every cube)
    range: tuple[float, float] = (0.0, 1.0)
    short_name: str = ""  # a table's column heading; the long name when empty

    @property
    def heading(self) -> str:
        return self.short_name or self.long_name


METRICS: Registry[MetricSpec] = Registry("metric")


def register_metric(name: str, *, kind: str, direction: str, long_name: str, citation: str, normalisation: str,
                    range: tuple[float, float] = (0.0, 1.0), short_name: str = ""):
    if kind not in METRIC_KINDS:
        raise ValueError(f"metric {name!r}: kind must be one of {', '.join(map(repr, METRIC_KINDS))}, not {kind!r}")
    if direction not in ("higher", "lower"):
        raise ValueError(f"metric {name!r}: direction must be 'higher' or 'lower', not {direction!r}")

    def decorate(fn: Callable) -> Callable:
        METRICS.add(name, MetricSpec(name, fn, kind, direction, long_name, citation, normalisation, range,
                                     short_name))
        return fn

    return decorate
