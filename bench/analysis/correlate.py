"""Agreement of image metrics with human anonymity scores (the paper's Tables 1-2), with
confidence intervals, significance tests and a noise ceiling the paper did not report.

For every split of the PerceptAnon protocol the TEST rows are used. For each label
granularity and form the human target is `protocol.labels(score_mean)`; each metric is
oriented (negated when higher means LESS anonymous, so a positive correlation always means
agreement; never abs()) and correlated with the target. Around each value:

- ci_low/ci_high: 95% percentile interval from a bootstrap that resamples ORIGINAL images
  (the `original` column), since the anonymizations of one original are not independent.
  One set of resamples per split serves every metric, granularity and statistic, so every
  comparison between metrics is paired.
- p_vs_best: paired bootstrap test of this metric against the group's best metric on the
  pairs both have, Holm-adjusted over the group's metrics.
  Williams' t, which an earlier version reported beside it, treats the pairs as independent:
  with 4 anonymizations per original it rejected a true null 25% of the time at alpha .05,
  the cluster bootstrap 4-5% (tests/bench/analysis/test_stats.py simulates both), so it is gone.
- fraction_of_ceiling: value / noise ceiling. The ceiling is sqrt of the split-half
  reliability of the annotators on the same test rows and target (equal halves, stepped up
  to the whole panel by Spearman-Brown): the correlation of the panel mean with the true
  score, which bounds what a metric can reach against the panel mean. For Kendall and
  Pearson it is carried to their scale by each `stats.Statistic`'s `ceiling` (bivariate-normal
  relations).
  Sampling noise can push a fraction above 1; it is kept and `ceiling_exceeded` says so.

Conventions (`CONVENTIONS`): "default" orients every metric and keeps every label
"higher = more anonymous". "paper" reproduces the released metric_corr.py: raw signs (no
orientation), the released binary labels (score > 5 -> 0), and one more form, "raw", the
released "Mean" block (the metric against score_mean itself; "mean"/"regression" is the
REG block's float32 (score - 1) / 9). Everything the tests and the best metric depend on is
computed oriented in both conventions; "paper" only changes the sign of what is shown
(value, interval, fraction), so both give the same p-values and the same best metric.

Metric values that are NaN are dropped pair by pair and counted in `reason`; a finite-only
statistic (Pearson) also drops pairs with an infinite metric value (PSNR of identical
images), rank statistics keep them. Undefined values (constant column, fewer than 3 pairs,
empty test set, a split that cannot be stratified) are NaN with the reason, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from bench.analysis import stats
from bench.data import protocol
from bench.errors import InputError, SplitError
from metrics.schema import MetricInfo, metric_infos

FORMS: tuple[str, ...] = ("regression", "classification")
CORRELATION_COLUMNS: tuple[str, ...] = (
    "split", "granularity", "form", "metric", "statistic", "value", "ci_low", "ci_high", "n",
    "n_clusters", "p_vs_best", "is_best", "fraction_of_ceiling", "ceiling_exceeded", "reason",
)  # fmt: skip
CEILING_COLUMNS: tuple[str, ...] = (
    "split", "granularity", "form", "split_half", "ceiling", "loo", "cronbach_alpha", "krippendorff_interval",
    "krippendorff_ordinal", "n", "n_annotators", "reason",
)  # fmt: skip
CEILING_VALUES: tuple[str, ...] = (
    "split_half", "ceiling", "loo", "cronbach_alpha", "krippendorff_interval", "krippendorff_ordinal",
)  # fmt: skip
CONVENTIONS: tuple[str, ...] = ("default", "paper")
#: The paper convention's extra form: the metric against score_mean itself (released "Mean" block).
RAW_FORM = "raw"
EMPTY_TEST_SET = "empty test set"
METRIC_TARGET_NAMES = ("metric column", "human target")


@dataclass(frozen=True)
class CorrelationResult:
    correlations: pd.DataFrame
    ceiling: pd.DataFrame
    skipped: list[str]
    convention: str = "default"
    #: Every statistic in `correlations`, in order; the paper convention adds Pearson to those asked for.
    statistics: tuple[stats.Statistic, ...] = ()
    #: The names asked for: the rows of the report tables (the paper's added Pearson is in the long table only).
    tabulated: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Metric:
    name: str
    oriented: np.ndarray  # every row of the pairs table, positive = more anonymous
    #: +1, or -1 when the released code's values run against anonymity (the sign the paper shows).
    sign: float = 1.0


@dataclass(frozen=True)
class _Group:
    """One split x granularity x form: the human target on the test rows and what every
    statistic needs (all arrays over the test rows)."""

    target: np.ndarray  # oriented: higher = more anonymous
    clusters: np.ndarray
    weights: np.ndarray  # (test rows, n_boot) cluster-bootstrap weights
    spearman_ceiling: float
    #: Under the paper convention: -1 where the shown target runs the other way (released binary).
    target_sign: float = 1.0
    paper: bool = False


# --------------------------------------------------------------------------- validation
def _checked_choices(values: Iterable[str], allowed: Sequence[str], what: str) -> list[str]:
    chosen = list(dict.fromkeys(values))
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise InputError(f"unknown {what} {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    return chosen


def _require_columns(pairs: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in pairs.columns]
    if missing:
        raise InputError(
            f"the pairs table lacks the {what} column(s) {', '.join(missing)}; add them or drop those names"
        )


def _numeric(pairs: pd.DataFrame, column: str, what: str) -> np.ndarray:
    try:
        return pd.to_numeric(pairs[column], errors="raise").to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} column '{column}' has non-numeric values; fix or remove them") from None


def _oriented_metrics(pairs: pd.DataFrame, metrics: Sequence[MetricInfo | Mapping[str, Any]]) -> list[_Metric]:
    try:
        infos = metric_infos(metrics)
    except ValueError as exc:
        raise InputError(f"{exc}; each metric needs 'name' and 'higher_is_more_anonymous'") from None
    names = [info.name for info in infos]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"metric(s) {', '.join(duplicated)} listed more than once; list each metric once")
    _require_columns(pairs, names, "metric")
    oriented = []
    for info in infos:
        values = _numeric(pairs, info.name, "metric")
        up = info.higher_is_more_anonymous
        # The paper's sign: the raw value's, and -1 more where the released output itself runs
        # the other way (a PerceptAnon checkpoint trained on the released binary labels).
        raw_sign = (1.0 if up else -1.0) * float(info.released_sign)
        oriented.append(_Metric(info.name, values if up else -values, raw_sign))
    return oriented


# --------------------------------------------------------------------------- rows
def _measurement(
    metric: str, statistic: str, estimate: stats.Estimate, interval: stats.Interval, *, n: int, n_clusters: int
) -> dict[str, Any]:
    """A correlation row without its split/granularity/form (the caller adds those)."""
    return {
        "metric": metric,
        "statistic": statistic,
        "value": estimate.value,
        "ci_low": interval.low,
        "ci_high": interval.high,
        "n": int(n),
        "n_clusters": int(n_clusters),
        "p_vs_best": math.nan,
        "is_best": False,
        "fraction_of_ceiling": math.nan,
        "ceiling_exceeded": False,
        "reason": estimate.reason,
    }


def _undefined_measurements(
    statistics: list[stats.Statistic], metrics: list[_Metric], reason: str
) -> list[dict[str, Any]]:
    undefined, no_interval = stats.Estimate(math.nan, reason), stats.Interval(math.nan, math.nan)
    return [
        _measurement(metric.name, statistic.name, undefined, no_interval, n=0, n_clusters=0)
        for statistic in statistics
        for metric in metrics
    ]


def _ceiling_row(ceilings: dict[str, stats.Estimate], *, n: int, n_annotators: int, reason: str = "") -> dict[str, Any]:
    """A ceiling row without its split/granularity/form; `reason` overrides the parts' own."""
    own = "; ".join(f"{column}: {e.reason}" for column, e in ceilings.items() if e.reason)
    values = {column: e.value for column, e in ceilings.items()}
    return {**values, "n": int(n), "n_annotators": int(n_annotators), "reason": reason or own}


