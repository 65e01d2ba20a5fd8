"""bench.analysis.correlate on a synthetic pairs table: schema, values against scipy on the very
test rows of each split, orientation, and the undefined cases."""

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from bench.analysis import stats
from bench.analysis.correlate import CEILING_COLUMNS, CORRELATION_COLUMNS, EMPTY_TEST_SET, correlate
from bench.data import protocol
from bench.errors import InputError

N_BOOT = 200
ANNOTATORS = [f"annotator{i}" for i in range(5)]
METHODS = ("mask", "inpaint", "blur", "pixelate")
DATASETS = ("coco", "voc", "lfw", "celeba")
METRICS = [
    {"name": "lpips", "label": "LPIPS", "higher_is_more_anonymous": True},
    {"name": "psnr", "label": "PSNR", "higher_is_more_anonymous": False},
    {"name": "ssim", "label": "SSIM", "higher_is_more_anonymous": False},
]
DIRECTION = {m["name"]: m["higher_is_more_anonymous"] for m in METRICS}


def synthetic_pairs(n_originals: int = 75, seed: int = 0) -> pd.DataFrame:
    """4 anonymizations per original (300 rows), 5 integer annotators, and three metrics
    that track the latent anonymity: lpips (distance, up), psnr and ssim (similarity, down)."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_originals):
        dataset = DATASETS[index % len(DATASETS)]
        for method in METHODS:
            rows.append((f"{dataset}/{index}.png", f"{dataset}/{method}/{index}.png", dataset, "local", method))
    pairs = pd.DataFrame(rows, columns=["original", "anonymized", "dataset", "scope", "method"])
    pairs.insert(0, "pair", np.arange(2, len(pairs) + 2))
    latent = rng.uniform(1, 10, len(pairs)) + np.repeat(rng.normal(0, 1, n_originals), len(METHODS))
    ratings = np.clip(np.rint(latent[:, None] + rng.normal(0, 1.5, (len(pairs), len(ANNOTATORS)))), 1, 10)
    for column, annotator in enumerate(ANNOTATORS):
        pairs[annotator] = ratings[:, column]
    pairs["score_mean"] = ratings.mean(axis=1)
    pairs["lpips"] = latent + rng.normal(0, 1, len(pairs))
    pairs["psnr"] = -latent + rng.normal(0, 2, len(pairs))
    pairs["ssim"] = -latent + rng.normal(0, 3, len(pairs))
    return pairs


@pytest.fixture(scope="module")
def pairs() -> pd.DataFrame:
    return synthetic_pairs()


@pytest.fixture(scope="module")
def timed_result(pairs):
    started = time.perf_counter()
    outcome = correlate(pairs, METRICS, annotators=ANNOTATORS, n_boot=N_BOOT, pearson=True)
    return outcome, time.perf_counter() - started


@pytest.fixture(scope="module")
def result(timed_result):
    return timed_result[0]


def _rows(table: pd.DataFrame, **where) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= table[column].to_numpy() == value
    return table[mask]


def _one(table: pd.DataFrame, **where) -> pd.Series:
    rows = _rows(table, **where)
    assert len(rows) == 1, where
    return rows.iloc[0]


def _test_vectors(pairs, split, granularity, form, metric):
    """Oriented metric and human target on the split's test rows, rebuilt independently."""
    test = protocol.make_split(pairs, split).test
    rows = pairs.iloc[test]
    target = protocol.labels(rows["score_mean"], granularity, classification=form == "classification")
    sign = 1.0 if DIRECTION[metric] else -1.0
    return sign * rows[metric].to_numpy(), np.asarray(target, dtype=float), rows["original"].to_numpy()


