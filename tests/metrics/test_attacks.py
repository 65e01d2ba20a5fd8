"""Set-level attack statistics against independent implementations: Wilson intervals against
scipy's binomtest, ROC / TAR@FAR / EER against scikit-learn's roc_curve."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from metrics.attacks import (
    Rate, adaptive_attack, equal_error_rate, identify, roc, tar_at_far, verification_scores, verify,
)


@pytest.mark.parametrize("successes,n", [(0, 8), (3, 8), (8, 8), (37, 120)])
def test_wilson_interval_equals_scipy(successes, n):
    rate = Rate.of(successes, n)
    reference = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert rate.ci_low == pytest.approx(reference.low, abs=1e-12)
    assert rate.ci_high == pytest.approx(reference.high, abs=1e-12)
    assert math.isnan(Rate.of(0, 0).value)


def _sklearn_reference(genuine, impostor, far):
    from sklearn.metrics import roc_curve

    labels = np.r_[np.ones(len(genuine)), np.zeros(len(impostor))]
    fpr, tpr, _ = roc_curve(labels, np.r_[genuine, impostor], drop_intermediate=False)
    tar = tpr[fpr <= far].max()
    fnr = 1 - tpr
    i = int(np.argmax(fpr - fnr >= 0))
    d0, d1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
    eer = fpr[i] if d1 == 0 else fpr[i - 1] + (-d0 / (d1 - d0)) * (fpr[i] - fpr[i - 1])
    return tar, eer


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tar_at_far_and_eer_equal_sklearn_roc_curve(seed):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(seed)
    genuine = np.round(rng.normal(1.0, 1.0, 300), 1)  # rounded: ties, as real distances have
    impostor = np.round(rng.normal(-1.0, 1.0, 3000), 1)
    result = verify(genuine, impostor)
    for far in (1e-2, 1e-3):
        tar, eer = _sklearn_reference(genuine, impostor, far)
        assert result.tar_at_far[far] == pytest.approx(tar, abs=1e-12)
        assert result.eer == pytest.approx(eer, abs=1e-12)
    fpr, tpr = roc(genuine, impostor)
    assert tar_at_far(fpr, tpr, 1.0) == 1.0 and 0 < equal_error_rate(fpr, tpr) < 0.5


def test_identification_ranks_and_missing_faces():
    gallery = np.array([[0.0, 0], [0, 1], [5, 5], [9, 9]])
    gallery_ids = ["a", "a", "b", "c"]
    probes = np.array([[0.1, 0.9], [5, 4.9], [9, 8], [np.nan, np.nan]])
    result = identify(probes, ["a", "c", "c", "b"], gallery, gallery_ids)
    np.testing.assert_array_equal(result.ranks, [1, 2, 1, np.inf])
    assert result.rank_k(1).successes == 2 and result.rank_k(1).n == 4 and result.not_found == 1
    assert result.chance(1) == pytest.approx(1 / 3) and result.chance(5) == 1.0
    genuine, impostor = verification_scores(probes, ["a", "c", "c", "b"], gallery, gallery_ids)
    assert len(genuine) == 2 + 1 + 1 + 1 and len(impostor) == 4 * 4 - 5
    assert np.isneginf(genuine).sum() == 1


def test_adaptive_attacker_learns_from_anonymized_images():
    # Anonymized embeddings of identity "x" all sit near (10, 0), of "y" near (0, 10): far
    # from any original, but consistent, which is what the adaptive attacker exploits.
    embeddings = np.array([[10, 0], [10.2, 0], [0, 10], [0, 10.1], [5, 5]], dtype=float)
    identities = ["x", "x", "y", "y", "z"]
    photos = ["x1", "x2", "y1", "y2", "z1"]
    result = adaptive_attack(embeddings, identities, photos)
    assert result.rank1.successes == 2 and result.rank1.n == 2
    assert result.n_classes == 3 and result.chance == pytest.approx(1 / 3)
    one_each = adaptive_attack(embeddings[:1], ["x"], ["x1"])
    assert one_each.rank1 is None and "two photos" in one_each.reason
