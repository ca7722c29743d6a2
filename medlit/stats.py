"""The statistics of the benchmark protocol: intervals for a mean score, paired tests, effect sizes,
multiplicity and rank intervals.

* Intervals for a mean: the Wilson score interval {cite}`wilson1927` for proportion-type scores (hits
  and misses, see :data:`PROPORTION_METRICS`), the percentile bootstrap over images {cite}`efron1994bootstrap`
  for every other score. A percentile bootstrap of 0/1 scores collapses to "0 [0, 0]" when no image is a hit;
  Wilson's interval does not.
* Paired test: the sign-flip permutation test of the mean paired difference, exact when there are few images,
  Monte-Carlo otherwise {cite}`good2005permutation`. Under the null hypothesis that two methods score alike on an image, the sign of each
  image's difference is exchangeable, whatever the metric's distribution.
* Effect size: the paired mean difference in the metric's own units, with its bootstrap interval, and a stated
  minimum effect :data:`MIN_EFFECT` below which no method "beats" another.
* Multiplicity: Holm's step-down adjustment {cite}`holm1979`, valid under any dependence between tests.
* Ranks: methods ranked on means of images resampled jointly for all methods, so the rank interval carries the
  correlation between methods scored on the same images.

Every function takes NaN as "undefined for this image" and uses the images where the score is defined (a paired
statistic: where both are defined).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product
from typing import NamedTuple

import numpy as np
from scipy.special import ndtri

#: Metrics whose per-image score is a hit (1) or a miss (0), or an expected hit in [0, 1] over tied maxima:
#: their mean is a proportion and gets a Wilson interval. Every other metric gets a bootstrap interval.
PROPORTION_METRICS = frozenset({"pointing_game", "pointing_game_strict"})

#: The smallest gain, in the metric's own units (all metrics here live on [0, 1]), that counts as "better":
#: five points of hit rate, or 0.05 of an area under a curve. A smaller gain, however significant, is no win.
MIN_EFFECT = 0.05

#: Monte-Carlo sign patterns of a paired test: the smallest p, 1 / 20001, times a Holm family of about 250
#: comparisons still reads below 0.05.
PERMUTATIONS = 20000

#: Largest number of paired images for which the sign-flip test enumerates all 2**n sign patterns.
EXACT_MAX = 14


class MeanInterval(NamedTuple):
    """A mean score with its interval: ``method`` is ``"wilson"`` or ``"bootstrap"``."""

    mean: float
    low: float
    high: float
    n: int
    method: str


def interval_kind(metric: str) -> str:
    """``"proportion"`` for a metric in :data:`PROPORTION_METRICS` or any variant named ``pointing_game*``
    (hit rates), else ``"bootstrap"``."""
    return "proportion" if metric in PROPORTION_METRICS or metric.startswith("pointing_game") else "bootstrap"


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie strictly between 0 and 1, not {level}")
    return float(ndtri(1 - (1 - level) / 2))


def wilson_interval(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``successes`` out of ``n``.

    Parameters
    ----------
    successes : float
        The number of hits; fractional counts (the sum of expected hits in [0, 1]) use the same formula.
    n : int
        The number of trials (images).
    level : float
        Confidence level.

    Returns
    -------
    (low, high) : tuple of float
        NaN for both when ``n`` is 0.
    """
    if n == 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes {successes} must lie in [0, n = {n}]")
    z = _z(level)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # clip rounding only: the exact interval always lies within [0, 1]
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


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


def mean_interval(values: np.ndarray, *, kind: str = "bootstrap", level: float = 0.95, replicates: int = 1000,
                  seed: int = 0) -> MeanInterval:
    """Mean of the non-NaN ``values`` with the interval that suits the score.

    Parameters
    ----------
    values : array
        Per-image scores; NaN where undefined.
    kind : {"proportion", "bootstrap"}
        ``"proportion"`` (see :func:`interval_kind`): the scores are hits in [0, 1] and the interval is Wilson's,
        on the sum of the scores; ``"bootstrap"``: the percentile bootstrap over images.
    level, replicates, seed
        Confidence level; bootstrap replicates and seed (unused by Wilson).

    Returns
    -------
    MeanInterval
        (mean, low, high, n, method); the interval is NaN with no valid value (and, for the bootstrap, with one).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if kind == "proportion":
        if v.size and (v.min() < 0 or v.max() > 1):
            raise ValueError(f"mean_interval: proportion scores must lie in [0, 1], found [{v.min()}, {v.max()}]")
        low, high = wilson_interval(float(v.sum()), v.size, level)
        return MeanInterval(float(v.mean()) if v.size else float("nan"), low, high, int(v.size), "wilson")
    if kind != "bootstrap":
        raise ValueError(f"mean_interval: kind must be 'proportion' or 'bootstrap', not {kind!r}")
    mean, low, high, n = bootstrap_mean_ci(v, replicates=replicates, level=level, seed=seed)
    return MeanInterval(mean, low, high, n, "bootstrap")


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


# --- vectorised resampling for many methods at once ------------------------------------------------------------


def resample_weights(n: int, replicates: int, seed: int = 0) -> np.ndarray:
    """How often each of ``n`` images is drawn in each of ``replicates`` bootstrap resamples: (replicates, n).

    One matrix serves every method of a comparison, so all methods are resampled on the same images.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(replicates, n)) + n * np.arange(replicates)[:, None]
    return np.bincount(draws.ravel(), minlength=replicates * n).reshape(replicates, n).astype(np.float64)


