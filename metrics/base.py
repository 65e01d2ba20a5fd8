"""The adapter contract every metric follows.

Two kinds of metric:

- `PairMetric`: one float64 per (original, anonymized) pair. Feature-based metrics (LPIPS,
  Inception distance, PerceptAnon) subclass `FeaturePairMetric`, which splits scoring into
  `features(images)` and `compare(original_features, anonymized_features)` so that the runner
  can compute an original's features once and reuse them for every anonymization of it.
- `SetMetric` (FID, KID): one value per group of pairs, from per-image features accumulated
  with `update()` and reduced by `compute()`.

Inputs are float32 NCHW tensors in [0, 1], RGB, on the adapter's device; both tensors of a
call have the same shape. `check_inputs` is the one place that enforces this.

Metadata lives in class attributes (name, version, direction) so tables never switch on
metric names. `higher_is_more_anonymous` orients every correlation: a distance (MSE, LPIPS)
is True, a similarity (PSNR, SSIM) is False.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from metrics.errors import MetricInputError as InputError


@dataclass(frozen=True)
class WeightsRecord:
    """Which weight file produced a result, and whether its bytes were checked."""

    name: str
    sha256: str
    # "verified": hash matches the published one; "unverified": unknown file the user
    # imported; "stand-in": made up by tests or demos, never a real pretrained network.
    status: str

    @property
    def display_label(self) -> str:
        """Column title; adapters with several instances (checkpoints) add what tells them apart."""
        return self.label or self.name

    @property
    def verified(self) -> bool:
        return self.status == "verified"


@dataclass
class ConventionCard:
    """What a number means: written next to every result so it can be reproduced."""

    metric: str
    version: str
    higher_is_more_anonymous: bool
    input_range: str = "[0, 1] float32 RGB"
    details: dict[str, Any] = field(default_factory=dict)
    weights: list[WeightsRecord] = field(default_factory=list)
    libraries: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_inputs(original: torch.Tensor | None, anonymized: torch.Tensor, *, metric: str) -> None:
    """The single input contract: float32 NCHW RGB in [0, 1], equal shapes, finite."""
    for role, images in (("original", original), ("anonymized", anonymized)):
        if images is None:
            continue
        if not isinstance(images, torch.Tensor):
            raise InputError(f"{metric}: {role} images must be a torch.Tensor, got {type(images).__name__}")
        if images.dtype != torch.float32:
            raise InputError(f"{metric}: {role} images must be float32, got {images.dtype}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"{metric}: {role} images must be N x 3 x H x W, got {tuple(images.shape)}")
        # One pass for both bounds; NaN propagates into them and fails the test, as infinities do.
        if images.numel() and not _within_unit_range(images):
            raise InputError(f"{metric}: {role} images must lie in [0, 1]; convert with bench.data.images.to_float")
    if original is not None and original.shape != anonymized.shape:
        raise InputError(
            f"{metric}: original {tuple(original.shape)} and anonymized {tuple(anonymized.shape)} differ in shape; "
            "use --size-policy resize to resize anonymized images to their originals"
        )


def _within_unit_range(images: torch.Tensor) -> bool:
    lowest, highest = torch.aminmax(images)
    return bool((lowest >= 0) & (highest <= 1))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks the first GPU when there is one; `cpu` and `cuda:N` are taken as given."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}: use auto, cpu or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA GPU: use --device cpu or auto")
    if resolved.type == "cuda":
        use_ieee_float32()
    return resolved


def use_ieee_float32() -> None:
    """Full float32 in CUDA convolutions and matmuls. PyTorch lets cuDNN run float32
    convolutions in TF32 (10-bit mantissa) by default on Ampere and later GPUs, which can move
    LPIPS and Inception values by ~1e-3 relative: scores must not depend on the device. Mixed
    precision (`bench perf --precision`) is autocast, which this does not touch."""
    if hasattr(torch.backends.cudnn, "conv"):  # torch >= 2.9
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False


class Metric:
    """Common metadata and provenance of every adapter."""

    name: ClassVar[str]
    # How tables and plots title the metric's column.
    label: ClassVar[str] = ""
    # Which family the metric belongs to: "perceptual" (distortions, learned judges of
    # anonymity, privacy attacks) or "utility" (what an anonymized image is still good for).
    family: ClassVar[str] = "perceptual"
    # Its direction as a utility, where it can serve as one (trade-off views); None where it
    # cannot. A utility metric states both directions: higher_is_more_anonymous is its opposite.
    higher_is_more_useful: ClassVar[bool | None] = None
    # What kind of utility it measures ("background", "realism", "task", ...), "" for none.
    utility_view: ClassVar[str] = ""
    # Whether `score` needs the pairs' PII masks (`pii_mask`, N x 1 x H x W bool, True on PII).
    needs_pii_mask: ClassVar[bool] = False
    version: ClassVar[str]
    higher_is_more_anonymous: ClassVar[bool]
    level: ClassVar[str]
    # HA1-style metrics judge the anonymized image alone.
    needs_original: ClassVar[bool] = True
    # What an infinite value means, for the tables' footnote on the pairs left out of a mean.
    infinite_means: ClassVar[str] = "infinite value"
    # What `bench metrics` lists (see metrics.catalog): the values a result can take, the
    # weight files it loads (names of metrics.weights specs), weights the user must supply
    # (a checkpoint), and its convention in one line.
    value_range: ClassVar[str] = "not stated"
    weights_needed: ClassVar[tuple[str, ...]] = ()
    user_weights: ClassVar[str] = ""
    convention: ClassVar[str] = ""
    # The keyword of the CLI option that gives this metric its `checkpoint` option
    # ("checkpoint_ha1" for --checkpoint-ha1); "" for none. A given option adds the metric.
    checkpoint_option: ClassVar[str] = ""
    # Options the paper's released code implied, applied under --convention paper.
    paper_options: ClassVar[dict[str, Any]] = {}
    # The registered name of the released code's variant of this metric, scored instead of
    # it under --convention paper ("" for none).
    paper_variant: ClassVar[str] = ""
    # Preference as the leaderboard's default sort column: the lowest number present sorts
    # the table; None is never preferred (then the first column sorts).
    sort_priority: ClassVar[int | None] = None
    # Preference as the default axes of a trade-off view (`bench.analysis.tradeoff.choose_axes`),
    # the lowest number present first: as the privacy axis (x) and, for a utility metric, as
    # the utility axis (y). None is chosen only when no metric of its role has a number.
    tradeoff_privacy_priority: ClassVar[int | None] = None
    tradeoff_utility_priority: ClassVar[int | None] = None
    # Options that compare two samples of unrelated images (`bench score A B` without pairs)
    # need, under the user's own: KID's subsets then pair originals and anonymized independently.
    two_sample_options: ClassVar[dict[str, Any]] = {}
    # Modules the adapter imports on first construction: `bench perf` imports them before its
    # timers start, since imports are a process's start-up cost, the same for every pipeline.
    preload_modules: ClassVar[tuple[str, ...]] = ()
    # How `bench perf`'s naive baseline (the released pipeline's cost structure) rebuilds the
    # metric for every pair: "construct" (a new adapter, whose constructor loads its weights)
    # or "network" (one adapter whose `rebuild_network` builds its network anew).
    naive_rebuild: ClassVar[str] = "construct"

    @classmethod
    def stand_in_state(cls, weights_name: str) -> dict[str, torch.Tensor] | None:
        """Randomly initialised tensors in the layout of weight file `weights_name` (one of
        `weights_needed`), for `bench perf` where the real file is absent (timings do not depend
        on weight values; the caller seeds torch). None: no recipe, the real file is needed."""
        return None

    @classmethod
    def stand_in_checkpoint(cls, folder: Path) -> Path:
        """A checkpoint of made-up weights written into `folder`, for a metric with a
        `checkpoint_option` that `bench perf` measures without the user's checkpoint."""
        raise NotImplementedError(f"{cls.__name__} has no stand-in checkpoint")

    def rebuild_network(self) -> None:
        """Build the network anew as the released code did (for `naive_rebuild = "network"`)."""
        raise NotImplementedError(f"{type(self).__name__} does not rebuild its network")

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device)

    # -- provenance ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Options that change the values (part of the cache key). Override to add yours."""
        return {}

    def weights(self) -> list[WeightsRecord]:
        """Weight files this adapter loaded (empty for pixel metrics)."""
        return []

    def conventions(self) -> dict[str, Any]:
        """Adapter-specific convention details: window, data_range, resize filter, ..."""
        return {}

    def card(self) -> ConventionCard:
        return ConventionCard(
            metric=self.name,
            version=self.version,
            higher_is_more_anonymous=self.higher_is_more_anonymous,
            details=self.conventions(),
            weights=self.weights(),
            libraries=library_versions(),
        )

    def key(self) -> str:
        """Cache key: anything that can change a value is in it; the device is not."""
        payload = {
            "name": self.name,
            "version": self.version,
            "config": self.config(),
            "weights": sorted(w.sha256 for w in self.weights()),
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.name}@{self.version}:{digest}"

    @property
    def display_label(self) -> str:
        """Column title; adapters with several instances (checkpoints) add what tells them apart."""
        return self.label or self.name

    @property
    def verified(self) -> bool:
        """False when any weight file is unverified or a stand-in: tables must say so."""
        return all(w.verified for w in self.weights())


