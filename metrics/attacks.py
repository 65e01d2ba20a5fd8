"""Set-level privacy attacks, as pure functions of embeddings and identities.

- Detection rate: found / pairs with a 95% Wilson score interval (exact enough at the small
  counts of a benchmark group, and never outside [0, 1] as a normal interval would be).
- Identification (the naive attacker): each anonymized face is a probe against a gallery of
  every original of the set; identities are ranked by their nearest gallery photo, and rank-k
  is the share of probes whose true identity is among the first k. A probe without a found
  face is a miss, counted, never dropped. Chance level: k / number of gallery identities.
- Verification: every (probe, gallery photo) pair is genuine when both show the same
  identity, an impostor pair otherwise; the score is the negative embedding distance. From
  the ROC: TAR at FAR 1e-2 and 1e-3 (the best TPR whose FPR does not exceed it) and the EER
  (where FPR = 1 - TPR, linearly interpolated between ROC points). A probe without a face
  scores below every real pair: it is never accepted before the last threshold.
- The adaptive attacker (Hanisch et al. 2023, "A False Sense of Privacy"): it knows the
  method, so it learns identities from anonymized images. Per identity with at least two
  photos, the first half of its photos (sorted by name; at least one) are training data and
  the rest are probes; identities with one photo are distractor classes it also learns. A
  1-nearest-neighbour classifier on the embeddings of the anonymized training images
  identifies the anonymized probes; rank-1 is its accuracy. Chance: 1 / classes learnt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import norm

FARS = (1e-2, 1e-3)


@dataclass(frozen=True)
class Rate:
    """successes / n with a two-sided 95% Wilson score interval."""

    successes: int
    n: int
    value: float
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, successes: int, n: int, level: float = 0.95) -> Rate:
        if n == 0:
            return cls(0, 0, math.nan, math.nan, math.nan)
        low, high = wilson_interval(successes, n, level)
        return cls(int(successes), int(n), successes / n, low, high)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _distances(probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """P x G Euclidean distances; +inf in the rows of probes without a face (NaN rows)."""
    difference = probes[:, None, :] - gallery[None, :, :]
    distances = np.sqrt((difference ** 2).sum(axis=2))
    return np.where(np.isnan(distances), np.inf, distances)


@dataclass(frozen=True)
class Identification:
    """Rank of each probe's true identity (1 = first; inf = its face was not found)."""

    ranks: np.ndarray
    n_identities: int
    not_found: int

    def rank_k(self, k: int) -> Rate:
        return Rate.of(int((self.ranks <= k).sum()), len(self.ranks))

    def chance(self, k: int) -> float:
        return min(1.0, k / self.n_identities) if self.n_identities else math.nan


def identify(probes: np.ndarray, probe_identities: Sequence[str], gallery: np.ndarray,
             gallery_identities: Sequence[str]) -> Identification:
    """Rank identities by their nearest gallery photo; gallery rows without a face are left out
    (they cannot be enrolled)."""
    enrolled = ~np.isnan(gallery).any(axis=1)
    gallery, gallery_identities = gallery[enrolled], np.asarray(gallery_identities)[enrolled]
    names = sorted(set(gallery_identities))
    distances = _distances(probes, gallery)
    per_identity = np.stack([distances[:, gallery_identities == name].min(axis=1) for name in names], axis=1) \
        if names else np.zeros((len(probes), 0))
    ranks = np.full(len(probes), np.inf)
    found = ~np.isnan(probes).any(axis=1)
    for i, identity in enumerate(probe_identities):
        if found[i] and identity in names:
            true = per_identity[i, names.index(identity)]
            ranks[i] = 1 + int((per_identity[i] < true).sum())
    return Identification(ranks=ranks, n_identities=len(names), not_found=int((~found).sum()))


@dataclass(frozen=True)
class Verification:
    tar_at_far: dict[float, float]
    eer: float
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    n_genuine: int = 0
    n_impostor: int = 0

    def tar_rate(self, far: float) -> Rate:
        """TAR at `far` as genuine pairs accepted / genuine pairs, with the Wilson interval of
        that proportion (the threshold, set on the impostor pairs, is taken as fixed)."""
        return Rate.of(round(self.tar_at_far[far] * self.n_genuine), self.n_genuine)


