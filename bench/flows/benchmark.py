"""`bench run --method ...`: benchmark anonymization methods into a leaderboard.

The flow, for a benchmark set (originals + PII regions) and a list of methods:

1. **Anonymize.** Every method -- the four built-ins always, beside the user's -- is applied
   to every original with its PII mask and boxes (`bench.methods.anonymize` checks each
   output). Outputs go to ``<out>/<dataset>/<method>/<scope>/<original's path>.png``:
   ``global`` is the whole anonymized image, ``local`` its crop to the PII box (the smallest
   box holding all the image's PII boxes); the original's local counterpart, the same crop
   of the original, goes to ``<out>/<dataset>/_originals/local/``, and the PII mask each
   method got (white = PII) to ``<out>/<dataset>/_originals/pii_mask/``: metrics that need it
   (background preservation) find it in the ``pii_mask`` column of ``pairs.csv``, global scope. A manifest beside each
   method's outputs records the method's identity: an unchanged method whose outputs are
   intact is not run again. A method that fails on an image (raises, or returns the wrong
   shape, dtype or NaN) gets a one-line failure naming it and the image; the run goes on.
2. **Score.** The (original, anonymized) pairs -- written to ``pairs.csv`` -- are scored by
   `bench.scoring.runner.score_pairs` with every pair metric, and each method x scope group by the set
   metrics (`bench.scoring.setmetrics`); stored values are reused, so an unchanged re-run computes
   nothing. Metrics that cannot be built (missing weights) are reported with the fix.
3. **Record and rank.** The run's record (method identities and pairs, dataset identity,
   metric keys, failures) goes into the results store; the leaderboard is built from it
   (`bench.analysis.leaderboard`) and written as Markdown, LaTeX, CSV, JSON and HTML.

The benchmark set itself (its folder, originals and identity) is `bench.data.benchmark_set`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from bench.analysis.leaderboard import build_leaderboard, check_n_boot
from bench.data import images
from bench.data.benchmark_set import BenchmarkPair, BenchmarkSet, OriginalImage, load_benchmark_set
from bench.data.dataset import MASK_COLUMN, PairsTable
from bench.data.demo import DEMO_DATASET
from bench.data.layout import ORIGINALS_FOLDER
from bench.data.regions import boxes_mask, local_box, local_crop
from bench.errors import ImageError, InputError, printable
from bench.flows import evaluate
from bench.methods.isolation import DEFAULT_TIMEOUT_S, MethodWorker, WorkerDied
from bench.options import Bootstrap, ScoringOptions
from bench.methods import (
    FolderMatch,
    Method,
    MethodFailure,
    anonymize,
    check_output,
    builtin_methods,
    match_folder,
    format_value,
    resolve_method,
    sweep,
)
from bench.scoring.runner import MetricOutcome, ScoreResult, not_run_as_asked, score_pairs, write_outputs
from bench.scoring.setmetrics import (
    GroupMember,
    SetMetricOutcome,
    SetScores,
    group_key,
    score_groups,
)
from bench.analysis.tradeoff import choose_axes
from bench.scoring.store import DEFAULT_STORE_NAME, ResultsStore
from metrics.atomic import write_atomic
from metrics.attacks import PrivacyReport
from metrics.csvsafe import to_csv_text
from metrics.errors import MetricError
from metrics.hashing import file_sha256, remember_sha256
from metrics.registry import DEFAULT_METRICS, metric_class
from reports.leaderboard import FILE_NAMES as LEADERBOARD_FILES
from reports.leaderboard import Leaderboard, write_leaderboard

SCOPES = ("global", "local")
#: Folder of the originals' local crops; method folders never start with "_" (see method_slug).
ORIGINAL_CROPS = "_originals"
#: Identity of the originals' crops: changes only if the crop rule does.
CROPS_IDENTITY = "local crop to the bounding box of the PII boxes, v1"
#: The originals' PII masks (white = PII) as the methods got them, beside their crops in
#: ``_originals/``: what metrics that need a mask (background preservation) read, global scope.
MASK_SCOPE = "pii_mask"
MANIFEST = "manifest.json"
#: Folder of the user methods' own stdout/stderr, one log per method.
METHOD_LOGS = "_logs"
#: First note of a run's own leaderboard: other runs' methods are only in `bench leaderboard`.
RUN_BOARD_NOTE = ("This leaderboard holds this run's methods only; `bench leaderboard` (with the same --dataset "
                  "and --store) shows every method ever benchmarked on {dataset}.")
#: Files the run writes beside the method folders; no method's folder may take their names.
_RUN_FILES = frozenset({"pairs.csv", "scores.csv", "scores.json", MANIFEST, METHOD_LOGS, *LEADERBOARD_FILES.values()})
# Failures printed per method; all of them are in the leaderboard files.
_LISTED_FAILURES = 20


# ----------------------------------------------------------------------------- benchmark set
def _pii_mask(original: OriginalImage, height: int, width: int) -> np.ndarray:
    """The mask file (white = PII) where there is one, else the union of the boxes."""
    if original.mask_path is None:
        return boxes_mask(original.boxes, height, width)
    try:
        with Image.open(original.mask_path) as opened:
            mask = np.asarray(opened.convert("L")) > 127
    except OSError as exc:
        reason = " ".join(str(exc).split())
        raise ImageError(f"cannot decode mask {original.mask_path}: {reason}; re-export it") from None
    if mask.shape != (height, width):
        raise InputError(f"mask {original.mask_path} is {mask.shape[1]}x{mask.shape[0]}, its original {original.key} "
                         f"is {width}x{height} (width x height); re-export the mask at the original's size")
    return mask


# ----------------------------------------------------------------------------- outputs
class _OutputFolder:
    """One method's outputs (or the originals' crops) and the manifest saying what made them.

    An output is reused only if the manifest was written by the same method identity for the
    same benchmark set and the file still has the recorded sha256.
    """

    def __init__(self, folder: Path, identity: str, dataset_sha256: str) -> None:
        self.folder, self.identity, self.dataset_sha256 = folder, identity, dataset_sha256
        self.entries: dict[str, dict[str, str]] = self._load()

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        same = manifest.get("identity") == self.identity and manifest.get("dataset_sha256") == self.dataset_sha256
        outputs = manifest.get("outputs")
        return dict(outputs) if same and isinstance(outputs, dict) else {}

    def path(self, scope: str, original: OriginalImage) -> Path:
        return self.folder / scope / original.output_name

    def reusable(self, original: OriginalImage, scopes: Sequence[str]) -> bool:
        recorded = self.entries.get(original.relative) or {}
        return all(self._intact(self.path(scope, original), recorded.get(scope)) for scope in scopes)

    @staticmethod
    def _intact(path: Path, sha256: str | None) -> bool:
        return sha256 is not None and path.is_file() and file_sha256(path) == sha256

    def write(self, original: OriginalImage, scope: str, image: np.ndarray) -> Path:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
        data = buffer.getvalue()
        path = write_atomic(self.path(scope, original), data)
        sha256 = hashlib.sha256(data).hexdigest()
        remember_sha256(path, sha256)
        self.entries.setdefault(original.relative, {})[scope] = sha256
        return path

    def forget(self, original: OriginalImage) -> None:
        self.entries.pop(original.relative, None)

    def save(self) -> None:
        manifest = {"identity": self.identity, "dataset_sha256": self.dataset_sha256, "outputs": self.entries}
        write_atomic(self.folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


@dataclass
class MethodOutputs:
    """What one method produced in a run."""

    method: Method
    #: original's relative path -> scope -> output file.
    outputs: dict[str, dict[str, Path]] = field(default_factory=dict)
    #: One line per image the method failed on.
    failures: list[str] = field(default_factory=list)
    #: Other one-line remarks (folder files that match no original).
    notes: list[str] = field(default_factory=list)
    #: Images anonymized in this run, and images whose earlier outputs were reused.
    anonymized: int = 0
    reused: int = 0


@dataclass
class _Job:
    method: Method
    folder: _OutputFolder
    result: MethodOutputs
    match: FolderMatch | None = None
    #: The worker process of a user's method (see `bench.methods.isolation`); None for built-ins.
    worker: MethodWorker | None = None

    def unavailable(self, original: OriginalImage) -> str | None:
        """Why a folder method has no image for `original` (missing, or several candidates);
        "" when the folder matched no original at all (said once, by `_job`)."""
        if self.match is None or original.relative in self.match.found:
            return None
        if not self.match.found and not self.match.ambiguous:
            return ""
        name, folder = self.method.name, self.method.folder
        if original.relative in self.match.ambiguous:
            candidates = ", ".join(str(path) for path in self.match.ambiguous[original.relative])
            return f"method {name!r}: several files for {original.key} in {folder} ({candidates}); keep one"
        return (f"method {name!r}: no anonymized image for {original.key} in {folder} "
                f"(expected {Path(original.relative).with_suffix('')}.<ext>)")

    def produce(self, original: OriginalImage, image: np.ndarray, pii_mask: np.ndarray) -> np.ndarray:
        if self.worker is not None:
            return self._produce_isolated(original, image, pii_mask)
        if self.match is None:
            return anonymize(self.method, image, pii_mask, original.boxes, where=original.key)
        path = self.match.found[original.relative]
        try:
            anonymized = images.load_rgb(path)
        except ImageError as exc:
            raise MethodFailure(f"method {self.method.name!r}: {exc}") from None
        if anonymized.shape != image.shape:
            raise MethodFailure(
                f"method {self.method.name!r}: {path} is {anonymized.shape[1]}x{anonymized.shape[0]}, its original "
                f"{original.key} is {image.shape[1]}x{image.shape[0]} (width x height); "
                "re-export it at the original's size"
            )
        return anonymized

    def _produce_isolated(self, original: OriginalImage, image: np.ndarray, pii_mask: np.ndarray) -> np.ndarray:
        assert self.worker is not None
        try:
            status, value = self.worker.call(image, pii_mask, original.boxes, where=original.key,
                                             params=self.method.params)
        except WorkerDied as exc:
            raise MethodFailure(f"method {self.method.name!r}: image {original.key}: {exc} "
                                f"(its output is in {self.worker.log_path})") from None
        if status != "ok":
            raise MethodFailure(str(value))
        check_output(self.method.name, value, image.shape, where=original.key)
        return value


def anonymize_all(
    benchmark_set: BenchmarkSet, methods: Sequence[Method], out_root: Path, *, progress: bool = True,
    method_timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[list[MethodOutputs], dict[str, Path]]:
    """Run (or reuse) every method on every original; returns each method's outputs and the
    originals' local crops (relative path -> file). Each original is decoded at most once.
    A user's method runs in its own worker process, at most `method_timeout` seconds per
    image, its stdout/stderr kept in ``<out_root>/_logs/<method>.log``."""
    jobs = [_job(method, benchmark_set, out_root) for method in methods]
    for job in jobs:
        if job.method.isolated and job.method.reference is not None:
            job.worker = MethodWorker(job.method.name, job.method.reference,
                                      out_root / METHOD_LOGS / f"{job.method.slug}.log", timeout_s=method_timeout)
    crops = _OutputFolder(out_root / ORIGINAL_CROPS, CROPS_IDENTITY, benchmark_set.sha256)
    local_originals: dict[str, Path] = {}
    try:
        with tqdm(total=len(benchmark_set.originals), unit="image", desc="anonymizing",
                  disable=not progress or None) as bar:
            for original in benchmark_set.originals:
                _anonymize_original(original, jobs, crops, local_originals)
                bar.update(1)
    except BaseException:
        _finish_jobs(jobs, crops, failing=True)
        raise
    _finish_jobs(jobs, crops, failing=False)
    return [job.result for job in jobs], local_originals


def _finish_jobs(jobs: Sequence[_Job], crops: _OutputFolder, *, failing: bool) -> None:
    """Stop the workers and record what was written. When the run is already failing (a full
    disk, say), a manifest that cannot be written either must not hide the first error."""
    for job in jobs:
        if job.worker is not None:
            job.worker.close()
    for folder in [job.folder for job in jobs] + [crops]:
        try:
            folder.save()
        except OSError:
            if not failing:
                raise


def _job(method: Method, benchmark_set: BenchmarkSet, out_root: Path) -> _Job:
    job = _Job(method, _OutputFolder(out_root / method.slug, method.identity, benchmark_set.sha256),
               MethodOutputs(method))
    if method.folder is not None:
        job.match = match_folder(method.folder, [original.relative for original in benchmark_set.originals])
        job.result.notes += [f"{path} matches no original of {benchmark_set.name}; ignored" for path in job.match.extra]
        if benchmark_set.originals and not job.match.found and not job.match.ambiguous:
            first = Path(benchmark_set.originals[0].relative).with_suffix("")
            job.result.failures.append(
                f"method {method.name!r}: none of the {len(benchmark_set.originals)} originals of "
                f"{benchmark_set.name} has an anonymized image in {method.folder}; expected the originals' "
                f"relative paths, e.g. {method.folder / first}.<ext> (or {method.folder / ORIGINALS_FOLDER / first}.<ext>)")
    return job


def _anonymize_original(original: OriginalImage, jobs: Sequence[_Job], crops: _OutputFolder,
                        local_originals: dict[str, Path]) -> None:
    pending = []
    for job in jobs:
        problem = job.unavailable(original)
        if problem is not None:
            if problem:
                job.result.failures.append(problem)
        elif job.folder.reusable(original, SCOPES):
            job.result.outputs[original.relative] = {scope: job.folder.path(scope, original) for scope in SCOPES}
            job.result.reused += 1
        else:
            pending.append(job)
    local_originals[original.relative] = crops.path("local", original)
    crop_ready = crops.reusable(original, ("local",))
    mask_ready = crops.reusable(original, (MASK_SCOPE,))
    if not pending and crop_ready and mask_ready:
        return
    image = images.load_rgb(original.path)
    height, width = image.shape[:2]
    box = local_box(original.boxes, height, width)
    if box is None:
        raise InputError(f"{original.key}: no PII box overlaps the {width}x{height} image; fix its boxes in pii.json")
    if not crop_ready:
        crops.write(original, "local", local_crop(image, box))
    pii_mask = _pii_mask(original, height, width) if pending or not mask_ready else None
    if not mask_ready:
        crops.write(original, MASK_SCOPE, np.where(pii_mask, 255, 0).astype(np.uint8))
    for job in pending:  # start every pending worker at once: their imports overlap
        if job.worker is not None:
            job.worker.start()
    for job in pending:
        try:
            anonymized = job.produce(original, image, pii_mask)
        except MethodFailure as exc:
            job.folder.forget(original)
            job.result.failures.append(str(exc))
            continue
        job.result.outputs[original.relative] = {
            "global": job.folder.write(original, "global", anonymized),
            "local": job.folder.write(original, "local", local_crop(anonymized, box)),
        }
        job.result.anonymized += 1


# ----------------------------------------------------------------------------- pairs
PAIR_COLUMNS = ("original", "anonymized", "dataset", "scope", "method", "image", MASK_COLUMN)


def relative_to(path: Path, base: Path) -> str:
    """`path` as pairs.csv and the store record keep it: relative to the run folder `base`
    (with ``..`` for originals outside it), so the folder means the same from any working
    directory. Both must be absolute."""
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # no relative path between them (another drive on Windows)
        return str(path)


def pairs_table(benchmark_set: BenchmarkSet, outputs: Sequence[MethodOutputs], local_originals: Mapping[str, Path],
                out_root: Path) -> PairsTable:
    """The run's (original, anonymized) pairs, also written to ``<out_root>/pairs.csv``;
    ``row`` is the pair's line in that file and ``score_mean`` is NaN (no human scores).
    Paths in it are relative to `out_root` (absolute), the table's root."""
    records = [
        {
            "original": relative_to(original.path if scope == "global" else local_originals[original.relative],
                                    out_root),
            "anonymized": relative_to(result.outputs[original.relative][scope], out_root),
            "dataset": original.dataset,
            "scope": scope,
            "method": result.method.name,
            "image": original.key,
            # Background preservation is a global-scope notion: local crops get no mask.
            MASK_COLUMN: relative_to(out_root / ORIGINAL_CROPS / MASK_SCOPE / original.output_name, out_root)
            if scope == "global" else "",
        }
        for result in outputs
        for original in benchmark_set.originals
        if original.relative in result.outputs
        for scope in SCOPES
    ]
    frame = pd.DataFrame.from_records(records, columns=list(PAIR_COLUMNS))
    frame["score_mean"] = math.nan
    frame["row"] = np.arange(2, len(frame) + 2)  # line 1 of pairs.csv is its header
    text = to_csv_text(frame.rename(columns={"original": "img1", "anonymized": "img2"}).drop(columns="row"))
    source = write_atomic(out_root / "pairs.csv", text)
    return PairsTable(frame=frame, annotators=[], source=source, root=out_root, raw=frame.copy(),
                      sha256=hashlib.sha256(text.encode()).hexdigest())


