"""The leaderboard of a benchmark set, built from the results store.

A benchmark run (`bench.flows.benchmark`) leaves a *record* in the store: per method its identity,
its pairs (image, scope, content hashes, paths) and failures; per metric its key, direction
and weights status. The leaderboard is built from records and stored scores only, so
`bench run --method ...` (its own record) and `bench leaderboard` (every record of the
dataset merged: each method's latest record, each metric's latest version) share one path.

Each pair-metric cell is the mean over originals with a 95% percentile-bootstrap CI that
resamples originals (seeded; one pair per original in a method x scope, so this is the
cluster bootstrap of the correlation tables). Infinite values (PSNR of identical images) are
counted and left out of the mean, never averaged. Set metrics (FID, KID) are one value per
method x scope, or a note such as "too few pairs (8 < 10)".

The privacy block (detection, identification, verification, the adaptive attacker) is
computed by `bench.scoring.privacy` during the run and kept in the record: per method its rates per
scope and the faces found on its results, shared the notes and the originals' faces. A
method whose latest run skipped the attacks keeps an earlier run's results when its images
are the same (same content hashes); otherwise its row says the attacks did not run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.analysis import stats
from bench.analysis.tradeoff import build_tradeoffs, choose_axes
from bench.data.benchmark_set import BenchmarkPair, load_benchmark_set
from bench.errors import InputError
from bench.methods import REFERENCE_METHODS
from bench.scoring.setmetrics import group_key, lookup_spread, too_few_note
from bench.scoring.store import ResultsStore
from metrics.errors import MetricError
from metrics.registry import metric_class, metric_label
from reports.leaderboard import (
    BoardRow,
    Entry,
    Example,
    Failure,
    Leaderboard,
    PrivacyBlock,
    sort_rows,
    write_leaderboard,
)
from metrics.schema import MetricInfo, WeightsStatus
from reports.tables import NotComputed

EXAMPLES = 4


# ----------------------------------------------------------------------------- records
#: A merged record's method -> the metrics its own run asked for: a metric another run added
#: was never requested for it, which is not the same as a value missing from the store.
REQUESTED = "requested_metrics"


def merge_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Records (oldest first) as one: each method's latest entry, each metric's latest
    computed version (a metric never computed keeps its latest reason)."""
    if not records:
        raise ValueError("no records to merge")
    methods: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    requested: dict[str, list[str]] = {}
    for record in records:
        for name in record["methods"]:
            requested[name] = list(record["metrics"])
        for name, entry in record["methods"].items():
            previous = methods.get(name)
            # A run without the attacks keeps an older run's results for the very same images.
            if ("privacy" not in entry and previous is not None and "privacy" in previous
                    and previous.get("pairs") == entry.get("pairs")):
                entry = {**entry, "privacy": previous["privacy"]}
            methods[name] = entry
        for name, info in record["metrics"].items():
            if info["status"] == "ok" or metrics.get(name, {}).get("status") != "ok":
                metrics[name] = info
    merged = {**records[-1], "methods": methods, "metrics": metrics, REQUESTED: requested}
    # The attacks' shared part (notes, unavailable attacks, the originals' faces) is the same
    # for every method of a set: the latest run that ran them has it.
    privacy = next((record["privacy"] for record in reversed(records) if "privacy" in record), None)
    if privacy is not None:
        merged["privacy"] = privacy
    return merged


# ----------------------------------------------------------------------------- cells
def summarize(values: Sequence[float], clusters: Sequence[str], *, n_boot: int, seed: int) -> Entry:
    """Mean of the finite values with a percentile-bootstrap CI resampling `clusters`."""
    values = np.asarray(values, dtype=np.float64)
    clusters = np.asarray(clusters)
    nan = np.isnan(values)
    infinite = np.isinf(values)
    finite = ~(nan | infinite)
    note = f"{int(nan.sum())} NaN value(s) left out" if nan.any() else ""
    n, n_infinite = int(finite.sum()), int(infinite.sum())
    if n == 0:
        return Entry(n=0, n_infinite=n_infinite, note=note or ("" if n_infinite else "no values"))
    kept = values[finite]
    low, high = stats.mean_interval(kept, clusters[finite], n_boot, seed)
    return Entry(value=float(kept.mean()), ci_low=low, ci_high=high, n=n, n_infinite=n_infinite, note=note)


