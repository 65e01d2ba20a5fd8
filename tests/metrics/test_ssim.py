"""SSIM against scikit-image's structural_similarity, and the paper-compatibility variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from metrics.errors import MetricInputError
from metrics.ssim import SSIM, SSIMPaperCompat
from tests.metrics.common import assert_batch_size_invariant, random_pairs

# Both sides compute in float64 with the same 11-tap Gaussian; observed differences are ~1e-16.
REFERENCE_TOLERANCE = 1e-10
# The released code fed float32 images to scikit-image, which then filters in float32
# (observed differences up to ~2e-7).
FLOAT32_REFERENCE_TOLERANCE = 1e-5

WANG_2004 = dict(channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)
# The exact call of the paper's released code (K1, K2 squared once here, again by skimage).
RELEASED_CODE_CALL = dict(data_range=1, channel_axis=2, win_size=11, gaussian_weights=True, sigma=1.5,
                          use_sample_covariance=False, K1=0.01**2, K2=0.03**2)

SIZES = [(11, 11), (12, 11), (17, 23), (33, 64), (65, 49)]


def structured_pairs(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth gradients, a checkerboard and a bright square, then blurred/shifted copies."""
    rows = torch.linspace(0, 1, height).view(-1, 1).expand(height, width)
    cols = torch.linspace(0, 1, width).view(1, -1).expand(height, width)
    checker = ((torch.arange(height).view(-1, 1) // 3 + torch.arange(width).view(1, -1) // 3) % 2).float()
    square = torch.zeros(height, width)
    square[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1.0
    original = torch.stack([
        torch.stack([rows, cols, checker]),
        torch.stack([square, rows * cols, 1 - checker]),
    ])
    blurred = torch.nn.functional.avg_pool2d(original, 3, stride=1, padding=1, count_include_pad=False)
    shifted = torch.roll(original, shifts=(1, 2), dims=(2, 3))
    return torch.cat([original, original]), torch.cat([blurred, shifted]).clamp(0, 1)


def reference(original: torch.Tensor, anonymized: torch.Tensor, dtype=torch.float64, **call) -> np.ndarray:
    return np.array([
        structural_similarity(o.permute(1, 2, 0).to(dtype).numpy(), a.permute(1, 2, 0).to(dtype).numpy(), **call)
        for o, a in zip(original, anonymized)
    ])


@pytest.mark.parametrize("height, width", SIZES)
def test_ssim_matches_scikit_image_on_random_images(height: int, width: int) -> None:
    original, anonymized = random_pairs(3, height, width, seed=height + 100 * width)
    np.testing.assert_allclose(SSIM().score(original, anonymized), reference(original, anonymized, **WANG_2004),
                               rtol=0, atol=REFERENCE_TOLERANCE)


@pytest.mark.parametrize("height, width", [(11, 11), (29, 41), (64, 64)])
def test_ssim_matches_scikit_image_on_structured_images(height: int, width: int) -> None:
    original, anonymized = structured_pairs(height, width)
    np.testing.assert_allclose(SSIM().score(original, anonymized), reference(original, anonymized, **WANG_2004),
                               rtol=0, atol=REFERENCE_TOLERANCE)


def test_identical_images_have_ssim_one() -> None:
    original, _ = random_pairs(2, 20, 20, seed=1)
    np.testing.assert_allclose(SSIM().score(original, original.clone()), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("height, width", [(11, 11), (17, 23), (48, 40)])
def test_paper_compat_matches_the_released_scikit_image_call(height: int, width: int) -> None:
    original, anonymized = random_pairs(3, height, width, seed=height * width)
    values = SSIMPaperCompat().score(original, anonymized)
    np.testing.assert_allclose(values, reference(original, anonymized, **RELEASED_CODE_CALL),
                               rtol=0, atol=REFERENCE_TOLERANCE)
    np.testing.assert_allclose(values, reference(original, anonymized, dtype=torch.float32, **RELEASED_CODE_CALL),
                               rtol=0, atol=FLOAT32_REFERENCE_TOLERANCE)


def test_paper_compat_differs_from_wang_2004() -> None:
    original, anonymized = structured_pairs(32, 32)
    difference = np.abs(SSIMPaperCompat().score(original, anonymized) - SSIM().score(original, anonymized))
    # The constants only matter where local means and variances are small, so gaps vary by image.
    assert difference.min() > 1e-4
    assert SSIMPaperCompat().key() != SSIM().key()
    assert "never the default" in SSIMPaperCompat().card().details["variant"]


@pytest.mark.parametrize("height, width", [(10, 40), (40, 10), (5, 5)])
def test_images_smaller_than_the_window_are_refused(height: int, width: int) -> None:
    original, anonymized = random_pairs(1, height, width, seed=2)
    with pytest.raises(MetricInputError, match="smaller than its 11-pixel"):
        SSIM().score(original, anonymized)


def test_orientation() -> None:
    assert SSIM.higher_is_more_anonymous is False
    assert SSIMPaperCompat.higher_is_more_anonymous is False


@pytest.mark.parametrize("metric_class", [SSIM, SSIMPaperCompat])
def test_batch_size_does_not_change_values(metric_class) -> None:
    original, anonymized = random_pairs(32, 48, 64, seed=9)
    assert_batch_size_invariant(metric_class(), original, anonymized)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_does_not_change_values(threads: int) -> None:
    """On CPUs the planes are filtered over torch's thread count; every plane is reduced whole."""
    original, anonymized = random_pairs(12, 96, 128, seed=4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = SSIM().score(original, anonymized)
        torch.set_num_threads(threads)
        threaded = SSIM().score(original, anonymized)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(threaded, single)


def test_cpu_steps_agree_with_the_whole_batch_torch_path() -> None:
    """The numpy steps (CPU) and the one-pass torch maths (GPU, autograd) compute one formula:
    only the summation order of the mean differs, so the values agree to float64 rounding."""
    from metrics import functional

    original, anonymized = random_pairs(6, 64, 80, seed=5)
    stepped = functional.ssim(original, anonymized)
    whole = functional.ssim(original.requires_grad_(), anonymized).detach()
    np.testing.assert_allclose(stepped.numpy(), whole.numpy(), rtol=0, atol=1e-14)
