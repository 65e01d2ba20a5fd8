"""Errors a user can cause through a metric: bad tensors, missing or corrupt weights.

`metrics` never imports `bench`, so it has its own one-line error family; the CLI treats it
exactly like `bench.errors.BenchError` (one line on stderr, exit code 2, no traceback).
"""


class MetricError(Exception):
    """A metric problem explained in one line, with what to do about it."""

    exit_code = 2


class MetricInputError(MetricError, ValueError):
    """Inputs that break the adapter contract (shape, dtype, range) or a bad option."""


class WeightsError(MetricError):
    """Weights missing, corrupt, failing their hash check, or not loadable strictly."""
