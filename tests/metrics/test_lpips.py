"""LPIPS adapter against the `lpips` package, with seeded stand-in AlexNet trunk weights."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
import torchvision

from metrics.errors import WeightsError
from metrics.lpips import LINEAR_HEADS_SHA256, LPIPS
from metrics.weights import write_stand_in
from tests.metrics.common import assert_batch_size_invariant, random_pairs

# Same float32 network and operations on both sides; observed differences are 0.
PACKAGE_TOLERANCE = 1e-5
# Batch size may change the float32 convolution algorithm, never the value beyond rounding.
BATCH_TOLERANCE = 1e-6


def stand_in_alexnet(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.alexnet().state_dict()


@pytest.fixture(scope="module")
def alexnet_state() -> dict[str, torch.Tensor]:
    return stand_in_alexnet()


@pytest.fixture(scope="module")
def metric(alexnet_state, tmp_path_factory) -> LPIPS:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))
        write_stand_in("alexnet", alexnet_state)
        return LPIPS()


@pytest.fixture(scope="module")
def package_lpips(alexnet_state) -> torch.nn.Module:
    """lpips' own module, its trunk filled layer by layer from a torchvision AlexNet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    alexnet = torchvision.models.alexnet()
    alexnet.load_state_dict(alexnet_state)
    for layer_slice in (reference.net.slice1, reference.net.slice2, reference.net.slice3,
                        reference.net.slice4, reference.net.slice5):
        for index, layer in layer_slice.named_children():
            layer.load_state_dict(alexnet.features[int(index)].state_dict())
    return reference.eval()


def package_distance(reference: torch.nn.Module, original: torch.Tensor, anonymized: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return reference(2 * original - 1, 2 * anonymized - 1).flatten().double().numpy()


@pytest.mark.parametrize("height, width", [(64, 64), (80, 96)])
def test_matches_the_lpips_package(metric, package_lpips, height: int, width: int) -> None:
    original, anonymized = random_pairs(4, height, width, seed=height + width)
    expected = package_distance(package_lpips, original, anonymized)
    np.testing.assert_allclose(metric.score(original, anonymized), expected, rtol=0, atol=PACKAGE_TOLERANCE)


def test_identical_images_have_zero_distance(metric) -> None:
    original, _ = random_pairs(2, 64, 64, seed=3)
    np.testing.assert_array_equal(metric.score(original, original.clone()), 0.0)


def test_weights_mark_the_result_as_stand_in(metric) -> None:
    records = {record.name: record for record in metric.weights()}
    assert records["alexnet"].status == "stand-in"
    heads = records["lpips-v0.1-alex-linear-heads"]
    assert heads.status == "verified" and heads.sha256 == LINEAR_HEADS_SHA256
    assert metric.verified is False
    assert {record["status"] for record in metric.card().to_dict()["weights"]} == {"stand-in", "verified"}


def test_pinned_heads_hash_is_the_installed_lpips_file() -> None:
    shipped = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == LINEAR_HEADS_SHA256


def test_missing_alexnet_weights_say_how_to_fetch_them(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="bench weights fetch alexnet"):
        LPIPS()


def test_trunk_weights_missing_a_layer_are_refused(alexnet_state, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    # The classifier is left out too: LPIPS never reads it, and a smaller file keeps the test fast.
    incomplete = {key: value for key, value in alexnet_state.items()
                  if key.startswith("features.") and key != "features.10.bias"}
    write_stand_in("alexnet", incomplete)
    with pytest.raises(WeightsError, match=r"missing \['features.10.bias'\]"):
        LPIPS()


def test_original_features_are_reusable_across_anonymizations(metric) -> None:
    originals, _ = random_pairs(2, 64, 64, seed=5)
    _, anonymized = random_pairs(5, 64, 64, seed=6)
    # Anonymizations 0..4 belong to originals 0, 0, 1, 1, 0.
    owner = torch.tensor([0, 0, 1, 1, 0])
    reused = metric.compare(metric.select(metric.features(originals), owner), metric.features(anonymized))
    np.testing.assert_allclose(reused, metric.score(originals[owner], anonymized), rtol=0, atol=BATCH_TOLERANCE)


def test_network_is_frozen_and_oriented(metric) -> None:
    assert LPIPS.higher_is_more_anonymous is True
    assert not metric._network.training
    assert not any(parameter.requires_grad for parameter in metric._network.parameters())


def test_batch_size_does_not_change_values(metric) -> None:
    original, anonymized = random_pairs(32, 64, 64, seed=7)
    assert_batch_size_invariant(metric, original, anonymized, atol=BATCH_TOLERANCE)
