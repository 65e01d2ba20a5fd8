"""bench.stats against scipy, hand computations and synthetic data with known answers."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench import stats

TOL = 1e-12


def _tied_data(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=n), 1)  # ties in x
    y = np.clip(np.round(2 * x + 5 + rng.normal(size=n)), 1, 10)  # many ties in y
    return x, y


# --------------------------------------------------------------------------- point estimates
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_estimates_equal_scipy(seed):
    x, y = _tied_data(seed)
    assert stats.spearman(x, y).value == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=TOL)
    assert stats.kendall_tau_b(x, y).value == pytest.approx(scipy_stats.kendalltau(x, y).statistic, abs=TOL)
    assert stats.pearson(x, y).value == pytest.approx(scipy_stats.pearsonr(x, y).statistic, abs=TOL)
    assert stats.correlation(x, y, "kendall") == stats.kendall_tau_b(x, y)
    assert stats.spearman(x, y).reason == ""


def test_infinity_ranks_highest_for_rank_statistics():
    x, y = _tied_data(3)
    top = int(np.argmax(x))
    with_inf = x.copy()
    with_inf[top] = np.inf  # still the largest: ranks unchanged
    assert stats.spearman(with_inf, y).value == pytest.approx(stats.spearman(x, y).value, abs=TOL)
    assert stats.kendall_tau_b(with_inf, y).value == pytest.approx(stats.kendall_tau_b(x, y).value, abs=TOL)
    bottom = int(np.argmin(x))
    with_inf[bottom] = -np.inf
    assert stats.spearman(with_inf, y).value == pytest.approx(stats.spearman(x, y).value, abs=TOL)


def test_pearson_drops_infinite_pairs_and_says_so():
    x, y = _tied_data(4)
    x[[2, 5]] = np.inf
    estimate = stats.pearson(x, y)
    finite = np.isfinite(x)
    assert estimate.value == pytest.approx(scipy_stats.pearsonr(x[finite], y[finite]).statistic, abs=TOL)
    assert "2 pairs" in estimate.reason and "infinite" in estimate.reason


@pytest.mark.parametrize("statistic", stats.STATISTICS)
@pytest.mark.parametrize(
    "x, y, reason",
    [
        ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], "constant metric"),
        ([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], "constant target"),
        ([1.0, 2.0], [2.0, 1.0], "n < 3"),
        ([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], "NaN values"),
    ],
)
def test_undefined_cases_give_nan_and_reason(statistic, x, y, reason):
    estimate = stats.correlation(x, y, statistic, names=("metric", "target"))
    assert math.isnan(estimate.value)
    assert estimate.reason == reason


def test_pearson_constant_after_dropping_infinities():
    estimate = stats.pearson([np.inf, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert math.isnan(estimate.value)
    assert "constant x" in estimate.reason and "1 pairs" in estimate.reason


# --------------------------------------------------------------------------- bootstrap
def test_cluster_weights_resample_whole_clusters():
    clusters = np.array(["b", "a", "b", "c", "a", "a"])
    weights = stats.cluster_weights(clusters, 500, seed=7)
    assert weights.shape == (6, 500)
    for cluster in "abc":
        rows = weights[clusters == cluster]
        assert np.all(rows == rows[0])  # every row of a cluster gets its cluster's count
    first_rows = weights[[1, 0, 3]]  # one row per cluster a, b, c
    assert np.all(first_rows.sum(axis=0) == 3)  # as many draws as clusters


@pytest.mark.parametrize("statistic", stats.STATISTICS)
def test_weighted_resamples_equal_the_statistic_on_expanded_samples(statistic):
    """Independent check of the vectorised bootstrap: scipy on each resample written out."""
    x, y = _tied_data(5, n=48)
    x[3] = np.inf
    x[9] = -np.inf
    clusters = np.repeat(np.arange(12), 4)
    weights = stats.cluster_weights(clusters, 40, seed=1)
    distribution = stats.bootstrap_distribution(x, y, weights, statistic)
    reference = []
    for column in weights.T.astype(int):
        xs, ys = np.repeat(x, column), np.repeat(y, column)
        reference.append(stats.correlation(xs, ys, statistic).value)
    assert distribution == pytest.approx(reference, abs=1e-12, nan_ok=True)
    scipy_reference = {"spearman": scipy_stats.spearmanr, "kendall": scipy_stats.kendalltau}.get(statistic)
    if scipy_reference:
        column = weights[:, 0].astype(int)
        expected = scipy_reference(np.repeat(x, column), np.repeat(y, column)).statistic
        assert distribution[0] == pytest.approx(expected, abs=1e-12)


def test_resample_constant_in_x_is_nan():
    x = np.array([1.0, 1.0, 2.0, 2.0])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    weights = np.array([[2.0], [2.0], [0.0], [0.0]])  # only cluster with x == 1 drawn
    assert np.isnan(stats.bootstrap_distribution(x, y, weights, "spearman")[0])


def _clustered(seed: int, n_clusters: int = 60, per_cluster: int = 4, pair_noise: float = 0.5):
    rng = np.random.default_rng(seed)
    latent = np.repeat(rng.normal(size=n_clusters), per_cluster) + rng.normal(0, pair_noise, n_clusters * per_cluster)
    clusters = np.repeat(np.arange(n_clusters), per_cluster)
    return latent, clusters, rng


def test_bootstrap_ci_reproducible_and_covers_estimate():
    latent, clusters, rng = _clustered(0)
    x = latent + rng.normal(0, 0.5, latent.size)
    y = latent + rng.normal(0, 0.5, latent.size)
    for statistic in stats.STATISTICS:
        first = stats.cluster_bootstrap_ci(x, y, clusters, statistic, n_boot=400, seed=11)
        again = stats.cluster_bootstrap_ci(x, y, clusters, statistic, n_boot=400, seed=11)
        other = stats.cluster_bootstrap_ci(x, y, clusters, statistic, n_boot=400, seed=12)
        assert first == again
        assert first != other
        point = stats.correlation(x, y, statistic).value
        assert first.low < point < first.high


def test_cluster_resampling_widens_the_interval_when_clusters_dominate():
    """10 originals x 30 anonymizations that barely differ within an original: the
    information is in 10 clusters, not 300 pairs, and the cluster CI must show it."""
    rng = np.random.default_rng(3)
    clusters = np.repeat(np.arange(10), 30)
    cluster_effect = np.repeat(rng.normal(size=10), 30)
    x = cluster_effect + rng.normal(0, 0.05, 300)
    y = 0.5 * cluster_effect + rng.normal(size=10).repeat(30) + rng.normal(0, 0.05, 300)
    by_cluster = stats.cluster_bootstrap_ci(x, y, clusters, "spearman", n_boot=500, seed=0)
    by_pair = stats.cluster_bootstrap_ci(x, y, np.arange(300), "spearman", n_boot=500, seed=0)
    assert (by_cluster.high - by_cluster.low) > 3 * (by_pair.high - by_pair.low)


def test_percentile_interval_needs_half_the_resamples():
    assert all(math.isnan(v) for v in stats.percentile_interval([0.1, np.nan, np.nan, np.nan]))
    low, high = stats.percentile_interval(np.linspace(0, 1, 101), level=0.9)
    assert (low, high) == pytest.approx((0.05, 0.95))


def test_bootstrap_p_value():
    assert stats.bootstrap_p_value(np.full(99, 0.3)) == pytest.approx(2 / 100)  # (0 + 1) * 2 / (99 + 1)
    assert stats.bootstrap_p_value(np.r_[np.full(50, -1.0), np.full(50, 1.0)]) == 1.0
    assert math.isnan(stats.bootstrap_p_value([np.nan]))


def _paired_case(seed: int, noise_a: float, noise_b: float):
    latent, clusters, rng = _clustered(seed, n_clusters=75)
    y = latent + rng.normal(0, 0.3, latent.size)
    a = latent + rng.normal(0, noise_a, latent.size)
    b = latent + rng.normal(0, noise_b, latent.size)
    return a, b, y, clusters


def test_paired_test_detects_the_better_metric():
    significant = 0
    for seed in range(20):
        a, b, y, clusters = _paired_case(seed, 0.3, 1.5)
        result = stats.paired_bootstrap_test(a, b, y, clusters, "spearman", n_boot=400, seed=seed)
        assert result.diff == pytest.approx(stats.spearman(a, y).value - stats.spearman(b, y).value)
        assert result.diff > 0 and result.ci_low > 0
        significant += result.p < 0.05
    assert significant >= 18


def test_paired_test_is_calibrated_when_metrics_are_equal():
    significant = 0
    for seed in range(20):
        a, b, y, clusters = _paired_case(100 + seed, 0.8, 0.8)
        significant += stats.paired_bootstrap_test(a, b, y, clusters, "spearman", n_boot=400, seed=seed).p < 0.05
    assert significant <= 3


def test_paired_test_of_undefined_metric_is_nan():
    a, b, y, clusters = _paired_case(0, 0.3, 0.3)
    result = stats.paired_bootstrap_test(np.ones_like(a), b, y, clusters, "kendall", n_boot=50, seed=0)
    assert all(math.isnan(v) for v in result)


# --------------------------------------------------------------------------- Williams, Holm
def test_williams_test_hand_checked_example():
    """psych::r.test(103, r12=.4, r13=.5, r23=.1) (its documented Williams example):
    |R| = 1 - .16 - .25 - .01 + 2(.4)(.5)(.1) = 0.62; mean r = 0.45;
    denominator = 2 * 102/100 * 0.62 + 0.45^2 * 0.9^3 = 1.2648 + 0.1476225 = 1.4124225;
    t = -0.1 * sqrt(102 * 1.1 / 1.4124225) = -0.89128, df = 100 (psych prints t = -0.89)."""
    t, p = stats.williams_test(0.4, 0.5, 0.1, 103)
    assert t == pytest.approx(-0.1 * math.sqrt(102 * 1.1 / 1.4124225), abs=1e-12)
    assert t == pytest.approx(-0.89128, abs=1e-5)
    assert p == pytest.approx(2 * scipy_stats.t.sf(abs(t), 100), abs=1e-12)
    assert p == pytest.approx(0.3749, abs=1e-3)
    assert stats.williams_test(0.5, 0.4, 0.1, 103).t == pytest.approx(-t)
    assert all(math.isnan(v) for v in stats.williams_test(0.4, 0.5, 0.1, 3))
    assert all(math.isnan(v) for v in stats.williams_test(math.nan, 0.5, 0.1, 50))


def test_holm_hand_computed():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=TOL)
    # capped at 1; NaN stays NaN and does not count as a test (m = 2)
    assert stats.holm([np.nan, 0.6, 0.01]) == pytest.approx([np.nan, 0.6, 0.02], nan_ok=True)
    assert stats.holm([0.7, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]).size == 0


def test_holm_is_monotone_and_never_below_raw():
    p = np.random.default_rng(0).uniform(0, 0.2, 25)
    adjusted = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)


# --------------------------------------------------------------------------- noise ceiling
def _spearman_of_normal(r: float) -> float:
    """Spearman rho of a bivariate normal with Pearson r."""
    return 6 / math.pi * math.asin(r / 2)


def test_split_half_matches_theoretical_reliability():
    """truth ~ N(0,1), 8 annotators = truth + N(0,1): halves of 4 correlate at
    r = 1 / (1 + 1/4) = 0.8 (Pearson); on the Spearman scale that is (6/pi) asin(0.4)."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=3000)
    ratings = truth[:, None] + rng.normal(size=(3000, 8))
    half = _spearman_of_normal(0.8)
    expected = 2 * half / (1 + half)
    estimate = stats.split_half_reliability(ratings, seed=0)
    assert estimate.reason == ""
    assert estimate.value == pytest.approx(expected, abs=0.015)
    # one annotator vs the mean of 7 others: r = 1 / sqrt(2 * (1 + 1/7))
    loo = stats.leave_one_out_agreement(ratings)
    assert loo.value == pytest.approx(_spearman_of_normal(1 / math.sqrt(2 * 8 / 7)), abs=0.015)


