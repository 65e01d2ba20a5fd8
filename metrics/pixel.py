"""Pixel-difference metrics: MSE and PSNR of each (original, anonymized) pair."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from metrics import functional
from metrics.base import PairMetric

_PIXEL_CONVENTIONS = {
    "data_range": 1.0,
    "reduction": "mean over channels and pixels of each pair",
    "precision": "float64",
}


class MSE(PairMetric):
    """Mean squared error on [0, 1] RGB: a distance, so larger means more anonymous."""

    name: ClassVar[str] = "mse"
    tradeoff_privacy_priority: ClassVar[int | None] = 7
    label: ClassVar[str] = "MSE"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True
    value_range: ClassVar[str] = "[0, 1]"
    convention: ClassVar[str] = "mean of squared differences of [0, 1] RGB over channels and pixels, float64"

    def conventions(self) -> dict[str, Any]:
        return dict(_PIXEL_CONVENTIONS)

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        return functional.mse(original, anonymized)


class PSNR(PairMetric):
    """Peak signal-to-noise ratio in dB with data_range 1; identical images score +inf."""

    name: ClassVar[str] = "psnr"
    label: ClassVar[str] = "PSNR"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = False
    data_range: ClassVar[float] = 1.0
    infinite_means: ClassVar[str] = "identical images: PSNR = +inf"
    value_range: ClassVar[str] = "[0, +inf] dB; +inf for identical images"
    convention: ClassVar[str] = ("10 log10(1 / MSE) with data_range 1, per pair; means count +inf pairs apart "
                                 "instead of averaging them")

    def conventions(self) -> dict[str, Any]:
        return {
            **_PIXEL_CONVENTIONS,
            "identical_images": "+inf per pair; means over images use metrics.functional.mean_finite",
        }

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        return functional.psnr(original, anonymized, data_range=self.data_range)
