"""Metric metadata and registration.

Two calling conventions, declared by ``kind``:

* ``"localisation"``: ``fn(maps[B,H,W], regions[B,H,W] bool, **params) -> Tensor[B]``
* ``"faithfulness"``: ``fn(model, x[B,C,H,W], target[B], maps[B,H,W], **params) -> Tensor[B]``

Every function is vectorised over the batch and returns float32 scores, NaN where undefined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medlit.registry import Registry


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable
    kind: str  # "localisation" | "faithfulness"
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
    if kind not in ("localisation", "faithfulness"):
        raise ValueError(f"metric {name!r}: kind must be 'localisation' or 'faithfulness', not {kind!r}")
    if direction not in ("higher", "lower"):
        raise ValueError(f"metric {name!r}: direction must be 'higher' or 'lower', not {direction!r}")

    def decorate(fn: Callable) -> Callable:
        METRICS.add(name, MetricSpec(name, fn, kind, direction, long_name, citation, normalisation, range,
                                     short_name))
        return fn

    return decorate
