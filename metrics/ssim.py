"""Structural similarity (Wang et al. 2004), and the paper's double-squared variant."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from metrics import functional
from metrics.base import PairMetric


class SSIM(PairMetric):
    """Mean SSIM: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, population covariance.

    Per channel over the valid region, then averaged over channels, data_range 1; equal to
    scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=...) in float64.
    A similarity, so smaller means more anonymous.
    """

    name: ClassVar[str] = "ssim"
    label: ClassVar[str] = "SSIM"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = False
    k1: ClassVar[float] = 0.01
    k2: ClassVar[float] = 0.03
    data_range: ClassVar[float] = 1.0
    sigma: ClassVar[float] = functional.SSIM_SIGMA
    sort_priority: ClassVar[int | None] = 50
    paper_variant: ClassVar[str] = "ssim_paper_compat"
    # scikit-image: what `bench perf`'s naive baseline runs, as the released code did.
    preload_modules: ClassVar[tuple[str, ...]] = ("scipy.ndimage", "skimage.metrics")
    value_range: ClassVar[str] = "[-1, 1]; 1 for identical images"
    convention: ClassVar[str] = ("Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, population "
                                 "covariance, data_range 1, valid region, mean over channels, float64")

    def conventions(self) -> dict[str, Any]:
        return {
            "reference": "Wang et al. 2004",
            "window": f"Gaussian, {functional.gaussian_window(self.sigma).numel()} taps, sigma {self.sigma}",
            "K1": self.k1,
            "K2": self.k2,
            "C1": (self.k1 * self.data_range) ** 2,
            "C2": (self.k2 * self.data_range) ** 2,
            "covariance": "population",
            "data_range": self.data_range,
            "reduction": "mean over the valid region per channel, then over channels",
            "equivalent_to": "skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, "
            "use_sample_covariance=False, data_range=1, channel_axis=2)",
            "precision": "float64",
        }

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        return functional.ssim(
            original, anonymized, k1=self.k1, k2=self.k2, data_range=self.data_range, sigma=self.sigma
        )


class SSIMPaperCompat(SSIM):
    """COMPATIBILITY VARIANT, never the default: SSIM as the PerceptAnon paper's code computed it.

    The released code passed K1=0.01**2 and K2=0.03**2 to scikit-image, which squares them
    again, so C1 = (0.0001)^2 and C2 = (0.0009)^2 instead of Wang et al.'s (0.01)^2 and
    (0.03)^2. Use it only to reproduce the paper's SSIM numbers; use `ssim` otherwise.
    """

    name: ClassVar[str] = "ssim_paper_compat"
    label: ClassVar[str] = "SSIM (paper compat)"
    k1: ClassVar[float] = 0.01**2
    k2: ClassVar[float] = 0.03**2
    # It is the paper's variant; it is never the default sort column.
    sort_priority: ClassVar[int | None] = None
    paper_variant: ClassVar[str] = ""
    convention: ClassVar[str] = ("COMPATIBILITY ONLY: the paper's released code, K1 and K2 squared twice "
                                 "(C1 = 1e-8, C2 = 8.1e-7); otherwise as ssim")

    def conventions(self) -> dict[str, Any]:
        return {
            **super().conventions(),
            "variant": "compatibility with the paper's released code: K1 and K2 squared twice "
            "(skimage called with K1=0.01**2, K2=0.03**2); not Wang et al. 2004, never the default",
            "equivalent_to": "skimage.metrics.structural_similarity(data_range=1, channel_axis=2, win_size=11, "
            "gaussian_weights=True, sigma=1.5, use_sample_covariance=False, K1=0.01**2, K2=0.03**2)",
            "precision": "float64 (the released code filtered float32 images: its values differ by < 1e-6)",
        }
