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
