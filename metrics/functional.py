"""Pure metric maths: stateless torch/numpy functions on batched NCHW tensors.

Adapters in `metrics/*.py` wrap these with metadata, input checks and weights; everything
that decides a value lives here so it can be tested against reference implementations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metrics.errors import MetricInputError

# ==== pixel and SSIM: mse, psnr, mean_finite, ssim ========================================

# On CPUs the float64 maths below runs a few images at a time: one step's intermediates then
# stay in cache, while a whole batch's stream through memory, each freshly allocated (32
# pairs of 256x256 on a 2-core EPYC: MSE 50 ms -> 4 ms, SSIM 2x faster). GPUs take it whole.
_CPU_STEP_ELEMENTS = 1 << 18


def _in_steps(function: Callable[..., torch.Tensor], *batches: torch.Tensor) -> torch.Tensor:
    """`function(*batches)`, on CPUs over a few items (first dimension) at a time, joined."""
    first = batches[0]
    step = _cpu_step(first[0].numel()) if len(first) else 1
    if first.device.type != "cpu" or len(first) <= step:
        return function(*batches)
    return torch.cat([function(*(batch[start:start + step] for batch in batches))
                      for start in range(0, len(first), step)])


def _cpu_step(item_elements: int) -> int:
    """Items per CPU step: as many as fit in `_CPU_STEP_ELEMENTS`, at least one."""
    return max(1, _CPU_STEP_ELEMENTS // max(1, item_elements))


def mse(original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each pair over channels and pixels, float64, shape (N,)."""
    return _in_steps(_mse, original, anonymized)


