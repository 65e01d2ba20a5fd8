"""Content hashes: the one sha256-of-a-file helper used for weights, checkpoints and images."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20
# Keyed by (resolved path, size, mtime) so a file rewritten in place is hashed again.
_HASHES: dict[tuple[str, int, int], str] = {}


def _cache_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex of a file's bytes, read in chunks; cached per (path, size, mtime) in this process."""
    path = Path(path)
    key = _cache_key(path)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def remember_sha256(path: str | os.PathLike[str], sha256: str) -> None:
    """Record a hash computed while writing the file, so it is not read back to hash it."""
    _HASHES[_cache_key(Path(path))] = sha256