def _pair_keys(table: PairsTable) -> list[tuple[str, str]]:
    # Every file was hashed when written or checked, so these are cache hits.
    return [(file_sha256(original), file_sha256(anonymized))
            for original, anonymized in zip(table.paths("original"), table.paths("anonymized"))]


def _groups(dataset: str, table: PairsTable, keys: Sequence[tuple[str, str]]) -> dict[str, list[GroupMember]]:
    groups: dict[str, list[GroupMember]] = {}
    frame = table.frame
    for i, key in enumerate(keys):
        name = group_key(dataset, frame["method"].iat[i], frame["scope"].iat[i])
        groups.setdefault(name, []).append(GroupMember(key, table.original_path(i), table.anonymized_path(i)))
    return groups


# ----------------------------------------------------------------------------- record
def _metric_entry(outcome: MetricOutcome | SetMetricOutcome, level: str, min_samples: int = 0) -> dict[str, Any]:
    entry = {"level": level, "status": outcome.status, "key": outcome.key, "reason": outcome.reason,
             "weights_status": outcome.weights_status.value, "label": outcome.label or outcome.name,
             "higher_is_more_anonymous": outcome.higher_is_more_anonymous, "min_samples": min_samples}
    return {**entry, **_metric_facts(outcome.name)}


def _metric_facts(name: str) -> dict[str, Any]:
    """What trade-off views read of a metric, from its class: family, utility direction and
    view, and the scopes it scores (background preservation: global only)."""
    try:
        cls = metric_class(name)
    except MetricError:
        return {}
    facts: dict[str, Any] = {"family": cls.family, "higher_is_more_useful": cls.higher_is_more_useful,
                             "utility_view": cls.utility_view}
    if cls.needs_pii_mask:
        facts["scopes"] = list(getattr(cls, "scopes", SCOPES))
    return facts


