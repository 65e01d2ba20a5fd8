"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every result, table, checkpoint and weight file goes through here, so an interrupted run
never leaves a truncated file behind. (`metrics` is the lowest package: bench and reports
import this too.)
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_destination(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `path`; renamed onto it when the block succeeds, removed if not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename not in (None, tmp):
            raise
        # A write refused by a full disk names no file (or our hidden temporary): name the
        # file the user will look for.
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> str:
    """A new empty file beside `path` with the mode any new file of the user gets (0o666
    less the umask, applied by the kernel). tempfile.mkstemp would make it 0600, and the
    rename would carry that onto every result."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return str(tmp)
    raise FileExistsError(f"no free temporary name beside {path}")


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write text (UTF-8, newlines kept as given) or bytes to `path` atomically; return the path."""
    with atomic_destination(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                handle.write(data)
    return Path(path)


def torch_bytes(obj: Any) -> bytes:
    """What torch.save writes for `obj`, made in memory: saved to a path, the archive embeds
    the file's name (a hash of it would depend on a temporary's random name), and a write the
    disk refuses surfaces as torch's RuntimeError ("unexpected pos"), not as an OSError."""
    import torch  # only the callers that save tensors pay for it

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_torch_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """torch.save `obj` to `path` atomically; a full disk is one OSError naming `path`."""
    return write_atomic(path, torch_bytes(obj))
