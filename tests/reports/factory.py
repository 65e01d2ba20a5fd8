"""Synthetic results for the report tests: the shapes and quirks of real bench output.

Pairs get annotator scores from a latent anonymity per method, and metric values that follow
that latent with noise (PSNR of identical images is +inf, one LPIPS value is missing).
Correlations are real rank/linear correlations of those columns on each split's rows, with
Fisher-z intervals standing in for the bootstrap. Some rows are NaN with a reason, exactly as
bench/analysis/correlate.py writes them: an empty test set, a constant metric column.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

DATASETS = ("coco", "voc", "lfw", "celeba")
METHODS = ("mask", "blur", "pixelate", "inpaint")
SCOPES = ("global", "local")
ANNOTATORS = ("a1", "a2", "a3", "a4", "a5")
GRANULARITIES = ("mean", "labels3", "binary")
FORMS = ("regression", "classification")
STATISTICS = ("spearman", "kendall", "pearson")
#: What bench stores of each (results.json "statistics"): Pearson in the long table only, as the
#: paper convention adds it.
STATISTIC_INFOS: tuple[dict[str, Any], ...] = (
    {"name": "spearman", "symbol": "ρ", "label": "Spearman", "tabulated": True},
    {"name": "kendall", "symbol": "τ", "label": "Kendall", "tabulated": True},
    {"name": "pearson", "symbol": "r", "label": "Pearson", "tabulated": False},
)

# How anonymous each method looks to people on a 1-10 scale (mask hides most).
_METHOD_ANONYMITY = {"mask": 9.0, "blur": 4.0, "pixelate": 5.5, "inpaint": 7.5}

BASE_METRICS: tuple[dict[str, Any], ...] = (
    {"name": "psnr", "label": "PSNR", "higher_is_more_anonymous": False, "verified": True, "weights_note": ""},
    {"name": "mse", "label": "MSE", "higher_is_more_anonymous": True, "verified": True, "weights_note": ""},
    {"name": "ssim", "label": "SSIM", "higher_is_more_anonymous": False, "verified": True, "weights_note": ""},
    {
        "name": "lpips",
        "label": "LPIPS",
        "higher_is_more_anonymous": True,
        "verified": False,
        "weights_note": "stand-in AlexNet weights (not ImageNet)",
    },
    {"name": "perceptanon", "label": "PerceptAnon", "higher_is_more_anonymous": True, "verified": True, "weights_note": ""},
)


@dataclass(frozen=True)
class SyntheticResults:
    correlations: pd.DataFrame
    ceiling: pd.DataFrame
    pairs: pd.DataFrame
    metrics: list[dict[str, Any]]
    provenance: dict[str, Any]
    annotators: list[str]
    statistics: tuple[dict[str, Any], ...] = STATISTIC_INFOS


def make_results(*, seed: int = 0, simulated: bool = True, odd_name: str | None = None) -> SyntheticResults:
    """A full result set. `odd_name` (e.g. "<script>") becomes an extra metric's name and label,
    the name of one method and of one dataset, so renderers can be tested for escaping."""
    rng = np.random.default_rng(seed)
    datasets = (odd_name, *DATASETS[1:]) if odd_name else DATASETS
    methods = (*METHODS[:-1], odd_name) if odd_name else METHODS
    metrics = [dict(info, key=f"{info['name']}@1") for info in BASE_METRICS]
    if odd_name:
        metrics.append(
            {"name": odd_name, "label": odd_name, "higher_is_more_anonymous": True, "verified": True,
             "weights_note": "", "key": "odd@1"}
        )
    pairs = _pairs(rng, datasets, methods, [info["name"] for info in metrics])
    splits = _splits(pairs, datasets, methods)
    ceiling = _ceiling(rng, pairs, splits)
    correlations = _correlations(rng, pairs, splits, metrics, ceiling)
    return SyntheticResults(
        correlations=correlations,
        ceiling=ceiling,
        pairs=pairs,
        metrics=metrics,
        provenance=_provenance(simulated, metrics),
        annotators=list(ANNOTATORS),
    )


def with_simulated(results: SyntheticResults, simulated: bool) -> SyntheticResults:
    return replace(results, provenance={**results.provenance, "simulated_scores": simulated})


def _pairs(rng: np.random.Generator, datasets, methods, metric_names: list[str]) -> pd.DataFrame:
    rows = []
    for dataset in datasets:
        for image in range(6):
            for method_index, method in enumerate(methods):
                for scope in SCOPES:
                    rows.append({
                        "pair": len(rows) + 2,  # CSV line: header is line 1
                        "original": f"originals/{dataset}/img{image:02d}.png",
                        "anonymized": f"anonymized/{method}/{scope}/{dataset}/img{image:02d}.png",
                        "dataset": dataset,
                        "scope": scope,
                        "method": method,
                        "_latent": _METHOD_ANONYMITY[METHODS[method_index]] - (1.2 if scope == "local" else 0.0),
                    })
    frame = pd.DataFrame(rows)
    latent = frame.pop("_latent").to_numpy() + rng.normal(0, 0.8, len(frame))
    for annotator in ANNOTATORS:
        frame[annotator] = np.clip(np.rint(latent + rng.normal(0, 1.2, len(frame))), 1, 10).astype(int)
    frame["score_mean"] = frame[list(ANNOTATORS)].mean(axis=1)

    anonymity = (latent - 1) / 9  # ~[0, 1]
    mse = np.clip(0.002 + 0.05 * anonymity + rng.normal(0, 0.01, len(frame)), 0, None)
    mse[:3] = 0.0  # identical images: PSNR becomes +inf
    with np.errstate(divide="ignore"):
        frame["psnr"] = -10 * np.log10(mse)
    frame["mse"] = mse
    frame["ssim"] = np.clip(0.95 - 0.6 * anonymity + rng.normal(0, 0.08, len(frame)), -1, 1)
    lpips = np.clip(0.1 + 0.6 * anonymity + rng.normal(0, 0.1, len(frame)), 0, 1)
    lpips[5] = np.nan
    frame["lpips"] = lpips
    frame["perceptanon"] = np.clip(anonymity + rng.normal(0, 0.07, len(frame)), 0, 1)
    for name in metric_names[len(BASE_METRICS):]:
        frame[name] = rng.normal(0, 1, len(frame))
    return frame


def _splits(pairs: pd.DataFrame, datasets, methods) -> dict[str, np.ndarray]:
    """Test rows per split. The last method's family holds no pairs: an empty test set."""
    rng = np.random.default_rng(42)
    dataset = pairs["dataset"].to_numpy()
    method = pairs["method"].to_numpy()
    return {
        "all": rng.random(len(pairs)) < 0.3,
        "task-person": np.isin(dataset, datasets[:2]),
        "task-face": np.isin(dataset, datasets[2:]),
        f"loov-{datasets[0]}": dataset == datasets[0],
        "loov-voc": dataset == "voc",
        f"anon-{methods[-1]}": method == methods[-1],
        "anon-mask": method == "mask",
        "anon-blurpix": np.zeros(len(pairs), bool),
    }