def _labelled(split: str, granularity: str, form: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"split": split, "granularity": granularity, "form": form, **row} for row in rows]


# --------------------------------------------------------------------------- one group
def _used_rows(values: np.ndarray, statistic: stats.Statistic) -> tuple[np.ndarray, str]:
    """Rows a statistic can use (NaN dropped; for a finite-only one also infinities) and the note."""
    missing = np.isnan(values)
    notes = [f"NaN scores: {int(missing.sum())} pairs dropped"] if missing.any() else []
    used = ~missing
    if statistic.finite_only:
        infinite = np.isinf(values)
        if infinite.any():
            notes.append(f"infinite scores: {int(infinite.sum())} pairs dropped ({statistic.label})")
        used &= ~infinite
    return used, "; ".join(notes)


def _group_measurements(
    group: _Group, statistic: stats.Statistic, metrics: list[_Metric], test: np.ndarray
) -> list[dict[str, Any]]:
    """Every metric's row for one statistic in one group, with the comparisons to the best."""
    values = [metric.oriented[test] for metric in metrics]
    views: dict[tuple[int, bytes], tuple[stats.Estimate, np.ndarray]] = {}

    def view(index: int, rows: np.ndarray) -> tuple[stats.Estimate, np.ndarray]:
        """Estimate and bootstrap distribution of a metric on some rows, computed once."""
        # Rows left out (NaN scores) just drop out of the split's resamples, so every metric
        # and every comparison sees the same draws of originals.
        key = (index, rows.tobytes())
        if key not in views:
            x, y = values[index][rows], group.target[rows]
            views[key] = (
                statistic.estimate(x, y, METRIC_TARGET_NAMES),
                stats.bootstrap_distribution(x, y, group.weights[rows], statistic),
            )
        return views[key]

    used, rows = [], []
    for index, metric in enumerate(metrics):
        metric_used, note = _used_rows(values[index], statistic)
        estimate, distribution = view(index, metric_used)
        reason = "; ".join(filter(None, (note, estimate.reason)))
        interval = stats.percentile_interval(distribution)
        n_clusters = np.unique(group.clusters[metric_used]).size
        rows.append(
            _measurement(
                metric.name,
                statistic.name,
                estimate._replace(reason=reason),
                interval,
                n=metric_used.sum(),
                n_clusters=n_clusters,
            )
        )
        used.append(metric_used)

    ranked = [row["value"] for row in rows]
    if not any(math.isfinite(v) for v in ranked):
        return rows
    best = int(np.nanargmax(ranked))  # the first of equals, in the caller's metric order
    rows[best]["is_best"] = True
    p_paired = np.full(len(metrics), math.nan)
    for index in range(len(metrics)):
        if index == best or not math.isfinite(ranked[index]):
            continue
        common = used[index] & used[best]  # compared on the pairs both have
        (mine, mine_distribution), (theirs, theirs_distribution) = view(index, common), view(best, common)
        paired = stats.paired_test_from_distributions(mine.value - theirs.value, mine_distribution, theirs_distribution)
        p_paired[index] = paired.p
    ceiling = stats.ceiling_for(statistic, group.spearman_ceiling)
    for row, paired_p in zip(rows, stats.holm(p_paired)):
        row["p_vs_best"] = float(paired_p)
        if math.isfinite(ceiling) and ceiling > 0:
            row["fraction_of_ceiling"] = row["value"] / ceiling
            row["ceiling_exceeded"] = bool(row["fraction_of_ceiling"] > 1.0)
    if group.paper:
        for row, metric in zip(rows, metrics):
            _show_raw_sign(row, metric.sign * group.target_sign)
    return rows