def _record(benchmark_set: BenchmarkSet, outputs: Sequence[MethodOutputs], table: PairsTable,
            keys: Sequence[tuple[str, str]], scored: ScoreResult, set_scores: SetScores,
            attacks: PrivacyReport | None = None) -> dict[str, Any]:
    """What the store keeps of this run, enough to rebuild its leaderboard (privacy block
    included) later."""
    from bench.scoring.privacy import record_entries

    shared, per_method = record_entries(attacks) if attacks is not None else (None, {})
    frame = table.frame
    pair_failures: dict[str, list[str]] = {}
    row_position = {int(row): i for i, row in enumerate(frame["row"])}
    for failure in scored.failures:
        i = row_position[failure.row]
        metric = f"{failure.metric}: " if failure.metric else ""
        pair_failures.setdefault(frame["method"].iat[i], []).append(
            f"{frame['method'].iat[i]} {frame['scope'].iat[i]} {frame['image'].iat[i]}: {metric}{failure.reason}")
    methods = {}
    for result in outputs:
        rows = np.flatnonzero(frame["method"].to_numpy() == result.method.name)
        methods[result.method.name] = {
            "identity": result.method.identity,
            "kind": result.method.kind,
            # A sweep's setting: its base method and parameter values (as row names show them).
            "base": result.method.base_name,
            "params": {name: format_value(value) for name, value in result.method.params},
            "source": result.method.source,
            "n_images": len(benchmark_set.originals),
            "pairs": [BenchmarkPair(image=frame["image"].iat[i], scope=frame["scope"].iat[i],
                                    original_sha256=keys[i][0], anonymized_sha256=keys[i][1],
                                    original_path=frame["original"].iat[i],
                                    anonymized_path=frame["anonymized"].iat[i]).stored() for i in rows],
            # The pairs' paths are relative to this folder (see `relative_to`).
            "run_folder": str(table.root),
            "failures": result.failures + pair_failures.get(result.method.name, []),
            "notes": result.notes,
        }
        if shared is not None:
            methods[result.method.name]["privacy"] = per_method.get(result.method.name, {"rows": {}, "notes": [],
                                                                                        "faces": {}})
    metrics = {outcome.name: _metric_entry(outcome, "pair") for outcome in scored.metrics}
    metrics.update({outcome.name: _metric_entry(outcome, "set", outcome.min_samples) for outcome in set_scores.metrics})
    return {
        "dataset": {"name": benchmark_set.name, "sha256": benchmark_set.sha256,
                    "folder": str(benchmark_set.folder.resolve())},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "methods": methods,
        "metrics": metrics,
        "provenance": scored.provenance,
        **({"privacy": shared} if shared is not None else {}),
    }


