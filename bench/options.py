"""Options shared by every flow that scores pairs: `bench run`, `bench run --method`,
`bench correlate` and `bench score`.

The CLI builds them once from the command line (`bench.api` from its arguments) and each flow's
config (`evaluate.EvaluateConfig`, `benchmark.BenchmarkConfig`, `folders.FolderScoreConfig`)
nests them, as `train.TrainConfig` carries a training run: a flow reads its options from one
record instead of a dozen keywords, and an option shared by the flows is defined here once.
Paths are absolute when they arrive (the CLI resolves them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ScoringOptions:
    """How pairs are scored, and what the run records about itself."""

    #: --metrics as given (comma-separated names or module:Class); None: the flow's default list.
    metrics: str | None = None
    device: str = "auto"
    batch_size: int = 32
    workers: int = 0
    size_policy: str = "error"
    #: The results store; None: the flow's default (results.sqlite in its output folder).
    store: Path | None = None
    progress: bool = True
    #: The command line, recorded in the run's provenance.
    command: str = "bench run"


@dataclass(frozen=True)
class Bootstrap:
    """Resamples and seed of every confidence interval a flow reports."""

    n_boot: int = 2000
    seed: int = 0