def test_split_half_is_seeded_and_handles_skipped_ratings():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=400)
    ratings = truth[:, None] + rng.normal(size=(400, 20))
    ratings[rng.uniform(size=ratings.shape) < 0.3] = np.nan
    first = stats.split_half_reliability(ratings, n_splits=30, seed=5)
    assert first == stats.split_half_reliability(ratings, n_splits=30, seed=5)
    assert first != stats.split_half_reliability(ratings, n_splits=30, seed=6)
    assert 0.8 < first.value < 1.0
    assert math.isfinite(stats.leave_one_out_agreement(ratings).value)


def test_split_half_enumerates_small_panels():
    ratings = np.random.default_rng(2).normal(size=(50, 4))
    # 4 annotators: 3 distinct splits, all used, so the seed does not matter
    assert stats.split_half_reliability(ratings, seed=0) == stats.split_half_reliability(ratings, seed=1)


def test_ceiling_undefined_cases():
    assert stats.split_half_reliability(np.ones((10, 1))).reason == "fewer than 2 annotators"
    constant = stats.split_half_reliability(np.full((10, 4), 3.0))
    assert math.isnan(constant.value) and "constant" in constant.reason
    assert math.isnan(stats.cronbach_alpha(np.array([[1.0, np.nan], [2.0, 3.0]])).value)


