"""Statistics for metric-vs-human agreement: correlations, cluster bootstrap, paired tests,
multiple-testing correction and noise ceilings. Pure functions of numpy arrays (numpy/scipy
only); randomness comes from `np.random.default_rng(seed)`, so every result is reproducible.

Conventions:
- A correlation is returned as `Estimate(value, reason)`: `reason` is "" when the value is
  defined, otherwise one of "NaN values", "n < 3", "constant x", "constant y" (value NaN;
  `names` rewords x and y), or, for Pearson only, a note that infinite pairs were dropped.
- +inf / -inf are legitimate scores (PSNR of identical images). Rank statistics (Spearman,
  Kendall tau-b) keep them: +inf ranks above every finite value, -inf below. Pearson cannot
  use them and DROPS every pair with an infinite value, saying how many in `reason`.
- A statistic is one `Statistic` record (name, table symbol, point estimate, weighted
  bootstrap, noise-ceiling conversion, finite pairs only or not), found by name in
  `STATISTIC_REGISTRY` (built-ins, `register`, the `bench.statistics` entry points) or as an explicit
  "module:attr": nothing here or in bench.analysis.correlate or reports/ branches on a statistic's name.
- Bootstrap resamples are integer weights per row: resampling whole clusters (e.g. original
  images shared by several anonymizations) with replacement gives each row the number of
  times its cluster was drawn. A weighted statistic with integer weights equals the plain
  statistic on the expanded resample (ties, midranks and tie corrections included), which
  lets every resample be computed at once as an (n, n_boot) array. Kendall's resamples
  use an n x n sign matrix (O(n^2) memory: 8 MB at n = 1000).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from bench.errors import InputError
from metrics.registry import Registry

#: Most rows x resamples held at once by the Kendall bootstrap (bounds its memory).
_KENDALL_BLOCK_ELEMENTS = 4_000_000


class Estimate(NamedTuple):
    value: float
    reason: str


class Interval(NamedTuple):
    low: float
    high: float


class PairedTest(NamedTuple):
    """corr(a, y) - corr(b, y): point difference, bootstrap CI of it, two-sided p."""

    diff: float
    ci_low: float
    ci_high: float
    p: float


class WilliamsTest(NamedTuple):
    t: float
    p: float


def _as_vector(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).ravel()


# --------------------------------------------------------------------------- point estimates
def undefined_reason(x, y, names: tuple[str, str] = ("x", "y")) -> str:
    """Why a correlation of x and y is undefined ("" when it is defined).
    `names` words the constant-column reasons, e.g. ("metric column", "human target")."""
    x, y = _as_vector(x), _as_vector(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
    if np.isnan(x).any() or np.isnan(y).any():
        return "NaN values"
    if x.size < 3:
        return "n < 3"
    for values, name in zip((x, y), names):
        if np.all(values == values[0]):
            return f"constant {name}"
    return ""


def _drop_infinite(x: np.ndarray, y: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray, str]:
    finite = ~(np.isinf(x) | np.isinf(y))
    dropped = int(finite.size - finite.sum())
    note = f"{dropped} pairs with infinite values dropped ({label})" if dropped else ""
    return x[finite], y[finite], note


def spearman(x, y, names: tuple[str, str] = ("x", "y")) -> Estimate:
    """Spearman's rho (scipy.stats.spearmanr); infinities keep their rank."""
    return SPEARMAN.estimate(x, y, names)


def kendall_tau_b(x, y, names: tuple[str, str] = ("x", "y")) -> Estimate:
    """Kendall's tau-b (scipy.stats.kendalltau, variant 'b'); infinities keep their rank."""
    return KENDALL.estimate(x, y, names)


def pearson(x, y, names: tuple[str, str] = ("x", "y")) -> Estimate:
    """Pearson's r (scipy.stats.pearsonr) on the pairs where both values are finite."""
    return PEARSON.estimate(x, y, names)