def _metric_info(name: str, info: Mapping[str, Any]) -> MetricInfo:
    """A record's metric entry as its column, with its class's meaning of an infinite value."""
    return replace(MetricInfo.from_json(info, name=name), infinite_means=_infinite_means(name))


def _infinite_means(name: str) -> str:
    """The metric class's meaning of an infinite value (a plugin no longer importable: generic)."""
    from metrics.errors import MetricError
    from metrics.registry import metric_class

    try:
        return metric_class(name).infinite_means
    except MetricError:
        return MetricInfo.infinite_means


def _pairs(entry: Mapping[str, Any]) -> list[BenchmarkPair]:
    """A method entry's pairs: the one place a record's stored lists become records."""
    return [BenchmarkPair.from_stored(pair) for pair in entry["pairs"]]


def _pair_entries(store: ResultsStore, metric: Mapping[str, Any], pairs: Sequence[BenchmarkPair], *,
                  n_boot: int, seed: int) -> Entry:
    keys = [pair.key for pair in pairs]
    stored = store.lookup(metric["key"], keys, allow_resized=False)
    values = [stored[key] for key in keys if key in stored]
    clusters = [pair.image for pair, key in zip(pairs, keys) if key in stored]
    if not values:
        return Entry(note="no stored values for this metric version (re-run `bench run --method` for this method)")
    entry = summarize(values, clusters, n_boot=n_boot, seed=seed)
    if len(values) < len(keys):
        missing = f"{len(keys) - len(values)} of {len(keys)} pairs without a value (see the failures)"
        entry = replace(entry, note="; ".join(part for part in (entry.note, missing) if part))
    return entry


def _set_entry(store: ResultsStore, metric: Mapping[str, Any], dataset: str, method: str, scope: str,
               pairs: Sequence[BenchmarkPair]) -> Entry:
    members = [pair.key for pair in pairs]
    if len(members) < int(metric.get("min_samples", 0)):
        return Entry(n=len(members), note=too_few_note(len(members), int(metric["min_samples"])), level="set")
    value = store.lookup_set_score(metric["key"], group_key(dataset, method, scope), members)
    if value is None:
        return Entry(n=len(members), note="not computed for these pairs", level="set")
    # KID records its own 95% interval (jackknife over pairs); FID has none.
    spread = lookup_spread(store, metric["key"], group_key(dataset, method, scope), members)
    low, high = (spread.ci_low, spread.ci_high) if spread is not None else (math.nan, math.nan)
    return Entry(value=value, ci_low=low, ci_high=high, n=len(members),
                 note="" if math.isfinite(value) else "undefined", level="set")


# ----------------------------------------------------------------------------- board
def check_n_boot(n_boot: int) -> None:
    """Checked before a run does any work, and again when a board is built."""
    if n_boot < 1:
        raise InputError(f"--n-boot must be at least 1, got {n_boot}")