def test_schema(result):
    assert tuple(result.correlations.columns) == CORRELATION_COLUMNS
    assert tuple(result.ceiling.columns) == CEILING_COLUMNS
    assert result.skipped == []
    table = result.correlations
    assert list(dict.fromkeys(table["split"])) == list(protocol.SPLITS)
    # 'mean' is regression-only: 9 granularity x form groups, 3 statistics, 3 metrics
    assert len(table) == len(protocol.SPLITS) * 9 * 3 * 3
    assert _rows(table, granularity="mean", form="classification").empty
    assert table["is_best"].dtype == bool and table["n"].dtype == np.int64
    assert len(result.ceiling) == len(protocol.SPLITS) * 9
    assert (table["reason"] == "").all()


def test_runs_fast(timed_result):
    assert timed_result[1] < 20


@pytest.mark.parametrize("split", ["all", "task-face", "loov-coco", "anon-blurpix"])
@pytest.mark.parametrize(
    "granularity, form", [("mean", "regression"), ("labels5", "classification"), ("binary", "regression")]
)
@pytest.mark.parametrize("metric", ["lpips", "psnr"])
def test_values_equal_scipy_on_the_test_rows(pairs, result, split, granularity, form, metric):
    oriented, target, originals = _test_vectors(pairs, split, granularity, form, metric)
    where = {"split": split, "granularity": granularity, "form": form, "metric": metric}
    spearman = _one(result.correlations, statistic="spearman", **where)
    kendall = _one(result.correlations, statistic="kendall", **where)
    pearson = _one(result.correlations, statistic="pearson", **where)
    assert spearman["value"] == pytest.approx(scipy_stats.spearmanr(oriented, target).statistic, abs=1e-12)
    assert kendall["value"] == pytest.approx(scipy_stats.kendalltau(oriented, target).statistic, abs=1e-12)
    assert pearson["value"] == pytest.approx(scipy_stats.pearsonr(oriented, target).statistic, abs=1e-12)
    assert spearman["n"] == len(target)
    assert spearman["n_clusters"] == len(set(originals))
    assert spearman["value"] > 0  # every metric tracks anonymity once oriented


def test_ci_is_the_cluster_bootstrap_over_originals(pairs, result):
    oriented, target, originals = _test_vectors(pairs, "loov-voc", "labels3", "regression", "psnr")
    row = _one(
        result.correlations,
        split="loov-voc",
        granularity="labels3",
        form="regression",
        metric="psnr",
        statistic="kendall",
    )
    expected = stats.cluster_bootstrap_ci(oriented, target, originals, "kendall", n_boot=N_BOOT, seed=0)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(expected), abs=1e-12)
    assert row["ci_low"] < row["value"] < row["ci_high"]


def test_forms_computed_alone_equal_the_shared_computation(pairs, result):
    alone = correlate(
        pairs,
        METRICS,
        annotators=ANNOTATORS,
        splits=["all"],
        granularities=["labels10"],
        forms=["classification"],
        n_boot=N_BOOT,
    ).correlations
    shared = _rows(result.correlations, split="all", granularity="labels10", form="classification")
    shared = shared[shared["statistic"] != "pearson"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, shared)


def test_best_metric_and_tests(result):
    for _, group in result.correlations.groupby(["split", "granularity", "form", "statistic"]):
        assert group["is_best"].sum() == 1
        best = group[group["is_best"]].iloc[0]
        assert best["value"] == group["value"].max()
        assert math.isnan(best["p_vs_best"])
        others = group[~group["is_best"]]
        assert others["p_vs_best"].between(0, 1).all()
    # Williams' t assumed independent pairs (anti-conservative with clusters): not reported
    assert "p_williams" not in result.correlations.columns
    # lpips has the least noise: best and clearly better than ssim on all test rows
    group = _rows(result.correlations, split="anon-blurpix", granularity="mean", statistic="spearman")
    assert _one(group, metric="lpips")["is_best"]
    assert _one(group, metric="ssim")["p_vs_best"] < 0.05