# ----------------------------------------------------------------------------- the run
@dataclass
class BenchmarkResult:
    benchmark_set: BenchmarkSet
    outputs: list[MethodOutputs]
    scores: ScoreResult
    set_scores: SetScores
    board: Leaderboard
    written: dict[str, Path]
    #: Metrics the user asked for by name (their unavailability makes the run incomplete).
    requested: list[str]
    #: The privacy attacks (`--privacy`), None when not asked for.
    privacy: PrivacyReport | None = None

    @property
    def complete(self) -> bool:
        return not self.shortfalls()

    def shortfalls(self) -> list[str]:
        """Why the command exits 1: images a method failed on, failed pairs, and metrics asked
        for by name that did not run (a default metric without its weights is reported, not this)."""
        problems = [f"{o.method.name} failed on {len(o.failures)} image(s)" for o in self.outputs if o.failures]
        problems += [f"{len(self.scores.failures)} pair(s) failed"] if self.scores.failures else []
        return problems + not_run_as_asked([*self.scores.metrics, *self.set_scores.metrics], self.requested)

    def summary_lines(self) -> list[str]:
        bset = self.benchmark_set
        lines = [f"benchmark set: {bset.name} ({len(bset.originals)} originals, sha256 {bset.sha256[:16]})",
                 "anonymizing:"]
        for result in self.outputs:
            failed = f", failed {len(result.failures)}" if result.failures else ""
            lines.append(f"  {result.method.name}: anonymized {result.anonymized}, reused {result.reused}{failed}")
            lines += [f"    {line}" for line in result.failures[:_LISTED_FAILURES]]
            if len(result.failures) > _LISTED_FAILURES:
                lines.append(f"    ... and {len(result.failures) - _LISTED_FAILURES} more: see leaderboard.md")
            lines += [f"    note: {note}" for note in result.notes]
        lines.append("scoring pairs:")
        lines += [f"  {line}" for line in self.scores.summary_lines()]
        if self.set_scores.metrics:
            lines.append("set metrics (per method x scope):")
            lines += self.set_scores.summary_lines()
        if self.privacy is not None:
            lines.append("privacy attacks (per method x scope):")
            lines += self.privacy.summary_lines()
        return [printable(line) for line in lines]  # a newline or escape in a path stays on its line


