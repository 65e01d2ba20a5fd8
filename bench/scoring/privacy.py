"""Privacy attacks per method x scope: can a machine still find and re-identify the person?

For every (method, scope) group of a benchmark's pairs:

- detection rate (MTCNN, and the LBP cascade as a second detector family): the detector finds
  the original's face (IoU >= 0.5) on the anonymized image, over
  the pairs whose original has a detectable face, with a 95% Wilson interval; originals
  without a detectable face are counted on their own, never hidden;
- the naive attacker: dlib embeddings of the anonymized images identified against a gallery
  of every original of that scope (rank-1, rank-5, chance level), and verified against every
  gallery photo (TAR at FAR 1e-2 / 1e-3, EER, ROC);
- the adaptive attacker (`metrics.attacks.adaptive_attack`), or the one-line reason it cannot
  run (one photo per identity).

Identities: `load_identities` reads the set's optional ``identities.json`` (pii.json key ->
identity); without it an original at ``originals/<dataset>/<person>/<file>`` (LFW's layout)
belongs to <person>, and any other original is its own identity.

Each image is decoded and embedded once per call (`_Cache`), whatever the number of groups it
is in. A detector or embedding whose model file is missing or corrupt turns into one line in
`PrivacyReport.unavailable`; the other attack still runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data import images
from bench.data.dataset import PairsTable
from bench.errors import InputError
from bench.scoring.runner import to_device
from metrics.attacks import (
    DetectionExample, PrivacyReport, PrivacyRow, Rate, adaptive_attack, identify, verification_scores, verify,
)

#: Originals shown with their detections in the HTML view (as many as the leaderboard shows).
EXAMPLES = 4
from metrics.atomic import write_atomic
from metrics.errors import MetricError
from metrics.hashing import file_sha256

IDENTITIES_FILE = "identities.json"
#: Detections and embeddings of a run's images, beside its outputs.
CACHE_FILE = "privacy_features.npz"


@dataclass(frozen=True)
class AttackPair:
    method: str
    scope: str
    #: The original's pii.json key: the same for its global and local pairs.
    image: str
    original: Path
    anonymized: Path


# ----------------------------------------------------------------------------- identities
def load_identities(folder: Path, keys: Sequence[str]) -> dict[str, str]:
    """pii.json key -> identity, from ``<folder>/identities.json`` or the folder layout."""
    path = Path(folder) / IDENTITIES_FILE
    if not path.is_file():
        return {key: _layout_identity(key) for key in keys}
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc}); write an object mapping each original's "
                         f"pii.json key to an identity name") from exc
    if not isinstance(mapping, dict) or not all(isinstance(v, str) and v for v in mapping.values()):
        raise InputError(f"{path}: must be a JSON object mapping pii.json keys to non-empty identity names")
    unknown = sorted(set(mapping) - set(keys))
    if unknown:
        raise InputError(f"{path}: {len(unknown)} key(s) are not originals of the set (e.g. {unknown[0]!r}); "
                         "use the keys of pii.json")
    return {key: mapping.get(key) or key for key in keys}


def _layout_identity(key: str) -> str:
    parts = Path(key).parts  # originals/<dataset>/<person>/<file>
    return parts[2] if len(parts) >= 4 and parts[0] == "originals" else key


# ----------------------------------------------------------------------------- computing
class _Cache:
    """Per image: MTCNN and LBP detections and the dlib embedding, each computed once.

    Values are keyed by the adapter's cache key (name, version, options, weights sha256) and
    the image's sha256, and persist in `path` (an .npz beside the run's outputs) when given:
    a re-run of unchanged images detects and embeds nothing.
    """

    def __init__(self, device: str, path: Path | None = None) -> None:
        self.device = device
        self.path = path
        self.unavailable: dict[str, str] = {}
        self._detector = self._build("detection (MTCNN)", "metrics.detection:MTCNNDetection")
        self._second = self._build("detection (LBP cascade)", "metrics.detection:LBPCascadeDetection")
        # dlib's face box is MTCNN's: the same network, and (see `_compute`) the same detections.
        self._reid = self._build("re-identification (dlib)", "metrics.reid:DlibIdentityDistance",
                                 **({"mtcnn": self._detector} if self._detector is not None else {}))
        self._values: dict[str, np.ndarray] = self._load()
        self._loaded = len(self._values)

    def _build(self, attack: str, target: str, **options):
        from metrics.registry import build_metric

        try:
            return build_metric(target, device=self.device, **options)
        except MetricError as exc:
            self.unavailable[attack] = str(exc)
            return None

    def _load(self) -> dict[str, np.ndarray]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                return {key: stored[key] for key in stored.files}
        except (OSError, ValueError):
            return {}  # an unreadable cache is recomputed, never trusted

    def save(self) -> None:
        if self.path is None or len(self._values) == self._loaded:
            return
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **self._values)
        write_atomic(self.path, buffer.getvalue())

    @property
    def can_detect(self) -> bool:
        return self._detector is not None

    @property
    def can_embed(self) -> bool:
        return self._reid is not None

    @property
    def can_detect_second(self) -> bool:
        return self._second is not None

    def _features(self, metric, path: Path) -> np.ndarray:
        key = f"{metric.key()}#{file_sha256(path)}"
        if key not in self._values:
            self._compute(path)
        return self._values[key]

    def _compute(self, path: Path) -> None:
        """Every available model's features of one image, from one decode; dlib embeds the
        face MTCNN found, with MTCNN run once."""
        digest = file_sha256(path)
        pixels = to_device([images.load_rgb(path)], torch.device("cpu"))
        detections = None
        for metric in (self._detector, self._second, self._reid):
            if metric is None:
                continue
            key = f"{metric.key()}#{digest}"
            if key not in self._values:
                self._values[key] = (self._reid.embedder.embed_images(pixels, detections)[0] if metric is self._reid
                                     else metric.features(pixels.to(metric.device))[0].numpy())
            if metric is self._detector:
                detections = torch.from_numpy(self._values[key])[None]

    def detections(self, path: Path, *, second: bool = False) -> torch.Tensor:
        """MTCNN's detections of the image (the LBP cascade's with `second`)."""
        return torch.from_numpy(self._features(self._second if second else self._detector, path))

    def embedding(self, path: Path) -> np.ndarray:
        return self._features(self._reid, path)

    def conventions(self) -> dict[str, object]:
        return {name: metric.card().to_dict() for name, metric in
                (("detection", self._detector), ("detection_second", self._second), ("reid", self._reid))
                if metric is not None}


def privacy_attacks(pairs: Sequence[AttackPair], identities: Mapping[str, str], *, device: str = "cpu",
                    cache_path: Path | None = None) -> PrivacyReport:
    """One `PrivacyRow` per (method, scope), global scope first; detections and embeddings are
    kept in `cache_path` (an .npz) when given, and reused from it."""
    cache = _Cache(device, cache_path)
    groups: dict[tuple[str, str], list[AttackPair]] = {}
    for pair in pairs:
        groups.setdefault((pair.method, pair.scope), []).append(pair)
    galleries: dict[str, dict[str, Path]] = {}
    for pair in pairs:
        galleries.setdefault(pair.scope, {}).setdefault(pair.image, pair.original)
    rows = []
    # Global rows first, as in the leaderboard; methods in the order the pairs name them.
    ordered = sorted(groups.items(), key=lambda item: item[0][1] != "global")
    for (method, scope), members in ordered:
        row = PrivacyRow(method=method, scope=scope, n_pairs=len(members))
        if cache.can_detect:
            row = _with_detection(row, members, cache)
        if cache.can_detect_second:
            row = _replace(row, second_detection=_detection_rate(members, cache, second=True)[0])
        if cache.can_embed:
            row = _with_reid(row, members, galleries[scope], identities, cache)
        rows.append(row)
    examples = _examples(pairs, cache) if cache.can_detect else []
    cache.save()
    conventions = {**cache.conventions(),
                   "gallery": {scope: {"photos": len(gallery),
                                       "identities": len({identities.get(key, key) for key in gallery})}
                               for scope, gallery in galleries.items()}}
    return PrivacyReport(rows=rows, examples=examples, unavailable=dict(cache.unavailable), conventions=conventions)


def _faces(detections: torch.Tensor) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in face) for face in detections.tolist() if face[4] > 0)


def _examples(pairs: Sequence[AttackPair], cache: _Cache) -> list[DetectionExample]:
    """The first EXAMPLES originals (global scope) with every method's result and the boxes
    (detections are cached: nothing is detected twice)."""
    by_image: dict[str, list[AttackPair]] = {}
    for pair in pairs:
        if pair.scope == "global":
            by_image.setdefault(pair.image, []).append(pair)
    return [DetectionExample(label=image, original=str(members[0].original),
                             original_faces=_faces(cache.detections(members[0].original)),
                             anonymized=tuple((p.method, str(p.anonymized), _faces(cache.detections(p.anonymized)))
                                              for p in members))
            for image, members in list(by_image.items())[:EXAMPLES]]


def _with_detection(row: PrivacyRow, members: Sequence[AttackPair], cache: _Cache) -> PrivacyRow:
    rate, without_face = _detection_rate(members, cache)
    return _replace(row, detection=rate, originals_without_face=without_face)


def _detection_rate(members: Sequence[AttackPair], cache: _Cache, *, second: bool = False) -> tuple[Rate, int]:
    """(found / pairs whose original has a face, pairs whose original has none)."""
    from metrics.detection import match_confidence

    values = [match_confidence(cache.detections(p.original, second=second).numpy(),
                               cache.detections(p.anonymized, second=second).numpy()) for p in members]
    scored = [v for v in values if not math.isnan(v)]
    return Rate.of(sum(v > 0 for v in scored), len(scored)), len(values) - len(scored)


def _with_reid(row: PrivacyRow, members: Sequence[AttackPair], gallery: Mapping[str, Path],
               identities: Mapping[str, str], cache: _Cache) -> PrivacyRow:
    gallery_keys = list(gallery)
    gallery_embeddings = np.stack([cache.embedding(gallery[key]) for key in gallery_keys])
    gallery_identities = [identities.get(key, key) for key in gallery_keys]
    probes = np.stack([cache.embedding(p.anonymized) for p in members])
    probe_identities = [identities.get(p.image, p.image) for p in members]
    identification = identify(probes, probe_identities, gallery_embeddings, gallery_identities)
    genuine, impostor = verification_scores(probes, probe_identities, gallery_embeddings, gallery_identities)
    adaptive = adaptive_attack(probes, probe_identities, [p.image for p in members])
    return _replace(row, identification=identification, verification=verify(genuine, impostor), adaptive=adaptive)


def _replace(row: PrivacyRow, **changes) -> PrivacyRow:
    from dataclasses import replace

    return replace(row, **changes)


def pairs_from_table(table: PairsTable) -> list[AttackPair]:
    """AttackPairs from a benchmark run's pairs table (its method, scope and image columns), with
    the table's own absolute paths."""
    frame = table.frame
    return [AttackPair(method=method, scope=scope, image=image, original=original, anonymized=anonymized)
            for method, scope, image, original, anonymized in zip(
                frame["method"], frame["scope"], frame["image"], table.original_paths(), table.anonymized_paths())]


# ----------------------------------------------------------------------------- the run record
def record_entries(report: PrivacyReport) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """What a run record keeps of the attacks, so `bench leaderboard` rebuilds the privacy block
    from the store: (shared: notes, unavailable attacks, convention cards, the originals'
    faces; per method: each scope's rates, its notes, the faces found on its results)."""
    from metrics.attacks import row_rates
    from reports.privacy import general_notes, row_notes

    per_method: dict[str, dict[str, Any]] = {}
    for row in report.rows:
        entry = per_method.setdefault(row.method, {"rows": {}, "notes": [], "faces": {}})
        entry["rows"][row.scope] = {name: (vars(rate).copy() if isinstance(rate, Rate) else {"reason": rate})
                                    for name, rate in row_rates(row).items()}
        entry["notes"] += row_notes(row)
    for example in report.examples:
        for method, _, faces in example.anonymized:
            per_method.setdefault(method, {"rows": {}, "notes": [], "faces": {}})["faces"][example.label] = \
                [list(face) for face in faces]
    shared = {"notes": general_notes(report), "unavailable": dict(report.unavailable),
              "conventions": report.conventions,
              "original_faces": {example.label: [list(face) for face in example.original_faces]
                                 for example in report.examples}}
    return shared, per_method
