"""Tiny annotation tables (1 to 29 rows): `bench correlate` gives a result, and every
statistic or split it cannot compute is one line, never a traceback (issue 16)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "fixtures" / "demo"


@pytest.mark.parametrize("rows", [1, 2, 5, 29])
def test_correlate_on_a_few_rows_is_a_result_or_one_line_per_impossible_statistic(tmp_path, rows):
    shutil.copytree(DEMO / "images", tmp_path / "images")
    lines = (DEMO / "HA1.csv").read_text().splitlines()
    (tmp_path / "small.csv").write_text("\n".join(lines[: rows + 1]) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "correlate", "--annotations", "small.csv", "--root", "images",
         "--metrics", "mse,psnr", "--n-boot", "20", "--out", "out", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output
    skipped = [line for line in done.stdout.splitlines() if line.strip().startswith("split skipped:")]
    assert all(line.count("small.csv") == 1 for line in skipped), skipped
    results = tmp_path / "out" / "small"
    assert (results / "report.html").is_file() and (results / "tables" / "tables.md").is_file()
    bundle = json.loads((results / "results.json").read_text())
    # Whatever could be computed is there; a correlation that could not is null with its reason.
    assert bundle["correlations"]
    for row in bundle["correlations"]:
        assert (row["value"] is None and row["reason"]) or -1 <= row["value"] <= 1, row