def _methods(specs: Sequence[str], params: Sequence[Sequence[str]] | None = None, *,
             allow_outside_root: bool = False) -> list[Method]:
    """The built-ins, then the user's methods, each swept over its ``--param`` assignments
    (``params[i]`` belongs to ``specs[i]``); a name given twice counts once."""
    params = list(params or [])
    if len(params) > len(specs):
        raise InputError("--param needs a --method before it: it sets a parameter of the method given just before it")
    chosen = {method.name: method for method in builtin_methods()}
    for i, spec in enumerate(specs):
        for method in sweep(resolve_method(spec, allow_outside_root=allow_outside_root),
                            params[i] if i < len(params) else ()):
            chosen.setdefault(method.name, method)
    slugs: dict[str, str] = {}
    for method in chosen.values():
        if not method.name.isprintable():
            raise InputError(f"method name {method.name!r} holds a control character (a newline, an escape); "
                             "it would break the leaderboard's lines: choose a printable name")
        if method.slug.lower() in _RUN_FILES:
            raise InputError(f"method name {method.name!r} would be the folder {method.slug!r}, which is a file of "
                             "the run folder; choose another name")
        other = slugs.setdefault(method.slug, method.name)
        if other != method.name:
            raise InputError(f"methods {other!r} and {method.name!r} would share the output folder {method.slug!r}; "
                             "rename one (NAME=DIR names are free)")
    return list(chosen.values())