def _show_raw_sign(row: dict[str, Any], sign: float) -> None:
    """The paper convention's view of an oriented row: value, interval and fraction with the
    raw metric's and the released label's signs (the interval's ends swap when negated)."""
    if sign > 0:
        return
    row["value"] = -row["value"]
    row["ci_low"], row["ci_high"] = -row["ci_high"], -row["ci_low"]
    row["fraction_of_ceiling"] = -row["fraction_of_ceiling"]


# --------------------------------------------------------------------------- driver
def _granularity_forms(granularities: list[str], forms: list[str], paper: bool = False) -> list[tuple[str, str]]:
    """Every granularity x form except 'mean' x classification ('mean' is regression-only);
    under the paper convention the released "Mean" block, ('mean', 'raw'), comes first."""
    chosen = [(g, f) for g in granularities for f in forms if not (g == "mean" and f == "classification")]
    return ([("mean", RAW_FORM)] if paper and "mean" in granularities else []) + chosen


def _oriented_target(score_mean: np.ndarray, granularity: str, form: str) -> np.ndarray:
    """The human target of a group, higher = more anonymous (float64 of the label's own
    dtype: the released REG targets are float32, and Pearson sees the difference)."""
    if form == RAW_FORM:
        return np.asarray(score_mean, dtype=np.float64)
    labels = protocol.labels(score_mean, granularity, classification=form == "classification")
    return np.asarray(labels, dtype=np.float64)


