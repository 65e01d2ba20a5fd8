"""Score a folder of anonymized images against the folder of their originals.

No annotation CSV and no human scores are needed: `pair_folders` pairs the two folders' files
by relative path with the extension ignored (``coco/a.png`` with ``coco/a.jpg``), as
`bench.methods.match_folder` matches a ``--method NAME=DIR`` folder to the benchmark's
originals. Files on either side without a partner are named, never silently dropped; a name
with several candidate files in one folder (``a.png`` and ``a.jpg``) is one line and its files
stay out, because choosing one would be a guess.

`folders_table` turns the pairing into the `PairsTable` every scorer takes, so per-pair scores
go through `bench.scoring.runner.score_pairs` and its results store exactly as an annotation CSV's do
(the same pairs give the same values, and a re-run computes nothing). The pairs are written to
``<out>/pairs.csv`` relative to one stated base, the folders' common parent, which makes the
file a valid ``bench score --annotations pairs.csv --root BASE`` input.

Set metrics (FID, KID) compare the two folders as one group through
`bench.scoring.setmetrics.score_groups`: the originals of the pairs against their anonymized images.

`score_table` is the shared back end of `bench score` (folders or annotations): per-pair
scores, set metrics where asked for, and a `ScoreReport` with a summary per metric (mean,
median, 95% percentile-bootstrap CI over pairs, n; +inf values such as the PSNR of identical
images counted apart, never averaged).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from bench.analysis import stats
from bench.data import dataset
from bench.data.dataset import PATH_COLUMNS, TEXT_COLUMNS, PairsTable
from bench.errors import InputError
from bench.methods import _folder_files, _stem, match_folder
from bench.options import Bootstrap, ScoringOptions
from bench.scoring import runner
from bench.scoring.setmetrics import SPREAD_FIELDS, GroupMember, SetScores, SetValueSpread, score_groups
from bench.scoring.store import DEFAULT_STORE_NAME, ResultsStore
from metrics.atomic import write_atomic
from metrics.errors import MetricError
from metrics.hashing import file_sha256
from metrics.registry import DEFAULT_METRICS, PAPER_METRICS, metric_class, parse_metric_list
from metrics.schema import WeightsStatus, to_json_text, to_json_value

#: The one group that set metrics see when two folders are compared.
FOLDERS_GROUP = "folders"
#: Unpaired or skipped files named one per line before the rest are counted.
LISTED_FILES = 10
#: File suffixes PIL can open; other files in the folders are skipped, and counted.
IMAGE_SUFFIXES = frozenset(suffix.lower() for suffix in Image.registered_extensions())
CI_LEVEL = 0.95


# ----------------------------------------------------------------------------- pairing
@dataclass(frozen=True)
class FolderPair:
    """An original and its anonymized image; `name` is the original's path under its folder."""

    name: str
    original: Path
    anonymized: Path