def metric_names(spec: str | None, metric_options: Mapping[str, Any]) -> list[str]:
    """--metrics (default: `metrics.registry.DEFAULT_METRICS`), plus PerceptAnon for each checkpoint."""
    return evaluate.metric_names(spec or ",".join(DEFAULT_METRICS), dict(metric_options))


def _level(name: str) -> str:
    try:
        return metric_class(name).level
    except MetricError:
        return "pair"  # the runner reports why it cannot be built


@dataclass(frozen=True)
class BenchmarkConfig:
    """`bench run --method`: which methods run on which benchmark set, and how their outputs are
    scored, attacked and ranked. Paths are absolute (the CLI resolves them; a Python caller's
    relative ones are made absolute when the run starts)."""

    #: Method specs: a built-in, a plugin name, module:function or NAME=DIR.
    methods: tuple[str, ...]
    #: The run folder; outputs go to out/<dataset>/.
    out: Path
    #: For each of `methods`, its ``NAME=V1,V2`` assignments: each setting of the grid they make
    #: is its own method (`bench.methods.sweep`).
    method_params: tuple[tuple[str, ...], ...] = ()
    #: ``fixtures`` (the demo set) or a folder with images/ and pii.json.
    dataset: str | os.PathLike[str] = DEMO_DATASET
    checkpoint_ha1: Path | None = None
    checkpoint_ha2: Path | None = None
    #: ``module:function`` scored on every anonymized image as the utility metric 'task'.
    utility: str | None = None
    sort: str | None = None
    privacy: bool = False
    method_timeout: float = DEFAULT_TIMEOUT_S
    allow_outside_root: bool = False
    #: ``PRIVACY,UTILITY``: the axes of the trade-off views (default: `bench.analysis.tradeoff.choose_axes`).
    tradeoff: str | None = None
    #: `scoring.store` defaults to out/results.sqlite; pairs are scored under size policy "error"
    #: whatever `scoring.size_policy` says (the methods write images of their originals' size).
    scoring: ScoringOptions = ScoringOptions()
    bootstrap: Bootstrap = Bootstrap()

    @property
    def metric_options(self) -> dict[str, dict[str, Any]]:
        """Options of the metrics that take some: PerceptAnon's checkpoints, the user's task function."""
        return {**evaluate.metric_options(self.checkpoint_ha1, self.checkpoint_ha2),
                **({"task": {"function": self.utility}} if self.utility else {})}

    @property
    def store_path(self) -> Path:
        return Path(os.path.abspath(self.scoring.store or Path(self.out) / DEFAULT_STORE_NAME))


