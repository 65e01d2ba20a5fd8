"""Score every pair of an annotation table with a list of pair metrics.

How the work is organised, and why:

- **Metrics are built once per run.** A metric whose construction raises a `MetricError`
  (missing weights, a plugin that does not import) is reported as *unavailable* with its
  one-line reason and fix; the others go on.
- **Nothing is computed twice.** Every image file is hashed once (sha256 of its bytes); a
  pair's score is looked up in the `ResultsStore` under (original hash, anonymized hash,
  metric key) and only missing scores are computed. A finished job re-run computes nothing.
- **Each image is decoded once** and that decode feeds every metric. The unit of work is an
  *original*: `OriginalsDataset` item i decodes original i (through `bench.data.images`, the one
  decode path) together with every anonymization of it that still lacks a score, applying
  the size policy there. A DataLoader runs that in `workers` processes.
- **Batches are groups of equal-size pairs** (at most `batch_size`). All pairs of one
  original go into the same batch whenever they fit, so a feature metric (LPIPS, Inception
  distance, PerceptAnon) encodes each original once and compares it with all of its
  anonymizations. Batch size never changes a value.
- **Every batch is written to the store (one transaction) before the next one**, so a killed
  run loses at most the batch in flight and a re-run resumes.
- **One bad image does not stop a run**: its pairs are recorded as failed with the one-line
  reason; so are pairs a metric rejects (e.g. an image smaller than the SSIM window).

Set metrics (FID, KID: one value per group of pairs) are not per-pair scores; `score_pairs`
leaves them out with a note.

Under torchrun (`bench.scoring.dist`) rank 0 hands the pending work units to every rank, sorted by
their original's content hash and dealt round-robin; each rank scores its shard on its own
device in rounds of `_ROUND_BATCHES` batches, and rank 0 stores each round (every rank's
scores) in one transaction. The values are those of one process: batching never changes one.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from bench.data import images
from bench.data.dataset import PairsTable
from bench.errors import ImageError, InputError, printable
from bench.scoring import dist
from bench.scoring.chunking import ChunkSizer
from bench.scoring.store import PairKey, ResultsStore, ScoreRow, run_provenance
from metrics.atomic import write_atomic
from metrics.csvsafe import to_csv_text
from metrics.base import FeaturePairMetric, PairMetric
from metrics.errors import MetricError
from metrics.hashing import file_sha256
from metrics.registry import build_metric, metric_class
from metrics.schema import VALUE_ENCODING, MetricInfo, WeightsStatus, json_number, to_json_text

# Bound on decoded pairs waiting for a batch of their size, in batches: images of many
# different sizes must not pile up in memory.
_PENDING_BATCHES = 4
_HASH_THREADS = 8
# Failures listed in a summary; the rest are in the error column of the per-pair table.
_LISTED_FAILURES = 10


# ----------------------------------------------------------------------------- results
def not_run_as_asked(outcomes: Iterable[Any], requested: Collection[str]) -> list[str]:
    """"NAME asked for but STATUS" for each metric asked for by name that did not run (an
    outcome: anything with `name` and `status`): why a command exits 1. A default metric that
    did not run (LPIPS offline) is only reported."""
    return [f"{o.name} asked for but {o.status}" for o in outcomes if o.name in requested and o.status != "ok"]


@dataclass
class MetricOutcome:
    """What happened to one requested metric in a run; `info` describes the metric itself."""

    name: str
    #: "ok", "unavailable" (could not be built) or "failed" (raised while scoring).
    status: str
    #: The metric's column description; None when it could not even be built.
    info: MetricInfo | None = None
    #: The one-line reason (with what to do) when unavailable or failed.
    reason: str = ""
    computed: int = 0
    reused: int = 0
    #: Pairs that have no value for this metric after the run.
    failed: int = 0
    card: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """Column title for tables (e.g. "LPIPS", "PerceptAnon HA1 (best.pt)"); "" when not built."""
        return self.info.label if self.info else ""

    @property
    def higher_is_more_anonymous(self) -> bool | None:
        return self.info.higher_is_more_anonymous if self.info else None

    @property
    def key(self) -> str | None:
        return self.info.key if self.info else None

    @property
    def weights_status(self) -> WeightsStatus:
        return self.info.weights_status if self.info else WeightsStatus.NONE

    @property
    def marked(self) -> bool:
        """True when its values come from unverified or stand-in weights."""
        return self.weights_status.marked

    @property
    def column(self) -> str:
        """Its column name in per-pair tables; carries the weights mark where needed."""
        return f"{self.name} [{self.weights_status.note}]" if self.marked else self.name


@dataclass(frozen=True)
class PairFailure:
    """A pair (CSV row) left without a value: by every metric, or by one (`metric`)."""

    row: int
    original: str
    anonymized: str
    reason: str
    metric: str | None = None


@dataclass
class ScoreResult:
    """Scores of one run (reused and computed alike) and what went wrong."""

    #: Long table: row, original, anonymized, metric, metric_key, value.
    scores: pd.DataFrame
    #: The scored table's pairs: row, original, anonymized and the descriptive columns.
    pairs: pd.DataFrame
    metrics: list[MetricOutcome]
    failures: list[PairFailure]
    #: Lines about requested metrics that per-pair scoring leaves out (set metrics).
    notes: list[str]
    run_id: int
    store_path: Path
    provenance: dict[str, Any]

    @property
    def unverified(self) -> list[str]:
        """Metrics whose values come from unverified or stand-in weights."""
        return [m.name for m in self.metrics if m.marked and m.status == "ok"]

    @property
    def complete(self) -> bool:
        return not self.failures and all(m.status == "ok" for m in self.metrics)

    def wide(self) -> pd.DataFrame:
        """One row per pair, one column per metric (marked where weights are unverified),
        plus ``error``: why a pair lacks values (empty when it has them all)."""
        wide = self.pairs.copy()
        for metric in self.metrics:
            values = self.scores.loc[self.scores["metric"] == metric.name, ["row", "value"]]
            wide[metric.column] = wide["row"].map(dict(zip(values["row"], values["value"]))).astype(float)
        errors: dict[int, list[str]] = {}
        for failure in self.failures:
            prefix = f"{failure.metric}: " if failure.metric else ""
            errors.setdefault(failure.row, []).append(prefix + failure.reason)
        wide["error"] = wide["row"].map(lambda row: " | ".join(errors.get(row, [])))
        return wide

    def summary_lines(self) -> list[str]:
        lines = [f"pairs: {len(self.pairs)}  (run {self.run_id}, device {self.provenance.get('device')})"]
        for metric in self.metrics:
            if metric.status == "ok":
                detail = f"computed {metric.computed}, reused from the store {metric.reused}"
                if metric.failed:
                    detail += f", failed {metric.failed}"
            else:
                detail = f"{metric.status}: {metric.reason}"
            lines.append(f"  {metric.column}: {detail}")
        lines.extend(f"  note: {note}" for note in self.notes)
        if self.failures:
            lines.append(f"failed pairs: {len(self.failures)}")
            lines.extend(
                f"  line {f.row}{f' ({f.metric})' if f.metric else ''}: {f.reason}"
                for f in self.failures[:_LISTED_FAILURES]
            )
            if len(self.failures) > _LISTED_FAILURES:
                lines.append(
                    f"  ... and {len(self.failures) - _LISTED_FAILURES} more: see the error column of scores.csv"
                )
        if self.unverified:
            lines.append(
                "results from unverified or stand-in weights are marked so in every table: "
                + ", ".join(m.column for m in self.metrics if m.marked and m.status == "ok")
            )
        return [printable(line) for line in lines]  # a newline or escape in a path stays on its line

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "store": str(self.store_path),
            "provenance": self.provenance,
            "value_encoding": VALUE_ENCODING,
            "metrics": {
                m.name: {
                    "column": m.column,
                    "key": m.key,
                    "status": m.status,
                    "reason": m.reason,
                    "weights_status": m.weights_status,
                    "computed": m.computed,
                    "reused": m.reused,
                    "failed": m.failed,
                    "card": m.card,
                }
                for m in self.metrics
            },
            "notes": self.notes,
            "pairs": [
                {column: json_number(value) for column, value in record.items()}
                for record in self.wide().to_dict(orient="records")
            ],
        }


def write_outputs(result: ScoreResult, out_dir: Path) -> tuple[Path, Path]:
    """Write ``scores.csv`` and ``scores.json`` into `out_dir`, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "scores.csv", out_dir / "scores.json"
    write_atomic(csv_path, to_csv_text(result.wide()))
    write_atomic(json_path, to_json_text(result.to_json(), indent=2))
    return csv_path, json_path