def correlation(x, y, statistic: str | Statistic, names: tuple[str, str] = ("x", "y")) -> Estimate:
    """The statistic (a registered name, "module:attr" or a `Statistic`) of x and y; `names`
    words the reason when a column is constant."""
    return resolve_statistic(statistic).estimate(x, y, names)


# --------------------------------------------------------------------------- bootstrap
def cluster_weights(clusters, n_boot: int, seed: int | None) -> np.ndarray:
    """(n, n_boot) float64 weights, one column per resample: row i's weight is how often
    its cluster was drawn when drawing as many clusters as there are, with replacement.
    (Rows first so that selecting rows and summing over them run on contiguous memory.)"""
    _, codes = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(codes.max()) + 1 if codes.size else 0
    if n_clusters == 0:
        return np.zeros((0, n_boot))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)
    return counts.T[codes].astype(np.float64)


class _Groups(NamedTuple):
    """Tie groups of one vector and their weights in every resample: sort order, group of
    each sorted position, (n_groups, n_boot) weight below each group and of each group."""

    order: np.ndarray
    group: np.ndarray
    below: np.ndarray
    size: np.ndarray

    @property
    def midranks(self) -> np.ndarray:
        """(n, n_boot) midrank of every row in each expanded resample (rows in input order)."""
        ranks = np.empty((self.group.size, self.size.shape[1]))
        ranks[self.order] = (self.below + (self.size + 1.0) / 2.0)[self.group]
        return ranks

    @property
    def constant(self) -> np.ndarray:
        """Per resample: does only one distinct value carry weight?"""
        return (self.size > 0).sum(axis=0) <= 1

    @property
    def tied_pairs(self) -> np.ndarray:
        return (self.size * (self.size - 1.0) / 2.0).sum(axis=0)


def _weighted_groups(values: np.ndarray, weights: np.ndarray) -> _Groups:
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new_group = np.concatenate(([True], ordered[1:] != ordered[:-1]))  # inf == inf: one group
    size = np.add.reduceat(weights[order], np.flatnonzero(new_group), axis=0)
    return _Groups(order, np.cumsum(new_group) - 1, np.cumsum(size, axis=0) - size, size)


