"""The Python API: score images without the command line, get one dict back.

Three entry points, one result shape (that of ``bench score --json``)::

    from bench.api import score_folders, score_pairs_csv, score_tensors

    result = score_folders("originals/", "anonymized/", metrics=["psnr", "ssim", "fid", "kid"])
    result["metrics"]["psnr"]["mean"], result["set_metrics"]["kid"]["spread"]["std"]

- ``metrics``: per-metric summaries of the pair metrics: ``mean``, ``median``, ``ci_low``,
  ``ci_high`` (95% percentile bootstrap over pairs), ``n`` (pairs with a finite value),
  ``n_infinite`` (+inf/-inf values, e.g. the PSNR of identical images, counted apart and never
  averaged), ``status`` ("ok", or "unavailable"/"failed" with its one-line ``reason``), the
  direction ``higher_is_more_anonymous`` and ``weights_status``;
- ``set_metrics``: FID and KID between the two sets (``value``; KID's std over subsets in
  ``spread``; KID as two samples, as torch-fidelity and torchmetrics compute it), or a ``note`` such as "too few pairs (8 < 10)";
- ``per_pair``: one record per pair with every metric's value.

Values follow the suite's one JSON rule: +inf and -inf are the strings "inf" and "-inf", NaN
is None, everything else a plain float, so the dict can be written with `json.dumps` as is.

Paths are resolved when the function is called (``~`` expanded, relative to the current
folder at that moment); nothing later depends on the working directory. Without ``out`` the
outputs go to a temporary folder that is removed afterwards; pass ``out`` to keep scores.csv,
scores.json and summary.json, and ``store`` to reuse scores across calls.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.analysis.stats import Statistic
from bench.data.images import load_rgb, to_float
from bench.flows import folders
from bench.options import Bootstrap, ScoringOptions
from bench.scoring.setmetrics import spread_of as _spread_of
from bench.scoring.store import weights_status
from metrics.base import SetMetric
from metrics.catalog import metric_facts
from metrics.errors import MetricError
from metrics.registry import build_metric, parse_metric_list
from metrics.schema import json_number

#: What a user's code may import from here, wherever inside bench/ it lives: the three scoring
#: entry points, the image decoder that feeds `score_tensors`, and the record of a statistic
#: plugin (a method plugin's `Parameter` is in `bench.methods`).
__all__ = ["Statistic", "load_rgb", "score_folders", "score_pairs_csv", "score_tensors", "to_float"]

PathLike = str | os.PathLike[str]


def _resolved(path: PathLike | None) -> Path | None:
    return None if path is None else Path(path).expanduser().resolve()


def _spec(metrics: str | Sequence[str] | None) -> str | None:
    return metrics if metrics is None or isinstance(metrics, str) else ",".join(metrics)


def _names(metrics: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    return parse_metric_list(_spec(metrics), tuple(default))


def _config(out: Path, *, metrics: str | Sequence[str] | None, device: str, store: PathLike | None,
            batch_size: int, size_policy: str, n_boot: int, seed: int,
            metric_options: Mapping[str, Mapping[str, Any]] | None, progress: bool,
            command: str) -> folders.FolderScoreConfig:
    scoring = ScoringOptions(metrics=_spec(metrics), device=device, batch_size=batch_size, size_policy=size_policy,
                             store=_resolved(store), progress=progress, command=command)
    return folders.FolderScoreConfig(out=out, scoring=scoring, bootstrap=Bootstrap(n_boot=n_boot, seed=seed),
                                     metric_options=metric_options or {})


@contextmanager
def _out_folder(out: PathLike | None) -> Iterator[Path]:
    if out is not None:
        yield _resolved(out)
        return
    with tempfile.TemporaryDirectory(prefix="bench-score-") as temporary:
        yield Path(temporary)


def _kept(result: dict[str, Any], out: PathLike | None, store: PathLike | None) -> dict[str, Any]:
    """The result without paths into the temporary folder that is gone once it returns."""
    if out is None:
        result["files"] = {}
        if store is None:
            result["store"] = None
    return result


def score_folders(
    originals: PathLike,
    anonymized: PathLike,
    *,
    metrics: str | Sequence[str] | None = None,
    device: str = "auto",
    out: PathLike | None = None,
    store: PathLike | None = None,
    batch_size: int = 32,
    size_policy: str = "error",
    n_boot: int = 2000,
    seed: int = 0,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score every image of `anonymized` against the image at the same path in `originals`
    (extension ignored), plus FID/KID between the folders, as ``bench score A B --json`` does.

    `metrics` defaults to mse, psnr, ssim, lpips, inception_dist, fid, kid. The result also
    names the unpaired files (``result["folders"]["unpaired_originals"]`` / ``..._anonymized``).
    """
    originals_path, anonymized_path = _resolved(originals), _resolved(anonymized)
    with _out_folder(out) as out_path:
        config = _config(out_path, metrics=metrics, device=device, store=store, batch_size=batch_size,
                         size_policy=size_policy, n_boot=n_boot, seed=seed, metric_options=metric_options,
                         progress=progress, command="bench.api.score_folders")
        report = folders.score_folders(originals_path, anonymized_path, config)
        return _kept(report.to_json(), out, store)