def test_fraction_of_ceiling(result):
    ceiling = _one(result.ceiling, split="all", granularity="labels5", form="regression")
    assert 0 < ceiling["split_half"] <= 1 and 0 < ceiling["loo"] < 1 and 0 < ceiling["cronbach_alpha"] <= 1
    assert ceiling["ceiling"] == pytest.approx(math.sqrt(ceiling["split_half"]), abs=1e-15)
    assert 0 < ceiling["krippendorff_interval"] < 1 and 0 < ceiling["krippendorff_ordinal"] < 1
    assert ceiling["n"] == 60 and ceiling["n_annotators"] == len(ANNOTATORS)
    for statistic in ("spearman", "kendall"):
        row = _one(
            result.correlations,
            split="all",
            granularity="labels5",
            form="regression",
            metric="lpips",
            statistic=statistic,
        )
        expected = row["value"] / stats.ceiling_for(statistic, ceiling["ceiling"])
        assert row["fraction_of_ceiling"] == pytest.approx(expected, abs=1e-12)
        assert row["ceiling_exceeded"] == (row["fraction_of_ceiling"] > 1)


def test_orientation_negated_metric_with_flipped_direction(pairs):
    flipped = pairs.assign(psnr_up=-pairs["psnr"])
    metrics = [*METRICS, {"name": "psnr_up", "higher_is_more_anonymous": True}]
    table = correlate(flipped, metrics, annotators=ANNOTATORS, splits=["all", "anon-mask"], n_boot=N_BOOT).correlations
    columns = ["value", "ci_low", "ci_high", "n", "n_clusters", "fraction_of_ceiling"]
    original = _rows(table, metric="psnr")[columns].reset_index(drop=True)
    negated = _rows(table, metric="psnr_up")[columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(original, negated)
    assert (original["value"] > 0).all()  # never abs(): the orientation makes it positive


def test_metric_that_disagrees_stays_negative(pairs):
    """A metric declared the wrong way round must show up negative (no abs())."""
    contrary = pairs.assign(contrary=pairs["lpips"])
    metrics = [{"name": "contrary", "higher_is_more_anonymous": False}, *METRICS]
    table = correlate(
        contrary, metrics, annotators=ANNOTATORS, splits=["all"], granularities=["mean"], n_boot=N_BOOT
    ).correlations
    row = _one(table, metric="contrary", statistic="spearman")
    raw, target, _ = _test_vectors(pairs, "all", "mean", "regression", "lpips")
    assert row["value"] == pytest.approx(-scipy_stats.spearmanr(raw, target).statistic, abs=1e-12)
    assert row["value"] < 0 and row["ci_high"] < 0 and not row["is_best"]
    assert row["fraction_of_ceiling"] < 0


def test_empty_split_gives_nan_with_reason(pairs):
    no_masks = pairs[pairs["method"] != "mask"].reset_index(drop=True)
    outcome = correlate(no_masks, METRICS, annotators=ANNOTATORS, splits=["anon-mask", "all"], n_boot=N_BOOT)
    empty = _rows(outcome.correlations, split="anon-mask")
    assert len(empty) == 9 * 2 * 3
    assert empty["value"].isna().all() and empty["ci_low"].isna().all()
    assert (empty["reason"] == EMPTY_TEST_SET).all() and (empty["n"] == 0).all()
    assert not empty["is_best"].any()
    assert (_rows(outcome.ceiling, split="anon-mask")["reason"] == EMPTY_TEST_SET).all()
    assert _rows(outcome.correlations, split="all")["value"].notna().all()
    assert outcome.skipped == []


def test_split_that_cannot_be_stratified_is_skipped_with_its_reason(pairs):
    faces = pairs["dataset"].isin(["lfw", "celeba"]).to_numpy()
    few_faces = pairs[~faces | (np.cumsum(faces) <= 3)].reset_index(drop=True)
    outcome = correlate(few_faces, METRICS, annotators=ANNOTATORS, splits=["task-face", "task-person"], n_boot=N_BOOT)
    assert len(outcome.skipped) == 1 and "task-face" in outcome.skipped[0]
    skipped = _rows(outcome.correlations, split="task-face")
    assert skipped["value"].isna().all() and (skipped["reason"] == outcome.skipped[0]).all()
    assert _rows(outcome.correlations, split="task-person")["value"].notna().all()


def test_constant_metric_is_nan_with_reason(pairs):
    constant = pairs.assign(ssim=0.5)
    table = correlate(
        constant, METRICS, annotators=ANNOTATORS, splits=["all"], granularities=["labels3"], n_boot=N_BOOT
    ).correlations
    rows = _rows(table, metric="ssim")
    assert rows["value"].isna().all() and rows["ci_low"].isna().all()
    assert (rows["reason"] == "constant metric column").all()
    assert rows["p_vs_best"].isna().all() and not rows["is_best"].any()
    assert _rows(table, metric="lpips")["value"].notna().all()


def test_nan_scores_dropped_pairwise_and_counted(pairs):
    test = protocol.make_split(pairs, "all").test
    damaged = pairs.copy()
    damaged.loc[damaged.index[test[:4]], "lpips"] = np.nan
    table = correlate(
        damaged, METRICS, annotators=ANNOTATORS, splits=["all"], granularities=["mean"], n_boot=N_BOOT
    ).correlations
    row = _one(table, metric="lpips", statistic="spearman")
    assert row["reason"] == "NaN scores: 4 pairs dropped"
    assert row["n"] == len(test) - 4
    oriented, target, _ = _test_vectors(pairs, "all", "mean", "regression", "lpips")
    assert row["value"] == pytest.approx(scipy_stats.spearmanr(oriented[4:], target[4:]).statistic, abs=1e-12)
    assert not math.isnan(_one(table, metric="psnr", statistic="spearman")["p_vs_best"])


def test_infinite_scores_ranked_but_dropped_by_pearson(pairs):
    test = protocol.make_split(pairs, "all").test
    identical = pairs.copy()
    identical.loc[identical.index[test[:2]], "psnr"] = np.inf  # PSNR of identical images
    table = correlate(
        identical, METRICS, annotators=ANNOTATORS, splits=["all"], granularities=["mean"], pearson=True, n_boot=N_BOOT
    ).correlations
    spearman = _one(table, metric="psnr", statistic="spearman")
    pearson = _one(table, metric="psnr", statistic="pearson")
    assert spearman["n"] == len(test) and spearman["reason"] == ""
    assert pearson["n"] == len(test) - 2 and "infinite scores: 2 pairs dropped" in pearson["reason"]
    assert math.isfinite(pearson["value"]) and math.isfinite(pearson["ci_low"])


def test_too_few_pairs_is_nan(pairs):
    test = protocol.make_split(pairs, "all").test
    sparse = pairs.copy()
    sparse.loc[sparse.index[test[2:]], "ssim"] = np.nan
    row = _one(
        correlate(
            sparse, METRICS, annotators=ANNOTATORS, splits=["all"], granularities=["mean"], n_boot=N_BOOT
        ).correlations,
        metric="ssim",
        statistic="kendall",
    )
    assert math.isnan(row["value"]) and row["reason"] == f"NaN scores: {len(test) - 2} pairs dropped; n < 3"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"statistics": ["tau"]}, "unknown statistic tau; choose from: kendall, pearson, spearman"),
        ({"statistics": ["kendal"]}, "kendal \\(did you mean 'kendall'\\?\\)"),
        ({"splits": ["loov-imagenet"]}, "allowed: all"),
        ({"granularities": ["labels7"]}, "allowed: mean"),
        ({"forms": ["ranking"]}, "allowed: regression, classification"),
    ],
)
def test_bad_options_raise_input_error(pairs, options, message):
    with pytest.raises(InputError, match=message):
        correlate(pairs, METRICS, annotators=ANNOTATORS, n_boot=N_BOOT, **options)