def _target(pairs: pd.DataFrame, granularity: str) -> np.ndarray:
    score = pairs["score_mean"].to_numpy()
    if granularity == "labels3":
        return np.digitize(score, [4.5, 7.5]).astype(float)
    if granularity == "binary":
        return (score > 5.5).astype(float)
    return score


def _ceiling(rng: np.random.Generator, pairs: pd.DataFrame, splits: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    ratings = pairs[list(ANNOTATORS)].to_numpy(float)
    for split, test in splits.items():
        for granularity in GRANULARITIES:
            for form in FORMS:
                row = {"split": split, "granularity": granularity, "form": form, "n": int(test.sum()),
                       "n_annotators": len(ANNOTATORS), "reason": ""}
                if test.sum() < 3:
                    row.update(split_half=np.nan, loo=np.nan, cronbach_alpha=np.nan, reason="empty test set")
                else:
                    part = ratings[test]
                    half = stats.spearmanr(part[:, :2].mean(1), part[:, 2:].mean(1)).statistic
                    loo = np.mean([
                        stats.spearmanr(part[:, k], np.delete(part, k, axis=1).mean(1)).statistic
                        for k in range(part.shape[1])
                    ])
                    k = part.shape[1]
                    alpha = k / (k - 1) * (1 - part.var(0, ddof=1).sum() / part.sum(1).var(ddof=1))
                    row.update(split_half=2 * half / (1 + half), loo=loo, cronbach_alpha=alpha)
                rows.append(row)
    columns = ["split", "granularity", "form", "split_half", "loo", "cronbach_alpha", "n", "n_annotators", "reason"]
    return pd.DataFrame(rows)[columns]


def _correlation(statistic: str, x: np.ndarray, y: np.ndarray) -> float:
    if statistic == "spearman":
        return float(stats.spearmanr(x, y).statistic)
    if statistic == "kendall":
        return float(stats.kendalltau(x, y).statistic)
    return float(stats.pearsonr(x, y).statistic)


def _correlations(rng, pairs, splits, metrics, ceiling) -> pd.DataFrame:
    rows = []
    ceiling_of = ceiling.set_index(["split", "granularity", "form"])["split_half"]
    for split, test in splits.items():
        for granularity in GRANULARITIES:
            target = _target(pairs, granularity)
            for form in FORMS:
                for statistic in STATISTICS:
                    group = []
                    for info in metrics:
                        values = pairs[info["name"]].to_numpy(float)
                        if split == "loov-voc" and info["name"] == "ssim":
                            values = np.full(len(values), 0.5)  # a metric that cannot rank this split
                        group.append(_correlation_row(rng, split, granularity, form, statistic, info,
                                                      values, target, test, ceiling_of[(split, granularity, form)]))
                    _mark_best(group)
                    rows.extend(group)
    return pd.DataFrame(rows)


def _correlation_row(rng, split, granularity, form, statistic, info, values, target, test, ceiling) -> dict:
    row = {"split": split, "granularity": granularity, "form": form, "metric": info["name"],
           "statistic": statistic, "value": np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "n": int(test.sum()), "n_clusters": int(test.sum() // 8), "p_vs_best": np.nan,
           "p_williams": np.nan, "is_best": False, "fraction_of_ceiling": np.nan, "reason": ""}
    usable = test & ~np.isnan(values)
    x = np.nan_to_num(values[usable], posinf=1e6)
    if test.sum() == 0:
        row["reason"] = "empty test set"
    elif np.ptp(x) == 0:
        row["reason"] = "constant metric column"
    elif np.ptp(target[usable]) == 0:
        row["reason"] = "constant human labels"
    else:
        sign = 1.0 if info["higher_is_more_anonymous"] else -1.0
        value = sign * _correlation(statistic, x, target[usable])
        if form == "classification":
            value += rng.normal(0, 0.02)
        half = 1.96 / np.sqrt(max(usable.sum() - 3, 1))
        row.update(value=value, ci_low=np.tanh(np.arctanh(value) - half), ci_high=np.tanh(np.arctanh(value) + half),
                   fraction_of_ceiling=value / ceiling if np.isfinite(ceiling) else np.nan)
        dropped = int(test.sum() - usable.sum())
        if dropped:
            row["reason"] = f"NaN scores: {dropped} pairs dropped"
    return row


def _mark_best(group: list[dict]) -> None:
    """is_best on the largest value; a p-value vs the best for the others that shrinks with the gap."""
    values = np.array([row["value"] for row in group])
    if np.isnan(values).all():
        return
    best = int(np.nanargmax(values))
    for index, row in enumerate(group):
        row["is_best"] = index == best
        if index != best and np.isfinite(row["value"]):
            gap = values[best] - row["value"]
            row["p_vs_best"] = float(min(1.0, np.exp(-12 * gap)))
            if row["statistic"] != "kendall":
                row["p_williams"] = float(min(1.0, np.exp(-10 * gap)))


def _provenance(simulated: bool, metrics: list[dict]) -> dict[str, Any]:
    return {
        "package_versions": {"perceptanon-bench": "0.1.0", "torch": "2.14.1", "numpy": "2.4.6", "lpips": "0.1.4"},
        "git_commit": "28ea4c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7",
        "device": "cpu",
        "seeds": {"split": 42, "bootstrap": 0},
        "weights": [
            {"name": info["name"], "sha256": f"{index:02d}" + "ab3f" * 15 + "cd",
             "status": "verified" if info["verified"] else "stand-in"}
            for index, info in enumerate(metrics) if info["name"] in ("lpips", "perceptanon")
        ],
        "dataset_hash": "9f2c1e7a" * 8,
        "annotations": "fixtures/demo/HA1.csv",
        "simulated_scores": simulated,
        "created": "2025-11-23T00:41:00+00:00",
        "command": "bench correlate --annotations fixtures/demo/HA1.csv",
    }