def _ceilings(ratings: np.ndarray, granularity: str, form: str, seed: int) -> dict[str, stats.Estimate]:
    """The noise ceiling's views (keyed by their CEILING_VALUES column), each on the
    annotators' scores passed through the group's label transform."""

    def transform(scores: np.ndarray) -> np.ndarray:
        return _oriented_target(scores, granularity, form)

    split_half = stats.split_half_reliability(ratings, seed=seed, transform=transform)
    return {
        "split_half": split_half,
        "ceiling": stats.noise_ceiling(split_half.value),
        "loo": stats.leave_one_out_agreement(ratings, transform=transform),
        "cronbach_alpha": stats.cronbach_alpha(ratings, transform=transform),
        **{
            f"krippendorff_{level}": stats.krippendorff_alpha(ratings, level=level, transform=transform)
            for level in stats.KRIPPENDORFF_LEVELS
        },
    }


@dataclass(frozen=True)
class _Inputs:
    """The validated columns of the pairs table, every row."""

    metrics: list[_Metric]
    ratings: np.ndarray  # (pairs, annotators), NaN where an annotator skipped
    score_mean: np.ndarray
    originals: np.ndarray


def _target_signature(target: np.ndarray, statistic: stats.Statistic) -> bytes:
    """What a statistic sees of the target: its ranks for rank statistics, else its values.
    Targets with one signature give identical results (e.g. a class and class / (k - 1))."""
    if statistic.rank_based:
        return scipy_stats.rankdata(target).tobytes()
    return target.tobytes()


