"""Bootstrap intervals and the leaderboard built on them."""

from __future__ import annotations

import numpy as np
import pytest

from medlit.stats import bootstrap_mean_ci, paired_bootstrap_difference
from medlit.summary import leaderboard, summarise
from tests.test_cube import cube_for


def test_constant_values_have_a_degenerate_interval():
    assert bootstrap_mean_ci(np.full(20, 0.3)) == pytest.approx((0.3, 0.3, 0.3, 20))


def test_nan_is_ignored_and_counted_out():
    mean, low, high, n = bootstrap_mean_ci(np.array([0.0, 1.0, np.nan, 1.0]))
    assert n == 3 and mean == pytest.approx(2 / 3) and 0 <= low <= mean <= high <= 1


def test_interval_matches_the_normal_approximation_for_a_large_sample():
    values = np.random.default_rng(1).normal(0.5, 0.1, 400)
    mean, low, high, _ = bootstrap_mean_ci(values, replicates=4000)
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert low < mean < high


def test_paired_difference_sees_a_consistent_gain_that_unpaired_intervals_hide():
    base = np.random.default_rng(2).random(50)
    diff, low, _, _ = paired_bootstrap_difference(base + 0.02, base)
    assert diff == pytest.approx(0.02) and low == pytest.approx(0.02)


def test_summary_signs_gains_by_direction_and_leaderboard_ranks():
    cube = cube_for(["gradcam", "saliency", "centre_prior"])
    cube["score"].loc[{"explainer": "gradcam"}] = cube.score.sel(explainer="centre_prior").values - 0.1
    cube["score"].loc[{"explainer": "saliency"}] = cube.score.sel(explainer="centre_prior").values + 0.1
    summary = summarise(cube, replicates=200)
    row = summary[(summary.method == "gradcam") & (summary.metric == "deletion_auc")].iloc[0]
    assert row.gain_vs_baseline == pytest.approx(0.1, abs=1e-6) and row.beats_baseline  # lower deletion is better
    row = summary[(summary.method == "gradcam") & (summary.metric == "pointing_game")].iloc[0]
    assert not row.beats_baseline
    table = leaderboard(summary, metrics=["deletion_auc"])
    assert table.method.tolist() == ["gradcam", "centre_prior", "saliency"]


def test_verdicts_name_won_and_lost_metrics_and_skip_controls():
    from medlit.summary import verdicts

    cube = cube_for(["gradcam", "random", "centre_prior"])
    cube["score"].loc[{"explainer": "gradcam"}] = cube.score.sel(explainer="centre_prior").values - 0.1
    text = verdicts(summarise(cube, replicates=200), {"gradcam": "Grad-CAM"})
    assert text == "- **Grad-CAM** beats the centre prior on deletion_auc; not on pointing_game."


def test_ranking_agreement_is_the_spearman_correlation_of_method_means():
    import pandas as pd
    from scipy.stats import spearmanr

    from medlit.summary import ranking_agreement

    a = [0.9, 0.5, 0.1, 0.3]
    b = [0.8, 0.1, 0.2, 0.6]
    rows = [{"dataset": d, "method": m, "family": "f", "metric": "pointing_game", "mean": v}
            for d, values in (("one", a), ("two", b)) for m, v in zip("wxyz", values)]
    wide, rho = ranking_agreement(pd.DataFrame(rows), "pointing_game")
    assert list(wide.columns) == ["method", "family", "one", "two"]
    assert rho == pytest.approx(spearmanr(a, b).statistic)
    _, alone = ranking_agreement(pd.DataFrame(rows[:4]), "pointing_game")
    assert alone != alone  # NaN with one data set
