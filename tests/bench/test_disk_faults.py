"""Real disk faults, not simulated ones: a full disk and a read-only folder.

Each run gets a mount namespace of its own (`unshare -m`) in which its output folder, or its
store's folder, is a tiny tmpfs (a real ENOSPC at whatever write comes first) or a read-only
bind mount (EROFS, which permission bits cannot give a root user). The run must end with one
line naming the file and what to do; what it wrote is copied out of the namespace, and a
re-run on that copy, with room, must finish with the values of a run that never failed and a
store that passes SQLite's integrity check. Where mounts are not permitted the tests skip.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.bench.benchset import write_benchmark_set

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _bench(cwd: Path, out: str, store: str) -> list[str]:
    return [sys.executable, "-m", "bench", "run", "--method", "mask", "--dataset", "set", "--metrics", "mse,psnr",
            "--out", out, "--store", store, "--n-boot", "50", "--no-privacy", "--no-progress"]


def _env(cwd: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), MPLCONFIGDIR=str(cwd / "mpl"))


def _in_namespace(cwd: Path, mount: str, command: list[str], keep: tuple[str, str]) -> subprocess.CompletedProcess:
    """Run `command` after `mount` in a private mount namespace, then copy keep[0] to keep[1]
    (the namespace's mount vanishes with it)."""
    script = f"{mount} && {{ {shlex.join(command)}; code=$?; cp -a {keep[0]}/. {keep[1]}/; exit $code; }}"
    (cwd / keep[1]).mkdir(parents=True, exist_ok=True)
    return subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=cwd, env=_env(cwd), capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def mounts_allowed(tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("probe")
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {folder}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"mount namespaces are not permitted here ({probe.stderr.strip()})")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mounts_allowed) -> dict:
    cwd = tmp_path_factory.mktemp("reference")
    write_benchmark_set(cwd / "set")
    finished = subprocess.run(_bench(cwd, "out", "out/results.sqlite"), cwd=cwd, env=_env(cwd), capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return _values(cwd / "out")


def _values(out: Path) -> dict:
    board = json.loads((out / "set" / "leaderboard.json").read_text())
    return {(row["method"], row["scope"]): row["cells"] for row in board["rows"]}


def _one_line(finished: subprocess.CompletedProcess, *words: str) -> str:
    assert finished.returncode == 2, (finished.returncode, finished.stderr[-3000:])
    assert "Traceback" not in finished.stderr + finished.stdout, finished.stderr[-3000:]
    lines = finished.stderr.strip("\n").split("\n")
    assert len(lines) == 1, finished.stderr[-3000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _rerun_finishes(cwd: Path, out: str, store: str, reference: dict) -> None:
    finished = subprocess.run(_bench(cwd, out, store), cwd=cwd, env=_env(cwd), capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert _values(cwd / out) == reference
    with closing(sqlite3.connect(cwd / store)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[0] == 0


# Sizes chosen so the disk fills while anonymizing (12k), among the originals' crops and masks
# (100k) and while storing scores or writing the leaderboard (400k); the whole run needs about 800k.
@pytest.mark.parametrize("size", ["12k", "100k", "400k"])
def test_a_full_output_disk_is_one_line_and_a_rerun_finishes(tmp_path, reference, size):
    write_benchmark_set(tmp_path / "set")
    (tmp_path / "full").mkdir()
    failed = _in_namespace(tmp_path, f"mount -t tmpfs -o size={size} tmpfs full",
                           _bench(tmp_path, "full", "full/results.sqlite"), keep=("full", "kept"))
    line = _one_line(failed, "free disk space")  # a file's ENOSPC, or SQLite's "database or disk is full"
    assert "No space left on device" in line or "disk is full" in line, line
    assert str(tmp_path / "full") in line  # names the file that could not be written
    _rerun_finishes(tmp_path, "kept", "kept/results.sqlite", reference)


@pytest.mark.parametrize("size", ["4k", "48k"])
def test_a_full_store_disk_is_one_line_and_a_rerun_finishes(tmp_path, reference, size):
    write_benchmark_set(tmp_path / "set")
    (tmp_path / "store").mkdir()
    failed = _in_namespace(tmp_path, f"mount -t tmpfs -o size={size} tmpfs store",
                           _bench(tmp_path, "out", "store/results.sqlite"), keep=("store", "kept"))
    _one_line(failed, str(tmp_path / "store" / "results.sqlite"), "cannot be written", "free disk space")
    _rerun_finishes(tmp_path, "out", "kept/results.sqlite", reference)


def test_a_read_only_output_folder_is_one_line(tmp_path, mounts_allowed):
    write_benchmark_set(tmp_path / "set")
    (tmp_path / "readonly").mkdir()
    failed = _in_namespace(tmp_path, "mount --bind readonly readonly && mount -o remount,bind,ro readonly",
                           _bench(tmp_path, "readonly", "readonly/results.sqlite"), keep=("readonly", "kept"))
    _one_line(failed, str(tmp_path / "readonly"), "Read-only file system")
    assert list((tmp_path / "kept").iterdir()) == []


# ----------------------------------------------------------------------------- every command
DEMO = REPO / "fixtures" / "demo"


def _score_folders(cwd: Path, out: str) -> list[str]:
    for side in ("a", "b"):
        (cwd / side).mkdir(exist_ok=True)
        for image in sorted((DEMO / "images").rglob("*.png"))[:2]:
            shutil.copy(image, cwd / side / image.name)
    return ["score", "a", "b", "--metrics", "mse", "--out", out, "--store", f"{out}/results.sqlite"]


def _report(cwd: Path, out: str) -> list[str]:
    finished = subprocess.run([sys.executable, "-m", "bench", "run", "--metrics", "mse", "--n-boot", "20", "--out",
                               "results", "--no-progress"], cwd=cwd, env=_env(cwd), capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return ["report", str(next((cwd / "results").rglob("results.json")).parent), "--out", f"{out}/report.html"]


def _leaderboard(cwd: Path, out: str) -> list[str]:
    write_benchmark_set(cwd / "set")
    finished = subprocess.run(_bench(cwd, "board-run", "board.sqlite"), cwd=cwd, env=_env(cwd), capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return ["leaderboard", "--dataset", "set", "--store", "board.sqlite", "--out", out, "--n-boot", "20"]


def _train(cwd: Path, out: str) -> list[str]:
    return ["train", "--annotations", str(DEMO / "HA1.csv"), "--root", str(DEMO / "images"), "--backbone", "resnet18",
            "--no-pretrained", "--epochs", "1", "--device", "cpu", "--out", f"{out}/run"]


def _explain(cwd: Path, out: str) -> list[str]:
    finished = subprocess.run([sys.executable, "-m", "bench", *_train(cwd, "trained")], cwd=cwd, env=_env(cwd),
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    image = next((DEMO / "images").rglob("*.png"))
    return ["explain", "--checkpoint", "trained/run/best.pt", str(image), "--out", out, "--device", "cpu"]


# Each command's output folder is the mount; what it reads lies outside it.
COMMANDS = {
    "train": _train,
    "explain": _explain,
    "score": _score_folders,
    "correlate": lambda cwd, out: ["correlate", "--annotations", str(DEMO / "HA1.csv"), "--metrics", "mse",
                                   "--n-boot", "20", "--out", out, "--no-progress"],
    "run": lambda cwd, out: ["run", "--metrics", "mse", "--n-boot", "20", "--out", out, "--no-progress"],
    "splits": lambda cwd, out: ["splits", str(DEMO / "HA1.csv"), "--out", out],
    "report": _report,
    "leaderboard": _leaderboard,
}
FAULTS = {
    "read-only": ("mount --bind target target && mount -o remount,bind,ro target", ("Read-only file system", "read-only")),
    # SQLite words a full disk its own way; the store's line names its file all the same.
    "disk full": ("mount -t tmpfs -o size=4k tmpfs target", ("No space left on device", "disk is full")),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_names_the_path_it_cannot_write(tmp_path, mounts_allowed, command, fault):
    arguments = COMMANDS[command](tmp_path, "target")
    (tmp_path / "target").mkdir(exist_ok=True)
    mount, reasons = FAULTS[fault]
    failed = _in_namespace(tmp_path, mount, [sys.executable, "-m", "bench", *arguments], keep=("target", "kept"))
    line = _one_line(failed, str(tmp_path / "target"))
    assert any(reason in line for reason in reasons), line


def test_a_reader_that_leaves_early_is_not_an_error_report(tmp_path):
    """`bench score A B | head -1`: the closed pipe ends the command quietly (status 141, as a
    SIGPIPE would), not with a "disk error" line or a traceback."""
    arguments = _score_folders(tmp_path, "out")
    read_end, write_end = os.pipe()
    os.close(read_end)
    process = subprocess.Popen([sys.executable, "-m", "bench", *arguments], cwd=tmp_path, env=_env(tmp_path),
                               stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 141, err[-3000:]
    assert err == ""