def run_benchmark(config: BenchmarkConfig) -> BenchmarkResult:
    """Anonymize, score, record and rank (see the module docstring); writes the leaderboard
    files and ``pairs.csv`` / ``scores.csv`` / ``scores.json`` into ``<out>/<dataset>/``."""
    names = checked_metric_names(config)
    benchmark_set = load_benchmark_set(config.dataset, allow_outside_root=config.allow_outside_root)
    methods = _methods(config.methods, config.method_params, allow_outside_root=config.allow_outside_root)
    out_root = Path(os.path.abspath(config.out)) / benchmark_set.name
    outputs, local_originals = anonymize_all(benchmark_set, methods, out_root, progress=config.scoring.progress,
                                             method_timeout=config.method_timeout)
    table = pairs_table(benchmark_set, outputs, local_originals, out_root)
    scored, set_scores, attacks, board = score_and_rank(config, names, benchmark_set, outputs, table, out_root)
    written = write_results(scored, board, attacks, out_root)
    requested = metric_names(config.scoring.metrics, config.metric_options) if config.scoring.metrics \
        else list(config.metric_options)
    return BenchmarkResult(benchmark_set, outputs, scored, set_scores, board, written, requested, attacks)


def checked_metric_names(config: BenchmarkConfig) -> list[str]:
    """The run's metrics; a bad --n-boot, --sort or --tradeoff is one line before any work, not after."""
    check_n_boot(config.bootstrap.n_boot)
    names = metric_names(config.scoring.metrics, config.metric_options)
    if config.sort is not None and config.sort not in names:
        raise InputError(f"--sort {config.sort!r} is not among the metrics of this run: {', '.join(names)}")
    choose_axes(config.tradeoff, {name: {} for name in names}, among="the metrics of this run")
    return names


