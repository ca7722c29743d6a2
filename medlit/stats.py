"""Bootstrap confidence intervals over images {cite}`efron1994bootstrap`."""

from __future__ import annotations

import numpy as np


def bootstrap_mean_ci(values: np.ndarray, *, replicates: int = 1000, level: float = 0.95, seed: int = 0
                      ) -> tuple[float, float, float, int]:
    """Mean of the non-NaN ``values`` with its percentile bootstrap interval.

    Returns (mean, low, high, n). With fewer than two valid values the interval is NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = v.size
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    if n == 1:
        return float(v[0]), float("nan"), float("nan"), 1
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, n, size=(replicates, n))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(v.mean()), float(low), float(high), n


def paired_bootstrap_difference(a: np.ndarray, b: np.ndarray, *, replicates: int = 1000, level: float = 0.95,
                                seed: int = 0) -> tuple[float, float, float, int]:
    """Mean of ``a - b`` over images where both are defined, with its percentile bootstrap interval.

    Pairing by image removes the between-image variance that unpaired intervals carry, so "method beats
    the control" is decided on the difference, not on overlapping intervals.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap_difference: shapes {a.shape} and {b.shape} differ")
    return bootstrap_mean_ci(a - b, replicates=replicates, level=level, seed=seed)