# ----------------------------------------------------------------------------- decoding
@dataclass
class WorkUnit:
    """One original and the anonymizations of it that still need a score."""

    original_path: Path
    #: (pair key, anonymized path, where) for each anonymization, e.g. where="HA1.csv line 7".
    pairs: list[tuple[PairKey, Path, str]]
    #: Pair key -> its PII mask file, for the pairs that have one (benchmark runs).
    masks: dict[PairKey, Path] = field(default_factory=dict)


@dataclass
class DecodedPair:
    key: PairKey
    anonymized: np.ndarray
    resized: bool
    #: H x W bool, True on PII, for pairs with a mask file.
    pii_mask: np.ndarray | None = None


@dataclass
class DecodedUnit:
    """An original decoded once, its decoded anonymizations, and the pairs that failed."""

    index: int
    original: np.ndarray | None
    pairs: list[DecodedPair]
    errors: list[tuple[PairKey, str]]


class OriginalsDataset(Dataset):
    """Item i: original i and all its pending anonymizations, decoded, size policy applied."""

    def __init__(self, units: Sequence[WorkUnit], size_policy: str) -> None:
        self.units = list(units)
        self.size_policy = images.check_size_policy(size_policy)

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, index: int) -> DecodedUnit:
        unit = self.units[index]
        try:
            original = images.load_rgb(unit.original_path)
        except ImageError as exc:
            return DecodedUnit(index, None, [], [(key, str(exc)) for key, _, _ in unit.pairs])
        decoded, errors = [], []
        for key, anonymized_path, where in unit.pairs:
            try:
                anonymized = images.load_rgb(anonymized_path)
                reconciled = images.reconcile_sizes(original, anonymized, self.size_policy, where=where)
                pii_mask = _load_mask(unit.masks[key], original.shape[:2]) if key in unit.masks else None
            except ImageError as exc:
                errors.append((key, str(exc)))
                continue
            decoded.append(DecodedPair(key, reconciled, resized=reconciled is not anonymized, pii_mask=pii_mask))
        return DecodedUnit(index, original, decoded, errors)


