"""Metrics: localisation (maps vs ground-truth regions) and faithfulness (maps vs the model).

Importing this package registers every metric in :data:`METRICS`; see :mod:`medlit.metrics.registry` for
the two calling conventions.
"""

# isort: off
# Localisation first: registration order is the order of METRICS, hence of the book's tables.
from medlit.metrics import localisation, faithfulness
# isort: on
from medlit.metrics.faithfulness import (
    deletion_auc,
    forwards_needed,
    insertion_auc,
    insertion_deletion_curves,
    normalised_auc,
    pixel_ranks,
    step_counts,
)
from medlit.metrics.localisation import (
    auprc,
    average_precision,
    energy_pointing_game,
    iou_otsu,
    otsu_binarise,
    pointing_game,
    pointing_game_strict,
    scaled_tolerance,
)
from medlit.metrics.registry import METRICS, MetricSpec, register_metric

__all__ = [
    "METRICS",
    "MetricSpec",
    "auprc",
    "average_precision",
    "deletion_auc",
    "energy_pointing_game",
    "faithfulness",
    "forwards_needed",
    "insertion_auc",
    "insertion_deletion_curves",
    "iou_otsu",
    "localisation",
    "normalised_auc",
    "otsu_binarise",
    "pixel_ranks",
    "pointing_game",
    "pointing_game_strict",
    "register_metric",
    "scaled_tolerance",
    "step_counts",
]