def _weighted_pearson(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r per resample; x and y are (n, 1) or (n, n_boot)."""
    total = weights.sum(axis=0)
    dx = x - (weights * x).sum(axis=0) / total
    dy = y - (weights * y).sum(axis=0) / total
    covariance = (weights * dx * dy).sum(axis=0)
    return covariance / np.sqrt((weights * dx * dx).sum(axis=0) * (weights * dy * dy).sum(axis=0))


def _pairwise_sign(values: np.ndarray) -> np.ndarray:
    """sign(v_i - v_j) as int8, by comparison so that inf - inf never appears."""
    return (values[:, None] > values[None, :]).astype(np.int8) - (values[:, None] < values[None, :]).astype(np.int8)


def _weighted_kendall(
    weights: np.ndarray, x: np.ndarray, y: np.ndarray, x_groups: _Groups, y_groups: _Groups
) -> np.ndarray:
    """tau-b per resample: (C - D) / sqrt((n0 - n1)(n0 - n2)) on the expanded resample, with
    C - D = 1/2 w' S w for S_ij = sign(x_i - x_j) sign(y_i - y_j), and the tie counts n1, n2
    from the weight of each tie group (copies of one row are tied in x and in y).
    O(n^2) memory for S; the resamples go through in blocks."""
    agreement = (_pairwise_sign(x) * _pairwise_sign(y)).astype(np.float64)
    block = max(1, _KENDALL_BLOCK_ELEMENTS // max(1, x.size))
    columns = range(0, weights.shape[1], block)
    net = np.concatenate(
        [0.5 * ((agreement @ weights[:, c : c + block]) * weights[:, c : c + block]).sum(axis=0) for c in columns]
    )
    total = weights.sum(axis=0)
    pairs = total * (total - 1.0) / 2.0
    return net / np.sqrt((pairs - x_groups.tied_pairs) * (pairs - y_groups.tied_pairs))


def bootstrap_distribution(x, y, weights: np.ndarray, statistic: str | Statistic) -> np.ndarray:
    """The statistic on every weighted resample (`weights` is (n, n_boot), as from
    `cluster_weights`): (n_boot,) with NaN where a resample is undefined (constant in x or
    y). All NaN when the statistic is undefined on the data. A finite-only statistic
    (Pearson) drops pairs with infinite values first, as its point estimate does."""
    chosen = resolve_statistic(statistic)
    x, y = _as_vector(x), _as_vector(y)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[0] != x.size:
        raise ValueError(f"weights must be (n, n_boot) with n = {x.size}, got {weights.shape}")
    if chosen.finite_only and not (np.isnan(x).any() or np.isnan(y).any()):
        finite = ~(np.isinf(x) | np.isinf(y))
        x, y, weights = x[finite], y[finite], weights[finite]
    if undefined_reason(x, y):
        return np.full(weights.shape[1], math.nan)
    sample = WeightedSample(x, y, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.array(chosen.bootstrap(sample), dtype=np.float64)
    values[sample.x_groups.constant | sample.y_groups.constant] = math.nan
    return values


def percentile_interval(distribution, level: float = 0.95) -> Interval:
    """Percentile interval of the defined resamples; NaN when fewer than half are defined
    (the data are then too degenerate for the interval to mean anything)."""
    values = _as_vector(distribution)
    defined = values[np.isfinite(values)]
    if defined.size == 0 or defined.size < values.size / 2:
        return Interval(math.nan, math.nan)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(defined, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def cluster_bootstrap_ci(
    x, y, clusters, statistic: str, n_boot: int = 2000, seed: int | None = 0, level: float = 0.95
) -> Interval:
    """Percentile CI of the statistic, resampling whole clusters with replacement."""
    distribution = bootstrap_distribution(x, y, cluster_weights(clusters, n_boot, seed), statistic)
    return percentile_interval(distribution, level)


def mean_interval(values, clusters, n_boot: int, seed: int | None, level: float = 0.95) -> Interval:
    """Percentile CI of the mean of `values`, resampling whole `clusters` with replacement
    (each value its own cluster for plain pairs); NaN for fewer than 2 values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return Interval(math.nan, math.nan)
    weights = cluster_weights(clusters, n_boot, seed)
    return percentile_interval((weights * values[:, None]).sum(axis=0) / weights.sum(axis=0), level)


def bootstrap_p_value(differences) -> float:
    """Two-sided p that the bootstrapped difference is centred on 0:
    2 * min(#(d <= 0) + 1, #(d >= 0) + 1) / (B + 1), capped at 1 (B = defined resamples)."""
    values = _as_vector(differences)
    defined = values[np.isfinite(values)]
    if defined.size == 0:
        return math.nan
    below = np.count_nonzero(defined <= 0) + 1
    above = np.count_nonzero(defined >= 0) + 1
    return float(min(1.0, 2.0 * min(below, above) / (defined.size + 1)))


def paired_test_from_distributions(
    diff: float, distribution_a: np.ndarray, distribution_b: np.ndarray, level: float = 0.95
) -> PairedTest:
    """Paired test from two bootstrap distributions computed on the SAME resamples."""
    if not math.isfinite(diff):
        return PairedTest(math.nan, math.nan, math.nan, math.nan)
    differences = np.asarray(distribution_a) - np.asarray(distribution_b)
    low, high = percentile_interval(differences, level)
    return PairedTest(float(diff), low, high, bootstrap_p_value(differences))


def paired_bootstrap_test(
    x_a, x_b, y, clusters, statistic: str, n_boot: int = 2000, seed: int | None = 0, level: float = 0.95
) -> PairedTest:
    """Is corr(a, y) different from corr(b, y)? Both on the same cluster resamples."""
    diff = correlation(x_a, y, statistic).value - correlation(x_b, y, statistic).value
    weights = cluster_weights(clusters, n_boot, seed)
    return paired_test_from_distributions(
        diff,
        bootstrap_distribution(x_a, y, weights, statistic),
        bootstrap_distribution(x_b, y, weights, statistic),
        level,
    )


def williams_test(r_ay: float, r_by: float, r_ab: float, n: int) -> WilliamsTest:
    """Williams' t for H0: rho(a, y) = rho(b, y), two correlations sharing y (Steiger 1980,
    eq. 7), df = n - 3, two-sided p. NaN when n < 4 or the correlations are inconsistent.

    It assumes n INDEPENDENT pairs. With several anonymizations per original it rejects a
    true null far too often (17% at alpha .05 in tests/bench/analysis/test_stats.py, where the paired
    cluster bootstrap rejects 4.3%), so bench.analysis.correlate does not report it."""
    values = (r_ay, r_by, r_ab)
    if n < 4 or not all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in values):
        return WilliamsTest(math.nan, math.nan)
    determinant = 1.0 - r_ay**2 - r_by**2 - r_ab**2 + 2.0 * r_ay * r_by * r_ab
    mean_r = (r_ay + r_by) / 2.0
    denominator = 2.0 * (n - 1) / (n - 3) * determinant + mean_r**2 * (1.0 - r_ab) ** 3
    if denominator <= 0.0:
        return WilliamsTest(math.nan, math.nan)
    t = (r_ay - r_by) * math.sqrt((n - 1) * (1.0 + r_ab) / denominator)
    from scipy import stats as scipy_stats

    return WilliamsTest(t, float(2.0 * scipy_stats.t.sf(abs(t), n - 3)))


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values (statsmodels multipletests(method="holm")).
    NaN entries stay NaN and do not count towards the number of tests."""
    p = _as_vector(pvalues)
    adjusted = np.full_like(p, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    scaled = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


# --------------------------------------------------------------------------- noise ceiling
Transform = Callable[[np.ndarray], np.ndarray]


def _transformed(values: np.ndarray, transform: Transform | None) -> np.ndarray:
    return values if transform is None else np.asarray(transform(values), dtype=np.float64)


def _ratings_matrix(ratings) -> np.ndarray:
    matrix = np.asarray(ratings, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError("ratings must be a (pairs, annotators) matrix")
    return matrix


def _row_means(matrix: np.ndarray) -> np.ndarray:
    """Mean of each row's ratings, skipping NaN; NaN for a row nobody rated."""
    rated = ~np.isnan(matrix)
    counts = rated.sum(axis=1)
    sums = np.where(rated, matrix, 0.0).sum(axis=1)
    return np.divide(sums, counts, out=np.full(sums.shape, math.nan), where=counts > 0)


