"""bench.setmetrics: a set metric's spread (KID's std, standard error and interval) is
recorded beside its value, stored, and comes back with a value reused from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from bench.setmetrics import SPREAD_FIELDS, GroupMember, lookup_spread, score_groups
from bench.store import ResultsStore
from metrics.base import SetMetric, WeightsRecord
from metrics.fid import KID
from tests.bench.test_dist import ChannelStatistics  # the same 6-d stand-in extractor


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
