"""The statistics of the protocol (intervals, paired tests, Holm, ranks) and the summary built on them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from medlit.stats import (
    EXACT_MAX,
    MIN_EFFECT,
    bootstrap_mean_ci,
    holm,
    interval_kind,
    mean_interval,
    paired_bootstrap_difference,
    ranks,
    resample_weights,
    resampled_means,
    sign_flip_pvalues,
    sign_flip_test,
    wilson_interval,
)
from medlit.summary import leader_group, leaderboard, pairwise_table, summarise
from tests.test_cube import cube_for

Z = sps.norm.ppf(0.975)


# --- bootstrap ---------------------------------------------------------------------------------------------------


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


def test_resampled_means_are_the_means_of_the_resampled_images():
    values = np.random.default_rng(3).random((3, 7))
    weights = resample_weights(7, 50, seed=4)
    draws = np.random.default_rng(4).integers(0, 7, size=(50, 7))  # the draws resample_weights counts
    np.testing.assert_allclose(resampled_means(values, weights), values[:, draws].mean(axis=2).T)
    assert weights.sum(axis=1).tolist() == [7] * 50


def test_resampled_means_average_only_the_defined_images():
    values = np.array([[1.0, np.nan, 3.0]])
    weights = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    means = resampled_means(values, weights)[:, 0]
    assert means[0] == 1.0 and np.isnan(means[1]) and means[2] == 2.0


def test_percentile_interval_of_resampled_means_agrees_with_scipy_bootstrap():
    from medlit.stats import percentile_interval

    values = np.random.default_rng(9).normal(0.05, 0.2, 200)
    low, high = percentile_interval(resampled_means(values, resample_weights(200, 4000, seed=1)))
    expected = sps.bootstrap((values,), np.mean, method="percentile", n_resamples=4000, random_state=2)
    assert (low[0], high[0]) == pytest.approx((expected.confidence_interval.low, expected.confidence_interval.high),
                                              abs=0.006)


# --- Wilson --------------------------------------------------------------------------------------------------------


def test_wilson_interval_known_answers():
    # no hit in n: the interval is [0, z^2 / (n + z^2)]; all hits: [n / (n + z^2), 1]
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z ** 2 / (10 + Z ** 2)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + Z ** 2), 1.0))
    low, high = wilson_interval(5, 10)  # symmetric about 1/2
    assert low + high == pytest.approx(1.0) and high == pytest.approx(0.5 + Z / (1 + Z ** 2 / 10) * np.sqrt(
        0.25 / 10 + Z ** 2 / 400))
    assert all(np.isnan(wilson_interval(0, 0)))


@pytest.mark.parametrize("k, n, level", [(0, 8, 0.95), (3, 8, 0.95), (8, 8, 0.95), (17, 96, 0.95), (60, 96, 0.9),
                                         (1, 2, 0.99)])
def test_wilson_interval_agrees_with_scipy(k, n, level):
    expected = sps.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    assert wilson_interval(k, n, level) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_interval_refuses_impossible_counts():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_mean_interval_uses_wilson_for_hits_and_does_not_collapse_on_zero_hits():
    zeros = np.zeros(20)
    assert bootstrap_mean_ci(zeros)[1:3] == (0.0, 0.0)  # the reviewer's "0.000 [0, 0]"
    result = mean_interval(zeros, kind="proportion")
    assert result.method == "wilson" and result.low == 0 and result.high == pytest.approx(Z ** 2 / (20 + Z ** 2))
    # fractional hits (expected hits over tied maxima): the same formula on the sum of the scores
    fractional = mean_interval(np.array([0.5, 0.5, 1.0, 0.0, np.nan]), kind="proportion")
    assert (fractional.mean, fractional.n) == (0.5, 4)
    assert (fractional.low, fractional.high) == pytest.approx(wilson_interval(2.0, 4))
    boot = mean_interval(np.array([0.1, 0.4, 0.7]), kind="bootstrap", replicates=200)
    assert boot.method == "bootstrap" and boot[:4] == bootstrap_mean_ci([0.1, 0.4, 0.7], replicates=200)


def test_mean_interval_names_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mean_interval(np.array([0.2, 1.5]), kind="proportion")
    with pytest.raises(ValueError, match="kind"):
        mean_interval(np.array([0.2]), kind="normal")


def test_hit_rate_metrics_are_proportions():
    assert interval_kind("pointing_game") == interval_kind("pointing_game_strict") == "proportion"
    assert interval_kind("energy_pointing_game") == interval_kind("deletion_auc") == "bootstrap"


# --- sign-flip test ----------------------------------------------------------------------------------------------


def test_sign_flip_known_answers():
    # d = (1, 2, 3): of the 8 sign patterns only (+,+,+) and (-,-,-) reach |sum| = 6
    assert sign_flip_test(np.array([1.0, 2.0, 3.0]), np.zeros(3)) == pytest.approx(2 / 8)
    # four +1 and one -1: |sum| >= 3 for 0, 1, 4 or 5 positive signs: (1 + 5 + 5 + 1) / 32
    assert sign_flip_pvalues(np.array([1.0, 1.0, 1.0, 1.0, -1.0]))[0] == pytest.approx(12 / 32)
    assert sign_flip_pvalues(np.zeros(6))[0] == 1.0  # no difference at all
    assert np.isnan(sign_flip_pvalues(np.full(4, np.nan))[0])


def test_sign_flip_leaves_out_undefined_images():
    d = np.array([0.3, -0.1, np.nan, 0.5, 0.2, np.nan])
    assert sign_flip_pvalues(d)[0] == pytest.approx(sign_flip_pvalues(d[~np.isnan(d)])[0])


def _scipy_paired(a, b, n_resamples):
    return sps.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
                                n_resamples=n_resamples, random_state=0).pvalue


def test_sign_flip_agrees_with_scipy_exactly_on_few_images():
    rng = np.random.default_rng(5)
    a, b = rng.random(10), rng.random(10)
    a[:4] += 0.3
    assert 10 <= EXACT_MAX
    assert sign_flip_test(a, b) == pytest.approx(_scipy_paired(a, b, np.inf), abs=1e-12)


def test_sign_flip_agrees_with_scipy_by_monte_carlo_on_many_images():
    rng = np.random.default_rng(6)
    a, b = rng.random(60), rng.random(60)
    a += 0.1
    ours = sign_flip_test(a, b, permutations=20000)
    assert ours == pytest.approx(_scipy_paired(a, b, 20000), abs=0.01)


def test_sign_flip_is_vectorised_row_by_row():
    d = np.random.default_rng(7).normal(0.1, 1, (4, 30))
    together = sign_flip_pvalues(d, seed=3)
    assert together.tolist() == [sign_flip_pvalues(row, seed=3)[0] for row in d]


# --- Holm and ranks ---------------------------------------------------------------------------------------------


def test_holm_known_answers():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])  # NaN does not count
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    assert holm([]).size == 0 and np.isnan(holm([np.nan])).all()


def test_holm_never_adjusts_below_the_raw_p_and_keeps_the_order():
    p = np.random.default_rng(8).random(30) ** 3
    adjusted = holm(p)
    assert (adjusted >= p).all() and (adjusted <= 1).all()
    order = np.argsort(p)
    assert (np.diff(adjusted[order]) >= 0).all()


def test_ranks_are_direction_aware_competition_ranks():
    means = np.array([0.2, 0.9, 0.5, 0.9, np.nan])
    assert ranks(means, "higher").tolist() == [4, 1, 3, 1, 5]
    assert ranks(means, "lower").tolist() == [1, 3, 2, 3, 5]
    assert ranks(np.array([[1.0, 2.0], [2.0, 1.0]]), "higher").tolist() == [[2, 1], [1, 2]]


# --- summarise -----------------------------------------------------------------------------------------------------


def scaled_cube(methods, **kwargs):
    """``cube_for`` with its scores squeezed into [0.2, 0.8], so that shifts of 0.1 stay valid hit fractions."""
    cube = cube_for(methods, **kwargs)
    cube["score"] = 0.2 + 0.6 * cube.score
    return cube


def row_of(summary, method, metric, **where):
    rows = summary[(summary.method == method) & (summary.metric == metric)]
    for column, value in where.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, f"expected one row of {method}, {metric}, {where}; found {len(rows)}"
    return rows.iloc[0]


def test_summary_signs_gains_by_direction_and_leaderboard_ranks():
    cube = scaled_cube(["gradcam", "saliency", "centre_prior"], n=30)
    cube["score"].loc[{"explainer": "gradcam"}] = cube.score.sel(explainer="centre_prior").values - 0.1
    cube["score"].loc[{"explainer": "saliency"}] = cube.score.sel(explainer="centre_prior").values + 0.1
    summary = summarise(cube, replicates=200)
    row = row_of(summary, "gradcam", "deletion_auc")
    assert row.gain == pytest.approx(0.1, abs=1e-6) and row.beats_control  # lower deletion is better
    assert row.control == "centre_prior" and row.n_paired == 30 and row.p_holm < 0.05
    row = row_of(summary, "gradcam", "pointing_game")
    assert row.gain == pytest.approx(-0.1, abs=1e-6) and not row.beats_control
    table = leaderboard(summary, metrics=["deletion_auc"])
    assert table.method.tolist() == ["gradcam", "centre_prior", "saliency"]


def test_summary_columns_and_interval_kinds():
    summary = summarise(scaled_cube(["gradcam", "centre_prior"]), replicates=50)
    for column in ("n", "mean", "ci_low", "ci_high", "interval", "control", "n_paired", "gain", "gain_low",
                   "gain_high", "p_value", "p_holm", "beats_control", "rank", "rank_low", "rank_high",
                   "tied_with_leader", "small_group", "applicable", "not_applicable", "seconds_per_image", "family",
                   "direction", "metric", "method", "dataset", "model"):
        assert column in summary, column
    assert set(summary[summary.metric == "pointing_game"].interval) == {"wilson"}
    assert set(summary[summary.metric == "deletion_auc"].interval) == {"bootstrap"}
    control = row_of(summary, "centre_prior", "deletion_auc")
    assert np.isnan(control.gain) and np.isnan(control.p_value) and not control.beats_control


def test_binary_scores_get_wilson_intervals_that_do_not_collapse():
    cube = cube_for(["gradcam", "centre_prior"], n=20)
    cube["score"].loc[{"metric": "pointing_game"}] = 0.0
    row = row_of(summarise(cube, replicates=50), "gradcam", "pointing_game")
    assert row["mean"] == 0 and row.ci_low == 0 and row.ci_high == pytest.approx(Z ** 2 / (20 + Z ** 2))


def test_the_strongest_control_is_compared_unless_a_baseline_is_named():
    cube = scaled_cube(["gradcam", "random", "centre_prior"], n=20)
    prior = cube.score.sel(explainer="centre_prior").values
    cube["score"].loc[{"explainer": "random", "metric": "pointing_game"}] = prior[..., 0, :] + 0.2
    cube["score"].loc[{"explainer": "random", "metric": "deletion_auc"}] = prior[..., 1, :] + 0.2  # worse
    summary = summarise(cube, replicates=50)
    assert row_of(summary, "gradcam", "pointing_game").control == "random"
    assert row_of(summary, "gradcam", "deletion_auc").control == "centre_prior"
    forced = summarise(cube, replicates=50, baseline="centre_prior")
    assert set(forced.control) == {"centre_prior"}
    with pytest.raises(ValueError, match="'occlusion'"):
        summarise(cube, replicates=50, baseline="occlusion")


def test_a_tiny_gain_never_beats_the_control_however_consistent():
    cube = scaled_cube(["gradcam", "centre_prior"], n=40)
    cube["score"].loc[{"explainer": "gradcam"}] = cube.score.sel(explainer="centre_prior").values + 0.02
    row = row_of(summarise(cube, replicates=100), "gradcam", "pointing_game")
    assert row.p_holm < 0.001 and row.gain_low > 0 and row.gain < MIN_EFFECT and not row.beats_control


def test_holm_runs_over_every_comparison_of_a_data_set_and_model():
    cube = scaled_cube(["gradcam", "saliency", "occlusion", "centre_prior"], n=12)
    summary = summarise(cube, replicates=50)
    family = summary[summary.family != "control"]
    np.testing.assert_allclose(family.p_holm, holm(family.p_value))
    expected = (family.p_holm < 0.05) & (family.gain >= MIN_EFFECT) & (family.gain_low > 0)
    assert (family.beats_control == expected).all()


def test_nan_scores_give_the_right_n_and_n_paired():
    cube = scaled_cube(["gradcam", "centre_prior"], n=10)
    cube["score"].loc[{"explainer": "gradcam", "metric": "deletion_auc"}] = np.r_[[np.nan] * 3, np.full(7, 0.1)]
    centre = cube.score.sel(explainer="centre_prior", metric="deletion_auc").values.copy()
    centre[..., 9] = np.nan
    cube["score"].loc[{"explainer": "centre_prior", "metric": "deletion_auc"}] = centre
    summary = summarise(cube, replicates=50)
    row = row_of(summary, "gradcam", "deletion_auc")
    assert (row.n, row.n_paired) == (7, 6) and row["mean"] == pytest.approx(0.1)
    assert row.gain == pytest.approx(np.mean(centre.ravel()[3:9]) - 0.1)
    assert row_of(summary, "centre_prior", "deletion_auc").n == 9
    assert "n=7" in leaderboard(summary).set_index("method").loc["gradcam", "deletion_auc"]


def test_rank_intervals_and_the_leaders_that_cannot_be_separated():
    cube = scaled_cube(["gradcam", "saliency", "occlusion", "centre_prior"], n=30)
    prior = cube.score.sel(explainer="centre_prior").values
    cube["score"].loc[{"explainer": "gradcam"}] = prior + 0.15
    cube["score"].loc[{"explainer": "saliency"}] = prior + 0.15  # identical to gradcam: inseparable
    cube["score"].loc[{"explainer": "occlusion"}] = prior - 0.15
    summary = summarise(cube, replicates=200)
    rows = summary[summary.metric == "deletion_auc"].set_index("method")  # lower is better
    assert rows.loc["occlusion", ["rank", "rank_low", "rank_high"]].tolist() == [1, 1, 1]
    assert rows.loc["gradcam", "rank"] == rows.loc["saliency", "rank"] == 3
    assert rows.loc["gradcam", "rank_low"] >= 3 and rows.tied_with_leader.tolist() == [False, False, True, False]
    rows = summary[summary.metric == "pointing_game"].set_index("method")
    assert leader_group(summary, "cxr-phantom", "m", "pointing_game")[1:] in (["saliency"], ["gradcam"])
    assert rows.loc["saliency", "rank_high"] <= 2 and not rows.loc["occlusion", "tied_with_leader"]


def test_pairwise_table_gives_gains_p_and_holm_for_each_pair():
    cube = scaled_cube(["gradcam", "saliency", "centre_prior"], n=20)
    cube["score"].loc[{"explainer": "gradcam"}] = cube.score.sel(explainer="centre_prior").values + 0.1
    table = pairwise_table(cube, "cxr-phantom", "m", "deletion_auc", replicates=100)
    assert list(zip(table.method, table.versus)) == [("gradcam", "saliency"), ("gradcam", "centre_prior"),
                                                     ("saliency", "centre_prior")]
    pair = table.iloc[1]
    assert pair.gain == pytest.approx(-0.1) and pair.gain_high < 0  # deletion: higher is worse
    scores = cube.score.sel(dataset="cxr-phantom", model="m", metric="deletion_auc")
    assert pair.p_value == sign_flip_test(scores.sel(explainer="centre_prior").values,
                                          scores.sel(explainer="gradcam").values)
    np.testing.assert_allclose(table.p_holm, holm(table.p_value))
    with pytest.raises(ValueError, match="lime"):
        pairwise_table(cube, "cxr-phantom", "m", "deletion_auc", ["gradcam", "lime"])


def test_groups_by_a_per_model_coordinate_and_by_quantile_bins():
    cube = scaled_cube(["gradcam", "centre_prior"], n=12)
    by_correct = summarise(cube, replicates=50, by="correct")
    counts = by_correct[by_correct.metric == "deletion_auc"].groupby("correct").group_n.first()
    assert counts.to_dict() == {False: 5, True: 7}  # probabilities linspace(0.2, 0.9, 12) >= 0.5
    # merged with a larger data set, ``correct`` is padded with NaN (a float array): still the same two groups
    padded = cube.reindex(sample=np.arange(16))
    padded["sample_id"] = padded.sample_id.fillna("")
    again = summarise(padded, replicates=50, by="correct")
    assert again[again.metric == "deletion_auc"].groupby("correct").group_n.first().to_dict() == {False: 5, True: 7}
    cube["box_area_fraction"][:] = np.linspace(0.01, 0.12, 12)[None]
    binned = summarise(cube, replicates=50, by="box_area_fraction", bins=3)
    labels = list(dict.fromkeys(binned.box_area_fraction))
    assert [label.split(" ")[0] for label in labels] == ["low", "middle", "high"]
    assert labels[0] == "low (0.01-0.04)" and set(binned.group_n) == {4}
    assert binned.small_group.all() and not binned.beats_control.any()  # 4 images < min_group = 5
    named = summarise(cube, replicates=50, by="box_area_fraction", bins=3, bin_names=("small", "medium", "large"),
                      min_group=4)
    assert named.box_area_fraction.iloc[0].startswith("small (") and not named.small_group.any()
    with pytest.raises(ValueError, match="bins"):
        summarise(cube, replicates=50, by="box_area_fraction")


# --- prose -------------------------------------------------------------------------------------------------------


def test_verdicts_name_won_and_lost_metrics_and_skip_controls():
    from medlit.summary import verdicts

    cube = scaled_cube(["gradcam", "random", "centre_prior"], n=20)
    prior = cube.score.sel(explainer="centre_prior").values
    cube["score"].loc[{"explainer": "gradcam"}] = prior - 0.1
    cube["score"].loc[{"explainer": "random"}] = prior - 0.15  # weaker on the pointing game, stronger on deletion
    text = verdicts(summarise(cube, replicates=200, baseline="centre_prior"), {"gradcam": "Grad-CAM"})
    assert text == "- **Grad-CAM** beats the centre prior on deletion_auc; not on pointing_game."
    text = verdicts(summarise(cube, replicates=200), {"gradcam": "Grad-CAM"})
    assert text == ("- **Grad-CAM** beats the strongest control on no metric; not on pointing_game (the centre "
                    "prior), deletion_auc (the random map).")


def test_ranking_agreement_is_the_spearman_correlation_of_method_means():
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
    assert np.isnan(alone)  # NaN with one data set