@dataclass
class FolderPairing:
    """How two folders' files pair up (paths under each folder, POSIX style)."""

    originals: Path
    anonymized: Path
    pairs: list[FolderPair]
    #: originals without an anonymized image, and anonymized images without an original.
    unpaired_originals: list[str] = field(default_factory=list)
    unpaired_anonymized: list[str] = field(default_factory=list)
    #: One line per name that has several candidate files in one folder.
    ambiguous: list[str] = field(default_factory=list)
    #: Files whose suffix is not an image format (e.g. notes.txt), in either folder.
    skipped: list[str] = field(default_factory=list)

    def report_lines(self, limit: int = LISTED_FILES) -> list[str]:
        """What did not pair, one line per file (at most `limit` per kind, then a count)."""
        lines: list[str] = []
        kinds = (
            (self.unpaired_originals, f"original without an anonymized image in {self.anonymized}", "originals",
             self.originals),
            (self.unpaired_anonymized, f"anonymized image without an original in {self.originals}",
             "anonymized images", self.anonymized),
        )
        for names, what, plural, folder in kinds:
            lines += [f"unpaired: {what}: {folder / name}" for name in names[:limit]]
            if len(names) > limit:
                lines.append(f"unpaired: ... and {len(names) - limit} more {plural}")
        lines += [f"ambiguous: {line}" for line in self.ambiguous[:limit]]
        if len(self.ambiguous) > limit:
            lines.append(f"ambiguous: ... and {len(self.ambiguous) - limit} more names")
        if self.skipped:
            shown = ", ".join(self.skipped[:limit]) + (f" and {len(self.skipped) - limit} more"
                                                        if len(self.skipped) > limit else "")
            lines.append(f"skipped {len(self.skipped)} file(s) that are not images by their suffix: {shown}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"originals": str(self.originals), "anonymized": str(self.anonymized), "pairs": len(self.pairs),
                "unpaired_originals": self.unpaired_originals, "unpaired_anonymized": self.unpaired_anonymized,
                "ambiguous": self.ambiguous, "skipped": self.skipped}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _check_folders(originals: Path, anonymized: Path) -> None:
    for folder, role in ((originals, "originals"), (anonymized, "anonymized images")):
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "no such folder"
            raise InputError(f"{folder}: {what}; give the folder of {role}")
    if originals.resolve() != anonymized.resolve():
        for inner, outer in ((originals, anonymized), (anonymized, originals)):
            if outer.resolve() in inner.resolve().parents:
                raise InputError(f"{inner} lies inside {outer}, so its files would be paired with themselves; "
                                 "give two separate folders")


def pair_folders(originals: Path, anonymized: Path) -> FolderPairing:
    """Pair every image under `originals` with the one under `anonymized` at the same relative
    path, extension ignored. `InputError` when a folder is missing or nothing pairs."""
    originals, anonymized = Path(originals), Path(anonymized)
    _check_folders(originals, anonymized)
    by_stem: dict[str, list[str]] = {}
    skipped: list[str] = []
    for path in _folder_files(originals):
        relative = path.relative_to(originals).as_posix()
        if _is_image(path):
            by_stem.setdefault(_stem(relative), []).append(relative)
        else:
            skipped.append(f"{originals.name}/{relative}")
    ambiguous = [f"{' and '.join(str(originals / r) for r in names)} are one name; keep one of them"
                 for names in by_stem.values() if len(names) > 1]
    unique = [names[0] for names in by_stem.values() if len(names) == 1]
    match = match_folder(anonymized, unique)
    for relative, candidates in match.ambiguous.items():
        ambiguous.append(f"{' and '.join(str(p) for p in candidates)} all match {originals / relative}; "
                         "keep one of them")
    extra = [path.relative_to(anonymized).as_posix() for path in match.extra]
    skipped += [f"{anonymized.name}/{relative}" for relative in extra if not _is_image(Path(relative))]
    pairs = [FolderPair(relative, originals / relative, match.found[relative]) for relative in sorted(match.found)]
    pairing = FolderPairing(
        originals=originals, anonymized=anonymized, pairs=pairs,
        unpaired_originals=sorted(match.missing),
        unpaired_anonymized=sorted(relative for relative in extra if _is_image(Path(relative))),
        ambiguous=sorted(ambiguous), skipped=sorted(skipped),
    )
    if not pairs:
        detail = "; ".join(pairing.report_lines(limit=2)) or f"{originals} holds no image"
        raise InputError(f"no image in {anonymized} pairs with one in {originals} (files pair by their path under "
                         f"each folder, extension ignored: a.png with a.jpg): {detail}")
    return pairing


def default_out_name(originals: Path, anonymized: Path) -> str:
    """``score-<the anonymized folder's path under the two folders' common parent>``, e.g.
    score-anonymized-blur-global: distinct for the method folders of one set."""
    base = _base(originals, anonymized)
    relative = anonymized.relative_to(base).as_posix() if anonymized != base else anonymized.name
    return "score-" + (relative.replace("/", "-") or "folder")


def _base(originals: Path, anonymized: Path) -> Path:
    """The folders' common parent: pair paths are stored relative to it."""
    try:
        return Path(os.path.commonpath([originals, anonymized]))
    except ValueError:  # different drives: no common parent, paths stay absolute
        return Path(originals.anchor)


