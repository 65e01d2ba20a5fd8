"""Inception-feature metrics on pytorch-fid's TF-Inception (2015-12-05) port, pool3 2048-d.

- `InceptionDistance` (per pair): squared Euclidean distance between the pool3 features of
  the original and of the anonymized image. FID of one pair is undefined: the covariance of
  a single sample does not exist. The paper's released per-pair "FID" silently reduced to
  roughly this distance with numpy < 2.2 and yields NaN with numpy >= 2.2. The squared
  distance is FID between two point masses (zero covariance), and any monotone variant
  (e.g. its square root) has the same rank correlations.
- `FID` and `KID` (per group of pairs): originals vs anonymized images of a group. Several
  processes can each feed part of a group and merge (`partial_state`, `merge_partial_states`):
  FID's partial state is its `FeatureMoments` (sums of features and of their outer products,
  whose sum over the parts is that of the whole group), KID's the features themselves.

The network itself (and how images go through it) is `metrics.inception`; this module adds
the weights it is built with (`metrics.weights`) and the statistics on its features.
"""

from __future__ import annotations

import math

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from metrics import functional
from metrics.base import FeaturePairMetric, SetMetric, WeightsRecord, check_inputs
from metrics.errors import MetricInputError, WeightsError
from metrics.inception import NETWORK_CONVENTIONS, WEIGHTS_NAME, InceptionPool3, build_pool3, is_pool3_key
from metrics.weights import as_float32, resolve


class InceptionExtractor:
    """The pool3 network with resolved weights loaded strictly; one per adapter instance.

    Never downloads: missing weights raise WeightsError with the command that fetches them.
    """

    def __init__(self, device: torch.device) -> None:
        self.resolved = resolve(WEIGHTS_NAME)
        try:
            # Memory-mapped, the pool3 tensors copied out: 0.03-0.04 s instead of 0.07-0.08 s.
            self.network = build_pool3(as_float32(self.resolved.state_dict(keep=is_pool3_key)), device)
        except RuntimeError as exc:
            raise WeightsError(f"{self.resolved.path} does not fit pytorch-fid's Inception "
                               f"({str(exc).splitlines()[0]}); run `bench weights verify {WEIGHTS_NAME}`") from exc
        self.device = device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # Channels-last input for the channels-last network (see `build_pool3`).
        return self.network(images.to(self.device).contiguous(memory_format=torch.channels_last))

    def record(self) -> WeightsRecord:
        return self.resolved.record()

    def conventions(self) -> dict[str, Any]:
        return {
            **NETWORK_CONVENTIONS,
            "weights_file": self.resolved.path.name,
            "weights_sha256": self.resolved.sha256,
            "weights_status": self.resolved.status,
        }


def _stand_in_inception(weights_name: str) -> dict[str, torch.Tensor] | None:
    """Random tensors in the layout of the FID Inception (for `bench perf`)."""
    return InceptionPool3().state_dict() if weights_name == WEIGHTS_NAME else None


class InceptionDistance(FeaturePairMetric):
    """Squared Euclidean distance of pool3 features, per pair: larger means more anonymous."""

    name: ClassVar[str] = "inception_dist"
    tradeoff_privacy_priority: ClassVar[int | None] = 6
    label: ClassVar[str] = "Inception dist."
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True
    value_range: ClassVar[str] = "[0, +inf); 0 for identical images"
    weights_needed: ClassVar[tuple[str, ...]] = (WEIGHTS_NAME,)
    convention: ClassVar[str] = ("squared L2 distance of pytorch-fid TF-Inception pool3 features (2048-d, bilinear "
                                 "resize to 299): FID's mean term for one pair")
    sort_priority: ClassVar[int | None] = 40
    preload_modules: ClassVar[tuple[str, ...]] = ("torchvision", "pytorch_fid.inception")

    @classmethod
    def stand_in_state(cls, weights_name: str) -> dict[str, torch.Tensor] | None:
        return _stand_in_inception(weights_name)

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self._extractor = InceptionExtractor(self.device)

    def weights(self) -> list[WeightsRecord]:
        return [self._extractor.record()]

    def conventions(self) -> dict[str, Any]:
        return {**self._extractor.conventions(),
                "distance": "squared Euclidean ||f(original) - f(anonymized)||^2 of pool3 features, float64",
                "note": "FID of a single pair is undefined (covariance of one sample); this is its mean term"}

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self._extractor(images)

    def _compare(self, original_features: torch.Tensor, anonymized_features: torch.Tensor) -> torch.Tensor:
        return functional.squared_feature_distance(original_features, anonymized_features)


