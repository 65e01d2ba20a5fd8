"""Utility metrics: background preservation (against scikit-image / numpy), the task hook,
and the direction contract of the utility family."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from bench.data import images
from bench.data.benchmark_set import load_benchmark_set
from bench.data.demo import DEMO_FOLDER
from bench.flows.benchmark import _pii_mask
from bench.methods import builtin_methods, anonymize
from metrics.errors import MetricInputError
from metrics.registry import BUILTIN_METRICS, build_metric, metric_class
from metrics.utility import BackgroundPSNR, BackgroundSSIM, TaskUtility


def _tensor(array):
    return torch.from_numpy(images.to_float(np.stack(array))).permute(0, 3, 1, 2).contiguous()


def _pairs(seed=0, n=3, size=(40, 36)):
    rng = np.random.default_rng(seed)
    originals = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    anonymized = np.clip(originals.astype(int) + rng.integers(-60, 60, originals.shape), 0, 255).astype(np.uint8)
    masks = np.zeros((n, *size), dtype=bool)
    for i in range(n):
        y0, x0 = rng.integers(0, 15, 2)
        masks[i, y0:y0 + 14 + i, x0:x0 + 12] = True
    return originals, anonymized, masks


def _mask_tensor(masks):
    return torch.from_numpy(masks)[:, None]


def test_background_ssim_matches_scikit_image_full_map():
    originals, anonymized, masks = _pairs()
    values = BackgroundSSIM().score(_tensor(originals), _tensor(anonymized), pii_mask=_mask_tensor(masks))
    radius = 5
    for i in range(len(originals)):
        # The metric's inputs are float32 (bench.data.images.to_float); the reference gets the same numbers.
        x = images.to_float(originals[i]).astype(np.float64)
        y = np.where(masks[i][..., None], x, images.to_float(anonymized[i]).astype(np.float64))
        _, full = structural_similarity(x, y,
                                        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0, channel_axis=2, full=True)
        keep = ~masks[i][radius:-radius, radius:-radius]
        expected = np.mean([full[radius:-radius, radius:-radius, c][keep].mean() for c in range(3)])
        assert values[i] == pytest.approx(expected, abs=1e-10)
    assert (values < 1).all()


def test_background_psnr_matches_numpy():
    originals, anonymized, masks = _pairs(seed=1)
    values = BackgroundPSNR().score(_tensor(originals), _tensor(anonymized), pii_mask=_mask_tensor(masks))
    for i in range(len(originals)):
        outside = ~masks[i]
        difference = (images.to_float(originals[i])[outside].astype(np.float64)
                      - images.to_float(anonymized[i])[outside].astype(np.float64))
        assert values[i] == pytest.approx(10 * np.log10(1 / np.mean(difference**2)), abs=1e-9)


@pytest.mark.parametrize("metric", [BackgroundSSIM, BackgroundPSNR])
def test_background_metrics_do_not_depend_on_the_batch_size(metric):
    originals, anonymized, masks = _pairs(seed=2, n=5)
    together = metric().score(_tensor(originals), _tensor(anonymized), pii_mask=_mask_tensor(masks))
    alone = np.concatenate([metric().score(_tensor(originals[i:i + 1]), _tensor(anonymized[i:i + 1]),
                                           pii_mask=_mask_tensor(masks[i:i + 1])) for i in range(5)])
    np.testing.assert_array_equal(together, alone)


def test_a_changed_pii_region_alone_keeps_the_background_at_its_maximum_and_no_background_is_nan():
    originals, anonymized, masks = _pairs(seed=3)
    only_pii = np.where(masks[..., None], anonymized, originals)
    ssim = BackgroundSSIM().score(_tensor(originals), _tensor(only_pii), pii_mask=_mask_tensor(masks))
    psnr = BackgroundPSNR().score(_tensor(originals), _tensor(only_pii), pii_mask=_mask_tensor(masks))
    assert (ssim == 1.0).all() and np.isposinf(psnr).all()
    everything = np.ones_like(masks)
    assert np.isnan(BackgroundSSIM().score(_tensor(originals), _tensor(anonymized),
                                           pii_mask=_mask_tensor(everything))).all()
    assert np.isnan(BackgroundPSNR().score(_tensor(originals), _tensor(anonymized),
                                           pii_mask=_mask_tensor(everything))).all()


def test_background_metrics_refuse_a_missing_or_misshapen_mask():
    originals, anonymized, masks = _pairs()
    with pytest.raises(MetricInputError, match="needs the PII mask"):
        BackgroundSSIM().score(_tensor(originals), _tensor(anonymized))
    with pytest.raises(MetricInputError, match="bool tensor of shape"):
        BackgroundSSIM().score(_tensor(originals), _tensor(anonymized), pii_mask=torch.from_numpy(masks))


@pytest.mark.slow  # ~20 s: biharmonic inpainting of the 8 demo originals
def test_on_the_demo_global_images_background_ssim_is_exactly_one_for_every_builtin():
    """The paper's Figure 3 setting: PII anonymized, background kept."""
    benchmark_set = load_benchmark_set("fixtures")
    assert benchmark_set.folder == DEMO_FOLDER
    metrics = (BackgroundSSIM(), BackgroundPSNR())
    checked = 0
    for original in benchmark_set.originals:
        image = images.load_rgb(original.path)
        mask = _pii_mask(original, *image.shape[:2])
        assert original.mask_path is not None and 0 < mask.mean() < 1  # a real silhouette, with background
        for method in builtin_methods():
            output = anonymize(method, image, mask, original.boxes, where=original.key)
            ssim, psnr = (m.score(_tensor([image]), _tensor([output]), pii_mask=_mask_tensor(mask[None]))[0]
                          for m in metrics)
            assert ssim == 1.0, (method.name, original.key, ssim)
            assert psnr == math.inf, (method.name, original.key, psnr)
            checked += 1
    assert checked == len(benchmark_set.originals) * len(builtin_methods()) == 40


