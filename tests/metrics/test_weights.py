"""The weights manager: hash-checked downloads from a local server, provenance statuses,
refusal of corrupt files, and the `bench weights` subcommand."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from bench.cli import main
from metrics import weights
from metrics.errors import WeightsError

TENSORS = {"layer.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4)}


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


GOOD = _torch_bytes(TENSORS)
CORRUPTED = GOOD[:-20] + bytes(20)
GOOD_SHA256 = hashlib.sha256(GOOD).hexdigest()


@pytest.fixture(scope="module")
def server():
    """http://127.0.0.1:PORT serving /good.pth and /corrupted.pth; anything else is 404."""
    files = {"/good.pth": GOOD, "/corrupted.pth": CORRUPTED}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "weights"
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(directory))
    return directory


@pytest.fixture
def tiny(server, monkeypatch) -> weights.WeightSpec:
    """A spec published, torch.hub style, with an 8-hex sha256 prefix."""
    spec = weights.WeightSpec(name="tiny", filename=f"tiny-{GOOD_SHA256[:8]}.pth", url=f"{server}/good.pth",
                              sha256=GOOD_SHA256[:8], size=len(GOOD), licence="test only", description="test file")
    monkeypatch.setitem(weights.SPECS, "tiny", spec)
    return spec


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_fetch_places_verified_file_in_cache(cache, tiny):
    resolved = weights.fetch("tiny", progress=False)
    assert resolved.status == "verified" and resolved.sha256 == GOOD_SHA256
    assert resolved.path == cache / tiny.filename and resolved.path.read_bytes() == GOOD
    assert _files(cache) == [tiny.filename]  # no temp file, no manifest
    state, record = weights.load_state_dict("tiny")
    assert torch.equal(state["layer.weight"], TENSORS["layer.weight"])
    assert record.verified and record.sha256 == GOOD_SHA256


def test_corrupted_download_is_rejected_and_not_kept(cache, tiny, server):
    with pytest.raises(WeightsError) as caught:
        weights.fetch("tiny", url=f"{server}/corrupted.pth", progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert f"expected sha256 {GOOD_SHA256[:8]}" in message and "got " in message
    assert f"{server}/corrupted.pth" in message
    assert _files(cache) == []


def test_unreachable_download_leaves_nothing(cache, tiny, server):
    with pytest.raises(WeightsError, match="could not download tiny .*404.*bench weights import"):
        weights.fetch("tiny", url=f"{server}/absent.pth", progress=False)
    assert _files(cache) == []


def test_missing_weights_offline_name_the_fix(cache, tiny):
    with pytest.raises(WeightsError) as caught:
        weights.resolve("tiny")
    assert "bench weights fetch tiny" in str(caught.value)
    assert "bench weights import FILE --as tiny" in str(caught.value)
    assert _files(cache) == []


def test_resolve_downloads_only_when_asked(cache, tiny):
    assert weights.resolve("tiny", download=True).status == "verified"
    assert weights.resolve("tiny").path == cache / tiny.filename


def test_unknown_name_lists_the_known_ones(cache):
    with pytest.raises(WeightsError, match="unknown weights 'nope'; choose from: .*fid_inception"):
        weights.resolve("nope")


def test_stand_in_round_trips_with_its_status(cache, tiny):
    written = weights.write_stand_in("tiny", {"w": torch.ones(2)})
    assert written.status == "stand-in"
    manifest = json.loads((cache / f"{tiny.filename}.bench.json").read_text())
    assert manifest["status"] == "stand-in" and manifest["sha256"] == written.sha256
    state, record = weights.load_state_dict("tiny")
    assert torch.equal(state["w"], torch.ones(2))
    assert record.status == "stand-in" and not record.verified


def test_import_records_unverified_then_verified(cache, tiny, tmp_path):
    other = tmp_path / "mine.pth"
    other.write_bytes(_torch_bytes({"w": torch.zeros(3)}))
    assert weights.import_file(other, "tiny").status == "unverified"
    assert weights.resolve("tiny").status == "unverified"
    imported = cache / weights.IMPORTED_FOLDER
    assert json.loads((imported / f"{tiny.filename}.bench.json").read_text())["source"].startswith("imported from")
    assert _files(cache) == [weights.IMPORTED_FOLDER]  # never under torch.hub's own file name

    published = tmp_path / "published.pth"
    published.write_bytes(GOOD)
    assert weights.import_file(published, "tiny").status == "verified"
    assert _files(imported) == [tiny.filename]  # the stale manifest is gone


def test_verified_file_is_not_replaced_by_an_unverified_one(cache, tiny, tmp_path):
    weights.fetch("tiny", progress=False)
    other = tmp_path / "mine.pth"
    other.write_bytes(b"not the published bytes")
    with pytest.raises(WeightsError, match="refusing to replace"):
        weights.import_file(other, "tiny")
    with pytest.raises(WeightsError, match="refusing to replace"):
        weights.write_stand_in("tiny", {"w": torch.ones(1)})
    assert (cache / tiny.filename).read_bytes() == GOOD


def test_cached_file_with_wrong_hash_and_no_manifest_is_refused(cache, tiny):
    cache.mkdir()
    (cache / tiny.filename).write_bytes(CORRUPTED)
    with pytest.raises(WeightsError) as caught:
        weights.resolve("tiny")
    assert "corrupt" in str(caught.value) and tiny.filename in str(caught.value)
    assert "bench weights fetch tiny" in str(caught.value)


def test_stand_in_changed_after_writing_is_refused(cache, tiny):
    written = weights.write_stand_in("tiny", {"w": torch.ones(2)})
    written.path.write_bytes(b"edited")
    with pytest.raises(WeightsError, match="corrupt"):
        weights.resolve("tiny")


def test_manifest_cannot_vouch_verified_for_a_downloaded_name(cache, tiny):
    written = weights.write_stand_in("tiny", {"w": torch.ones(2)})
    manifest = cache / f"{tiny.filename}.bench.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "status": "verified"}))
    with pytest.raises(WeightsError, match="corrupt"):
        weights.resolve("tiny")
    assert written.path.is_file()


def test_fetch_replaces_a_corrupt_cached_file(cache, tiny):
    cache.mkdir()
    (cache / tiny.filename).write_bytes(CORRUPTED)
    assert weights.fetch("tiny", progress=False).status == "verified"
    assert weights.resolve("tiny").sha256 == GOOD_SHA256


def test_weights_dir_prefers_bench_variable_then_torch_home(monkeypatch, tmp_path):
    monkeypatch.delenv("BENCH_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert weights.weights_dir() == tmp_path / "torch" / "hub" / "checkpoints"
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "mine"))
    assert weights.weights_dir() == tmp_path / "mine"