def _load_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A PII mask file as H x W bool (white = PII), checked against its original's size."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            mask = np.asarray(opened.convert("L")) > 127
    except OSError as exc:
        raise ImageError(f"cannot decode PII mask {path}: {' '.join(str(exc).split())}") from None
    if mask.shape != tuple(shape):
        raise ImageError(f"PII mask {path} is {mask.shape[1]}x{mask.shape[0]}, its original {shape[1]}x{shape[0]}")
    return mask


def _as_is(item: DecodedUnit) -> DecodedUnit:
    """DataLoader collate: items differ in size and shape, so they are passed on untouched."""
    return item


# ----------------------------------------------------------------------------- batching
@dataclass
class _BatchPair:
    unit: int
    original: np.ndarray
    pair: DecodedPair


class _Batcher:
    """Groups decoded pairs into batches of at most `batch_size` pairs of one image size.

    An original's pairs are never split across batches unless they are more than
    `batch_size`; waiting pairs are bounded, by flushing the fullest size when too many wait.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.max_pending = _PENDING_BATCHES * batch_size
        self.buckets: dict[tuple[int, ...], list[_BatchPair]] = {}
        self.pending = 0

    def add(self, unit: DecodedUnit) -> Iterator[list[_BatchPair]]:
        if unit.original is None or not unit.pairs:
            return
        size = unit.original.shape
        members = [_BatchPair(unit.index, unit.original, pair) for pair in unit.pairs]
        for start in range(0, len(members), self.batch_size):
            chunk = members[start:start + self.batch_size]
            if len(self.buckets.get(size, ())) + len(chunk) > self.batch_size:
                yield self._take(size)
            self.buckets.setdefault(size, []).extend(chunk)
            self.pending += len(chunk)
            if len(self.buckets[size]) == self.batch_size:
                yield self._take(size)
        while self.pending > self.max_pending:
            yield self._take(max(self.buckets, key=lambda s: len(self.buckets[s])))

    def drain(self) -> Iterator[list[_BatchPair]]:
        while self.buckets:
            yield self._take(next(iter(self.buckets)))

    def _take(self, size: tuple[int, ...]) -> list[_BatchPair]:
        batch = self.buckets.pop(size)
        self.pending -= len(batch)
        return batch


class _Batch:
    """A batch on the device: unique originals once, anonymized images, and which is whose."""

    def __init__(self, members: list[_BatchPair], device: torch.device) -> None:
        self.keys = [m.pair.key for m in members]
        self.resized = [m.pair.resized for m in members]
        first_seen: dict[int, int] = {}
        originals = []
        for member in members:
            if member.unit not in first_seen:
                first_seen[member.unit] = len(originals)
                originals.append(member.original)
        self.originals = to_device(originals, device)
        self.original_index = torch.tensor([first_seen[m.unit] for m in members], dtype=torch.long)
        self.anonymized = to_device([m.pair.anonymized for m in members], device)
        self.masks = [m.pair.pii_mask for m in members]
        self.device = device
        self._paired: tuple[torch.Tensor, torch.Tensor] | None = None

    def paired_originals(self, rows: torch.Tensor) -> torch.Tensor:
        """Each pair's original at `rows`, gathered once for the pixel metrics that all ask for
        the same rows (MSE, PSNR and SSIM each gathered them: 0.5% of a run)."""
        if self._paired is None or not torch.equal(self._paired[0], rows):
            self._paired = rows, _rows(self.originals, self.original_index[rows])
        return self._paired[1]

    def pii_masks(self, rows: torch.Tensor) -> torch.Tensor:
        """N x 1 x H x W bool masks of the pairs at `rows` (all have one: see `_run_metric`)."""
        stacked = np.stack([self.masks[int(i)] for i in rows])
        return torch.from_numpy(stacked)[:, None].to(self.device)


def to_device(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """HWC uint8 arrays -> float32 NCHW [0, 1] on `device`, the numbers of `images.to_float`
    (x / 255 in float32, correctly rounded by numpy and torch alike).

    The bytes travel as uint8, a quarter of the float32 batch, and are converted where they
    land: on a CPU, torch's cast into NCHW and one in-place division instead of numpy's
    cast, division and NCHW copy (32 images of 256x256: 4-10 ms instead of 8-18 on a 2-core Xeon)."""
    batch = host_batch(arrays, device).to(device, non_blocking=True).permute(0, 3, 1, 2)
    return batch.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def host_batch(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """The NHWC uint8 batch in host memory, page-locked when it goes to a GPU: from there the
    copy runs asynchronously, behind the GPU's queued work, in one transfer per batch."""
    batch = torch.from_numpy(np.stack(arrays))
    if batch.dtype != torch.uint8:
        raise TypeError(f"to_device expects uint8 images from images.load_rgb, got {batch.dtype}")
    return batch.pin_memory() if device.type == "cuda" else batch