class PairMetric(Metric):
    level: ClassVar[str] = "pair"

    def score(self, original: torch.Tensor, anonymized: torch.Tensor, pii_mask: torch.Tensor | None = None) -> np.ndarray:
        """One float64 per pair; `pii_mask` is given to (and required by) `needs_pii_mask` metrics."""
        check_inputs(original if self.needs_original else None, anonymized, metric=self.name)
        if self.needs_pii_mask:
            check_pii_mask(pii_mask, anonymized, metric=self.name)
        with torch.inference_mode():
            values = self._score_masked(original, anonymized, pii_mask) if self.needs_pii_mask \
                else self._score(original, anonymized)
        return np.asarray(values.detach().cpu().double() if isinstance(values, torch.Tensor) else values,
                          dtype=np.float64).reshape(-1)

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor | np.ndarray:
        raise NotImplementedError

    def _score_masked(self, original: torch.Tensor, anonymized: torch.Tensor,
                      pii_mask: torch.Tensor) -> torch.Tensor | np.ndarray:
        raise NotImplementedError


def check_pii_mask(pii_mask: torch.Tensor | None, anonymized: torch.Tensor, *, metric: str) -> None:
    """The PII-mask contract of `needs_pii_mask` metrics: bool N x 1 x H x W, the images' N, H, W."""
    if pii_mask is None:
        raise InputError(f"{metric}: needs the PII mask of each pair; only benchmark runs (bench run --method) "
                         "have one")
    expected = (anonymized.shape[0], 1, *anonymized.shape[2:])
    if not isinstance(pii_mask, torch.Tensor) or pii_mask.dtype != torch.bool or tuple(pii_mask.shape) != expected:
        shape = tuple(pii_mask.shape) if isinstance(pii_mask, torch.Tensor) else type(pii_mask).__name__
        raise InputError(f"{metric}: the PII mask must be a bool tensor of shape {expected}, got {shape}")


