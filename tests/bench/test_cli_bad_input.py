"""`bench validate` through the real entry point: every kind of bad input gives a non-zero exit,
names the offending file and line, and never shows a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
HEADER = "img1,img2,dataset,scope,method,ann_a,ann_b,score_mean"
GOOD = [
    "imgs/o1.png,imgs/a1.png,coco,local,mask,5,7,6",
    "imgs/o2.png,imgs/a2.png,celeba,global,blurpix,8,,8",
]


def bench(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def data(tmp_path) -> Path:
    (tmp_path / "imgs").mkdir()
    for i, name in enumerate(["o1", "o2", "a1", "a2"]):
        Image.fromarray(np.full((8, 10, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{name}.png")
    Image.new("RGB", (12, 8)).save(tmp_path / "imgs" / "wide.png")
    noisy = np.random.default_rng(0).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "imgs" / "full.png")
    blob = (tmp_path / "imgs" / "full.png").read_bytes()
    (tmp_path / "imgs" / "cut.png").write_bytes(blob[: len(blob) // 2])
    return tmp_path


def write(root: Path, rows: list[str], header: str = HEADER) -> Path:
    path = root / "HA1.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def assert_reported(proc: subprocess.CompletedProcess, *needles: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, (needle, out)


def test_clean_csv_exits_zero(data):
    proc = bench("validate", str(write(data, GOOD)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no problems found" in proc.stdout and "Traceback" not in proc.stderr


def test_missing_annotation_file(tmp_path):
    missing = tmp_path / "HA1.csv"
    assert_reported(bench("validate", str(missing)), f"{missing}: annotation file not found")


# kind -> (third row of the CSV, or a full replacement, words that must appear)
BAD_ROWS = {
    "truncated image": ("imgs/o1.png,imgs/cut.png,coco,local,mask,5,7,6", ["cannot decode image", "cut.png"]),
    "non-numeric score": ("imgs/o1.png,imgs/a2.png,coco,local,mask,5,7,six", ["non-numeric", "'six'"]),
    "out-of-range score": ("imgs/o1.png,imgs/a2.png,coco,local,mask,5,70,6", ["outside 1..10", "'ann_b'"]),
    "duplicate row": (GOOD[0], ["duplicate pair", "already on line 2"]),
    "absolute path": ("/data/o1.png,imgs/a2.png,coco,local,mask,5,7,6", ["absolute path", "'/data/o1.png'"]),
    "path escaping root": ("imgs/o1.png,../../etc/a.png,coco,local,mask,5,7,6", ["leaves the image root"]),
    "size mismatch": ("imgs/o1.png,imgs/wide.png,coco,local,mask,5,7,6", ["size mismatch", "10x8", "12x8",
                                                                           "--size-policy resize"]),
    "missing image": ("imgs/o1.png,imgs/gone.png,coco,local,mask,5,7,6", ["image not found", "gone.png"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_bad_row(data, kind):
    row, words = BAD_ROWS[kind]
    csv = write(data, GOOD + [row])
    assert_reported(bench("validate", str(csv)), f"{csv} line 4:", *words)


def test_missing_column(data):
    csv = write(data, [r.rsplit(",", 1)[0] for r in GOOD], header=HEADER.rsplit(",", 1)[0])
    assert_reported(bench("validate", str(csv)), f"{csv} line 1:", "missing required column", "'score_mean'",
                    "--columns")


def test_bad_columns_option_is_one_line_error(data):
    proc = bench("validate", str(write(data, GOOD)), "--columns", "photo=src")
    assert_reported(proc, "bench: error:", "'photo'", "original, anonymized")
    assert proc.returncode == 2


@pytest.mark.parametrize("command", [["run"], ["run", "--method", "mask"], ["perf", "--pairs", "2"]])
def test_a_missing_checkpoint_is_refused_before_anything_is_scored(command, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", *command, "--checkpoint-ha1", "missing/best.pt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert_reported(proc, "--checkpoint-ha1", "missing/best.pt: no such file", "bench train")
    assert len((proc.stdout + proc.stderr).strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists(), "refused before any output was made"
