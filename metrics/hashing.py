"""Content hashes: the one sha256-of-a-file helper used for weights, checkpoints and images.

Hashes are remembered in this process and, for files of at least `DISK_MIN_BYTES`, on disk,
so that a new process does not re-read the ~330 MB of LPIPS and Inception weights (about a
second of every run on a 2-core CPU). An entry is keyed by the file's resolved path, size,
mtime_ns, ctime_ns and inode: rewriting a file (in place or by rename, even keeping its size
and restoring its mtime, as `cp -p` does) changes its ctime or inode, so it is hashed again.
Small files (images) are cheaper to hash than to look up, so they are not written to disk;
nor are files changed in the last 2 s (see `_SETTLED_NS`).

The disk cache lives in $BENCH_HASH_CACHE, else $XDG_CACHE_HOME/perceptanon-bench/sha256
(~/.cache/perceptanon-bench/sha256); BENCH_HASH_CACHE=off turns it off. One small JSON file
per entry, written atomically: concurrent processes never see half an entry, and the last
writer of identical content wins. A cache that cannot be read or written is skipped: the
hash is then computed, never guessed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

_CHUNK = 1 << 20
#: Files smaller than this are hashed every run (reading them costs less than a lookup).
DISK_MIN_BYTES = 1 << 20
#: Environment variable naming the cache folder, or "off" to disable it.
CACHE_ENV = "BENCH_HASH_CACHE"
_OFF = ("off", "0", "no", "false", "none")
_ENTRY_VERSION = 1
# File timestamps tick coarsely (a few ms on Linux): a file changed again within the same tick
# keeps its key. Like git's "racily clean" rule, only files unchanged for this long are
# written to disk; younger ones are hashed again by the next process.
_SETTLED_NS = 2_000_000_000

_Key = tuple[str, int, int, int, int]
_HASHES: dict[_Key, str] = {}


def cache_dir() -> Path | None:
    """Where hashes are kept between processes; None when the disk cache is off."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in _OFF or not configured.strip() else Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "perceptanon-bench" / "sha256"


def _cache_key(path: Path) -> _Key:
    resolved = path.resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def _entry_path(directory: Path, key: _Key) -> Path:
    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()
    return directory / name[:2] / f"{name}.json"


def _load_entry(directory: Path, key: _Key) -> str | None:
    """The stored hash for exactly this key, or None (absent, unreadable, or another key)."""
    try:
        entry = json.loads(_entry_path(directory, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("version") != _ENTRY_VERSION or tuple(entry.get("key", ())) != key:
        return None
    sha256 = entry.get("sha256")
    valid = isinstance(sha256, str) and len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256)
    return sha256 if valid else None


def _store_entry(directory: Path, key: _Key, sha256: str) -> None:
    from metrics.atomic import write_atomic

    if time.time_ns() - max(key[2], key[3]) < _SETTLED_NS:
        return
    try:
        write_atomic(_entry_path(directory, key),
                     json.dumps({"version": _ENTRY_VERSION, "key": list(key), "sha256": sha256}) + "\n")
    except OSError:
        pass  # a read-only or full cache only costs the next process a re-hash


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex of a file's bytes, read in chunks; cached per (path, size, mtime, ctime, inode)."""
    path = Path(path)
    key = _cache_key(path)
    if key in _HASHES:
        return _HASHES[key]
    directory = cache_dir() if key[1] >= DISK_MIN_BYTES else None
    sha256 = _load_entry(directory, key) if directory else None
    if sha256 is None:
        sha256 = _digest(path)
        # The file may have changed while it was read: only a hash of a stable file is kept.
        if _cache_key(path) != key:
            return sha256
        if directory:
            _store_entry(directory, key, sha256)
    _HASHES[key] = sha256
    return sha256


def remember_sha256(path: str | os.PathLike[str], sha256: str) -> None:
    """Record a hash computed while writing the file, so it is not read back to hash it."""
    key = _cache_key(Path(path))
    _HASHES[key] = sha256
    directory = cache_dir() if key[1] >= DISK_MIN_BYTES else None
    if directory:
        _store_entry(directory, key, sha256)