def _rank_agreement(a: np.ndarray, b: np.ndarray, transform: Transform | None) -> Estimate:
    """Spearman of two score vectors on the rows both have, after `transform`."""
    rated = ~(np.isnan(a) | np.isnan(b))
    return spearman(_transformed(a[rated], transform), _transformed(b[rated], transform))


def _mean_estimate(estimates: list[Estimate], what: str) -> Estimate:
    defined = [e.value for e in estimates if math.isfinite(e.value)]
    if not defined:
        reasons = sorted({e.reason for e in estimates if e.reason})
        return Estimate(math.nan, f"undefined for every one of the {what}: {', '.join(reasons)}")
    return Estimate(float(np.mean(defined)), "")


def _half_splits(n_annotators: int, n_splits: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs of disjoint halves of EQUAL size h = k // 2 (annotator index arrays). With an odd
    k one annotator sits out of each split, a different one across splits, so no split has to
    pretend that 2 and 3 annotators are equal halves. Every distinct pair of halves when there
    are at most n_splits of them, else n_splits random ones."""
    half = n_annotators // 2
    sitting_out = range(n_annotators) if n_annotators % 2 else [None]
    distinct = len(sitting_out) * math.comb(2 * half, half) // 2
    if distinct <= n_splits:
        splits = []
        for out in sitting_out:
            rest = [a for a in range(n_annotators) if a != out]
            for first in itertools.combinations(rest, half):
                if rest[0] in first:  # each unordered pair of halves once
                    splits.append((np.array(first), np.array([a for a in rest if a not in first])))
        return splits
    splits = []
    for _ in range(n_splits):
        order = rng.permutation(n_annotators)
        splits.append((order[:half], order[half : 2 * half]))
    return splits


def spearman_brown(r: float, factor: float) -> float:
    """Reliability of a panel `factor` times the size of one whose reliability is r:
    factor r / (1 + (factor - 1) r); NaN where the formula breaks down (1 + (factor - 1) r <= 0)."""
    denominator = 1.0 + (factor - 1.0) * r
    if not math.isfinite(r) or denominator <= 0.0:
        return math.nan
    return factor * r / denominator


def split_half_reliability(
    ratings, *, n_splits: int = 100, seed: int | None = 0, transform: Transform | None = None
) -> Estimate:
    """Reliability of the whole panel's mean score, from split halves.

    Each split divides the annotators into two halves of equal size h = k // 2 (with an odd
    k one annotator sits out, see `_half_splits`); each half's score of a pair is the mean of
    its members' ratings (NaN = skipped; pairs a half did not rate are left out), passed
    through `transform` (e.g. the label granularity). The Spearman r of the halves is the
    reliability of an h-annotator panel; Spearman-Brown steps it up to the k annotators,
    k/h r / (1 + (k/h - 1) r) (for even k the familiar 2r / (1 + r)), and the splits are
    averaged. This estimates how well our panel's mean agrees with an independent panel of
    the same size; its square root bounds a metric's correlation with the panel mean
    (`noise_ceiling`)."""
    matrix = _ratings_matrix(ratings)
    n_annotators = matrix.shape[1]
    if n_annotators < 2:
        return Estimate(math.nan, "fewer than 2 annotators")
    factor = n_annotators / (n_annotators // 2)
    estimates = []
    for first, second in _half_splits(n_annotators, n_splits, np.random.default_rng(seed)):
        r, reason = _rank_agreement(_row_means(matrix[:, first]), _row_means(matrix[:, second]), transform)
        estimates.append(Estimate(spearman_brown(r, factor), reason))
    return _mean_estimate(estimates, "split halves")


def noise_ceiling(reliability: float) -> Estimate:
    """The highest correlation a metric can be expected to reach with the panel's mean score:
    the correlation of the panel mean with the true score, sqrt(reliability) (classical test
    theory: a panel mean = true score + independent noise). Undefined for a reliability <= 0."""
    if not math.isfinite(reliability):
        return Estimate(math.nan, "reliability undefined")
    if reliability <= 0.0:
        return Estimate(math.nan, f"reliability {reliability:.3g} <= 0")
    return Estimate(math.sqrt(min(reliability, 1.0)), "")


def leave_one_out_agreement(ratings, *, transform: Transform | None = None) -> Estimate:
    """Mean over annotators of Spearman(annotator, mean of the other annotators), each on
    the pairs the annotator rated (and at least one other did)."""
    matrix = _ratings_matrix(ratings)
    if matrix.shape[1] < 2:
        return Estimate(math.nan, "fewer than 2 annotators")
    estimates = [
        _rank_agreement(matrix[:, annotator], _row_means(np.delete(matrix, annotator, axis=1)), transform)
        for annotator in range(matrix.shape[1])
    ]
    return _mean_estimate(estimates, "annotators")


def cronbach_alpha(ratings, *, transform: Transform | None = None) -> Estimate:
    """Cronbach's alpha of the annotators as items, on the COMPLETE rows only (pairs every
    annotator rated): k/(k-1) * (1 - sum of annotator variances / variance of row sums),
    variances with ddof=1, each annotator's ratings passed through `transform` first."""
    matrix = _ratings_matrix(ratings)
    n_annotators = matrix.shape[1]
    if n_annotators < 2:
        return Estimate(math.nan, "fewer than 2 annotators")
    complete = matrix[~np.isnan(matrix).any(axis=1)]
    if complete.shape[0] < 2:
        return Estimate(math.nan, f"{complete.shape[0]} complete rows (rated by every annotator), need 2")
    complete = np.column_stack([_transformed(column, transform) for column in complete.T])
    total_variance = complete.sum(axis=1).var(ddof=1)
    if total_variance == 0.0:
        return Estimate(math.nan, "constant total score")
    item_variance = complete.var(axis=0, ddof=1).sum()
    return Estimate(float(n_annotators / (n_annotators - 1) * (1.0 - item_variance / total_variance)), "")


