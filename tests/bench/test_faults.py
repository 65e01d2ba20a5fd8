"""Fault injection: `bench run --method` SIGKILLed at random moments, then re-run.

After each kill the re-run must finish, and the results must be those of a run that was never
interrupted: the same leaderboard values, a store that passes SQLite's integrity check with
no run left "running" (killed runs are marked "interrupted" when the store is next opened),
each (pair, metric) stored once, and every output PNG matching its manifest.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from metrics.hashing import file_sha256
from tests.bench.benchset import write_benchmark_set

REPO = Path(__file__).resolve().parents[2]
METHOD = "tests.bench.hostile_methods:slow_invert"


def _command(cwd: Path) -> list[str]:
    return [sys.executable, "-m", "bench", "run", "--method", METHOD, "--dataset", str(cwd / "set"), "--metrics", "mse,psnr",
            "--out", str(cwd / "out"), "--store", "out/results.sqlite", "--n-boot", "50", "--no-progress"]


def _start(cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLCONFIGDIR=str(cwd / "mpl"))
    return subprocess.Popen(_command(cwd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(cwd: Path) -> str:
    process = _start(cwd)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:] + out[-3000:]
    assert "Traceback" not in err
    return out


def _values(cwd: Path) -> dict[tuple[str, str, str], float]:
    board = json.loads((cwd / "out" / "set" / "leaderboard.json").read_text())
    return {(row["method"], row["scope"], metric): cell
            for row in board["rows"] for metric, cell in row["cells"].items()}


def _check_consistent(cwd: Path, reference: dict) -> None:
    assert _values(cwd) == reference
    with closing(sqlite3.connect(cwd / "out" / "results.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[0] == 0
        duplicated = db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM scores GROUP BY original_sha256, "
                                "anonymized_sha256, metric_key HAVING COUNT(*) > 1)").fetchone()[0]
        assert duplicated == 0
    for manifest in (cwd / "out" / "set").glob("*/manifest.json"):
        for scopes in json.loads(manifest.read_text())["outputs"].values():
            for scope, sha256 in scopes.items():
                files = list((manifest.parent / scope).rglob("*.png"))
                assert sha256 in {file_sha256(path) for path in files}, manifest


@pytest.mark.slow
def test_sigkill_at_five_random_moments_then_rerun(tmp_path):
    reference_folder = tmp_path / "reference"
    reference_folder.mkdir()
    write_benchmark_set(reference_folder / "set")
    started = time.monotonic()
    _finish(reference_folder)
    duration = time.monotonic() - started
    reference = _values(reference_folder)
    assert any(key[0] == METHOD for key in reference)

    cwd = tmp_path / "killed"
    cwd.mkdir()
    write_benchmark_set(cwd / "set")
    moments = np.random.default_rng(16).uniform(0.1 * duration, 0.8 * duration, size=5)
    killed = 0
    for moment in moments:
        process = _start(cwd)
        try:
            process.wait(timeout=float(moment))
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            killed += 1
        process.communicate()
        _finish(cwd)
        _check_consistent(cwd, reference)
        # The next kill hits a run with fresh work: drop the outputs, keep the store.
        for path in sorted((cwd / "out" / "set").rglob("*"), reverse=True):
            if path.is_file() and path.suffix in (".png", ".json", ".csv"):
                path.unlink()
    assert killed >= 3  # most moments fell inside a run
    with closing(sqlite3.connect(cwd / "out" / "results.sqlite")) as db:
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    assert "running" not in statuses and statuses.get("finished", 0) >= 5