def score_and_rank(config: BenchmarkConfig, names: Sequence[str], benchmark_set: BenchmarkSet,
                   outputs: Sequence[MethodOutputs], table: PairsTable, out_root: Path,
                   ) -> tuple[ScoreResult, SetScores, PrivacyReport | None, Leaderboard]:
    """Score the pairs and the method x scope groups, attack them (`privacy`), store the run's
    record and build its leaderboard (this run's methods only)."""
    scoring, options = config.scoring, config.metric_options
    levels = {name: _level(name) for name in names}
    with ResultsStore(config.store_path) as store:
        scored = score_pairs(table, [n for n in names if levels[n] == "pair"], store=store, device=scoring.device,
                             batch_size=scoring.batch_size, workers=scoring.workers, size_policy="error",
                             progress=scoring.progress, command=scoring.command, metric_options=options)
        keys = _pair_keys(table)
        set_scores = score_groups(_groups(benchmark_set.name, table, keys), [n for n in names if levels[n] == "set"],
                                  store=store, device=scoring.device, batch_size=scoring.batch_size,
                                  run_id=scored.run_id, metric_options=options, progress=scoring.progress)
        attacks = _privacy(benchmark_set, table, out_root, scoring.device) if config.privacy else None
        record = _record(benchmark_set, outputs, table, keys, scored, set_scores, attacks)
        store.record_benchmark(scored.run_id, benchmark_set.name, benchmark_set.sha256, record)
        board = build_leaderboard(store, record, n_boot=config.bootstrap.n_boot, seed=config.bootstrap.seed,
                                  sort=config.sort, tradeoff=config.tradeoff)
    board = replace(board, notes=(RUN_BOARD_NOTE.format(dataset=benchmark_set.name), *board.notes))
    return scored, set_scores, attacks, board


def write_results(scored: ScoreResult, board: Leaderboard, attacks: PrivacyReport | None,
                  out_root: Path) -> dict[str, Path]:
    """scores.csv / scores.json, the leaderboard files and, after attacks, the privacy detail."""
    write_outputs(scored, out_root)
    written = write_leaderboard(board, out_root)
    if attacks is not None:  # the full detail (rank-5, EER, ROC) beside the leaderboard's privacy block
        from reports.privacy import roc_plot, write_privacy

        written.update({f"privacy_{kind}": path for kind, path in
                        write_privacy(attacks, out_root, roc_plot(attacks)).items()})
    else:
        from reports.privacy import remove_stale

        remove_stale(out_root)
    return written


def _privacy(benchmark_set: BenchmarkSet, table: PairsTable, out_root: Path, device: str) -> PrivacyReport:
    """Detection and re-identification attacks per method x scope (an attack whose package or
    model file is missing is listed in the report as not run, with its reason)."""
    from bench.scoring import privacy

    identities = privacy.load_identities(benchmark_set.folder, [original.key for original in benchmark_set.originals])
    return privacy.privacy_attacks(privacy.pairs_from_table(table), identities, device=device,
                                   cache_path=out_root / privacy.CACHE_FILE)