def folders_table(pairing: FolderPairing, out: Path) -> PairsTable:
    """The pairing as a `PairsTable` (no human scores), also written to ``<out>/pairs.csv``;
    ``row`` is each pair's line in that file. `out` and the pairing's folders are absolute."""
    base = _base(pairing.originals, pairing.anonymized)
    records = [{"original": os.path.relpath(pair.original, base), "anonymized": os.path.relpath(pair.anonymized, base)}
               for pair in pairing.pairs]
    frame = pd.DataFrame.from_records(records, columns=list(PATH_COLUMNS))
    text = frame.rename(columns={"original": "img1", "anonymized": "img2"}).to_csv(index=False)
    for column in TEXT_COLUMNS:
        frame[column] = ""
    frame["score_mean"] = math.nan
    frame["row"] = np.arange(2, len(frame) + 2)  # line 1 of pairs.csv is its header
    source = write_atomic(out / "pairs.csv", text)
    return PairsTable(frame=frame, annotators=[], source=source, root=base, raw=frame.copy(),
                      absent_columns=TEXT_COLUMNS, sha256=hashlib.sha256(text.encode()).hexdigest())


# ----------------------------------------------------------------------------- summaries
@dataclass(frozen=True)
class PairMetricSummary:
    """One pair metric over every scored pair: mean, median and CI of the finite values."""

    name: str
    label: str
    higher_is_more_anonymous: bool | None
    status: str
    reason: str = ""
    weights_status: WeightsStatus = WeightsStatus.NONE
    mean: float = math.nan
    median: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    #: Pairs with a finite value (those in mean, median and CI).
    n: int = 0
    #: Pairs whose value is +inf or -inf (PSNR of identical images), counted apart.
    n_infinite: int = 0
    #: Pairs without a value (failed, or rejected by the metric).
    n_missing: int = 0


@dataclass(frozen=True)
class SetMetricSummary:
    """One set metric's value between the two folders (KID: mean and std over subsets)."""

    name: str
    label: str
    higher_is_more_anonymous: bool | None
    status: str
    reason: str = ""
    weights_status: WeightsStatus = WeightsStatus.NONE
    value: float = math.nan
    #: How uncertain the value is, where the metric measures it: KID's "std" over subsets.
    spread: Mapping[str, float] = field(default_factory=dict)
    #: Pairs in the group.
    n: int = 0
    #: Why there is no value although the metric ran (e.g. too few pairs).
    note: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)


def summarize_values(values: Sequence[float], *, n_boot: int, seed: int) -> tuple[float, float, float, float, int, int]:
    """(mean, median, ci_low, ci_high, n finite, n infinite) of one metric's per-pair values;
    the CI is the percentile bootstrap over pairs (`n_boot` resamples, `seed`)."""
    array = np.asarray(values, dtype=np.float64)
    infinite = np.isinf(array)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return math.nan, math.nan, math.nan, math.nan, 0, int(infinite.sum())
    low, high = stats.mean_interval(finite, np.arange(finite.size), n_boot, seed, CI_LEVEL)
    return float(finite.mean()), float(np.median(finite)), low, high, int(finite.size), int(infinite.sum())


def _pair_summaries(result: runner.ScoreResult, *, n_boot: int, seed: int) -> list[PairMetricSummary]:
    summaries = []
    for outcome in result.metrics:
        values = result.scores.loc[result.scores["metric"] == outcome.name, "value"].to_numpy()
        common = dict(name=outcome.name, label=outcome.label or outcome.name,
                      higher_is_more_anonymous=_direction_of(outcome), status=outcome.status,
                      reason=outcome.reason, weights_status=outcome.weights_status)
        if outcome.status != "ok":
            summaries.append(PairMetricSummary(**common, n_missing=len(result.pairs)))
            continue
        mean, median, low, high, n, n_infinite = summarize_values(values, n_boot=n_boot, seed=seed)
        summaries.append(PairMetricSummary(**common, mean=mean, median=median, ci_low=low, ci_high=high, n=n,
                                           n_infinite=n_infinite, n_missing=len(result.pairs) - len(values)))
    return summaries