class FeaturePairMetric(PairMetric):
    """A pair metric computed from per-image features, so shared originals are encoded once."""

    def features(self, images: torch.Tensor) -> Any:
        """Per-image features of a batch; any structure that `select`/`compare` understand."""
        check_inputs(None, images, metric=self.name)
        with torch.inference_mode():
            return self._features(images)

    def compare(self, original_features: Any, anonymized_features: Any) -> np.ndarray:
        with torch.inference_mode():
            values = self._compare(original_features, anonymized_features)
        return np.asarray(values.detach().cpu().double() if isinstance(values, torch.Tensor) else values,
                          dtype=np.float64).reshape(-1)

    @staticmethod
    def select(features: Any, index: torch.Tensor) -> Any:
        """Rows `index` of a feature batch (tensors, or lists/tuples of tensors)."""
        if isinstance(features, (list, tuple)):
            return type(features)(FeaturePairMetric.select(f, index) for f in features)
        return features[index.to(features.device)]

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor | np.ndarray:
        original_features = self._features(original) if self.needs_original else None
        return self._compare(original_features, self._features(anonymized))

    def _features(self, images: torch.Tensor) -> Any:
        raise NotImplementedError

    def _compare(self, original_features: Any, anonymized_features: Any) -> torch.Tensor | np.ndarray:
        raise NotImplementedError


class SetMetric(Metric):
    """A metric of a whole group of pairs (e.g. one method x scope x dataset)."""

    level: ClassVar[str] = "set"
    # Fewer samples than this give a meaningless value; compute() refuses them.
    min_samples: ClassVar[int] = 2
    # Whether several processes' partial states merge into one (`partial_state` on each rank,
    # `merge_partial_states` on rank 0): under torchrun such a metric is computed in shards.
    merges_across_ranks: ClassVar[bool] = False

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, original: torch.Tensor, anonymized: torch.Tensor) -> None:
        raise NotImplementedError

    @property
    def feature_key(self) -> str | None:
        """Names the per-image features `update` is made of (network and weights), or None.
        Set metrics of one key in one run (FID and KID) share one extraction per batch: the
        runner calls `batch_features` once and `update_features` on each."""
        return None

    def batch_features(self, original: torch.Tensor, anonymized: torch.Tensor) -> Any:
        """The checked batch's features, for `update_features` (metrics with a `feature_key`)."""
        raise NotImplementedError

    def update_features(self, features: Any) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError

    def partial_state(self) -> Any:
        """This process's accumulated state, picklable (for `merges_across_ranks` metrics)."""
        raise NotImplementedError

    def merge_partial_states(self, states: Sequence[Any]) -> None:
        """Replace this metric's state by the merge of every process's `partial_state`."""
        raise NotImplementedError


_LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "scikit-image", "lpips", "pytorch-fid", "torchmetrics")


def library_versions() -> dict[str, str]:
    from metrics.installed import version

    return {dist: found for dist in _LIBRARIES if (found := version(dist)) is not None}