def build_leaderboard(
    store: ResultsStore,
    record: Mapping[str, Any],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    sort: str | None = None,
    examples: int = EXAMPLES,
    tradeoff: str | None = None,
) -> Leaderboard:
    """The leaderboard of one (possibly merged) record, values read from `store`, with its
    privacy–utility trade-off views on the axes `tradeoff` ("PRIVACY,UTILITY"; default: see
    `bench.analysis.tradeoff.choose_axes`)."""
    check_n_boot(n_boot)
    dataset = record["dataset"]["name"]
    metrics = {name: info for name, info in record["metrics"].items() if info["status"] == "ok"}
    columns = tuple(_metric_info(name, info) for name, info in metrics.items())
    sort_metric = _sort_metric(sort, columns)
    rows = []
    for method, entry in record["methods"].items():
        for scope in ("global", "local"):
            pairs = [pair for pair in _pairs(entry) if pair.scope == scope]
            rows.append(BoardRow(method=method, scope=scope,
                                 params=tuple((str(k), str(v)) for k, v in (entry.get("params") or {}).items()),
                                 entries=_row_entries(store, metrics, dataset, method, scope, pairs, entry,
                                                      requested=record.get(REQUESTED, {}).get(method, metrics),
                                                      n_boot=n_boot, seed=seed)))
    ordered = sort_rows(rows, next((c for c in columns if c.name == sort_metric), None))
    board = Leaderboard(
        title=f"Anonymization leaderboard: {dataset}",
        dataset=dataset,
        columns=columns,
        rows=tuple(ordered),
        sort_metric=sort_metric,
        bootstrap={"n_boot": n_boot, "seed": seed},
        failures=tuple(Failure(method, line) for method, entry in record["methods"].items()
                       for line in entry.get("failures", [])),
        notes=tuple(_notes(record)),
        not_computed=tuple(_not_computed(record)),
        convention=str(record.get("provenance", {}).get("convention") or "default"),
        examples=tuple(_examples(record, ordered, examples)),
        provenance=_provenance(record),
        privacy=_privacy_block(record, ordered),
    )
    # The trade-off views read the board's cells, so their numbers are the leaderboard's. An
    # axis that did not compute (weights missing) costs the views, not the leaderboard.
    try:
        views = build_tradeoffs(board, record, tradeoff)
    except InputError as exc:
        return replace(board, notes=(*board.notes, f"Trade-off views not drawn: {exc}"))
    return replace(board, tradeoffs=views)


NOT_RUN_FOR_METHOD = ("privacy attacks not run for this method (its run had --no-privacy, or predates them); "
                      "re-run `bench run --method {method}`")
DETAIL_NOTE = ("Rank-5, EER and the verification ROC of each run: privacy.md, privacy.json, privacy.html and "
               "privacy_roc.png in the run folder of `bench run --method`.")


def _privacy_block(record: Mapping[str, Any], rows: Sequence[BoardRow]) -> PrivacyBlock | None:
    """The privacy block from the record (None when no method's run had the attacks); a
    column every row lacks because its attack did not run is left out (its reason is a note)."""
    from metrics.attacks import ATTACK_COLUMNS

    shared = record.get("privacy")
    if shared is None:
        return None
    block_rows, ran = [], []
    for row in rows:
        stored = record["methods"][row.method].get("privacy")
        if stored is not None:
            ran.append(len(block_rows))
        entries = {}
        for column in ATTACK_COLUMNS:
            if stored is None:
                entries[column.name] = Entry(note=NOT_RUN_FOR_METHOD.format(method=row.method), level="privacy")
                continue
            cell = stored.get("rows", {}).get(row.scope, {}).get(column.name, {"reason": "no pairs"})
            entries[column.name] = _rate_entry(cell)
        block_rows.append(BoardRow(method=row.method, scope=row.scope, entries=entries))
    kept = [column for column in ATTACK_COLUMNS
            if any(block_rows[i].entries[column.name].note != "not run" for i in ran)]
    columns = tuple(MetricInfo(name=column.name, label=column.label,
                               higher_is_more_anonymous=column.higher_is_more_anonymous,
                               weights_status=WeightsStatus.VERIFIED) for column in kept)
    notes = [*shared.get("notes", []), DETAIL_NOTE]
    for method, entry in record["methods"].items():
        notes += (entry.get("privacy") or {}).get("notes", [])
    not_computed = [NotComputed(name=attack, label=attack, reason=reason)
                    for attack, reason in shared.get("unavailable", {}).items()]
    return PrivacyBlock(columns=columns,
                        rows=tuple(BoardRow(r.method, r.scope, {c.name: r.entries[c.name] for c in columns})
                                   for r in block_rows),
                        notes=tuple(notes), not_computed=tuple(not_computed))