@dataclass(frozen=True)
class FeatureMoments:
    """Count, sum and sum of outer products of N x D features (float64): sufficient statistics
    of their mean and covariance that add up over disjoint parts of a set. Empty moments
    (count 0) are the identity of +."""

    count: int = 0
    total: np.ndarray | None = None
    outer: np.ndarray | None = None

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureMoments:
        features = np.asarray(features, dtype=np.float64)
        return cls(len(features), features.sum(axis=0), features.T @ features) if len(features) else cls()

    def __add__(self, other: FeatureMoments) -> FeatureMoments:
        if not (self.count and other.count):
            return self if self.count else other
        return FeatureMoments(self.count + other.count, self.total + other.total, self.outer + other.outer)

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sample covariance (ddof 1), as `functional.feature_stats` gives them."""
        mean = self.total / self.count
        return mean, (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)


class _InceptionSetMetric(SetMetric):
    """Accumulates pool3 features of a group's originals and anonymized images."""

    higher_is_more_anonymous: ClassVar[bool] = True
    weights_needed: ClassVar[tuple[str, ...]] = (WEIGHTS_NAME,)
    # As a utility (trade-off views): anonymized images distributed like the originals = realistic.
    higher_is_more_useful: ClassVar[bool] = False
    utility_view: ClassVar[str] = "realism"
    # Why min_samples is what it is, for the error message.
    min_samples_reason: ClassVar[str]
    merges_across_ranks: ClassVar[bool] = True
    preload_modules: ClassVar[tuple[str, ...]] = ("torchvision", "pytorch_fid.inception")

    @classmethod
    def stand_in_state(cls, weights_name: str) -> dict[str, torch.Tensor] | None:
        return _stand_in_inception(weights_name)

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self._extractor = InceptionExtractor(self.device)

    def reset(self) -> None:
        self._original_features: list[np.ndarray] = []
        self._anonymized_features: list[np.ndarray] = []

    def update(self, original: torch.Tensor, anonymized: torch.Tensor) -> None:
        self.update_features(self.batch_features(original, anonymized))

    @property
    def feature_key(self) -> str:
        record = self._extractor.record()  # the network and its weights: FID and KID of one run share them
        return f"{type(self._extractor).__qualname__} {record.name} {record.sha256}"

    def batch_features(self, original: torch.Tensor, anonymized: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        check_inputs(original, anonymized, metric=self.name)
        with torch.inference_mode():
            return tuple(self._extractor(images).double().cpu().numpy() for images in (original, anonymized))

    def update_features(self, features: tuple[np.ndarray, np.ndarray]) -> None:
        self._original_features.append(features[0])
        self._anonymized_features.append(features[1])

    @property
    def n_samples(self) -> int:
        return sum(len(batch) for batch in self._original_features)

    def _check_group_size(self, n_samples: int) -> None:
        if n_samples < self.min_samples:
            raise MetricInputError(f"{self.name}: a group of {n_samples} pairs is too small; "
                                   f"{self.name} needs at least {self.min_samples} ({self.min_samples_reason})")

    def _group_features(self) -> tuple[np.ndarray, np.ndarray]:
        """(original, anonymized) features, refusing groups too small for the statistic."""
        self._check_group_size(self.n_samples)
        return np.concatenate(self._original_features), np.concatenate(self._anonymized_features)

    def weights(self) -> list[WeightsRecord]:
        return [self._extractor.record()]

    def conventions(self) -> dict[str, Any]:
        return {**self._extractor.conventions(), "sets": "originals vs anonymized images of one group",
                "min_samples": self.min_samples}


class FID(_InceptionSetMetric):
    """Frechet distance between Gaussians fitted to the two sets' pool3 features."""

    name: ClassVar[str] = "fid"
    tradeoff_utility_priority: ClassVar[int | None] = 6
    label: ClassVar[str] = "FID"
    version: ClassVar[str] = "1"
    # The covariance needs 2 samples to exist at all, but with n samples its rank is at most
    # n - 1 of 2048, so at very small n the trace term is mostly sampling noise and FID is
    # strongly biased upwards. 10 is a floor, not a guarantee: compare equal-size groups.
    min_samples: ClassVar[int] = 10
    value_range: ClassVar[str] = "[0, +inf); 0 for identical sets"
    convention: ClassVar[str] = ("Frechet distance of TF-Inception pool3 features, originals vs anonymized, "
                                 "ddof 1, scipy sqrtm (pytorch-fid); needs at least 10 pairs")
    min_samples_reason: ClassVar[str] = ("fewer samples make the 2048 x 2048 covariance almost entirely noise; "
                                         "FID is biased at small n, so compare groups of equal size")

    def conventions(self) -> dict[str, Any]:
        return {**super().conventions(), "statistic": "Frechet distance, scipy.linalg.sqrtm, eps 1e-6 fallback "
                                                      "(pytorch-fid's calculate_frechet_distance)",
                "covariance": "sample covariance, ddof 1"}

    def reset(self) -> None:
        super().reset()
        self._merged: tuple[FeatureMoments, FeatureMoments] | None = None

    @property
    def n_samples(self) -> int:
        return self._merged[0].count if self._merged else super().n_samples

    def partial_state(self) -> tuple[FeatureMoments, FeatureMoments]:
        """Moments of the (original, anonymized) features this instance holds: fed or merged."""
        if self._merged:
            return self._merged
        return (sum(map(FeatureMoments.of, self._original_features), FeatureMoments()),
                sum(map(FeatureMoments.of, self._anonymized_features), FeatureMoments()))

    def merge_partial_states(self, states: Sequence[tuple[FeatureMoments, FeatureMoments]]) -> None:
        """Make the group the union of the parts whose `partial_state`s are given (this one's too)."""
        self.reset()
        self._merged = (sum((original for original, _ in states), FeatureMoments()),
                        sum((anonymized for _, anonymized in states), FeatureMoments()))

    def compute(self) -> float:
        # One process and many take the same path: the mean and covariance of summed moments.
        original, anonymized = self.partial_state()
        self._check_group_size(original.count)
        if not (np.isfinite(original.outer).all() and np.isfinite(anonymized.outer).all()):
            # A NaN covariance makes scipy's sqrtm run forever; refuse before it gets there.
            raise MetricInputError("FID features contain NaN or infinity; check the images and the weights")
        return functional.frechet_distance(*original.mean_and_covariance(), *anonymized.mean_and_covariance())


#: "paired": row i of the anonymized set anonymizes row i of the originals (the benchmark's groups);
#: "independent": two samples, as torchmetrics and torch-fidelity compute KID.
KID_PAIRINGS = ("paired", "independent")


class KID(_InceptionSetMetric):
    """Kernel Inception Distance of a group's paired originals and anonymized images:
    polynomial-kernel MMD^2 over the pairs i != j (`functional.paired_kid`: 0 for a method
    that changes nothing), averaged over subsets; `estimate` holds the last value's spread."""

    name: ClassVar[str] = "kid"
    two_sample_options: ClassVar[dict[str, Any]] = {"pairing": "independent"}
    label: ClassVar[str] = "KID"
    # 2: subsets are drawn from rows in a canonical order (see `compute`); version 1 drew them
    # in decode order, so a group larger than subset_size depended on the batch size.
    # 3: the paired estimator (matched couples left out of the cross term; version 2 scored an
    # unchanged 8-pair group about -0.07), pairs kept together in the canonical order.
    version: ClassVar[str] = "3"
    # The unbiased estimator divides by m (m - 1).
    min_samples: ClassVar[int] = 2
    min_samples_reason: ClassVar[str] = "the unbiased MMD estimator needs two samples per set"
    pairing: str = "paired"
    value_range: ClassVar[str] = "unbiased, so slightly below 0 is possible; about 0 for equal sets"
    convention: ClassVar[str] = ("MMD^2 with kernel (x.y / 2048 + 1)^3 on TF-Inception pool3 features; paired "
                                 "U-statistic (pairs i != j) by default, two-sample (torch-fidelity) with "
                                 "pairing=independent; mean and std over 100 subsets of min(1000, n) pairs")

    def __init__(self, device: str | torch.device = "cpu", *, subsets: int = 100, subset_size: int = 1000,
                 seed: int = 0, pairing: str = "paired") -> None:
        if pairing not in KID_PAIRINGS:
            raise MetricInputError(f"kid: pairing must be one of {', '.join(KID_PAIRINGS)}, got {pairing!r}")
        if not isinstance(subsets, int) or subsets < 1:
            raise MetricInputError(f"kid: subsets must be an integer >= 1, got {subsets!r}")
        if not isinstance(subset_size, int) or subset_size < 2:
            raise MetricInputError(f"kid: subset_size must be an integer >= 2, got {subset_size!r}")
        self.subsets, self.subset_size, self.seed, self.pairing = subsets, subset_size, seed, pairing
        super().__init__(device)

    def config(self) -> dict[str, Any]:
        # The default estimator leaves the key unchanged, so values stored before the option existed stay valid.
        pairing = {} if self.pairing == "paired" else {"pairing": self.pairing}
        return {"subsets": self.subsets, "subset_size": self.subset_size, "seed": self.seed, **pairing}

    def conventions(self) -> dict[str, Any]:
        return {**super().conventions(), **self.config(),
                "kernel": "polynomial (x.y / d + 1)^3",
                "estimator": ("paired MMD^2_u (pairs i != j; Gretton et al. 2012), mean over subsets of pairs"
                              if self.pairing == "paired" else
                              "unbiased MMD^2 of independent samples (torchmetrics, torch-fidelity), mean over subsets"),
                "spread": ("std over subsets; jackknife standard error and normal 95% interval"
                           if self.pairing == "paired" else "std over subsets"),
                "subset_size_used": "min(subset_size, group size); one evaluation when that is the whole group",
                "row_order": "pairs sorted lexicographically by (original, anonymized) features before subsets "
                             "are drawn"}

    def reset(self) -> None:
        super().reset()
        self.estimate: functional.KIDEstimate | None = None

    def partial_state(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The (original, anonymized) feature batches this instance holds: fed or merged."""
        return list(self._original_features), list(self._anonymized_features)

    def merge_partial_states(self, states: Sequence[tuple[list[np.ndarray], list[np.ndarray]]]) -> None:
        """Make the group the union of the parts whose `partial_state`s are given (this one's too)."""
        self.reset()
        for original, anonymized in states:
            self._original_features.extend(original)
            self._anonymized_features.extend(anonymized)

    def compute(self) -> float:
        # Subsets are drawn by row position: in a canonical row order the value depends neither
        # on the batching nor on how many processes fed the group.
        original, anonymized = self._group_features()
        rng = np.random.default_rng(self.seed)
        if self.pairing == "independent":
            # Two samples, as torchmetrics and torch-fidelity see them: each set in its own canonical order.
            original, anonymized = (features[np.lexsort(features.T[::-1])] for features in (original, anonymized))
            mean, std = functional.kid(original, anonymized, subsets=self.subsets, subset_size=self.subset_size,
                                       rng=rng)
            self.estimate = functional.KIDEstimate(
                value=mean, std=std, stderr=math.nan, ci_low=math.nan, ci_high=math.nan, n=len(original),
                subset_size=min(self.subset_size, len(original), len(anonymized)))
            return mean
        order = np.lexsort(np.hstack([original, anonymized]).T[::-1])
        self.estimate = functional.paired_kid(original[order], anonymized[order], subsets=self.subsets,
                                              subset_size=self.subset_size, rng=rng)
        return self.estimate.value