def verification_scores(probes: np.ndarray, probe_identities: Sequence[str], gallery: np.ndarray,
                        gallery_identities: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) similarity scores (negative distances) of every probe x enrolled
    gallery photo; -inf for probes without a face."""
    enrolled = ~np.isnan(gallery).any(axis=1)
    similarity = -_distances(probes, gallery[enrolled])
    same = np.asarray(probe_identities)[:, None] == np.asarray(gallery_identities)[enrolled][None, :]
    return similarity[same], similarity[~same]


def finite_floor(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-inf scores (no face) set just below every finite score, so ROC code sees finite numbers."""
    both = np.concatenate([genuine, impostor])
    finite = both[np.isfinite(both)]
    floor = (finite.min() if len(finite) else 0.0) - 1.0
    return np.where(np.isfinite(genuine), genuine, floor), np.where(np.isfinite(impostor), impostor, floor)


def roc(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from accepting nothing to accepting all."""
    scores = np.concatenate([genuine, impostor])
    labels = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tpr = np.r_[0.0, np.cumsum(labels)[last_of_tie] / len(genuine)]
    fpr = np.r_[0.0, np.cumsum(1 - labels)[last_of_tie] / len(impostor)]
    return fpr, tpr


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    return float(tpr[fpr <= far].max())


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Where FPR crosses FNR = 1 - TPR, linearly interpolated between the two ROC points around it."""
    difference = fpr - (1 - tpr)  # rises from -1 (accept nothing) to +1 (accept all)
    i = int(np.argmax(difference >= 0))
    if i == 0 or difference[i] == 0:
        return float(fpr[i])
    t = -difference[i - 1] / (difference[i] - difference[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def verify(genuine: np.ndarray, impostor: np.ndarray, fars: Sequence[float] = FARS) -> Verification | None:
    """None without genuine or impostor pairs (one identity, or no probes)."""
    if not len(genuine) or not len(impostor):
        return None
    genuine, impostor = finite_floor(genuine, impostor)
    fpr, tpr = roc(genuine, impostor)
    return Verification(tar_at_far={far: tar_at_far(fpr, tpr, far) for far in fars}, eer=equal_error_rate(fpr, tpr),
                        fpr=fpr, tpr=tpr, n_genuine=len(genuine), n_impostor=len(impostor))


@dataclass(frozen=True)
class AdaptiveAttack:
    rank1: Rate | None
    chance: float = math.nan
    n_classes: int = 0
    n_train: int = 0
    reason: str = ""


def adaptive_attack(embeddings: np.ndarray, identities: Sequence[str], photos: Sequence[str]) -> AdaptiveAttack:
    """1-NN trained on the anonymized images of part of each identity's photos (see the
    module docstring); `photos` names each row's original, which fixes the split."""
    by_identity: dict[str, list[int]] = {}
    for row, identity in enumerate(identities):
        by_identity.setdefault(identity, []).append(row)
    train, test = [], []
    for rows in by_identity.values():
        rows = sorted(rows, key=lambda r: photos[r])
        distinct = sorted({photos[r] for r in rows})
        if len(distinct) < 2:
            train.extend(rows)
            continue
        train_photos = set(distinct[:max(1, len(distinct) // 2)])
        train.extend(r for r in rows if photos[r] in train_photos)
        test.extend(r for r in rows if photos[r] not in train_photos)
    if not test:
        return AdaptiveAttack(rank1=None, reason="no identity has two photos: the adaptive attacker needs one to "
                                                 "train on and another to identify")
    # Classes are the identities it trains on, found faces or not: chance does not depend on
    # how much the method hides.
    classes = sorted({identities[r] for r in train})
    train = [r for r in train if not np.isnan(embeddings[r]).any()]
    labels = np.asarray(identities)[train]
    if not train:
        return AdaptiveAttack(rank1=Rate.of(0, len(test)), chance=1 / len(classes), n_classes=len(classes),
                              reason="no face found in any training image")
    distances = _distances(embeddings[test], embeddings[train])
    predicted = labels[np.argmin(distances, axis=1)]
    found = ~np.isnan(embeddings[test]).any(axis=1)
    correct = int((found & (predicted == np.asarray(identities)[test])).sum())
    return AdaptiveAttack(rank1=Rate.of(correct, len(test)), chance=1 / len(classes), n_classes=len(classes),
                          n_train=len(train))


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class PrivacyRow:
    """Every attack's result on one method x scope group (None: that attack did not run)."""

    method: str
    scope: str
    n_pairs: int
    detection: Rate | None = None
    originals_without_face: int = 0
    #: The second detector family's (LBP cascade) detection rate.
    second_detection: Rate | None = None
    identification: Identification | None = None
    verification: Verification | None = None
    adaptive: AdaptiveAttack | None = None

    @property
    def rank1(self) -> Rate | None:
        return self.identification.rank_k(1) if self.identification else None

    @property
    def rank5(self) -> Rate | None:
        return self.identification.rank_k(5) if self.identification else None


@dataclass(frozen=True)
class AttackColumn:
    """One attack statistic as a leaderboard column (every one a rate: lower = more anonymous)."""

    name: str
    label: str
    higher_is_more_anonymous: bool = False


#: The privacy block's columns, in display order (`PrivacyRow.rates` gives their values).
ATTACK_COLUMNS = (
    AttackColumn("detection_mtcnn", "MTCNN detection rate"),
    AttackColumn("detection_lbp", "LBP detection rate"),
    AttackColumn("rank1_naive", "rank-1 naive"),
    AttackColumn("rank5_naive", "rank-5 naive"),
    AttackColumn("rank1_adaptive", "rank-1 adaptive"),
    *(AttackColumn(f"tar_at_far_{far:g}", f"TAR@FAR={far:g}") for far in FARS),
)


def row_rates(row: PrivacyRow) -> dict[str, Rate | str]:
    """Column name -> the row's Rate, or the one-line reason it has none (attack not run, or the
    adaptive attacker's reason)."""
    adaptive: Rate | str = "not run"
    if row.adaptive is not None:
        adaptive = row.adaptive.rank1 if row.adaptive.rank1 is not None else row.adaptive.reason
    verification = row.verification
    no_verification = "not run" if row.identification is None else "no genuine or impostor pairs"
    return {
        "detection_mtcnn": row.detection or "not run",
        "detection_lbp": row.second_detection or "not run",
        "rank1_naive": row.rank1 or "not run",
        "rank5_naive": row.rank5 or "not run",
        "rank1_adaptive": adaptive,
        **{f"tar_at_far_{far:g}": verification.tar_rate(far) if verification else no_verification for far in FARS},
    }


@dataclass(frozen=True)
class DetectionExample:
    """One original and, per method, its anonymized image with the detector's face boxes
    (x0, y0, x1, y1, confidence) on each, for the HTML view."""

    label: str
    original: str
    original_faces: tuple[tuple[float, ...], ...]
    #: (method, anonymized image, faces found on it)
    anonymized: tuple[tuple[str, str, tuple[tuple[float, ...], ...]], ...]


@dataclass
class PrivacyReport:
    rows: list[PrivacyRow]
    examples: list[DetectionExample] = field(default_factory=list)
    #: attack -> one line saying why it did not run (a missing or corrupt model file).
    unavailable: dict[str, str] = field(default_factory=dict)
    #: The convention cards of the detectors and the embedding, and the gallery sizes per scope.
    conventions: dict[str, Any] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        lines = [f"  {attack}: unavailable: {reason}" for attack, reason in self.unavailable.items()]
        for row in self.rows:
            parts = [f"{row.method}/{row.scope}:"]
            if row.detection:
                parts.append(f"detected {_rate(row.detection)}")
            if row.second_detection:
                parts.append(f"LBP detected {_rate(row.second_detection)}")
            if row.identification:
                ident = row.identification
                parts.append(f"rank-1 {_rate(row.rank1)} (chance {ident.chance(1):.2f}), "
                             f"rank-5 {_rate(row.rank5)}, faces not found {ident.not_found}")
            if row.verification:
                tar = ", ".join(f"TAR@FAR{far:g} {value:.2f}" for far, value in row.verification.tar_at_far.items())
                parts.append(f"{tar}, EER {row.verification.eer:.2f}")
            if row.adaptive:
                parts.append(f"adaptive rank-1 {_rate(row.adaptive.rank1)} (chance {row.adaptive.chance:.2f})"
                             if row.adaptive.rank1 else f"adaptive: {row.adaptive.reason}")
            lines.append("  " + "; ".join([" ".join(parts[:2])] + parts[2:]))
        return lines


def _rate(rate: Rate | None) -> str:
    if rate is None or rate.n == 0:
        return "n/a"
    return f"{rate.value:.2f} [{rate.ci_low:.2f}, {rate.ci_high:.2f}] ({rate.successes}/{rate.n})"