def resampled_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Means of each row of ``values`` (methods x images, NaN where undefined) in each resample.

    Parameters
    ----------
    values : (m, n) array
    weights : (replicates, n) array from :func:`resample_weights`

    Returns
    -------
    (replicates, m) array; NaN in a resample that drew none of a row's defined images.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    defined = ~np.isnan(values)
    total = weights @ np.where(defined, values, 0.0).T
    count = weights @ defined.T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)


def percentile_interval(replicated: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0 of bootstrap replicates, ignoring NaN replicates (NaN if all are)."""
    alpha = (1 - level) / 2
    replicated = np.asarray(replicated, dtype=np.float64)
    low, high = np.full(replicated.shape[1:], np.nan), np.full(replicated.shape[1:], np.nan)
    if not np.isnan(replicated).any():  # the usual case, and much faster than nanquantile
        return tuple(np.quantile(replicated, [alpha, 1 - alpha], axis=0))
    ok = (~np.isnan(replicated)).sum(axis=0) >= 1
    if ok.any():
        low[ok], high[ok] = np.nanquantile(replicated[:, ok], [alpha, 1 - alpha], axis=0)
    return low, high


# --- paired test -------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)  # summarise tests many rows on the same images: draw the patterns once
def _sign_patterns(n: int, permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """(patterns, n) of +-1 signs: all 2**n when n <= EXACT_MAX (exact), else random ones (Monte-Carlo).
    Read-only, since the cache hands the same array to every caller."""
    if n <= EXACT_MAX:
        signs, exact = np.array(list(product((1.0, -1.0), repeat=n))).reshape(-1, n), True
    else:
        signs, exact = np.random.default_rng(seed).choice(np.array([1.0, -1.0]), size=(permutations, n)), False
    signs.setflags(write=False)
    return signs, exact


def sign_flip_pvalues(differences: np.ndarray, *, permutations: int = PERMUTATIONS, seed: int = 0
                      ) -> np.ndarray:
    """Two-sided sign-flip permutation p-values of the mean paired difference, one per row.

    Parameters
    ----------
    differences : (m, n) or (n,) array
        Per-image paired differences, NaN where either score is undefined (those images are left out).
    permutations : int
        Random sign patterns when the test is not exact (more than :data:`EXACT_MAX` images).
    seed : int

    Returns
    -------
    (m,) array of p-values; NaN for a row with no defined difference, 1 when all differences are zero.

    Notes
    -----
    Exact: p is the fraction of all 2**n sign patterns whose mean difference is at least as far from zero as
    the observed one. Monte-Carlo: (1 + such patterns) / (1 + permutations), which is never 0 and keeps the
    test valid. Undefined images contribute 0 to every pattern's sum, and the divisor (the number of defined
    images) is the same for every pattern, so comparing sums is comparing means.
    """
    d = np.atleast_2d(np.asarray(differences, dtype=np.float64))
    defined = ~np.isnan(d)
    d0 = np.where(defined, d, 0.0)
    signs, exact = _sign_patterns(d.shape[1], permutations, seed)
    observed = np.abs(d0.sum(axis=1))
    # a relative tolerance, so that patterns equal to the observed one up to rounding count as "as extreme"
    tolerance = 1e-9 * np.maximum(np.abs(d0).sum(axis=1), 1e-300)
    extreme = (np.abs(d0 @ signs.T) >= (observed - tolerance)[:, None]).sum(axis=1)
    p = extreme / len(signs) if exact else (1 + extreme) / (1 + len(signs))
    return np.where(defined.any(axis=1), np.minimum(p, 1.0), np.nan)


def sign_flip_test(a: np.ndarray, b: np.ndarray, *, permutations: int = PERMUTATIONS, seed: int = 0
                   ) -> float:
    """Two-sided sign-flip permutation p-value that ``a`` and ``b`` have the same mean, paired by image
    (images where either is NaN are left out); see :func:`sign_flip_pvalues`."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"sign_flip_test: shapes {a.shape} and {b.shape} differ")
    return float(sign_flip_pvalues(a - b, permutations=permutations, seed=seed)[0])


# --- multiplicity and ranks ----------------------------------------------------------------------------------


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values: the family-wise error rate stays below the level at which they are read.

    The k-th smallest of the m valid p-values is multiplied by (m - k + 1), made non-decreasing in that order
    and capped at 1. NaN p-values (no test possible) are passed through and do not count towards m.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    valid = ~np.isnan(p)
    if not valid.any():
        return adjusted
    values = p[valid]
    order = np.argsort(values, kind="stable")
    m = values.size
    stepped = np.minimum(np.maximum.accumulate(values[order] * (m - np.arange(m))), 1.0)
    out = np.empty(m)
    out[order] = stepped
    adjusted[valid] = out
    return adjusted


def ranks(means: np.ndarray, direction: str = "higher") -> np.ndarray:
    """Competition ranks along the last axis: 1 = best in ``direction``, tied means share the better rank,
    a NaN mean ranks below every defined one."""
    means = np.asarray(means, dtype=np.float64)
    key = -means if direction == "higher" else means
    key = np.where(np.isnan(key), np.inf, key)
    # rank = 1 + number of strictly better entries: ties share the best of their ranks
    return 1 + (key[..., None, :] < key[..., :, None]).sum(axis=-1)