def test_missing_columns_raise_input_error(pairs):
    with pytest.raises(InputError, match="fid"):
        correlate(pairs, [*METRICS, {"name": "fid", "higher_is_more_anonymous": True}], annotators=ANNOTATORS)
    with pytest.raises(InputError, match="annotator9"):
        correlate(pairs, METRICS, annotators=["annotator9"])


# --------------------------------------------------------------------------- the paper convention
def test_paper_convention_shows_raw_signs_with_the_same_tests(pairs):
    """Under "paper" a row is the default row with the raw metric's sign (PSNR, SSIM: -1) and
    the released binary label's (-1): value and fraction negated, interval ends swapped; the
    p-values, the best metric and the ceiling flags are the same. The released Mean block is
    the extra form 'raw' (the raw metric against score_mean itself), and Pearson is in."""
    kwargs = dict(annotators=ANNOTATORS, splits=["all", "loov-coco"], n_boot=N_BOOT)
    default = correlate(pairs, METRICS, **kwargs)
    paper = correlate(pairs, METRICS, convention="paper", **kwargs)
    assert default.convention == "default" and paper.convention == "paper"
    assert set(paper.correlations["statistic"]) == {"spearman", "kendall", "pearson"}
    keys = ["split", "granularity", "form", "metric", "statistic"]
    merged = default.correlations.merge(paper.correlations, on=keys, suffixes=("", "_paper"))
    assert len(merged) == len(default.correlations)
    sign = np.where(merged["metric"] == "lpips", 1.0, -1.0) * np.where(merged["granularity"] == "binary", -1.0, 1.0)
    np.testing.assert_allclose(merged["value_paper"], sign * merged["value"], atol=1e-12, rtol=0)
    low = np.where(sign > 0, merged["ci_low"], -merged["ci_high"])
    np.testing.assert_allclose(merged["ci_low_paper"], low, atol=1e-12, rtol=0)
    np.testing.assert_allclose(merged["fraction_of_ceiling_paper"], sign * merged["fraction_of_ceiling"], atol=1e-12)
    for column in ("p_vs_best", "is_best", "ceiling_exceeded", "n", "n_clusters"):
        pd.testing.assert_series_equal(merged[f"{column}_paper"], merged[column], check_names=False)
    raw = _rows(paper.correlations, split="all", form="raw")
    assert set(raw["granularity"]) == {"mean"} and "raw" not in set(default.correlations["form"])
    test = pairs.iloc[protocol.make_split(pairs, "all").test]
    row = _one(raw, metric="psnr", statistic="pearson")
    assert row["value"] == pytest.approx(scipy_stats.pearsonr(test["score_mean"], test["psnr"])[0], abs=1e-12)
    assert row["value"] < 0  # as printed in the paper: PSNR falls as anonymity rises
    assert len(_rows(paper.ceiling, split="all", form="raw")) == 1


