import os
import stat

import pytest

from metrics import atomic


def test_write_atomic_text_and_bytes(tmp_path):
    assert atomic.write_atomic(tmp_path / "a" / "t.txt", "ü\r\n") == tmp_path / "a" / "t.txt"
    assert (tmp_path / "a" / "t.txt").read_bytes() == "ü\r\n".encode()
    atomic.write_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "tables.md"
    atomic.write_atomic(target, "old")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["tables.md"]


def test_atomic_destination_removes_the_temporary_file_on_error(tmp_path):
    target = tmp_path / "model.pt"
    with pytest.raises(RuntimeError):
        with atomic.atomic_destination(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_users_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        text = atomic.write_atomic(tmp_path / "scores.csv", "a,b\n")
        with atomic.atomic_destination(tmp_path / "best.pt") as tmp:
            tmp.write_bytes(b"weights")
    finally:
        os.umask(previous)
    for path in (text, tmp_path / "best.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