KRIPPENDORFF_LEVELS: tuple[str, ...] = ("interval", "ordinal")


def krippendorff_alpha(ratings, *, level: str = "interval", transform: Transform | None = None) -> Estimate:
    """Krippendorff's alpha of the annotators, 1 - D_o / D_e, on every pair rated at least
    twice (skipped ratings, NaN, are simply missing), each rating passed through `transform`.

    From the coincidence matrix o (each pair's u ratings contribute every ordered couple of
    different raters, weighted 1 / (u - 1)), with n_c = sum_k o_ck and n = sum n_c:
    alpha = 1 - (n - 1) sum o_ck d_ck / sum n_c n_k d_ck, where d_ck is (c - k)^2 at the
    interval level and, at the ordinal level, (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2, i.e.
    the squared distance of the values' mid-ranks among all pairable ratings."""
    if level not in KRIPPENDORFF_LEVELS:
        raise ValueError(f"unknown level {level!r}; allowed: {', '.join(KRIPPENDORFF_LEVELS)}")
    matrix = _ratings_matrix(ratings)
    if matrix.shape[1] < 2:
        return Estimate(math.nan, "fewer than 2 annotators")
    rated = ~np.isnan(matrix)
    if transform is not None:
        matrix = matrix.copy()
        matrix[rated] = _transformed(matrix[rated], transform)
    pairable = rated.sum(axis=1) >= 2
    if not pairable.any():
        return Estimate(math.nan, "no pair rated by 2 annotators")
    matrix, rated = matrix[pairable], rated[pairable]
    values, codes = np.unique(matrix[rated], return_inverse=True)
    if values.size < 2:
        return Estimate(math.nan, "every rating has the same value")
    counts = np.zeros((matrix.shape[0], values.size))
    np.add.at(counts, (np.nonzero(rated)[0], codes), 1.0)
    per_unit = counts / (counts.sum(axis=1, keepdims=True) - 1.0)
    coincidence = per_unit.T @ counts - np.diag(per_unit.sum(axis=0))
    totals = coincidence.sum(axis=1)
    if level == "interval":
        position = values
    else:
        position = np.cumsum(totals) - totals / 2.0  # mid-rank of each value
    distance = (position[:, None] - position[None, :]) ** 2
    expected = (totals[:, None] * totals[None, :] * distance).sum()
    observed = (coincidence * distance).sum()
    return Estimate(float(1.0 - (totals.sum() - 1.0) * observed / expected), "")