def test_unknown_convention_is_refused(pairs):
    with pytest.raises(InputError, match="unknown convention 'released'; allowed: default, paper"):
        correlate(pairs, METRICS, annotators=ANNOTATORS, splits=["all"], n_boot=5, convention="released")


def test_paper_convention_sign_of_a_model_trained_on_released_binary_labels(pairs):
    """A PerceptAnon checkpoint trained with the released binary labels outputs higher = LESS
    anonymous (released_sign -1 in its metric info): under "paper" its binary correlation with
    the released label is positive, as the released eval.py prints it."""
    model = pairs.assign(model=pairs["lpips"])
    infos = [{"name": "model", "higher_is_more_anonymous": True, "released_sign": -1}, *METRICS]
    kwargs = dict(annotators=ANNOTATORS, splits=["all"], granularities=["binary", "labels3"], n_boot=N_BOOT)
    default = correlate(model, infos, **kwargs).correlations
    paper = correlate(model, infos, convention="paper", **kwargs).correlations
    for granularity, sign in (("binary", 1.0), ("labels3", -1.0)):
        where = dict(split="all", granularity=granularity, form="classification", metric="model", statistic="spearman")
        assert _one(paper, **where)["value"] == pytest.approx(sign * _one(default, **where)["value"], abs=1e-12)
    assert _one(paper, split="all", granularity="binary", form="classification", metric="model",
                statistic="spearman")["value"] > 0
