"""Metadata every registered metric must carry, so cubes and tables never guess."""

from __future__ import annotations

import re

import pytest

from medlit.explain import EXPLAINERS
from medlit.metrics import METRICS
from medlit.metrics.registry import METRIC_KINDS
from medlit.paths import project_root

BIB_KEYS = set(re.findall(r"@\w+\{([^,\s]+),", (project_root() / "book" / "references.bib").read_text()))


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_metadata(name):
    spec = METRICS[name]
    assert spec.kind in METRIC_KINDS and spec.direction in {"higher", "lower"}
    assert spec.long_name and spec.normalisation
    assert spec.citation in BIB_KEYS, f"{name}: citation {spec.citation!r} is not in references.bib"


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_explainer_citations_resolve(name):
    citation = EXPLAINERS[name].citation
    assert citation == "" or citation in BIB_KEYS, f"{name}: citation {citation!r} is not in references.bib"


def test_registering_a_duplicate_name_fails():
    from medlit.metrics.registry import register_metric

    with pytest.raises(ValueError, match="already registered"):
        register_metric("auprc", kind="localisation", direction="higher", long_name="x", citation="x",
                        normalisation="x")(lambda maps, regions: None)