def score_pairs_csv(
    annotations: PathLike,
    *,
    root: PathLike | None = None,
    columns: str | None = None,
    metrics: str | Sequence[str] | None = None,
    device: str = "auto",
    out: PathLike | None = None,
    store: PathLike | None = None,
    batch_size: int = 32,
    size_policy: str = "error",
    n_boot: int = 2000,
    seed: int = 0,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score every pair of a CSV (img1, img2 relative to `root`, by default the CSV's folder;
    other column names through `columns`, e.g. "original=src,anonymized=dst"), as
    ``bench score --annotations FILE --json`` does. No score column is needed."""
    with _out_folder(out) as out_path:
        config = _config(out_path, metrics=metrics, device=device, store=store, batch_size=batch_size,
                         size_policy=size_policy, n_boot=n_boot, seed=seed, metric_options=metric_options,
                         progress=progress, command="bench.api.score_pairs_csv")
        # As `bench score --annotations`: a root under which no image exists is an error, not
        # a result whose every value is missing.
        report = folders.score_annotations(_resolved(annotations), config, root=_resolved(root), columns=columns)
        return _kept(report.to_json(), out, store)


def score_tensors(
    originals: torch.Tensor,
    anonymized: torch.Tensor,
    *,
    metrics: str | Sequence[str] | None = ("mse", "psnr", "ssim"),
    device: str = "auto",
    batch_size: int = 32,
    n_boot: int = 2000,
    seed: int = 0,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Score pairs given as tensors: float32, N x 3 x H x W, RGB in [0, 1] (the adapters'
    input contract), ``originals[i]`` against ``anonymized[i]``. Nothing is stored.

    Pair metrics give one value per pair; set metrics (fid, kid) one value for the two sets.
    """
    if not (isinstance(originals, torch.Tensor) and isinstance(anonymized, torch.Tensor)):
        raise TypeError("score_tensors takes two torch tensors, N x 3 x H x W float32 in [0, 1]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pair_summaries: list[folders.PairMetricSummary] = []
    set_summaries: list[folders.SetMetricSummary] = []
    per_pair: dict[str, list[float]] = {}
    count = len(anonymized)
    for name in _names(metrics, ("mse", "psnr", "ssim")):
        try:
            metric = build_metric(name, device=device,
                                  **folders.two_sample_options(metric_options or {}, [name]).get(name, {}))
        except MetricError as exc:
            direction = metric_facts(name).higher_is_more_anonymous
            pair_summaries.append(folders.PairMetricSummary(name=name, label=name, higher_is_more_anonymous=direction,
                                                            status="unavailable", reason=str(exc), n_missing=count))
            continue
        common = dict(name=name, label=metric.display_label, higher_is_more_anonymous=metric.higher_is_more_anonymous,
                      status="ok", weights_status=weights_status(metric))
        batches = [(originals[i:i + batch_size].to(metric.device), anonymized[i:i + batch_size].to(metric.device))
                   for i in range(0, count, batch_size)]
        if isinstance(metric, SetMetric):
            metric.reset()
            for original, anonymized_batch in batches:
                metric.update(original, anonymized_batch)
            try:
                value, note = float(metric.compute()), ""
            except MetricError as exc:
                value, note = float("nan"), str(exc)
            set_summaries.append(folders.SetMetricSummary(
                **common, value=value, n=count, note=note,
                spread=folders.spread_fields(_spread_of(metric, count)) if not note else {},
                config=metric.config()))
            continue
        values = np.concatenate([metric.score(original, anonymized_batch) for original, anonymized_batch in batches])
        per_pair[name] = values.tolist()
        mean, median, low, high, n, n_infinite = folders.summarize_values(values, n_boot=n_boot, seed=seed)
        pair_summaries.append(folders.PairMetricSummary(**common, mean=mean, median=median, ci_low=low, ci_high=high,
                                                        n=n, n_infinite=n_infinite))
    encode = json_number
    return {
        "pairs": count,
        "ci": folders.ci_statement(n_boot, seed),
        "metrics": {s.name: folders.summary_json(s) for s in pair_summaries},
        "set_metrics": {s.name: folders.summary_json(s) for s in set_summaries},
        "per_pair": [{name: encode(values[i]) for name, values in per_pair.items()} for i in range(count)],
    }