def _rows(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor[index]``; the tensor itself (no copy) when `index` is every row in order."""
    if len(index) == len(tensor) and torch.equal(index, torch.arange(len(tensor))):
        return tensor
    return tensor[index.to(tensor.device)]


def _features(metric: FeaturePairMetric, images: torch.Tensor, sizer: ChunkSizer) -> Any:
    """`metric.features(images)`, a forward pass of `sizer`'s size at a time, joined afterwards."""
    return concat_features(sizer.encode(images, metric.features))


def concat_features(parts: list[Any]) -> Any:
    """Feature batches (tensors, or lists/tuples of tensors, as `select` takes) joined in order;
    one batch is returned as it is."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], (list, tuple)):
        return type(parts[0])(concat_features(list(layer)) for layer in zip(*parts))
    return torch.cat(parts)


def _score_metric(metric: PairMetric, batch: _Batch, rows: torch.Tensor, sizer: ChunkSizer) -> np.ndarray:
    """Values of `metric` for the batch pairs at positions `rows`."""
    anonymized = _rows(batch.anonymized, rows)
    if metric.needs_pii_mask:
        original = batch.paired_originals(rows) if metric.needs_original else None
        return metric.score(original, anonymized, pii_mask=batch.pii_masks(rows))
    if isinstance(metric, FeaturePairMetric):
        if not metric.needs_original:
            return np.concatenate(sizer.encode(anonymized, metric.features, lambda found, _: metric.compare(None, found)))
        # Encode each original of these pairs once, then compare it with all its anonymizations.
        used, position = torch.unique(batch.original_index[rows], return_inverse=True)
        original_features = _features(metric, _rows(batch.originals, used), sizer)
        # Anonymized images are compared chunk by chunk as they are encoded: joining their
        # features first (LPIPS: five activation maps per image) cost 1% of the run in copies.
        return np.concatenate(sizer.encode(anonymized, metric.features, lambda found, span: metric.compare(
            metric.select(original_features, position[span]), found)))
    if not metric.needs_original:
        return metric.score(None, anonymized)
    return metric.score(batch.paired_originals(rows), anonymized)


class _MetricCrashed(Exception):
    """A metric raised something that is not a user-facing MetricError: a bug in it."""


@dataclass
class _ActiveMetric:
    outcome: MetricOutcome
    metric: PairMetric
    #: Pair keys without a stored value when the run started.
    missing: set[PairKey]
    #: Every value of this run, reused or computed.
    values: dict[PairKey, float] = field(default_factory=dict)
    #: Pair key -> reason, for pairs this metric rejected.
    rejected: dict[PairKey, str] = field(default_factory=dict)
    #: Its forward-pass size on a CPU, measured on this run's images.
    sizer: ChunkSizer = field(default_factory=ChunkSizer)


def _run_metric(active: _ActiveMetric, batch: _Batch) -> list[tuple[int, float]]:
    """(batch position, value) for the batch pairs this metric still lacks.

    A `MetricError` on the batch is retried pair by pair, so only the pairs the metric
    rejects fail; anything else is a crash of the metric.
    """
    positions = [i for i, key in enumerate(batch.keys)
                 if key in active.missing and (not active.metric.needs_pii_mask or batch.masks[i] is not None)]
    if not positions:
        return []
    try:
        values = _checked(active, batch, positions)
    except MetricError:
        values = []
        for position in positions:
            try:
                values.extend(_checked(active, batch, [position]))
            except MetricError as exc:
                active.rejected[batch.keys[position]] = str(exc)
                values.append(None)
    return [(p, v) for p, v in zip(positions, values) if v is not None]


def _checked(active: _ActiveMetric, batch: _Batch, positions: list[int]) -> list[float]:
    metric = active.metric
    try:
        values = _score_metric(metric, batch, torch.tensor(positions, dtype=torch.long), active.sizer)
    except MetricError:
        raise
    except Exception as exc:  # noqa: BLE001 - a third-party metric's bug must not end the run
        raise _MetricCrashed(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    if len(values) != len(positions):
        raise _MetricCrashed(f"returned {len(values)} values for {len(positions)} pairs")
    return [float(v) for v in values]


# ----------------------------------------------------------------------------- building
def _build_metrics(
    names: Sequence[str], device: torch.device, options: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[list[MetricOutcome], list[tuple[MetricOutcome, PairMetric]], list[str]]:
    """Build each pair metric once, with its options (e.g. a PerceptAnon checkpoint).

    Returns an outcome per pair metric (unavailable ones with their reason), the built
    metrics with their outcomes, and notes on the metrics that are not pair metrics.
    """
    outcomes: list[MetricOutcome] = []
    built: list[tuple[MetricOutcome, PairMetric]] = []
    notes: list[str] = []
    for name in names:
        try:
            cls = metric_class(name)
            if cls.level != "pair":
                notes.append(f"{name}: a {cls.level} metric (one value per group of pairs), not scored per pair")
                continue
            if cls.needs_pii_mask and "pii_masks_sha256" not in dict((options or {}).get(name, {})):
                outcomes.append(MetricOutcome(name=name, status="unavailable", reason=(
                    f"{name} needs each pair's PII mask, which this table has not; it is computed by "
                    "benchmark runs (bench run --method), whose sets have PII regions")))
                continue
            metric = build_metric(name, device=str(device), **dict((options or {}).get(name, {})))
        except MetricError as exc:
            outcomes.append(MetricOutcome(name=name, status="unavailable", reason=str(exc)))
            continue
        outcome = MetricOutcome(
            name=name,
            status="ok",
            info=MetricInfo.from_metric(metric),
            card=metric.card().to_dict(),
        )
        outcomes.append(outcome)
        built.append((outcome, metric))
    return outcomes, built, notes


# ----------------------------------------------------------------------------- hashing
def _hash_files(paths: Sequence[Path]) -> tuple[dict[Path, str], dict[Path, str]]:
    """sha256 of each unique path (once per run), and a one-line reason for unreadable ones."""
    unique = list(dict.fromkeys(paths))

    def attempt(path: Path) -> tuple[Path, str | None, str | None]:
        kind = images.not_a_regular_file(path)
        if kind is not None:  # hashing a FIFO blocks forever, /dev/zero never ends
            return path, None, f"cannot read image {path}: it is {kind}, not an image file; fix the path or remove its row"
        try:
            return path, file_sha256(path), None
        except OSError as exc:
            reason = exc.strerror or " ".join(str(exc).split())
            return path, None, f"cannot read image {path}: {reason}; fix the path or remove its row"

    hashes, errors = {}, {}
    with ThreadPoolExecutor(max_workers=min(_HASH_THREADS, max(1, len(unique)))) as pool:
        for path, digest, error in pool.map(attempt, unique):
            if digest is None:
                errors[path] = error
            else:
                hashes[path] = digest
    return hashes, errors


# ----------------------------------------------------------------------------- the run
def _progress_enabled(requested: bool) -> bool:
    return requested and sys.stderr.isatty() and not os.environ.get("CI")


def score_pairs(
    table: PairsTable,
    metric_names: Sequence[str],
    *,
    store: ResultsStore,
    device: str = "auto",
    batch_size: int = 32,
    workers: int = 0,
    size_policy: str = "error",
    progress: bool = True,
    command: str = "score_pairs",
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> ScoreResult:
    """Score every pair of `table` with `metric_names` (registry names or "module:Class").

    `metric_options` maps a metric name to its constructor options, e.g.
    {"perceptanon_ha1": {"checkpoint": "ha1.pt"}}. Values already in `store` are reused; the
    rest are computed and written batch by batch.
    """
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        raise InputError(f"--workers must be 0 or more, got {workers}")
    images.check_size_policy(size_policy)
    resolved = dist.rank_device(device)

    frame = table.frame
    keys, failures = _pair_keys(table)
    known_keys = list(dict.fromkeys(k for k in keys if k is not None))
    masks = _pair_masks(table, keys)
    metric_options = _with_mask_digest(metric_names, metric_options, masks)
    outcomes, built, notes = _build_metrics(metric_names, resolved, metric_options)

    active: list[_ActiveMetric] = []
    for outcome, metric in built:
        store.register_metric(metric)
        eligible = [key for key in known_keys if key in masks] if metric.needs_pii_mask else known_keys
        stored = store.lookup(outcome.key, eligible, allow_resized=size_policy == "resize")
        outcome.reused = len(stored)
        active.append(_ActiveMetric(outcome, metric, set(eligible) - stored.keys(), dict(stored)))

    provenance = run_provenance(
        device=_describe_device(resolved),
        dataset_hash=table.dataset_hash,
        annotations=str(table.source),
        root=str(table.root),
        metrics={o.name: o.key for o in outcomes},
        batch_size=batch_size,
        workers=workers,
        size_policy=size_policy,
        decode=images.decode_settings(),
        distributed=dist.current().describe(),
    )
    run_id = store.start_run(command, provenance)
    try:
        decode_errors = _compute_missing(
            table, keys, active, store=store, run_id=run_id, device=resolved,
            batch_size=batch_size, workers=workers, size_policy=size_policy, progress=progress,
            job_device=device, metric_options=metric_options,
        )
    except BaseException as exc:
        store.finish_run(run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise

    failures.extend(_scoring_failures(frame, keys, decode_errors, active))
    failures.sort(key=lambda f: (f.row, f.metric or ""))
    for item in active:
        item.outcome.failed = sum(1 for key in keys if key not in item.values
                                  and (not item.metric.needs_pii_mask or key in masks))
    result = ScoreResult(
        scores=_long_table(frame, keys, active),
        pairs=_pair_columns(table),
        metrics=outcomes,
        failures=failures,
        notes=notes,
        run_id=run_id,
        store_path=store.path,
        provenance=provenance,
    )
    store.finish_run(run_id, "finished", _run_summary(result))
    return result


def _pair_keys(table: PairsTable) -> tuple[list[PairKey | None], list[PairFailure]]:
    """The content key of each pair row (None where a file cannot be read), and those failures."""
    original_paths, anonymized_paths = table.paths("original"), table.paths("anonymized")
    hashes, unreadable = _hash_files(original_paths + anonymized_paths)
    keys: list[PairKey | None] = []
    failures: list[PairFailure] = []
    for i, (original, anonymized) in enumerate(zip(original_paths, anonymized_paths)):
        reason = unreadable.get(original) or unreadable.get(anonymized)
        if reason:
            failures.append(_failure(table.frame, i, reason))
            keys.append(None)
        else:
            keys.append((hashes[original], hashes[anonymized]))
    return keys, failures


def _pair_masks(table: PairsTable, keys: Sequence[PairKey | None]) -> dict[PairKey, Path]:
    """Pair key -> PII mask file, for the pairs of the table that have one."""
    paths = table.mask_paths()
    if paths is None:
        return {}
    return {key: path for key, path in zip(keys, paths) if key is not None and path is not None}


def _with_mask_digest(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None,
                      masks: Mapping[PairKey, Path]) -> dict[str, dict[str, Any]]:
    """`options`, with the digest of the (original, mask) pairs given to each metric that
    needs PII masks: the masks shape its values, so they are in its cache key. Nothing is
    added without masks (such a metric is then unavailable, see `_build_metrics`)."""
    merged = {name: dict(values) for name, values in (options or {}).items()}
    if not masks:
        return merged
    digest = hashlib.sha256("\n".join(sorted(f"{key[0]} {file_sha256(path)}" for key, path in masks.items()))
                            .encode()).hexdigest()
    for name in names:
        try:
            needs = metric_class(name).needs_pii_mask
        except MetricError:
            continue  # reported by _build_metrics
        if needs:
            merged.setdefault(name, {})["pii_masks_sha256"] = digest
    return merged


def _scoring_failures(
    frame: pd.DataFrame,
    keys: Sequence[PairKey | None],
    decode_errors: dict[PairKey, str],
    active: list[_ActiveMetric],
) -> list[PairFailure]:
    """Pair rows that failed to decode (for every metric) or that one metric rejected."""
    failures = []
    for i, key in enumerate(keys):
        if key in decode_errors:
            failures.append(_failure(frame, i, decode_errors[key]))
        failures.extend(
            _failure(frame, i, item.rejected[key], metric=item.outcome.name) for item in active if key in item.rejected
        )
    return failures


def _compute_missing(
    table: PairsTable,
    keys: Sequence[PairKey | None],
    active: list[_ActiveMetric],
    *,
    store: ResultsStore,
    run_id: int,
    device: torch.device,
    batch_size: int,
    workers: int,
    size_policy: str,
    progress: bool,
    job_device: str | torch.device,
    metric_options: Mapping[str, Mapping[str, Any]] | None,
) -> dict[PairKey, str]:
    """Decode and score every pair some metric lacks; returns pair key -> decode error.

    Under torchrun the work is shared by every rank (`_compute_sharded`); `job_device` is the
    --device each of them resolves for itself.
    """
    units = _work_units(table, keys, set().union(*(item.missing for item in active)), _pair_masks(table, keys))
    decode_errors: dict[PairKey, str] = {}
    if not units:
        return decode_errors
    if dist.current().distributed:
        job = _ScoringJob(
            metrics=[(item.outcome.name, item.outcome.key) for item in active],
            options={name: dict(values) for name, values in (metric_options or {}).items()},
            missing={item.outcome.key: item.missing for item in active},
            units=sorted(units, key=lambda unit: unit.pairs[0][0][0]),
            device=job_device, batch_size=batch_size, workers=workers, size_policy=size_policy,
        )
        return _compute_sharded(job, active, store=store, run_id=run_id, device=device, progress=progress)
    loader = DataLoader(
        OriginalsDataset(units, size_policy),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_is,
        persistent_workers=False,
    )
    batcher = _Batcher(batch_size)
    total = sum(len(unit.pairs) for unit in units)
    with tqdm(total=total, unit="pair", desc="scoring", file=sys.stderr,
              disable=not _progress_enabled(progress), dynamic_ncols=True) as bar:
        for decoded in loader:
            decode_errors.update(decoded.errors)
            bar.update(len(decoded.errors))
            for members in batcher.add(decoded):
                _score_and_store(members, active, store=store, run_id=run_id, device=device)
                bar.update(len(members))
        for members in batcher.drain():
            _score_and_store(members, active, store=store, run_id=run_id, device=device)
            bar.update(len(members))
    return decode_errors


def _work_units(table: PairsTable, keys: Sequence[PairKey | None], pending: set[PairKey],
                masks: Mapping[PairKey, Path] | None = None) -> list[WorkUnit]:
    """One unit per original content with at least one pending pair; each pair once, with its
    PII mask where it has one."""
    units: dict[str, WorkUnit] = {}
    seen: set[PairKey] = set()
    original_paths, anonymized_paths = table.paths("original"), table.paths("anonymized")
    for i, key in enumerate(keys):
        if key is None or key not in pending or key in seen:
            continue
        seen.add(key)
        unit = units.setdefault(key[0], WorkUnit(original_paths[i], []))
        unit.pairs.append((key, anonymized_paths[i], table.where(i)))
        if masks and key in masks:
            unit.masks[key] = masks[key]
    return list(units.values())


def _score_and_store(
    members: list[_BatchPair],
    active: list[_ActiveMetric],
    *,
    store: ResultsStore,
    run_id: int,
    device: torch.device,
) -> None:
    """Score one batch with every metric that lacks values for it, then store it (one transaction)."""
    store.write_batch(_score_batch(members, active, device), run_id=run_id)


def _score_batch(members: list[_BatchPair], active: list[_ActiveMetric],
                 device: torch.device) -> dict[str, list[ScoreRow]]:
    """Score one batch with every metric that lacks values for it: metric key -> new rows."""
    batch = _Batch(members, device)
    rows_by_metric: dict[str, list[tuple[str, str, float, bool]]] = {}
    for item in active:
        if item.outcome.status != "ok":
            continue
        try:
            scored = _run_metric(item, batch)
        except _MetricCrashed as exc:
            item.outcome.status = "failed"
            item.outcome.reason = f"{exc} (a bug in the metric; report it to its authors)"
            continue
        rows = []
        for position, value in scored:
            key = batch.keys[position]
            item.values[key] = value
            rows.append((key[0], key[1], value, batch.resized[position]))
        item.outcome.computed += len(rows)
        rows_by_metric[item.outcome.key] = rows
    return rows_by_metric


def _failure(frame: pd.DataFrame, i: int, reason: str, metric: str | None = None) -> PairFailure:
    return PairFailure(
        row=int(frame["row"].iat[i]),
        original=str(frame["original"].iat[i]),
        anonymized=str(frame["anonymized"].iat[i]),
        reason=reason,
        metric=metric,
    )


_PAIR_COLUMNS = ("row", "original", "anonymized", "dataset", "scope", "method", "score_mean")


def _pair_columns(table: PairsTable) -> pd.DataFrame:
    # Columns the table lacks stay out of scores.csv: a folder pairing's dataset/scope/method,
    # the score_mean of pairs that have no human scores.
    absent = set(table.absent_columns) | (set() if table.has_scores else {"score_mean"})
    frame = table.frame
    return frame[[c for c in _PAIR_COLUMNS if c in frame.columns and c not in absent]].reset_index(drop=True)


def _long_table(frame: pd.DataFrame, keys: Sequence[PairKey | None], active: list[_ActiveMetric]) -> pd.DataFrame:
    # Columns read once as lists: a pandas lookup per value cost 0.08 s per 1,000 values.
    rows, originals, anonymized = (frame[column].tolist() for column in ("row", "original", "anonymized"))
    records = [
        (int(rows[i]), originals[i], anonymized[i], item.outcome.name, item.outcome.key, item.values[key])
        for item in active
        for i, key in enumerate(keys)
        if key in item.values
    ]
    columns = ["row", "original", "anonymized", "metric", "metric_key", "value"]
    return pd.DataFrame.from_records(records, columns=columns).astype({"value": "float64"})


def _run_summary(result: ScoreResult) -> dict[str, Any]:
    return {
        "pairs": len(result.pairs),
        "failed_pairs": len(result.failures),
        "metrics": {
            m.name: {"status": m.status, "computed": m.computed, "reused": m.reused, "failed": m.failed}
            for m in result.metrics
        },
        "notes": result.notes,
    }


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


# ----------------------------------------------------------------------------- under torchrun
#: Batches per rank in one round; rank 0 stores a round (every rank's scores) in one transaction.
_ROUND_BATCHES = 4


@dataclass
class _ScoringJob:
    """What rank 0 hands every rank: the pending work and how to score it."""

    #: (name, key) of each metric to compute.
    metrics: list[tuple[str, str]]
    options: dict[str, dict[str, Any]]
    #: Metric key -> pair keys without a stored value.
    missing: dict[str, set[PairKey]]
    #: Sorted by their original's content hash; rank r scores units r, r + W, r + 2W, ...
    units: list[WorkUnit]
    device: str | torch.device
    batch_size: int
    workers: int
    size_policy: str


def _compute_sharded(job: _ScoringJob, active: list[_ActiveMetric], *, store: ResultsStore, run_id: int,
                     device: torch.device, progress: bool) -> dict[PairKey, str]:
    """Rank 0's side of a scoring job: its own shard, plus storing every rank's rounds."""
    total = sum(len(unit.pairs) for unit in job.units)
    by_key = {item.outcome.key: item for item in active}
    with dist.job("score_pairs", job), tqdm(total=total, unit="pair", desc="scoring", file=sys.stderr,
                                             disable=not _progress_enabled(progress), dynamic_ncols=True) as bar:
        def store_round(reports: list[tuple[dict[str, list[ScoreRow]], int]]) -> None:
            rows_by_metric: dict[str, list[ScoreRow]] = {}
            for rank, (rows, done) in enumerate(reports):
                for key, metric_rows in rows.items():
                    rows_by_metric.setdefault(key, []).extend(metric_rows)
                    if rank:  # rank 0's own values are already recorded by `_score_batch`
                        _record_values(by_key[key], metric_rows)
                bar.update(done)
            store.write_batch(rows_by_metric, run_id=run_id)

        decode_errors, summaries = _run_scoring_job(job, active, device, {}, on_round=store_round)
    for rank, (errors, outcomes) in enumerate(summaries[1:], start=1):
        decode_errors.update(errors)
        for key, (status, reason, rejected) in outcomes.items():
            item = by_key[key]
            item.rejected.update(rejected)
            if status != "ok" and item.outcome.status == "ok":
                item.outcome.status, item.outcome.reason = status, f"on rank {rank}: {reason}"
    return decode_errors


def _record_values(item: _ActiveMetric, rows: list[ScoreRow]) -> None:
    item.values.update(((original, anonymized), value) for original, anonymized, value, _ in rows)
    item.outcome.computed += len(rows)


def follow_scoring(job: _ScoringJob) -> None:
    """A rank other than 0: build the job's metrics here, score this rank's shard, report back."""
    device = dist.rank_device(job.device)
    expected = dict(job.metrics)
    outcomes, built, _ = _build_metrics(list(expected), device, job.options)
    failures = {expected[outcome.name]: outcome.reason for outcome in outcomes if outcome.status != "ok"}
    active = []
    for outcome, metric in built:
        key = expected[outcome.name]
        if outcome.key == key:
            active.append(_ActiveMetric(outcome, metric, job.missing[key]))
        else:
            failures[key] = (f"{outcome.name} has other weights or options here (key {outcome.key}, rank 0: {key}); "
                             "give every node the same weight files")
    _run_scoring_job(job, active, device, failures)


def _run_scoring_job(
    job: _ScoringJob,
    active: list[_ActiveMetric],
    device: torch.device,
    failures: dict[str, str],
    on_round: Callable[[list[tuple[dict[str, list[ScoreRow]], int]]], None] | None = None,
) -> tuple[dict[PairKey, str], list[Any] | None]:
    """Every rank's side of a scoring job; every rank makes the same collective calls.

    Metrics that failed to build on any rank are left out everywhere. The number of rounds is
    the largest over the ranks; a rank whose shard is done sends empty rounds. Each round's
    rows and pair count go to rank 0 (`on_round`); at the end, each rank's decode errors,
    rejected pairs and metric statuses. Returns this rank's decode errors and, on rank 0,
    every rank's final report.
    """
    ctx = dist.current()
    for key, reason in dist.agree_on_failures(failures).items():
        for item in active:
            if item.outcome.key == key:
                item.outcome.status, item.outcome.reason = "failed", reason
    units = dist.shard(job.units)
    rounds = _rounds(units, job.batch_size * _ROUND_BATCHES)
    loader = iter(DataLoader(OriginalsDataset(units, job.size_policy), batch_size=None, shuffle=False,
                             num_workers=job.workers, collate_fn=_as_is))
    batcher = _Batcher(job.batch_size)
    decode_errors: dict[PairKey, str] = {}
    for index in range(ctx.max(len(rounds))):
        rows: dict[str, list[ScoreRow]] = {}
        errors_before, scored = len(decode_errors), 0
        for members in _round_batches(loader, rounds[index] if index < len(rounds) else 0, batcher, decode_errors):
            for key, metric_rows in _score_batch(members, active, device).items():
                rows.setdefault(key, []).extend(metric_rows)
            scored += len(members)
        reports = ctx.gather((rows, scored + len(decode_errors) - errors_before))
        if on_round is not None:
            on_round(reports)
    outcomes = {item.outcome.key: (item.outcome.status, item.outcome.reason, item.rejected) for item in active}
    return decode_errors, ctx.gather((decode_errors, outcomes))


def _rounds(units: Sequence[WorkUnit], pairs_per_round: int) -> list[int]:
    """How many consecutive units each round takes: at least `pairs_per_round` pairs, but whole units."""
    counts, taken, pairs = [], 0, 0
    for unit in units:
        taken, pairs = taken + 1, pairs + len(unit.pairs)
        if pairs >= pairs_per_round:
            counts.append(taken)
            taken = pairs = 0
    return counts + [taken] if taken else counts


def _round_batches(loader: Iterator[DecodedUnit], count: int, batcher: _Batcher,
                   decode_errors: dict[PairKey, str]) -> Iterator[list[_BatchPair]]:
    """The batches of the next `count` decoded units, the last ones flushed at the round's end."""
    for _ in range(count):
        decoded = next(loader)
        decode_errors.update(decoded.errors)
        yield from batcher.add(decoded)
    yield from batcher.drain()