def test_cronbach_alpha_hand_computed():
    """Complete rows only (the NaN row is left out). Annotator variances (ddof 1):
    14.75/3, 14/3, 8.75/3 -> sum 12.5; row sums 5, 10, 14, 19 -> variance 106/3;
    alpha = 3/2 * (1 - 12.5 / (106/3)) = 102.75 / 106."""
    ratings = np.array([[1, 2, 2], [3, 3, 4], [5, 4, 5], [6, 7, 6], [9, np.nan, 1]], dtype=float)
    assert stats.cronbach_alpha(ratings).value == pytest.approx(102.75 / 106, abs=TOL)


def test_ceiling_transform_is_applied():
    rng = np.random.default_rng(4)
    ratings = rng.normal(size=(200, 6))
    binary = stats.cronbach_alpha(ratings, transform=lambda s: (s > 0).astype(float))
    assert binary.value == pytest.approx(stats.cronbach_alpha((ratings > 0).astype(float)).value, abs=TOL)


def test_ceiling_for_other_statistics():
    assert stats.ceiling_for("spearman", 0.7) == 0.7
    assert stats.ceiling_for("kendall", 1.0) == pytest.approx(1.0)
    assert stats.ceiling_for("pearson", 0.0) == 0.0
    rho = _spearman_of_normal(0.6)
    assert stats.ceiling_for("pearson", rho) == pytest.approx(0.6, abs=TOL)
    assert stats.ceiling_for("kendall", rho) == pytest.approx(2 / math.pi * math.asin(0.6), abs=TOL)
    with pytest.raises(ValueError, match="allowed"):
        stats.ceiling_for("tau", 0.5)
