"""A deliberately slow pair metric, for tests that must interrupt a run half-way.

Used by name as ``tests.bench.slow_metric:SlowMetric`` (an unregistered "module:Class").
"""

from __future__ import annotations

import time
from typing import ClassVar

import torch

from metrics.base import PairMetric

#: Seconds each call to `score` sleeps, whatever the batch size.
SECONDS_PER_CALL = 0.2


class SlowMetric(PairMetric):
    """Mean absolute difference over channels and pixels, after a pause."""

    name: ClassVar[str] = "slow_mad"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        time.sleep(SECONDS_PER_CALL)
        return (original.double() - anonymized.double()).abs().mean(dim=(1, 2, 3))