# --------------------------------------------------------------------------- task hook
def brightness(image):
    """A stand-in task: mean brightness in [0, 1]."""
    return float(image.mean() / 255)


def picky(image):
    if image.shape[0] > 30:
        raise ValueError("too tall")
    return 1.0


def test_task_utility_scores_the_users_function_on_the_anonymized_image():
    originals, anonymized, _ = _pairs()
    metric = build_metric("task", function=f"{__name__}:brightness")
    values = metric.score(_tensor(originals), _tensor(anonymized))
    np.testing.assert_allclose(values, anonymized.reshape(3, -1).mean(axis=1) / 255, rtol=0, atol=1e-12)
    assert metric.config()["function"] == f"{__name__}:brightness" and len(metric.config()["source_sha256"]) == 64
    assert metric.display_label == f"Task utility ({__name__}:brightness)"
    with pytest.raises(MetricInputError, match="task function .*picky failed: ValueError: too tall"):
        TaskUtility(function=f"{__name__}:picky").score(_tensor(originals), _tensor(anonymized))
    with pytest.raises(MetricInputError, match="cannot import it"):
        TaskUtility(function="no_such_module_here:f")
    with pytest.raises(MetricInputError, match="module:function"):
        TaskUtility(function="")


# --------------------------------------------------------------------------- family contract
@pytest.mark.parametrize("name", sorted(BUILTIN_METRICS))
def test_every_metric_states_a_consistent_family_and_direction(name):
    cls = metric_class(name)
    assert cls.family in ("perceptual", "utility")
    assert cls.higher_is_more_useful in (None, True, False)
    if cls.family == "utility":
        assert cls.higher_is_more_useful is not None and cls.utility_view
        assert cls.higher_is_more_anonymous is (not cls.higher_is_more_useful)
    if cls.higher_is_more_useful is not None:
        assert cls.utility_view
    assert {"lpips", "fid", "kid"} <= {n for n in BUILTIN_METRICS if metric_class(n).utility_view == "realism"}


def test_an_annotation_table_has_no_masks_so_background_metrics_are_skipped_with_a_reason(tmp_path):
    from bench.data.dataset import load_pairs
    from bench.scoring.runner import score_pairs
    from bench.scoring.store import ResultsStore

    table = load_pairs(DEMO_FOLDER / "HA1.csv", root=DEMO_FOLDER / "images")
    with ResultsStore(tmp_path / "r.sqlite") as store:
        result = score_pairs(table, ["background_ssim", "mse"], store=store, device="cpu", progress=False)
    outcomes = {m.name: m for m in result.metrics}
    assert outcomes["mse"].status == "ok"
    assert outcomes["background_ssim"].status == "unavailable"
    assert "needs each pair's PII mask" in outcomes["background_ssim"].reason
    assert "\n" not in outcomes["background_ssim"].reason


# --------------------------------------------------------------------------- faces
def test_landmark_displacement_by_hand():
    from metrics.utility import inter_ocular_distance, landmark_displacement

    # Eye corners at x = 0, 2 and 8, 10 (y = 0): eye centres 1 and 9, IOD = 8.
    points = np.array([[0, 0], [2, 0], [8, 0], [10, 0], [5, 6]], dtype=float)
    assert inter_ocular_distance(points) == 8.0
    moved = points + np.array([[4, 0], [0, 0], [0, 3], [0, 0], [0, 0]])  # displacements 4, 0, 3, 0, 0
    assert landmark_displacement(points, moved) == pytest.approx((4 + 3) / 5 / 8)
    assert landmark_displacement(points, points) == 0.0
    assert math.isnan(landmark_displacement(np.zeros((5, 2)), points))


def _demo_face():
    benchmark_set = load_benchmark_set("fixtures")
    original = next(o for o in benchmark_set.originals if o.key == "originals/lfw/astronaut_face.png")
    image = images.load_rgb(original.path)
    return original, image, _pii_mask(original, *image.shape[:2])


def test_landmarks_are_kept_by_identity_and_moved_by_a_strong_blur():
    from bench.methods import blur

    metric = build_metric("landmarks_dlib")
    original, image, mask = _demo_face()
    blurred = [blur(image, mask, original.boxes, radius=r) for r in (2.0, 16.0)]
    values = metric.score(_tensor([image] * 3), _tensor([image, *blurred]))
    assert values[0] == 0.0
    assert 0 < values[1] < values[2]
    # Batch size never changes a value.
    alone = [metric.score(_tensor([image]), _tensor([b]))[0] for b in blurred]
    assert alone == list(values[1:])
    assert metric.card().weights[0].name == "dlib_shape_predictor_5"
    no_face = np.full_like(image, 127)
    assert np.isnan(metric.score(_tensor([no_face]), _tensor([no_face]))[0])


def test_face_kept_is_the_detection_read_as_a_utility():
    kept, found = metric_class("face_kept_mtcnn"), metric_class("face_found_mtcnn")
    assert issubclass(kept, found) and kept.family == "utility" and kept.higher_is_more_useful is True
    assert kept.higher_is_more_anonymous is False and found.family == "perceptual"
