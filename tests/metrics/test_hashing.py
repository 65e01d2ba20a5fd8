"""The sha256 cache: kept on disk between processes, yet a changed file is always hashed again."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from metrics import hashing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private disk cache that stores every file (no size floor, no settling delay)."""
    directory = tmp_path / "hash-cache"
    monkeypatch.setenv(hashing.CACHE_ENV, str(directory))
    monkeypatch.setattr(hashing, "DISK_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "_SETTLED_NS", 0)
    monkeypatch.setattr(hashing, "_HASHES", {})
    return directory


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _new_process(monkeypatch) -> None:
    """Forget this process's memo, as a fresh process would start."""
    monkeypatch.setattr(hashing, "_HASHES", {})


def _no_reading(monkeypatch) -> None:
    def refuse(path):
        raise AssertionError(f"{path} was read although its hash is cached")

    monkeypatch.setattr(hashing, "_digest", refuse)


def test_a_new_process_reuses_the_disk_entry(cache, tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"x" * 1000)
    assert hashing.file_sha256(path) == _sha(b"x" * 1000)
    assert len(list(cache.rglob("*.json"))) == 1
    _new_process(monkeypatch)
    _no_reading(monkeypatch)
    assert hashing.file_sha256(path) == _sha(b"x" * 1000)


def test_changed_bytes_of_the_same_size_are_caught(cache, tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"a" * 1000)
    hashing.file_sha256(path)
    stat = path.stat()
    with open(path, "r+b") as handle:  # in place: same inode, same size
        handle.write(b"b")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    _new_process(monkeypatch)
    assert hashing.file_sha256(path) == _sha(b"b" + b"a" * 999)


def test_changed_bytes_with_the_mtime_restored_are_caught(cache, tmp_path, monkeypatch):
    """`cp -p` onto an existing file keeps its inode and sets the old mtime; the ctime still moves."""
    path = tmp_path / "weights.pth"
    path.write_bytes(b"a" * 1000)
    hashing.file_sha256(path)
    before = path.stat()
    # ctime ticks coarsely: wait until a write is sure to move it.
    while path.stat().st_ctime_ns == before.st_ctime_ns:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with open(path, "r+b") as handle:
        handle.write(b"c")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    _new_process(monkeypatch)
    assert hashing.file_sha256(path) == _sha(b"c" + b"a" * 999)


def test_a_file_replaced_by_rename_is_caught(cache, tmp_path, monkeypatch):
    path, other = tmp_path / "weights.pth", tmp_path / "other.pth"
    path.write_bytes(b"a" * 1000)
    hashing.file_sha256(path)
    other.write_bytes(b"d" * 1000)
    os.utime(other, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    os.replace(other, path)
    _new_process(monkeypatch)
    assert hashing.file_sha256(path) == _sha(b"d" * 1000)


def test_a_corrupt_entry_is_ignored_and_rewritten(cache, tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"e" * 1000)
    hashing.file_sha256(path)
    (entry,) = cache.rglob("*.json")
    entry.write_text("{not json", encoding="utf-8")
    _new_process(monkeypatch)
    assert hashing.file_sha256(path) == _sha(b"e" * 1000)
    assert json.loads(entry.read_text(encoding="utf-8"))["sha256"] == _sha(b"e" * 1000)


def test_an_entry_for_another_key_is_not_trusted(cache, tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"f" * 1000)
    hashing.file_sha256(path)
    (entry,) = cache.rglob("*.json")
    record = json.loads(entry.read_text(encoding="utf-8"))
    record["key"][1] += 1
    record["sha256"] = "0" * 64
    entry.write_text(json.dumps(record), encoding="utf-8")
    _new_process(monkeypatch)
    assert hashing.file_sha256(path) == _sha(b"f" * 1000)


def test_recent_files_are_not_written_to_disk(tmp_path, monkeypatch):
    """A file changed within the timestamps' tick keeps its key: only settled files are stored."""
    monkeypatch.setenv(hashing.CACHE_ENV, str(tmp_path / "hash-cache"))
    monkeypatch.setattr(hashing, "DISK_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "_HASHES", {})
    path = tmp_path / "fresh.pth"
    path.write_bytes(b"g" * 10)
    assert hashing.file_sha256(path) == _sha(b"g" * 10)
    assert not (tmp_path / "hash-cache").exists()


@pytest.mark.parametrize("value", ["off", "0", ""])
def test_the_disk_cache_can_be_turned_off(tmp_path, monkeypatch, value):
    monkeypatch.setenv(hashing.CACHE_ENV, value)
    assert hashing.cache_dir() is None
    monkeypatch.setattr(hashing, "DISK_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "_SETTLED_NS", 0)
    monkeypatch.setattr(hashing, "_HASHES", {})
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "weights.pth"
    path.write_bytes(b"h" * 10)
    assert hashing.file_sha256(path) == _sha(b"h" * 10)
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pth"]


def test_default_location_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv(hashing.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert hashing.cache_dir() == tmp_path / "perceptanon-bench" / "sha256"


def test_small_files_are_not_written_to_disk(tmp_path, monkeypatch):
    monkeypatch.setenv(hashing.CACHE_ENV, str(tmp_path / "hash-cache"))
    monkeypatch.setattr(hashing, "_SETTLED_NS", 0)
    monkeypatch.setattr(hashing, "_HASHES", {})
    path = tmp_path / "image.png"
    path.write_bytes(b"i" * 100)
    hashing.file_sha256(path)
    assert not (tmp_path / "hash-cache").exists()


def test_remember_sha256_is_seen_by_a_new_process(cache, tmp_path, monkeypatch):
    path = tmp_path / "written.pth"
    path.write_bytes(b"j" * 100)
    hashing.remember_sha256(path, _sha(b"j" * 100))
    _new_process(monkeypatch)
    _no_reading(monkeypatch)
    assert hashing.file_sha256(path) == _sha(b"j" * 100)


def test_concurrent_writers_of_one_entry_leave_one_valid_entry(cache, tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"k" * 1000)
    key = hashing._cache_key(path)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: hashing._store_entry(cache, key, _sha(b"k" * 1000)), range(64)))
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".json"  # no temporary file left behind
    assert hashing._load_entry(cache, key) == _sha(b"k" * 1000)


def test_concurrent_processes_agree(cache, tmp_path):
    """Several fresh processes hashing one file at once all get its hash; the entry is whole."""
    path = tmp_path / "weights.pth"
    path.write_bytes(os.urandom(3 << 20))
    code = ("import sys; from metrics import hashing; hashing.DISK_MIN_BYTES = hashing._SETTLED_NS = 0; "
            "print(hashing.file_sha256(sys.argv[1]))")
    env = {**os.environ, hashing.CACHE_ENV: str(cache), "PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen([sys.executable, "-c", code, str(path)], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(4)]
    outputs = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert outputs == {_sha(path.read_bytes())}
    (entry,) = cache.rglob("*.json")
    assert json.loads(entry.read_text(encoding="utf-8"))["sha256"] == _sha(path.read_bytes())
