"""Errors a user can cause through a metric: bad tensors, missing or corrupt weights.

`metrics` never imports `bench`, so it has its own one-line error family; the CLI treats it
exactly like `bench.errors.BenchError` (one line on stderr, exit code 2, no traceback).
"""

from __future__ import annotations

import os


class MetricError(Exception):
    """A metric problem explained in one line, with what to do about it."""

    exit_code = 2


class MetricInputError(MetricError, ValueError):
    """Inputs that break the adapter contract (shape, dtype, range) or a bad option."""


class WeightsError(MetricError):
    """Weights missing, corrupt, failing their hash check, or not loadable strictly."""


def checkpoint_load_reason(exc: BaseException, path: str | os.PathLike[str] | None = None) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused the file at `path`, in one short line.

    torch's own message for a pickle holding arbitrary objects suggests re-running with
    ``weights_only=False`` -- which executes the file's code -- and carries ANSI escapes;
    neither belongs in our output.
    """
    import pickle

    text = str(exc)
    # Neither torch.save's zip nor a pickle (text, an image, an HTML error page): torch's words
    # for it vary with the first byte ("KeyError: 105", "Unsupported operand 110").
    if "invalid load key" in text or "Unsupported operand" in text or (path is not None and not _torch_file(path)):
        return "it is not a PyTorch checkpoint (neither a torch.save archive nor a pickle)"
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "Weights only load failed" in text:
        return ("it holds Python objects besides tensors and plain containers, which are not loaded "
                "because unpickling them could run code; re-save it as a plain state dict")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _torch_file(path: str | os.PathLike[str]) -> bool:
    """A zip archive (torch.save's format) or a pickle of protocol 2 or later (the legacy one)."""
    import zipfile

    try:
        with open(path, "rb") as handle:
            first = handle.read(1)
        return first == b"\x80" or zipfile.is_zipfile(path)
    except OSError:
        return True  # unreadable: the OSError itself is the reason torch gave
