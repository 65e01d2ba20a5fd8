"""bench.analysis.stats against scipy, hand computations and synthetic data with known answers."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench.analysis import stats
from bench.errors import InputError

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
    with pytest.raises(InputError, match="unknown statistic tau; choose from: kendall, pearson, spearman"):
        stats.ceiling_for("tau", 0.5)


# --------------------------------------------------------------------------- issue 15: clustered null, ceiling, alpha
def _clustered_pairs(rng, *, n_clusters: int, per_cluster: int, cluster_noise_a: float, cluster_noise_b: float):
    """Several anonymizations per original: the human target y and two metrics a, b all follow
    a latent t with an original-level component, and each metric has its own ORIGINAL-level
    error (shared by that original's anonymizations), so rows of one original are dependent.
    With equal noise, corr(a, y) = corr(b, y) in the population: a true null."""
    clusters = np.repeat(np.arange(n_clusters), per_cluster)
    latent = rng.normal(size=n_clusters)[clusters] + rng.normal(size=clusters.size)
    y = latent + rng.normal(scale=0.7, size=clusters.size)
    a = latent + cluster_noise_a * rng.normal(size=n_clusters)[clusters] + 0.3 * rng.normal(size=clusters.size)
    b = latent + cluster_noise_b * rng.normal(size=n_clusters)[clusters] + 0.3 * rng.normal(size=clusters.size)
    return a, b, y, clusters


def _rejection_rates(n_sims: int, cluster_noise_a: float, seed: int = 0) -> tuple[float, float]:
    """Share of simulated data sets in which the paired cluster bootstrap (what p_vs_best
    runs) and Williams' t reject equal Spearman correlations at alpha = .05."""
    rng = np.random.default_rng(seed)
    bootstrap_p, williams_p = [], []
    for index in range(n_sims):
        a, b, y, clusters = _clustered_pairs(rng, n_clusters=40, per_cluster=4, cluster_noise_a=cluster_noise_a,
                                             cluster_noise_b=1.5)
        weights = stats.cluster_weights(clusters, 199, index)
        r_a, r_b = stats.spearman(a, y).value, stats.spearman(b, y).value
        bootstrap_p.append(stats.paired_test_from_distributions(
            r_a - r_b, stats.bootstrap_distribution(a, y, weights, "spearman"),
            stats.bootstrap_distribution(b, y, weights, "spearman")).p)
        williams_p.append(stats.williams_test(r_a, r_b, stats.spearman(a, b).value, y.size).p)
    return float(np.mean(np.array(bootstrap_p) < 0.05)), float(np.mean(np.array(williams_p) < 0.05))


def test_paired_cluster_bootstrap_holds_its_level_under_a_clustered_null():
    """300 data sets of 40 originals x 4 anonymizations under a true null. Measured: the
    cluster bootstrap rejects 4.3% (at most 7% is required), Williams' t, which treats the
    160 pairs as independent, 17% (25% in the audit's simulation): why correlate dropped it."""
    bootstrap_rate, williams_rate = _rejection_rates(300, cluster_noise_a=1.5)
    assert bootstrap_rate <= 0.07
    assert williams_rate > 0.15


def test_paired_cluster_bootstrap_has_power_on_a_real_difference():
    """Metric a with a third of b's original-level error (Spearman about 0.80 vs 0.55 here):
    the cluster bootstrap detects it in 93% of 100 data sets of 40 originals (measured)."""
    bootstrap_rate, _ = _rejection_rates(100, cluster_noise_a=0.5, seed=1)
    assert bootstrap_rate >= 0.75


def test_split_half_steps_up_equal_halves_of_an_odd_panel():
    """5 annotators = truth + N(0, 1): each split compares two halves of 2 (one annotator sits
    out), whose means correlate at r = 2/3 (Pearson); Spearman-Brown by 5/2 gives the panel's
    reliability. (The old 2-vs-3 split stepped up by 2 as if the halves were equal.)"""
    rng = np.random.default_rng(3)
    truth = rng.normal(size=4000)
    ratings = truth[:, None] + rng.normal(size=(4000, 5))
    half = _spearman_of_normal(2 / 3)
    expected = 2.5 * half / (1 + 1.5 * half)
    assert stats.split_half_reliability(ratings, seed=0).value == pytest.approx(expected, abs=0.01)
    assert stats.spearman_brown(0.5, 2.0) == pytest.approx(2 / 3, abs=TOL)
    assert math.isnan(stats.spearman_brown(-0.9, 3.0))


@pytest.mark.parametrize("n_annotators", [3, 4, 5])
def test_noise_ceiling_is_reached_by_the_latent_true_score(n_annotators):
    """A metric equal to the latent true score is the best any metric can be: its Spearman
    with the panel mean over the ceiling, sqrt(reliability), is about 1 on average (within
    0.02 over 120 simulated test sets of 200 pairs) and not systematically above: above 1
    in 25-75% of the sets. The old ratio (value / reliability) sat well above 1."""
    rng = np.random.default_rng(n_annotators)
    fractions, old_ratios = [], []
    for _ in range(120):
        truth = rng.normal(size=200)
        ratings = truth[:, None] + 1.2 * rng.normal(size=(200, n_annotators))
        reliability = stats.split_half_reliability(ratings, n_splits=20).value
        value = stats.spearman(truth, ratings.mean(axis=1)).value
        fractions.append(value / stats.noise_ceiling(reliability).value)
        old_ratios.append(value / reliability)
    fractions = np.array(fractions)
    assert abs(fractions.mean() - 1.0) < 0.02
    assert 0.25 < np.mean(fractions > 1.0) < 0.75
    assert np.mean(old_ratios) > 1.05


def test_noise_ceiling_undefined_cases():
    assert stats.noise_ceiling(0.64).value == pytest.approx(0.8, abs=TOL)
    assert math.isnan(stats.noise_ceiling(-0.1).value) and "<= 0" in stats.noise_ceiling(-0.1).reason
    assert math.isnan(stats.noise_ceiling(math.nan).value)


@pytest.mark.parametrize("level", stats.KRIPPENDORFF_LEVELS)
@pytest.mark.parametrize("seed", [0, 1])
def test_krippendorff_alpha_equals_the_reference_package(level, seed):
    """Against the `krippendorff` package (PyPI, Castro's implementation), to 1e-12: integer
    ratings 1-10 with skipped ratings, a pair rated once (left out), and a label transform."""
    krippendorff = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(seed)
    truth = rng.uniform(1, 10, 80)
    ratings = np.clip(np.rint(truth[:, None] + rng.normal(scale=1.5, size=(80, 5))), 1, 10)
    ratings[rng.uniform(size=ratings.shape) < 0.25] = np.nan
    ratings[0, 1:] = np.nan
    expected = krippendorff.alpha(reliability_data=ratings.T, level_of_measurement=level)
    assert stats.krippendorff_alpha(ratings, level=level).value == pytest.approx(expected, abs=TOL)

    def to_three(scores):
        return np.searchsorted([5.0, 8.0], scores, side="right").astype(float)

    three = np.where(np.isnan(ratings), np.nan, to_three(np.nan_to_num(ratings)))
    expected = krippendorff.alpha(reliability_data=three.T, level_of_measurement=level)
    assert stats.krippendorff_alpha(ratings, level=level, transform=to_three).value == pytest.approx(expected, abs=TOL)


def test_krippendorff_alpha_undefined_cases():
    assert stats.krippendorff_alpha(np.ones((5, 1))).reason == "fewer than 2 annotators"
    assert stats.krippendorff_alpha(np.full((5, 3), 4.0)).reason == "every rating has the same value"
    lonely = np.array([[1.0, np.nan], [np.nan, 2.0]])
    assert stats.krippendorff_alpha(lonely).reason == "no pair rated by 2 annotators"
    with pytest.raises(ValueError, match="allowed"):
        stats.krippendorff_alpha(np.ones((3, 2)), level="nominal")