def ceiling_for(statistic: str | Statistic, spearman_ceiling: float) -> float:
    """A Spearman-scale ceiling (`noise_ceiling` of the split-half reliability) on the scale
    of `statistic` (its `ceiling`); NaN for a statistic without a conversion."""
    chosen = resolve_statistic(statistic)
    if not math.isfinite(spearman_ceiling):
        return spearman_ceiling
    return chosen.ceiling(spearman_ceiling) if chosen.ceiling is not None else math.nan


# --------------------------------------------------------------------------- the statistics
class WeightedSample:
    """x, y and the (n, n_boot) resample weights a statistic's bootstrap form gets, with the
    tie groups of x and y computed once, when first asked for (ranks, constant resamples)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> None:
        self.x, self.y, self.weights = x, y, weights

    @cached_property
    def x_groups(self) -> _Groups:
        return _weighted_groups(self.x, self.weights)

    @cached_property
    def y_groups(self) -> _Groups:
        return _weighted_groups(self.y, self.weights)


def expanded_bootstrap(statistic: Statistic) -> Callable[[WeightedSample], np.ndarray]:
    """The bootstrap form of any statistic: its point function on each resample expanded
    (row i repeated weight-i times). Exact, and one point call per resample: the built-ins
    have closed weighted forms instead."""

    def bootstrap(sample: WeightedSample) -> np.ndarray:
        counts = sample.weights.astype(np.int64)
        values = []
        for column in counts.T:
            x, y = np.repeat(sample.x, column), np.repeat(sample.y, column)
            values.append(statistic.point(x, y) if not undefined_reason(x, y) else math.nan)
        return np.asarray(values, dtype=np.float64)

    return bootstrap


@dataclass(frozen=True)
class Statistic:
    """One correlation statistic: everything bench.analysis.correlate, the noise ceiling and the
    report tables need of it. A new statistic is one such record and one registry entry."""

    #: Its name in the correlations table and on the command line (``--statistics``).
    name: str
    #: The row label of the report tables ("ρ") and the word on plots ("Spearman").
    symbol: str
    label: str
    #: x, y -> the statistic; x and y are float64 vectors of n >= 3 pairs, neither constant,
    #: no NaN (and no infinity when `finite_only`).
    point: Callable[[np.ndarray, np.ndarray], float]
    #: A `WeightedSample` -> (n_boot,) values, one per resample; None: `expanded_bootstrap`.
    bootstrap_form: Callable[[WeightedSample], np.ndarray] | None = None
    #: Spearman-scale noise ceiling -> this statistic's scale; None: no ceiling (fraction NaN).
    ceiling: Callable[[float], float] | None = None
    #: Drop pairs with an infinite value (a rank statistic keeps them: +inf ranks highest).
    finite_only: bool = False
    #: Depends on the values only through their ranks, so targets with equal ranks (the
    #: label forms of one granularity) share one computation; False is always safe.
    rank_based: bool = False

    def estimate(self, x, y, names: tuple[str, str] = ("x", "y")) -> Estimate:
        """The statistic with the reason it is undefined, or the note of what was dropped."""
        x, y = _as_vector(x), _as_vector(y)
        note = ""
        if self.finite_only and x.shape == y.shape and not (np.isnan(x).any() or np.isnan(y).any()):
            x, y, note = _drop_infinite(x, y, self.label)
        reason = undefined_reason(x, y, names)
        if reason:
            return Estimate(math.nan, "; ".join(filter(None, (note, reason))))
        return Estimate(float(self.point(x, y)), note)

    def bootstrap(self, sample: WeightedSample) -> np.ndarray:
        return (self.bootstrap_form or expanded_bootstrap(self))(sample)


def _scipy_statistic(function: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def point(x: np.ndarray, y: np.ndarray) -> float:
        from scipy import stats as scipy_stats  # 0.8 s to import: only the correlating commands pay it

        return float(getattr(scipy_stats, function)(x, y).statistic)

    point.__name__ = function
    return point


def _bounded(values: np.ndarray) -> np.ndarray:
    return np.clip(values, -1.0, 1.0)  # rounding can step just outside [-1, 1]


def _spearman_resamples(sample: WeightedSample) -> np.ndarray:
    return _bounded(_weighted_pearson(sample.weights, sample.x_groups.midranks, sample.y_groups.midranks))


def _kendall_resamples(sample: WeightedSample) -> np.ndarray:
    return _bounded(_weighted_kendall(sample.weights, sample.x, sample.y, sample.x_groups, sample.y_groups))


def _pearson_resamples(sample: WeightedSample) -> np.ndarray:
    return _bounded(_weighted_pearson(sample.weights, sample.x[:, None], sample.y[:, None]))


def _pearson_from_spearman(rho: float) -> float:
    """Pearson r = 2 sin(pi rho_s / 6) under bivariate normality."""
    return 2.0 * math.sin(math.pi * rho / 6.0)


def _kendall_from_spearman(rho: float) -> float:
    """Kendall tau = (2/pi) arcsin(r) under bivariate normality (Greiner's relation)."""
    return 2.0 / math.pi * math.asin(max(-1.0, min(1.0, _pearson_from_spearman(rho))))


def _same(value: float) -> float:
    return value


SPEARMAN = Statistic("spearman", "ρ", "Spearman", _scipy_statistic("spearmanr"), _spearman_resamples,
                     ceiling=_same, rank_based=True)
KENDALL = Statistic("kendall", "τ", "Kendall", _scipy_statistic("kendalltau"), _kendall_resamples,
                    ceiling=_kendall_from_spearman, rank_based=True)
PEARSON = Statistic("pearson", "r", "Pearson", _scipy_statistic("pearsonr"), _pearson_resamples,
                    ceiling=_pearson_from_spearman, finite_only=True)

#: The suite's statistics. A new one is a `Statistic` and one line here, or one
#: `bench.statistics` entry point ("name = module:RECORD") in its own package.
BUILTIN_STATISTICS: dict[str, str] = {
    "spearman": "bench.analysis.stats:SPEARMAN",
    "kendall": "bench.analysis.stats:KENDALL",
    "pearson": "bench.analysis.stats:PEARSON",
}
STATISTIC_REGISTRY = Registry("statistic", BUILTIN_STATISTICS, "bench.statistics",
                              listing="or module:RECORD for a Statistic of your own", error=InputError)
#: The built-in names.
STATISTICS: tuple[str, ...] = tuple(BUILTIN_STATISTICS)
#: What `bench run` and `bench correlate` compute without --statistics.
DEFAULT_STATISTICS: tuple[str, ...] = ("spearman", "kendall")


def resolve_statistic(statistic: str | Statistic) -> Statistic:
    """A `Statistic`, from a registered name or an explicit "module:attr"."""
    if isinstance(statistic, Statistic):
        return statistic
    found = STATISTIC_REGISTRY.load(statistic, allow_references=True)
    if not isinstance(found, Statistic):
        target = STATISTIC_REGISTRY.target(statistic, allow_references=True)
        raise InputError(f"statistic {statistic!r} points to {target}, which is not a bench.analysis.stats.Statistic; make it one")
    if ":" not in statistic and found.name != statistic:
        raise InputError(f"statistic {statistic!r} points to a Statistic named {found.name!r}; give both one name")
    return found


def resolve_statistics(statistics: Iterable[str | Statistic]) -> list[Statistic]:
    """Each statistic once, in order; two different records of one name are an error."""
    chosen: dict[str, Statistic] = {}
    for statistic in statistics:
        record = resolve_statistic(statistic)
        if chosen.setdefault(record.name, record) != record:
            raise InputError(f"two statistics are named {record.name!r}; rename one")
    return list(chosen.values())


def parse_statistics(spec: str | None) -> list[str]:
    """'spearman,kendall' -> ['spearman', 'kendall'], checked against the registry (with
    did-you-mean); "module:attr" entries pass through and are checked when loaded."""
    names = [name.strip() for name in spec.split(",") if name.strip()] if spec else list(DEFAULT_STATISTICS)
    STATISTIC_REGISTRY.check(names, allow_references=True)
    return list(dict.fromkeys(names))