def _rate_entry(cell: Mapping[str, Any]) -> Entry:
    """A stored Rate (successes, n, value, ci_low, ci_high) or {"reason": ...} as a cell."""
    if "reason" in cell:
        return Entry(note=str(cell["reason"]), level="privacy")
    value = cell.get("value")
    return Entry(value=math.nan if value is None else float(value),
                 ci_low=math.nan if cell.get("ci_low") is None else float(cell["ci_low"]),
                 ci_high=math.nan if cell.get("ci_high") is None else float(cell["ci_high"]),
                 n=int(cell.get("n", 0)), note="" if cell.get("n") else "no pairs to rate", level="privacy")


def _row_entries(store: ResultsStore, metrics: Mapping[str, Any], dataset: str, method: str, scope: str,
                 pairs: list[BenchmarkPair], entry: Mapping[str, Any], *, requested: Sequence[str], n_boot: int,
                 seed: int) -> dict[str, Entry]:
    if not pairs:
        reason = (f"no anonymized images: the method failed on all {entry.get('n_images', 0)} (see the failures)"
                  if entry.get("failures") else "no pairs")
        return {name: Entry(note=reason) for name in metrics}
    return {
        name: (Entry(note=f"not requested in this method's run (add it to --metrics of `bench run --method {method}`)")
               if name not in requested
               else Entry(note=f"{' and '.join(info['scopes'])} scope only") if scope not in info.get("scopes", (scope,))
               else _set_entry(store, info, dataset, method, scope, pairs) if info["level"] == "set"
               else _pair_entries(store, info, pairs, n_boot=n_boot, seed=seed))
        for name, info in metrics.items()
    }


def _sort_metric(requested: str | None, columns: Sequence[MetricInfo]) -> str:
    names = [column.name for column in columns]
    if requested is not None:
        if requested not in names:
            raise InputError(f"--sort {requested!r} is not a leaderboard column; choose from: "
                             f"{', '.join(names) or 'none (no metric was computed)'}")
        return requested
    # The default: the column whose metric has the lowest `sort_priority`, else the first.
    priorities = {name: _sort_priority(name) for name in names}
    preferred = [name for name in names if priorities[name] is not None]
    return min(preferred, key=priorities.__getitem__) if preferred else names[0] if names else ""


def _sort_priority(name: str) -> int | None:
    try:
        return metric_class(name).sort_priority
    except MetricError:  # a plugin of an older run that is not installed now: never preferred
        return None


def _not_computed(record: Mapping[str, Any]) -> list[NotComputed]:
    """The record's metrics without values, each with its reason and fix."""
    return [NotComputed(name=name, label=metric_label(name, info.get("label") or ""), reason=info.get("reason", ""),
                        status=info["status"])
            for name, info in record["metrics"].items() if info["status"] != "ok"]


def _notes(record: Mapping[str, Any]) -> list[str]:
    notes = [f"{name}: reference row, the originals copied unchanged: what \"no change\" scores (PSNR = +inf, "
             "FID about 0; KID can fall slightly below 0 on paired data)."
             for name in REFERENCE_METHODS if name in record["methods"]]
    for method, entry in record["methods"].items():
        notes += [f"{method}: {note}" for note in entry.get("notes", [])]
    return notes


def _examples(record: Mapping[str, Any], rows: Sequence[BoardRow], count: int) -> list[Example]:
    """The first `count` originals, each with every method's global result (in table order)."""
    methods = [row.method for row in rows if row.scope == "global"]
    originals: dict[str, str] = {}
    results: dict[str, dict[str, str]] = {}
    for method, entry in record["methods"].items():
        base = entry.get("run_folder")  # absent in records of older versions, which kept full paths
        for pair in _pairs(entry):
            if pair.scope == "global":
                originals.setdefault(pair.image, _pair_path(base, pair.original_path))
                results.setdefault(pair.image, {})[method] = _pair_path(base, pair.anonymized_path)
    shared = record.get("privacy")
    original_faces = shared.get("original_faces", {}) if shared else {}
    method_faces = {method: (entry.get("privacy") or {}).get("faces", {})
                    for method, entry in record["methods"].items()}
    return [
        Example(label=image, original=path,
                anonymized=tuple((method, results[image].get(method)) for method in methods),
                original_faces=_boxes(original_faces.get(image)),
                faces={method: _boxes(method_faces[method][image]) for method in methods
                       if image in method_faces.get(method, {})})
        for image, path in list(originals.items())[:count]
    ]