def test_specs_carry_torchvision_hash_prefixes():
    for name in ("alexnet", "resnet18", "resnet50", "resnet152", "densenet121", "vgg11"):
        spec = weights.SPECS[name]
        assert spec.filename.endswith(f"-{spec.sha256}.pth") and spec.url.endswith(spec.filename)
    assert weights.SPECS["resnet50"].filename == "resnet50-11ad3fa6.pth"  # IMAGENET1K_V2, torchvision's DEFAULT


def test_cli_list_fetch_verify(cache, tiny, capsys):
    assert main(["weights", "verify", "tiny"]) == 1
    assert "missing" in capsys.readouterr().out
    assert main(["weights", "fetch", "tiny"]) == 0
    assert "tiny: verified" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:3] == ["name", "status", "file"]
    assert any(line.split()[:2] == ["tiny", "verified"] for line in listing)
    assert any(line.startswith("fid_inception") for line in listing)
    assert main(["weights", "verify", "tiny"]) == 0


def test_cli_reports_weights_errors_in_one_line(cache, tiny, server, capsys):
    assert main(["weights", "fetch", "tiny", "--url", f"{server}/corrupted.pth"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after tqdm's progress lines
    assert error.startswith("bench: error: download of tiny") and "failed its hash check" in error


def test_cli_verify_exits_1_on_a_missing_or_corrupt_file_whether_named_or_not(cache, tiny, monkeypatch, capsys):
    # Only `tiny` is known here, so every verdict is about it alone.
    monkeypatch.setattr(weights, "SPECS", {"tiny": tiny})
    for argv in (["weights", "verify"], ["weights", "verify", "tiny"]):
        assert main(argv) == 1
        assert "tiny: missing" in capsys.readouterr().out
    cache.mkdir(parents=True, exist_ok=True)
    (cache / tiny.filename).write_bytes(CORRUPTED)
    for argv in (["weights", "verify"], ["weights", "verify", "tiny"]):
        assert main(argv) == 1
        assert "tiny: corrupt" in capsys.readouterr().out
    (cache / tiny.filename).write_bytes(GOOD)
    for argv in (["weights", "verify"], ["weights", "verify", "tiny"]):
        assert main(argv) == 0
        assert "tiny: verified" in capsys.readouterr().out


# ----------------------------------------------------------------------------- hostile imports and downloads
def test_import_refuses_files_that_are_not_state_dicts(cache, tiny, tmp_path):
    for name, data in {"random.pth": os.urandom(4096), "list.pth": _torch_bytes([torch.zeros(2)])}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError, match="cannot import"):
            weights.import_file(tmp_path / name, "tiny")
    assert _files(cache) == []


def test_import_refuses_a_state_dict_of_another_architecture(cache, tmp_path):
    (tmp_path / "other.pth").write_bytes(_torch_bytes({"conv.weight": torch.zeros(3, 3)}))
    with pytest.raises(WeightsError, match="does not load strictly into torchvision's alexnet"):
        weights.import_file(tmp_path / "other.pth", "alexnet")
    assert _files(cache) == []


def test_an_imported_alexnet_is_not_where_torchvision_looks(cache, tmp_path, monkeypatch):
    import torchvision

    (tmp_path / "mine.pth").write_bytes(_torch_bytes(torchvision.models.alexnet(weights=None).state_dict()))
    resolved = weights.import_file(tmp_path / "mine.pth", "alexnet")
    assert resolved.status == "unverified" and resolved.path.parent.name == weights.IMPORTED_FOLDER
    assert not (cache / weights.SPECS["alexnet"].filename).exists()
    assert weights.resolve("alexnet").path == resolved.path  # the suite still finds it, as unverified


@pytest.fixture
def trickling_server():
    """Serves /slow.pth one byte every 50 ms out of a promised megabyte."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            try:
                for _ in range(1 << 20):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_gives_up_at_its_deadline_and_removes_the_partial_file(cache, tiny, trickling_server):
    started = time.monotonic()
    with pytest.raises(WeightsError, match="did not finish within 1 s; the partial file was removed"):
        weights.fetch("tiny", url=f"{trickling_server}/slow.pth", progress=False, deadline_s=1.0)
    assert time.monotonic() - started < 15
    assert _files(cache) == []  # no .part file left


def test_fetch_removes_the_partial_file_on_an_http_error(cache, tiny, server):
    with pytest.raises(WeightsError, match="could not download"):
        weights.fetch("tiny", url=f"{server}/missing.pth", progress=False)
    assert _files(cache) == []
