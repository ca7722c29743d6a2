"""Metrics: localisation (maps vs ground-truth regions), lesion (maps vs each box) and faithfulness (maps vs
the model).

Importing this package registers every metric in :data:`METRICS`; see :mod:`medlit.metrics.registry` for
the three calling conventions.
"""

# isort: off
# Localisation first: registration order is the order of METRICS, hence of the book's tables.
from medlit.metrics import localisation, relevance_rank, lesion, faithfulness
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
from medlit.metrics.lesion import lesion_masks, lesion_recall, lesion_recall_masks
from medlit.metrics.localisation import (
    DEFAULT_CURVE_FRACTIONS,
    DEFAULT_TOLERANCE_FRACTION,
    auprc,
    average_precision,
    energy_pointing_game,
    iou_otsu,
    otsu_binarise,
    pointing_curve,
    pointing_game,
    pointing_game_strict,
    relative_tolerance_px,
    scaled_tolerance,
    squared_distance_to_region,
)
from medlit.metrics.ranking import DEFAULT_TIE_RTOL, tied_maxima, top_k_selection
from medlit.metrics.registry import METRIC_KINDS, METRICS, MetricSpec, register_metric
from medlit.metrics.relevance_rank import relevance_rank_accuracy

__all__ = [
    "DEFAULT_CURVE_FRACTIONS",
    "DEFAULT_TIE_RTOL",
    "DEFAULT_TOLERANCE_FRACTION",
    "METRICS",
    "METRIC_KINDS",
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
    "lesion",
    "lesion_masks",
    "lesion_recall",
    "lesion_recall_masks",
    "localisation",
    "normalised_auc",
    "otsu_binarise",
    "pixel_ranks",
    "pointing_curve",
    "pointing_game",
    "pointing_game_strict",
    "register_metric",
    "relative_tolerance_px",
    "relevance_rank",
    "relevance_rank_accuracy",
    "scaled_tolerance",
    "squared_distance_to_region",
    "step_counts",
    "tied_maxima",
    "top_k_selection",
]
