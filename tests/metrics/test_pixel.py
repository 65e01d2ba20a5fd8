"""MSE and PSNR against scikit-image and torchmetrics, per pair."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio
from torchmetrics.functional.image import peak_signal_noise_ratio as torchmetrics_psnr

from metrics.errors import MetricInputError
from metrics.functional import mean_finite
from metrics.pixel import MSE, PSNR
from tests.metrics.common import assert_batch_size_invariant, random_pairs, scores_in_batches

# Both sides compute in float64 from the same float32 pixels: only summation order differs.
REFERENCE_TOLERANCE = 1e-12
# torchmetrics accumulates in float32, so agreement is to float32 resolution only (in dB;
# observed ~2e-6).
TORCHMETRICS_TOLERANCE = 1e-5


def as_hwc64(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("height, width", [(16, 16), (31, 47), (64, 40)])
def test_mse_and_psnr_match_scikit_image_per_pair(height: int, width: int) -> None:
    original, anonymized = random_pairs(5, height, width, seed=height * width, noise=0.3)
    mse_values = MSE().score(original, anonymized)
    psnr_values = PSNR().score(original, anonymized)
    for index in range(len(original)):
        reference_original, reference_anonymized = as_hwc64(original[index]), as_hwc64(anonymized[index])
        assert mse_values[index] == pytest.approx(
            mean_squared_error(reference_original, reference_anonymized), rel=REFERENCE_TOLERANCE
        )
        assert psnr_values[index] == pytest.approx(
            peak_signal_noise_ratio(reference_original, reference_anonymized, data_range=1), rel=REFERENCE_TOLERANCE
        )


def test_psnr_matches_torchmetrics_per_image() -> None:
    original, anonymized = random_pairs(6, 24, 36, seed=3, noise=0.3)
    reference = torchmetrics_psnr(anonymized, original, data_range=1.0, reduction="none", dim=(1, 2, 3))
    np.testing.assert_allclose(PSNR().score(original, anonymized), reference.double().numpy(),
                               rtol=0, atol=TORCHMETRICS_TOLERANCE)


def test_scores_are_float64_and_oriented() -> None:
    original, anonymized = random_pairs(2, 8, 8, seed=4, noise=0.3)
    assert MSE().score(original, anonymized).dtype == np.float64
    assert MSE.higher_is_more_anonymous is True
    assert PSNR.higher_is_more_anonymous is False


def test_identical_images_give_infinite_psnr_and_mean_finite_counts_them() -> None:
    original, anonymized = random_pairs(3, 12, 12, seed=5, noise=0.3)
    anonymized[1] = original[1]
    values = PSNR().score(original, anonymized)
    assert values[1] == math.inf
    assert MSE().score(original, anonymized)[1] == 0.0
    mean, infinite = mean_finite(values)
    assert infinite == 1
    assert mean == pytest.approx((values[0] + values[2]) / 2, rel=1e-15)


def test_mean_finite_of_only_infinite_values_is_nan() -> None:
    mean, infinite = mean_finite(np.array([math.inf, math.inf]))
    assert math.isnan(mean) and infinite == 2


def test_shape_mismatch_is_a_metric_input_error() -> None:
    original, anonymized = random_pairs(1, 12, 12, seed=6, noise=0.3)
    with pytest.raises(MetricInputError, match="differ in shape"):
        PSNR().score(original, anonymized[:, :, :10])


@pytest.mark.parametrize("metric_class", [MSE, PSNR])
def test_batch_size_does_not_change_values(metric_class) -> None:
    original, anonymized = random_pairs(32, 48, 64, seed=7, noise=0.3)
    assert_batch_size_invariant(metric_class(), original, anonymized)


@pytest.mark.parametrize("metric_class", [MSE, PSNR])
@pytest.mark.parametrize(("height", "width"), [(128, 128), (17, 19), (96, 80)])
def test_per_pair_values_are_bit_identical_at_batch_sizes_1_and_32(metric_class, height, width) -> None:
    # 128x128 is where a batched reduction used to differ in the last bits (2.6e-18 on MSE).
    original, anonymized = random_pairs(64, height, width, seed=3, noise=0.3)
    metric = metric_class()
    one, batched = (scores_in_batches(metric, original, anonymized, size) for size in (1, 32))
    assert np.array_equal(one, batched), np.abs(one - batched).max()