def _mse(original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
    # Each image is reduced on its own, as one contiguous vector: a reduction over dim 1 of
    # an (N, M) tensor splits its work by N, so the summation order -- and the last bits of
    # the value (2.6e-18 at 128x128) -- would depend on how many images share the batch.
    difference = original.double() - anonymized.double()
    squared = difference.square().flatten(1)
    if len(squared) == 0:
        return squared.sum(dim=1)
    return torch.stack([row.contiguous().mean() for row in squared])


def psnr(original: torch.Tensor, anonymized: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio of each pair in dB, float64; identical images give +inf."""
    return 10.0 * torch.log10(data_range**2 / mse(original, anonymized))


def mean_finite(values: np.ndarray | torch.Tensor) -> tuple[float, int]:
    """(mean of the finite values, number of infinite values).

    PSNR of identical images is +inf; averaging it would swallow every other pair, so such
    pairs are counted instead. NaN is not dropped: it propagates into the mean.
    """
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    infinite = np.isinf(array)
    kept = array[~infinite]
    return (float(kept.mean()) if kept.size else math.nan), int(infinite.sum())


# The Gaussian window of Wang et al. 2004 as scikit-image builds it: scipy.ndimage's
# radius int(truncate * sigma + 0.5) with truncate 3.5 gives 11 taps at sigma 1.5.
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, float64, exactly scipy.ndimage.gaussian_filter's."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def _valid_line_filter(planes: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """`_valid_gaussian_blur` on CPU arrays with scipy's separable line filter.

    torch has no fast float64 convolution on CPUs (it copies every plane once per tap and
    multiplies by a vector); scipy's float64 line filter sums the same taps about 5x faster.
    """
    import scipy.ndimage

    radius = len(taps) // 2
    # Outputs near the border read the padding; they are cropped, so its mode does not matter.
    columns = scipy.ndimage.correlate1d(planes, taps, axis=-2, mode="constant")[..., radius:-radius, :]
    return scipy.ndimage.correlate1d(columns, taps, axis=-1, mode="constant")[..., radius:-radius]


def _valid_gaussian_blur(planes: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (B, 1, H, W) planes, keeping only the 'valid' region.

    scikit-image filters with reflect padding and then crops (win_size - 1) // 2 pixels at
    every border before averaging. The crop equals the filter radius, so no cropped-in pixel
    ever reads the padding: an unpadded convolution gives the same values with less work.
    """
    if planes.device.type == "cpu" and not planes.requires_grad:
        return torch.from_numpy(_valid_line_filter(planes.numpy(), window.numpy()))
    taps = window.to(planes.device, planes.dtype)
    blurred = torch.nn.functional.conv2d(planes, taps.view(1, 1, -1, 1))
    return torch.nn.functional.conv2d(blurred, taps.view(1, 1, 1, -1))


def ssim(
    original: torch.Tensor,
    anonymized: torch.Tensor,
    *,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
    sigma: float = SSIM_SIGMA,
) -> torch.Tensor:
    """Mean SSIM of each pair (Wang et al. 2004), float64, shape (N,).

    Gaussian-weighted local statistics with population covariance, per channel, averaged
    over the valid region and then over channels: scikit-image's structural_similarity(
    gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=data_range,
    K1=k1, K2=k2, channel_axis=...) computed in float64.
    """
    window = gaussian_window(sigma)
    height, width = original.shape[-2:]
    if min(height, width) < window.numel():
        raise MetricInputError(
            f"ssim: images of {height} x {width} pixels are smaller than its {window.numel()}-pixel "
            f"Gaussian window; drop or upscale images under {window.numel()} x {window.numel()}"
        )
    batch, channels = original.shape[:2]
    x = original.reshape(batch * channels, 1, height, width)
    y = anonymized.reshape(batch * channels, 1, height, width)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    per_plane = _plane_means(lambda x_part, y_part: _ssim_map(x_part, y_part, window, c1, c2), x, y)
    return per_plane.reshape(batch, channels).mean(dim=1)


def _plane_means(map_of: Callable[[Any, Any], Any], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean of `map_of(x, y)` over each (P, 1, H, W) plane pair, float64, shape (P,).

    On CPUs the planes go as numpy arrays, a few at a time (`_CPU_STEP_ELEMENTS`), over as
    many threads as torch computes with: numpy and scipy release the GIL, and each step's
    filter runs on one core. torch ops in those threads would not do: each would wake torch's
    OpenMP workers, whose spinning took the cores from the filters (SSIM came out slower than
    on one thread). Each plane is reduced on its own, so values do not depend on the split.
    """
    if x.device.type != "cpu" or x.requires_grad:
        return map_of(x, y).flatten(1).mean(dim=1)
    x_planes, y_planes = x.detach().numpy(), y.detach().numpy()
    step = _cpu_step(x_planes[0].size) if len(x_planes) else 1

    def step_means(start: int) -> np.ndarray:
        part = map_of(x_planes[start:start + step], y_planes[start:start + step])
        return part.reshape(len(part), -1).mean(axis=1)

    starts = range(0, len(x_planes), step)
    threads = min(torch.get_num_threads(), len(starts))
    means = list(_step_pool(threads).map(step_means, starts) if threads > 1 else map(step_means, starts))
    return torch.from_numpy(np.concatenate(means)) if means else torch.zeros(0, dtype=torch.float64)


@functools.cache
def _step_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="metrics-steps")


def _ssim_map(x: Any, y: Any, window: torch.Tensor, c1: float, c2: float) -> Any:
    """The SSIM map over the valid region of each (P, 1, H, W) plane pair, in float64: torch
    tensors, or numpy arrays (`_plane_means` on CPUs), with the same arithmetic."""
    if isinstance(x, np.ndarray):
        x, y = x.astype(np.float64, copy=False), y.astype(np.float64, copy=False)
        moments = _valid_line_filter(np.concatenate([x, y, x * x, y * y, x * y]), window.numpy())
    else:
        x, y = x.double(), y.double()
        # One filter pass over all five local moments.
        moments = _valid_gaussian_blur(torch.cat([x, y, x * x, y * y, x * y]), window)
    planes = len(x)
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = (moments[i * planes:(i + 1) * planes] for i in range(5))
    var_x = mean_xx - mean_x * mean_x
    var_y = mean_yy - mean_y * mean_y
    cov_xy = mean_xy - mean_x * mean_y
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)) / (
        (mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)
    )
    return ssim_map


def background_ssim(original: torch.Tensor, anonymized: torch.Tensor, pii_mask: torch.Tensor, *,
                    k1: float = 0.01, k2: float = 0.03, data_range: float = 1.0,
                    sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """SSIM of the background of each pair, float64 (N,): how untouched the image is outside
    its PII region (`pii_mask`, N x 1 x H x W bool, True on PII).

    The anonymized image's PII pixels are first replaced by the original's, so a window that
    straddles the PII border compares only what the method did to the background; the SSIM
    map (as `ssim`: valid region, Gaussian window) is then averaged over the window centres
    outside the PII region, per channel, then over channels. A method that changes only PII
    pixels scores exactly 1 (every compared window is bit-identical, and the SSIM formula of
    two equal windows is exactly 1 in floating point). NaN where no centre is outside the PII.
    """
    window = gaussian_window(sigma)
    height, width = original.shape[-2:]
    if min(height, width) < window.numel():
        raise MetricInputError(
            f"background_ssim: images of {height} x {width} pixels are smaller than its {window.numel()}-pixel "
            "Gaussian window"
        )
    mask = pii_mask.to(torch.bool)
    composite = torch.where(mask, original, anonymized)
    batch, channels = original.shape[:2]
    x = original.reshape(batch * channels, 1, height, width)
    y = composite.reshape(batch * channels, 1, height, width)
    maps = _ssim_map(x, y, window, (k1 * data_range) ** 2, (k2 * data_range) ** 2).reshape(batch, channels, -1)
    radius = window.numel() // 2
    outside = ~mask[:, :, radius:height - radius, radius:width - radius].reshape(batch, 1, -1).to(maps.device)
    kept = outside.expand_as(maps).double()
    counts = kept.sum(dim=2)
    per_channel = (maps * kept).sum(dim=2) / counts
    return torch.where(counts[:, 0] > 0, per_channel.mean(dim=1), torch.full_like(counts[:, 0], math.nan))


def background_psnr(original: torch.Tensor, anonymized: torch.Tensor, pii_mask: torch.Tensor,
                    data_range: float = 1.0) -> torch.Tensor:
    """PSNR (dB) over the pixels outside the PII region, float64 (N,): the MSE is the mean
    over those pixels and every channel; +inf when the background is unchanged, NaN when
    there is no background."""
    outside = (~pii_mask.to(torch.bool)).expand_as(original).flatten(1).double()
    squared = (original.double() - anonymized.double()).square().flatten(1)
    counts = outside.sum(dim=1)
    mse_outside = torch.stack([(row * keep).sum() for row, keep in zip(squared, outside)]) / counts \
        if len(squared) else squared.sum(dim=1)
    values = 10.0 * torch.log10(data_range**2 / mse_outside)
    return torch.where(counts > 0, values, torch.full_like(values, math.nan))


# ==== end of pixel and SSIM ===============================================================


# ==== FID, KID and Inception-feature distances ============================================
# Features are (N, D) arrays of per-image network activations (pool3, D = 2048, for FID).
# Set metrics reduce them to sufficient statistics (mean, covariance) or kernel sums, in
# float64, so that groups can be merged and compared with reference implementations.


def squared_feature_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """||a - b||^2 per row, float64: the Frechet distance between two point masses."""
    return (features_a.double() - features_b.double()).square().sum(dim=1)


def _as_feature_matrix(features: np.ndarray | torch.Tensor, *, role: str) -> np.ndarray:
    array = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if array.ndim != 2:
        raise MetricInputError(f"{role} features must be N x D, got shape {array.shape}")
    if not np.isfinite(array).all():
        # A NaN covariance makes scipy's sqrtm run forever; refuse before it gets there.
        raise MetricInputError(f"{role} features contain NaN or infinity; check the images and the weights")
    return array


def feature_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sample covariance with ddof 1) of N x D features, as pytorch-fid computes them."""
    array = _as_feature_matrix(features, role="FID")
    if array.shape[0] < 2:
        raise MetricInputError(f"a covariance needs at least 2 samples, got {array.shape[0]}: "
                               "FID of a single image is undefined; use a per-pair distance")
    return array.mean(axis=0), np.cov(array, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), as pytorch-fid does it.

    The product of two covariances estimated from fewer samples than dimensions is singular;
    when its square root is not finite, eps is added to both diagonals (pytorch-fid's
    fallback). A tiny imaginary part from rounding is dropped; a large one is an error.
    """
    import warnings

    import scipy.linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise MetricInputError(f"Frechet distance of mismatched statistics: means {mu1.shape} and {mu2.shape}, "
                               f"covariances {sigma1.shape} and {sigma2.shape}")
    with warnings.catch_warnings():
        # Singular for every group of fewer than D + 1 images: expected, and handled below.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise MetricInputError(f"FID: the covariance product's square root has an imaginary part of "
                                   f"{np.abs(covmean.imag).max():.3g}; use more samples per group")
        covmean = covmean.real
    difference = mu1 - mu2
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def polynomial_mmd(features_a: np.ndarray, features_b: np.ndarray, *, degree: int = 3,
                   gamma: float | None = None, coef: float = 1.0) -> float:
    """Unbiased squared MMD of two equal-size samples under k(x, y) = (gamma x.y + coef)^degree,
    gamma = 1/D by default (Binkowski et al. 2018; torchmetrics' and torch-fidelity's KID)."""
    size = features_a.shape[0]
    gamma = 1.0 / features_a.shape[1] if gamma is None else gamma

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (gamma * (x @ y.T) + coef) ** degree

    within_a, within_b = kernel(features_a, features_a), kernel(features_b, features_b)
    # The unbiased estimator leaves out each sample's kernel with itself.
    off_diagonal = within_a.sum() - np.trace(within_a) + within_b.sum() - np.trace(within_b)
    return float(off_diagonal / (size * (size - 1)) - 2 * kernel(features_a, features_b).mean())


def kid(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor, *, subsets: int = 100,
        subset_size: int = 1000, degree: int = 3, gamma: float | None = None, coef: float = 1.0,
        rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, population std) of the polynomial MMD over random
    subsets, as torchmetrics defines it, with subset_size capped at the smaller sample.

    When the subsets are the whole of both samples every draw gives the same value (the
    MMD ignores order), so it is computed once and the std is 0.
    """
    array_a, array_b = _as_feature_matrix(features_a, role="KID"), _as_feature_matrix(features_b, role="KID")
    size = min(subset_size, array_a.shape[0], array_b.shape[0])
    if size < 2:
        raise MetricInputError(f"KID needs at least 2 samples per set, got {array_a.shape[0]} and {array_b.shape[0]}")
    if size == array_a.shape[0] == array_b.shape[0]:
        return polynomial_mmd(array_a, array_b, degree=degree, gamma=gamma, coef=coef), 0.0
    rng = rng or np.random.default_rng(0)
    values = [
        polynomial_mmd(array_a[rng.permutation(array_a.shape[0])[:size]],
                       array_b[rng.permutation(array_b.shape[0])[:size]], degree=degree, gamma=gamma, coef=coef)
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


@dataclass(frozen=True)
class KIDEstimate:
    """KID of paired sets with its spread: `value` is the mean over subsets, `std` the
    population std over subsets (torchmetrics' kid_std; 0 when one evaluation covers the whole
    group), `stderr` a jackknife standard error of `value`, and [ci_low, ci_high] the normal
    95% interval value +- 1.96 stderr; n pairs, of which `subset_size` per evaluation."""

    value: float
    std: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int
    subset_size: int


def _paired_terms(features_a: np.ndarray, features_b: np.ndarray, degree: int, gamma: float | None,
                  coef: float) -> np.ndarray:
    """h_ij = k(a_i, a_j) + k(b_i, b_j) - k(a_i, b_j) - k(a_j, b_i) for i != j, 0 on the diagonal."""
    gamma = 1.0 / features_a.shape[1] if gamma is None else gamma

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (gamma * (x @ y.T) + coef) ** degree

    cross = kernel(features_a, features_b)
    terms = kernel(features_a, features_a) + kernel(features_b, features_b) - cross - cross.T
    np.fill_diagonal(terms, 0.0)
    return terms


def _paired_mmd_and_jackknife(terms: np.ndarray) -> tuple[float, float]:
    """The U-statistic sum_{i != j} h_ij / (m (m - 1)) and its jackknife variance (NaN for m < 3):
    leaving pair i out removes row and column i, so theta_(i) = (S - 2 r_i) / ((m - 1)(m - 2))."""
    size = terms.shape[0]
    total = terms.sum()
    value = float(total / (size * (size - 1)))
    if size < 3:
        return value, math.nan
    left_out = (total - 2.0 * terms.sum(axis=1)) / ((size - 1) * (size - 2))
    return value, float((size - 1) / size * ((left_out - left_out.mean()) ** 2).sum())


def paired_kid(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor, *, subsets: int = 100,
               subset_size: int = 1000, degree: int = 3, gamma: float | None = None, coef: float = 1.0,
               rng: np.random.Generator | None = None) -> KIDEstimate:
    """KID of PAIRED sets (row i of b is the anonymized version of row i of a).

    torchmetrics' unbiased MMD^2 (`polynomial_mmd`) averages the cross kernel over all m^2
    couples; that is unbiased for independent samples, but with pairs the m matched couples
    k(a_i, b_i) are not draws from the product of the two distributions. For a method that
    changes nothing (b = a) they are self-kernels, larger than the rest, and the estimate is
    (2/m)(mean off-diagonal - mean diagonal kernel) < 0: about -0.07 for 8 pairs of Inception
    features. Leaving the matched couples out (Gretton et al. 2012, MMD^2_u: the U-statistic
    over pairs i != j) is unbiased for the MMD^2 of the two distributions whatever the
    dependence within a pair, and exactly 0 for identical sets. Subsets draw the same rows
    from both sets, so they stay paired."""
    array_a, array_b = _as_feature_matrix(features_a, role="KID"), _as_feature_matrix(features_b, role="KID")
    if array_a.shape != array_b.shape:
        raise MetricInputError(f"paired KID needs as many anonymized as original images, got {array_a.shape[0]} "
                               f"and {array_b.shape[0]}")
    n = array_a.shape[0]
    size = min(subset_size, n)
    if size < 2:
        raise MetricInputError(f"KID needs at least 2 samples per set, got {n}")
    if size == n:
        value, variance = _paired_mmd_and_jackknife(_paired_terms(array_a, array_b, degree, gamma, coef))
        values = np.array([value])
    else:
        rng = rng or np.random.default_rng(0)
        draws = [rng.permutation(n)[:size] for _ in range(subsets)]
        results = [_paired_mmd_and_jackknife(_paired_terms(array_a[rows], array_b[rows], degree, gamma, coef))
                   for rows in draws]
        values = np.array([v for v, _ in results])
        value = float(values.mean())
        # The U-statistic's variance falls as 1/m: a subset's jackknife variance, scaled to n.
        variance = float(np.mean([v for _, v in results])) * size / n
    stderr = math.sqrt(variance) if math.isfinite(variance) else math.nan
    return KIDEstimate(value=value, std=float(values.std()), stderr=stderr, ci_low=value - 1.96 * stderr,
                       ci_high=value + 1.96 * stderr, n=n, subset_size=size)


# ==== end of FID, KID and Inception-feature distances =====================================