def _set_summaries(set_scores: SetScores, n_pairs: int) -> list[SetMetricSummary]:
    summaries = []
    for outcome in set_scores.metrics:
        key = (outcome.name, FOLDERS_GROUP)
        spread = set_scores.spreads.get(key)
        summaries.append(SetMetricSummary(
            name=outcome.name, label=outcome.label or outcome.name,
            higher_is_more_anonymous=_direction_of(outcome), status=outcome.status,
            reason=outcome.reason, weights_status=outcome.weights_status,
            value=set_scores.values.get(key, math.nan), spread=spread_fields(spread), n=n_pairs,
            note=set_scores.notes.get(key, ""), config=dict(outcome.config),
        ))
    return summaries


def spread_fields(spread: SetValueSpread | None) -> dict[str, float]:
    """The measured parts of a set value's spread (KID as two samples has a std, no interval)."""
    if spread is None:
        return {}
    return {name: getattr(spread, name) for name in SPREAD_FIELDS if not math.isnan(getattr(spread, name))}


def two_sample_options(options: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`options` with each named metric's `two_sample_options` under the user's own settings.

    Two folders (or two tensors) are compared as two samples, as torch-fidelity and torchmetrics
    compute KID; a benchmark's method x scope groups use the paired estimator (metrics/fid.py).
    """
    merged = {name: dict(value) for name, value in options.items()}
    for name in names:
        try:
            defaults = metric_class(name).two_sample_options
        except MetricError:  # not buildable: the metric's own outcome says why
            continue
        if defaults:
            merged[name] = {**defaults, **merged.get(name, {})}
    return merged


def summary_json(summary: PairMetricSummary | SetMetricSummary) -> dict[str, Any]:
    """A summary as JSON-ready values, under the one JSON rule (metrics.schema.json_number)."""
    return to_json_value(vars(summary))


def ci_statement(n_boot: int, seed: int) -> str:
    return (f"95% CI: percentile bootstrap over pairs, {n_boot} resamples, seed {seed}; "
            "mean, median and CI over finite values, +inf/-inf pairs counted apart")


# ----------------------------------------------------------------------------- the report
@dataclass
class ScoreReport:
    """What `bench score` computed: per-pair scores, set metrics and their summaries."""

    result: runner.ScoreResult
    pair_summaries: list[PairMetricSummary]
    set_summaries: list[SetMetricSummary]
    #: The folder pairing (None when the pairs came from an annotation CSV).
    pairing: FolderPairing | None
    n_boot: int
    seed: int
    #: What the set metrics computed or reused (empty for an annotation table).
    set_scores: SetScores = field(default_factory=lambda: SetScores(metrics=[]))
    #: Files written: scores.csv, scores.json, summary.json (and pairs.csv for folders).
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every pair scored by every metric (the folder's unpaired files do not count)."""
        return self.result.complete and all(s.status == "ok" for s in self.set_summaries)

    def shortfalls(self, requested: Sequence[str] = ()) -> list[str]:
        """Why the command should exit 1: failed pairs, and metrics asked for by name that did not
        run. A default metric without its weights (LPIPS offline) is reported, not a failure, as
        in `bench run`."""
        problems = [f"{len(self.result.failures)} pair(s) failed"] if self.result.failures else []
        return problems + runner.not_run_as_asked([*self.result.metrics, *self.set_summaries], requested)

    @property
    def ci_statement(self) -> str:
        return ci_statement(self.n_boot, self.seed)

    def summary_lines(self) -> list[str]:
        """What was computed and what was reused from the store, per metric."""
        lines = self.result.summary_lines()
        if self.set_scores.metrics:
            lines += ["set metrics (all originals vs all anonymized images):", *self.set_scores.summary_lines()]
        return lines

    def to_json(self) -> dict[str, Any]:
        """One JSON-ready object (the one JSON rule, as in scores.json)."""
        scored = self.result.to_json()
        return {
            "folders": self.pairing.to_json() if self.pairing else None,
            "annotations": None if self.pairing else self.result.provenance.get("annotations"),
            "pairs": len(self.result.pairs),
            "complete": self.complete,
            "ci": self.ci_statement,
            "value_encoding": scored["value_encoding"],
            "metrics": {s.name: summary_json(s) for s in self.pair_summaries},
            "set_metrics": {s.name: summary_json(s) for s in self.set_summaries},
            "failures": [vars(failure) for failure in self.result.failures],
            "notes": self.result.notes,
            "files": {name: str(path) for name, path in self.files.items()},
            "run_id": self.result.run_id,
            "store": str(self.result.store_path),
            "provenance": self.result.provenance,
            "per_pair": scored["pairs"],
        }

    def table_lines(self) -> list[str]:
        """The terminal summary: one row per metric, then what did not pair or run."""
        lines: list[str] = []
        if self.pairing:
            lines.append(f"pairs: {len(self.pairing.pairs)} ({self.pairing.originals} vs {self.pairing.anonymized})")
            lines += self.pairing.report_lines()
        else:
            lines.append(f"pairs: {len(self.result.pairs)} ({self.result.provenance.get('annotations')})")
        header = ("metric", "direction", "mean", "median", "95% CI", "n", "note")
        rows = [header]
        for s in self.pair_summaries:
            if s.status != "ok":
                rows.append((s.name, _direction(s.higher_is_more_anonymous), "-", "-", "-", "0",
                             f"{s.status}: {s.reason}"))
                continue
            notes = [f"{s.n_infinite} pair(s) +inf/-inf, not averaged"] if s.n_infinite else []
            notes += [f"{s.n_missing} pair(s) without a value"] if s.n_missing else []
            notes += [s.weights_status.note] if s.weights_status.marked else []
            rows.append((s.name, _direction(s.higher_is_more_anonymous), _number(s.mean), _number(s.median),
                         f"[{_number(s.ci_low)}, {_number(s.ci_high)}]", str(s.n), "; ".join(notes)))
        for s in self.set_summaries:
            name = f"{s.name} (set)"
            if s.status != "ok" or s.note:
                rows.append((name, _direction(s.higher_is_more_anonymous), "-", "-", "-", str(s.n),
                             f"{s.status}: {s.reason}" if s.status != "ok" else s.note))
                continue
            value = _number(s.value) + "".join(f" ({k} {_number(v)})" for k, v in s.spread.items())
            note = "all originals vs all anonymized images" + ("; std over subsets" if "std" in s.spread else "")
            rows.append((name, _direction(s.higher_is_more_anonymous), value, "", "", str(s.n), note))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                  for row in rows]
        lines.append(self.ci_statement)
        lines += [f"note: {note}" for note in self.result.notes]
        # Each failed pair is listed once, by the scoring summary printed before this table.
        return lines


