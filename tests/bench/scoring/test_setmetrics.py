"""bench.scoring.setmetrics: a set metric's spread (KID's std, standard error and interval) is
recorded beside its value, stored, and comes back with a value reused from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from bench.scoring.setmetrics import SPREAD_FIELDS, GroupMember, lookup_spread, score_groups
from bench.scoring.store import ResultsStore
from metrics.base import SetMetric, WeightsRecord
from metrics.fid import FID, KID
from tests.bench.scoring.test_dist import ChannelStatistics  # the same 6-d stand-in extractor


class ChannelKID(KID):
    name: ClassVar[str] = "channel_kid"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.subsets, self.subset_size, self.seed = 10, 1000, 0
        SetMetric.__init__(self, device)
        self._extractor = ChannelStatistics()


def _group(folder: Path, n: int, *, identity: bool) -> list[GroupMember]:
    rng = np.random.default_rng(0)
    members = []
    for index in range(n):
        original = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        anonymized = original if identity else np.clip(original.astype(int) + rng.integers(-60, 60, (8, 8, 3)), 0, 255)
        paths = [folder / f"{kind}{index}.png" for kind in ("o", "a")]
        for path, pixels in zip(paths, (original, anonymized)):
            Image.fromarray(pixels.astype(np.uint8)).save(path)
        members.append(GroupMember(key=(f"o{index}", f"a{index}"), original=paths[0], anonymized=paths[1]))
    return members


METRIC = f"{__name__}:ChannelKID"


@pytest.mark.parametrize("identity", [True, False])
def test_kid_spread_is_recorded_stored_and_reused(tmp_path, identity):
    members = _group(tmp_path, 8, identity=identity)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        first = score_groups({"g": members}, [METRIC], store=store, device="cpu", progress=False)
        value, spread = first.values[(METRIC, "g")], first.spreads[(METRIC, "g")]
        assert spread.n == 8 and spread.std == 0.0  # 8 < subset_size: one evaluation of the whole group
        if identity:  # the identity method scores exactly 0, not about -0.07
            assert value == 0.0 and spread.ci_low == spread.ci_high == 0.0
        else:
            assert value > 0 and spread.stderr > 0
            assert spread.ci_low == pytest.approx(value - 1.96 * spread.stderr)
            assert spread.ci_high == pytest.approx(value + 1.96 * spread.stderr)
        again = score_groups({"g": members}, [METRIC], store=store, device="cpu", progress=False)
        assert again.metrics[0].reused == 1 and again.metrics[0].computed == 0
        assert again.values[(METRIC, "g")] == value and again.spreads[(METRIC, "g")] == spread
        key = first.metrics[0].key
        assert lookup_spread(store, key, "g", [m.key for m in members]) == spread
        assert lookup_spread(store, key, "other", [m.key for m in members]) is None
    assert SPREAD_FIELDS == ("std", "stderr", "ci_low", "ci_high")


def test_batch_size_does_not_change_kid_or_its_spread(tmp_path):
    members = _group(tmp_path, 9, identity=False)
    results = []
    for batch_size in (2, 9):
        with ResultsStore(tmp_path / f"store{batch_size}.sqlite") as store:
            scored = score_groups({"g": members}, [METRIC], store=store, device="cpu", batch_size=batch_size,
                                  progress=False)
        results.append((scored.values[(METRIC, "g")], scored.spreads[(METRIC, "g")]))
    (value_a, spread_a), (value_b, spread_b) = results
    assert value_a == pytest.approx(value_b, rel=1e-12)
    assert spread_a.stderr == pytest.approx(spread_b.stderr, rel=1e-9)


class CountingStatistics(ChannelStatistics):
    """The stand-in extractor, counting the images it is given."""

    images = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        CountingStatistics.images += len(images)
        return super().__call__(images)


class CountedFID(FID):
    name: ClassVar[str] = "counted_fid"
    min_samples: ClassVar[int] = 2

    def __init__(self, device: str | torch.device = "cpu") -> None:
        SetMetric.__init__(self, device)
        self._extractor = CountingStatistics()


class CountedKID(ChannelKID):
    name: ClassVar[str] = "counted_kid"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self._extractor = CountingStatistics()


def test_fid_and_kid_of_one_run_share_one_feature_extraction(tmp_path):
    members = _group(tmp_path, 9, identity=False)
    names = [f"{__name__}:CountedFID", f"{__name__}:CountedKID"]
    alone = {}
    for name in names:
        CountingStatistics.images = 0
        with ResultsStore(tmp_path / f"{name.split(':')[1]}.sqlite") as store:
            alone[name] = score_groups({"g": members}, [name], store=store, device="cpu", batch_size=4,
                                       progress=False).values[(name, "g")]
        assert CountingStatistics.images == 2 * len(members)
    CountingStatistics.images = 0
    with ResultsStore(tmp_path / "both.sqlite") as store:
        both = score_groups({"g": members}, names, store=store, device="cpu", batch_size=4, progress=False)
    assert CountingStatistics.images == 2 * len(members)  # once for both metrics, not once each
    assert {name: both.values[(name, "g")] for name in names} == alone
