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


def checkpoint_load_reason(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in one short line.

    torch's own message for a pickle holding arbitrary objects suggests re-running with
    ``weights_only=False`` -- which executes the file's code -- and carries ANSI escapes;
    neither belongs in our output.
    """
    import pickle

    text = str(exc)
    # Neither torch.save's zip nor a pickle (text, an image, an HTML error page): its first byte
    # is no pickle opcode, which torch words as one of these.
    if "invalid load key" in text or "Unsupported operand" in text:
        return "it is not a PyTorch checkpoint (neither a torch.save archive nor a pickle)"
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "Weights only load failed" in text:
        return ("it holds Python objects besides tensors and plain containers, which are not loaded "
                "because unpickling them could run code; re-save it as a plain state dict")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