def _direction_of(outcome: runner.MetricOutcome) -> bool | None:
    """The outcome's direction; from the class when the metric could not be built."""
    if outcome.higher_is_more_anonymous is not None:
        return outcome.higher_is_more_anonymous
    try:
        return metric_class(outcome.name).higher_is_more_anonymous
    except MetricError:
        return None


def _direction(higher_is_more_anonymous: bool | None) -> str:
    if higher_is_more_anonymous is None:
        return "?"
    return "higher = more anonymous" if higher_is_more_anonymous else "lower = more anonymous"


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"


# ----------------------------------------------------------------------------- running
def _levels(metric_names: Sequence[str]) -> dict[str, str]:
    levels = {}
    for name in metric_names:
        try:
            levels[name] = metric_class(name).level
        except MetricError:
            levels[name] = "pair"  # the runner reports why it cannot be built
    return levels


@dataclass(frozen=True)
class FolderScoreConfig:
    """`bench score`: where its files go, how pairs are scored and their summaries bootstrapped.
    `scoring.metrics` defaults to `DEFAULT_FOLDER_METRICS` for two folders, the paper's five for
    an annotation table; `scoring.store` to out/results.sqlite."""

    #: The output folder (absolute).
    out: Path
    scoring: ScoringOptions = ScoringOptions(command="bench score")
    bootstrap: Bootstrap = Bootstrap()
    #: Constructor options per metric name (e.g. a PerceptAnon checkpoint).
    metric_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def metric_names(self, *, folders: bool) -> list[str]:
        return parse_metric_list(self.scoring.metrics, DEFAULT_METRICS if folders else PAPER_METRICS)


