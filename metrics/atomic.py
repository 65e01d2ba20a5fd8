"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every result, table, checkpoint and weight file goes through here, so an interrupted run
never leaves a truncated file behind. (`metrics` is the lowest package: bench and reports
import this too.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_destination(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `path`; renamed onto it when the block succeeds, removed if not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write text (UTF-8, newlines kept as given) or bytes to `path` atomically; return the path."""
    with atomic_destination(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                handle.write(data)
    return Path(path)