def _boxes(faces: Sequence[Sequence[float]] | None) -> tuple[tuple[float, ...], ...] | None:
    return None if faces is None else tuple(tuple(float(v) for v in face) for face in faces)


def _pair_path(base: str | None, path: str) -> Path:
    """A record's pair path, which is relative to its method's run folder."""
    return Path(os.path.normpath(Path(base) / path)) if base else Path(path)


def _provenance(record: Mapping[str, Any]) -> dict[str, Any]:
    dataset = record["dataset"]
    provenance = record.get("provenance", {})
    return {
        "dataset": f"{dataset['name']} ({dataset['folder']})",
        "dataset sha256": dataset["sha256"],
        "methods": "; ".join(f"{name}: {entry['identity']}" for name, entry in record["methods"].items()),
        "metrics": "; ".join(f"{name}: {info.get('key')}" for name, info in record["metrics"].items()
                             if info["status"] == "ok"),
        "bench": provenance.get("bench"),
        "git commit": provenance.get("git_commit"),
        "device": provenance.get("device"),
        "created": record.get("created"),
    }


# ----------------------------------------------------------------------------- stored
def stored_leaderboard(
    *,
    dataset: str | os.PathLike[str],
    store_path: Path,
    leaderboards_dir: Path,
    out: Path | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    sort: str | None = None,
    drop: Sequence[str] = (),
    allow_outside_root: bool = False,
    tradeoff: str | None = None,
) -> tuple[Leaderboard, dict[str, Path], list[str]]:
    """`bench leaderboard`: every method ever benchmarked on the dataset, from the store,
    written to `out` (default ``<leaderboards_dir>/<dataset name>``). Methods in `drop` are
    first removed from the stored records for good. Returns the board, the files written
    and the methods dropped."""
    benchmark_set = load_benchmark_set(dataset, allow_outside_root=allow_outside_root)
    if not Path(store_path).is_file():
        raise InputError(f"no results store at {store_path}; run `bench run --method NAME` first or pass --store")
    with ResultsStore(store_path) as store:
        records = store.benchmark_records(benchmark_set.sha256)
        if not records:
            raise InputError(f"no benchmark run of {benchmark_set.name} (sha256 {benchmark_set.sha256[:16]}) in "
                             f"{store_path}; run `bench run --method NAME --dataset {dataset}` first")
        merged = merge_records(records)
        known = list(merged["methods"])
        unknown = [name for name in drop if name not in known]
        if unknown:
            raise InputError(f"--drop {unknown[0]}: no such method on the {benchmark_set.name} leaderboard in "
                             f"{store_path}; its methods are: {', '.join(known)}")
        dropped = list(dict.fromkeys(drop))
        for name in dropped:
            store.drop_benchmark_method(benchmark_set.sha256, name)
        if dropped:
            records = store.benchmark_records(benchmark_set.sha256)
            if not records:
                raise InputError(f"every method of the {benchmark_set.name} leaderboard was dropped; "
                                 f"run `bench run --method NAME --dataset {dataset}` to start a new one")
            merged = merge_records(records)
        choose_axes(tradeoff, merged["metrics"])  # a wrong --tradeoff is one line, before any work
        board = build_leaderboard(store, merged, n_boot=n_boot, seed=seed, sort=sort, tradeoff=tradeoff)
    written = write_leaderboard(board, out or Path(leaderboards_dir) / benchmark_set.name)
    return board, written, dropped
