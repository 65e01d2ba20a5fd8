"""Inputs and checks shared by the metric tests."""

from __future__ import annotations

import numpy as np
import torch

from metrics.base import PairMetric

# Batch sizes every adapter is checked at, against one batch holding all pairs.
BATCH_SIZES = (1, 7)


def random_pairs(count: int, height: int, width: int, seed: int, noise: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform-noise originals and anonymized copies perturbed by +-noise/2, clipped to [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    original = torch.rand(count, 3, height, width, generator=generator)
    perturbation = noise * torch.rand(count, 3, height, width, generator=generator) - noise / 2
    return original, (original + perturbation).clamp(0, 1)


def scores_in_batches(metric: PairMetric, original: torch.Tensor, anonymized: torch.Tensor,
                      batch_size: int) -> np.ndarray:
    return np.concatenate([
        metric.score(original[start:start + batch_size], anonymized[start:start + batch_size])
        for start in range(0, len(original), batch_size)
    ])


def assert_batch_size_invariant(metric: PairMetric, original: torch.Tensor, anonymized: torch.Tensor, *,
                                atol: float = 0.0) -> None:
    """Per-pair values at every size of BATCH_SIZES equal those of one whole batch (within atol)."""
    whole = metric.score(original, anonymized)
    for batch_size in BATCH_SIZES:
        np.testing.assert_allclose(scores_in_batches(metric, original, anonymized, batch_size), whole,
                                   rtol=0, atol=atol, err_msg=f"batch size {batch_size}")