def _split_tables(
    name: str,
    test: np.ndarray,
    inputs: _Inputs,
    granularity_forms: list[tuple[str, str]],
    statistics: list[stats.Statistic],
    *,
    n_boot: int,
    seed: int,
    paper: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Correlation and ceiling rows of one split with a non-empty test set."""
    clusters = inputs.originals[test]
    weights = stats.cluster_weights(clusters, n_boot, seed)  # one set of resamples for the split
    ratings = inputs.ratings[test]
    ratings = ratings[:, ~np.isnan(ratings).all(axis=0)]  # the annotators who rated these pairs
    correlation_rows: list[dict[str, Any]] = []
    ceiling_rows: list[dict[str, Any]] = []
    computed: dict[tuple, list[dict[str, Any]]] = {}
    for granularity, form in granularity_forms:
        ceilings = _ceilings(ratings, granularity, form, seed)
        ceiling_rows += _labelled(
            name, granularity, form, [_ceiling_row(ceilings, n=test.size, n_annotators=ratings.shape[1])]
        )
        target = _oriented_target(inputs.score_mean[test], granularity, form)
        # The released binary label is the other way round (score > 5 -> 0): shown negated.
        target_sign = -1.0 if paper and granularity == "binary" else 1.0
        group = _Group(target, clusters, weights, ceilings["ceiling"].value, target_sign, paper)
        for statistic in statistics:
            # The forms of a granularity differ by an increasing affine map: compute once.
            key = (statistic.name, group.spearman_ceiling, target_sign, _target_signature(target, statistic))
            if key not in computed:
                computed[key] = _group_measurements(group, statistic, inputs.metrics, test)
            correlation_rows += _labelled(name, granularity, form, computed[key])
    return correlation_rows, ceiling_rows


def _undefined_split_tables(
    name: str,
    reason: str,
    granularity_forms: list[tuple[str, str]],
    statistics: list[stats.Statistic],
    metrics: list[_Metric],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """NaN rows, all carrying `reason`, for a split with no test rows or none at all."""
    undefined_ceiling = dict.fromkeys(CEILING_VALUES, stats.Estimate(math.nan, ""))
    correlation_rows: list[dict[str, Any]] = []
    ceiling_rows: list[dict[str, Any]] = []
    for granularity, form in granularity_forms:
        correlation_rows += _labelled(name, granularity, form, _undefined_measurements(statistics, metrics, reason))
        ceiling_rows += _labelled(
            name, granularity, form, [_ceiling_row(undefined_ceiling, n=0, n_annotators=0, reason=reason)]
        )
    return correlation_rows, ceiling_rows


def correlate(
    pairs: pd.DataFrame,
    metrics: Sequence[MetricInfo | Mapping[str, Any]],
    *,
    annotators: list[str],
    splits: Iterable[str] | None = None,
    granularities: Iterable[str] = protocol.GRANULARITIES,
    forms: Iterable[str] = FORMS,
    statistics: Iterable[str | stats.Statistic] = stats.DEFAULT_STATISTICS,
    pearson: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    split_seed: int = protocol.DEFAULT_SEED,
    source: str = "annotations",
    convention: str = "default",
) -> CorrelationResult:
    """Correlate every metric with the human scores on the test rows of every split.

    `pairs` has the columns of SCHEMA.md's pairs table (original, dataset, method,
    score_mean, the annotator columns and one column per metric); `metrics` are MetricInfo
    records or their stored dicts (name, higher_is_more_anonymous, ...). Returns the long correlation table, the
    noise-ceiling table and one line per split that could not be made (`skipped`).
    `convention` is "default" (oriented) or "paper" (the released signs; module docstring)."""
    (convention,) = _checked_choices([convention], CONVENTIONS, "convention")
    paper = convention == "paper"
    pearson = pearson or paper  # the released tables report Pearson too
    split_names = _checked_choices(protocol.SPLITS if splits is None else splits, protocol.SPLITS, "split")
    granularity_forms = _granularity_forms(
        _checked_choices(granularities, protocol.GRANULARITIES, "granularity"),
        _checked_choices(forms, FORMS, "form"),
        paper,
    )
    asked = stats.resolve_statistics(statistics)
    chosen_statistics = stats.resolve_statistics([*asked, *([stats.PEARSON] if pearson else [])])
    if n_boot < 1:
        raise InputError(f"n_boot must be at least 1, got {n_boot}")
    _require_columns(pairs, ["original", "score_mean"], "required")
    _require_columns(pairs, annotators, "annotator")
    inputs = _Inputs(
        metrics=_oriented_metrics(pairs, metrics),
        ratings=np.column_stack([_numeric(pairs, a, "annotator") for a in annotators] or [np.empty((len(pairs), 0))]),
        score_mean=_numeric(pairs, "score_mean", "score"),
        originals=pairs["original"].astype(str).to_numpy(),
    )

    correlation_rows: list[dict[str, Any]] = []
    ceiling_rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for name in split_names:
        try:
            test = protocol.make_split(pairs, name, seed=split_seed, source=source).test
        except SplitError as exc:
            skipped.append(str(exc))
            tables = _undefined_split_tables(name, str(exc), granularity_forms, chosen_statistics, inputs.metrics)
        else:
            if test.size == 0:
                tables = _undefined_split_tables(
                    name, EMPTY_TEST_SET, granularity_forms, chosen_statistics, inputs.metrics
                )
            else:
                tables = _split_tables(
                    name, test, inputs, granularity_forms, chosen_statistics, n_boot=n_boot, seed=seed, paper=paper
                )
        correlation_rows += tables[0]
        ceiling_rows += tables[1]

    correlations = pd.DataFrame(correlation_rows, columns=list(CORRELATION_COLUMNS))
    ceiling = pd.DataFrame(ceiling_rows, columns=list(CEILING_COLUMNS))
    return CorrelationResult(
        _typed(correlations), _typed(ceiling), skipped, convention,
        statistics=tuple(chosen_statistics), tabulated=tuple(statistic.name for statistic in asked),
    )


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes even for an empty table (int counts, bool is_best, str text)."""
    types = {"n": "int64", "n_clusters": "int64", "n_annotators": "int64", "is_best": "bool",
             "ceiling_exceeded": "bool"}
    return frame.astype({column: kind for column, kind in types.items() if column in frame.columns})
