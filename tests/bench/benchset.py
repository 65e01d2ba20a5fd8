"""Helpers for the benchmark tests: a tiny benchmark set, methods that break the contract in
each way, and small metrics (a set metric, a pair metric with stand-in weights).

The methods and metrics are reached the way a user reaches theirs: by
``tests.bench.benchset:NAME`` (module:function / module:Class).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from metrics.base import PairMetric, SetMetric, WeightsRecord, check_inputs
from metrics.errors import MetricInputError

THIS = "tests.bench.benchset"
#: (height, width) of each original: two portrait, one landscape, one square.
SIZES = ((28, 24), (30, 26), (24, 32), (26, 26))
BOX = (2, 3, 16, 17)  # 14 x 14: wide enough for SSIM's 11-pixel window
#: The built-in methods and the reference method, all run beside a user's method.
BUILTINS = ("mask", "blur", "pixelate", "inpaint", "identity")


def write_benchmark_set(folder: Path, *, seed: int = 0) -> Path:
    """4 random originals in coco/ and lfw/, one PII box each; a mask file for two of them."""
    rng = np.random.default_rng(seed)
    pii = {}
    for i, (height, width) in enumerate(SIZES):
        dataset = ("coco", "lfw")[i % 2]
        key = f"originals/{dataset}/img{i}.png"
        path = folder / "images" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        pii[key] = [list(BOX)]
        if i % 2 == 0:
            mask = np.zeros((height, width), dtype=np.uint8)
            x0, y0, x1, y1 = BOX
            mask[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = 255
            mask_path = folder / "masks" / dataset / f"img{i}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mask_path)
    (folder / "pii.json").write_text(json.dumps(pii, indent=1))
    return folder


# ----------------------------------------------------------------------------- methods
def invert(image, pii_mask, boxes):
    """A well-behaved method: inverts the PII pixels."""
    out = image.copy()
    out[pii_mask] = 255 - out[pii_mask]
    return out


def identity(image, pii_mask, boxes):
    """Changes nothing: PSNR of every pair is +inf."""
    return image


def raises_on_landscape(image, pii_mask, boxes):
    """Fails on the one landscape original (img2), inverts the others."""
    if image.shape[1] > image.shape[0]:
        raise ValueError("landscape images are not supported")
    return invert(image, pii_mask, boxes)


def wrong_shape(image, pii_mask, boxes):
    return image[:-1]


def wrong_dtype(image, pii_mask, boxes):
    return image.astype(np.int64)


def nan_output(image, pii_mask, boxes):
    out = image.astype(np.float32)
    out[pii_mask] = np.nan
    return out


# ----------------------------------------------------------------------------- metrics
class MeanShift(SetMetric):
    """Mean absolute difference over a whole group; needs 3 pairs."""

    name: ClassVar[str] = "mean_shift"
    label: ClassVar[str] = "Mean shift"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True
    min_samples: ClassVar[int] = 3

    def reset(self) -> None:
        self._differences: list[np.ndarray] = []

    def update(self, original: torch.Tensor, anonymized: torch.Tensor) -> None:
        check_inputs(original, anonymized, metric=self.name)
        self._differences.append((anonymized - original).abs().mean(dim=(1, 2, 3)).double().cpu().numpy())

    def compute(self) -> float:
        values = np.concatenate(self._differences) if self._differences else np.zeros(0)
        if len(values) < self.min_samples:
            raise MetricInputError(f"{self.name}: {len(values)} pairs, needs {self.min_samples}")
        return float(values.mean())


class StandInDistance(PairMetric):
    """Mean absolute difference per pair, declared to come from stand-in weights."""

    name: ClassVar[str] = "stand_in_distance"
    label: ClassVar[str] = "Stand-in dist."
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True

    def weights(self) -> list[WeightsRecord]:
        return [WeightsRecord(name="made-up", sha256="0" * 64, status="stand-in")]

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        return (anonymized - original).abs().mean(dim=(1, 2, 3))