def score_table(table: PairsTable, config: FolderScoreConfig, *, pairing: FolderPairing | None = None) -> ScoreReport:
    """Score `table` and summarize; set metrics run only for a folder `pairing` (one group:
    every pair). Writes scores.csv, scores.json and summary.json into `config.out`."""
    n_boot, seed = config.bootstrap.n_boot, config.bootstrap.seed
    if n_boot < 1:
        raise InputError(f"--n-boot must be at least 1, got {n_boot}")
    metric_names = config.metric_names(folders=pairing is not None)
    result, set_scores = _score(table, metric_names, config, pairing)
    report = ScoreReport(result=result, pair_summaries=_pair_summaries(result, n_boot=n_boot, seed=seed),
                         set_summaries=_set_summaries(set_scores, len(table)),
                         pairing=pairing, n_boot=n_boot, seed=seed, set_scores=set_scores)
    _write_report(report, table, config.out)
    return report


def _score(table: PairsTable, metric_names: Sequence[str], config: FolderScoreConfig,
           pairing: FolderPairing | None) -> tuple[runner.ScoreResult, SetScores]:
    """Every pair by the pair metrics; for a folder pairing, both folders by the set metrics."""
    scoring, options = config.scoring, dict(config.metric_options)
    levels = _levels(metric_names)
    pair_names = [name for name in metric_names if levels[name] == "pair"]
    set_names = [name for name in metric_names if levels[name] == "set"] if pairing else []
    with ResultsStore(scoring.store or config.out / DEFAULT_STORE_NAME) as store:
        # Set metrics of an annotation table are left to the runner, which notes why they do not run.
        result = runner.score_pairs(
            table, pair_names if pairing else list(metric_names), store=store, device=scoring.device,
            batch_size=scoring.batch_size, workers=scoring.workers, size_policy=scoring.size_policy,
            progress=scoring.progress, command=scoring.command, metric_options=options)
        set_scores = SetScores(metrics=[])
        if set_names:
            members = [GroupMember((file_sha256(o), file_sha256(a)), o, a)
                       for o, a in zip(table.paths("original"), table.paths("anonymized"))]
            set_scores = score_groups({FOLDERS_GROUP: members}, set_names, store=store, device=scoring.device,
                                      batch_size=scoring.batch_size, run_id=result.run_id,
                                      metric_options=two_sample_options(options, set_names),
                                      progress=scoring.progress)
    return result, set_scores


def _write_report(report: ScoreReport, table: PairsTable, out: Path) -> None:
    """scores.csv, scores.json, summary.json (and, for folders, the pairs.csv of the pairing)."""
    csv_path, json_path = runner.write_outputs(report.result, out)
    report.files = {"scores.csv": csv_path, "scores.json": json_path}
    if report.pairing:
        report.files["pairs.csv"] = table.source
    report.files["summary.json"] = out / "summary.json"
    write_atomic(out / "summary.json", to_json_text(report.to_json(), indent=2))


def score_folders(originals: Path, anonymized: Path, config: FolderScoreConfig) -> ScoreReport:
    """Pair two folders (`pair_folders`) and score every pair, plus FID/KID between them.
    Paths must be absolute (the CLI and `bench.api` resolve them)."""
    config.metric_names(folders=True)  # an unknown metric is one line before the folders are read
    pairing = pair_folders(originals, anonymized)
    config.out.mkdir(parents=True, exist_ok=True)
    return score_table(folders_table(pairing, config.out), config, pairing=pairing)


def score_annotations(annotations: Path, config: FolderScoreConfig, *, root: Path | None = None,
                      columns: str | None = None, allow_outside_root: bool = False) -> ScoreReport:
    """`bench score --annotations`: every pair of an annotation table (a score column is not needed)."""
    table = dataset.load_pairs(annotations, root=root, columns=dataset.parse_column_mapping(columns),
                               allow_outside_root=allow_outside_root, require_scores=False)
    dataset.check_image_root(table)
    return score_table(table, config)
