"""The embedded demo set: it rebuilds byte for byte, and its tables have the released format."""

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo"
IMAGES = DEMO / "images"
RELEASED_COLUMNS = ["img1", "img2", "dataset", "scope", "method",
                    "a1", "a2", "a3", "a4", "a5", "score_mean"]


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(name: str) -> list[dict]:
    with open(DEMO / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, str(REPO / "fixtures" / "build_demo.py"), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "self-check passed" in result.stdout
    return out


def test_rebuild_is_byte_identical(rebuilt):
    committed, fresh = _files(DEMO), _files(rebuilt)
    assert sorted(fresh) == sorted(committed), "the rebuild writes a different set of files"
    problems = []
    for rel, path in committed.items():
        if _sha256(path) == _sha256(fresh[rel]):
            continue
        if rel.endswith(".png"):
            with Image.open(path) as a, Image.open(fresh[rel]) as b:
                same_pixels = np.array_equal(np.asarray(a), np.asarray(b))
            pixels = "equal (PNG encoding only)" if same_pixels else "DIFFER"
            problems.append(f"{rel}: bytes differ, pixels {pixels}")
        else:
            problems.append(f"{rel}: bytes differ")
    assert not problems, "rebuild differs from fixtures/demo:\n" + "\n".join(problems)


def test_demo_set_is_small():
    assert sum(p.stat().st_size for p in _files(DEMO).values()) < 3 * 1024 * 1024


@pytest.mark.parametrize("name,n_rows,methods", [
    ("HA1.csv", 64, {"mask", "blur", "pixelate", "inpaint"}),
    ("HA2.csv", 48, {"blur", "pixelate", "inpaint"}),
])
def test_annotation_tables_have_the_released_format(name, n_rows, methods):
    with open(DEMO / name, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == RELEASED_COLUMNS
    rows = _rows(name)
    assert len(rows) == n_rows
    assert {r["method"] for r in rows} == methods
    assert {r["scope"] for r in rows} == {"global", "local"}
    assert {r["dataset"] for r in rows} == {"coco", "voc", "lfw", "celeba"}
    assert len({(r["img1"], r["img2"]) for r in rows}) == n_rows
    for r in rows:
        assert (IMAGES / r["img1"]).is_file(), r["img1"]
        assert (IMAGES / r["img2"]).is_file(), r["img2"]
        scores = [int(r[a]) for a in ("a1", "a2", "a3", "a4", "a5")]
        assert all(1 <= s <= 10 for s in scores)
        assert float(r["score_mean"]) == pytest.approx(round(sum(scores) / 5, 2), abs=1e-9)
        with Image.open(IMAGES / r["img1"]) as a, Image.open(IMAGES / r["img2"]) as b:
            assert a.size == b.size and a.mode == b.mode == "RGB"


def test_demo_readme_says_the_scores_are_simulated():
    text = (DEMO / "README.md").read_text(encoding="utf-8")
    assert "SIMULATED, NOT HUMAN" in text
    script = (REPO / "fixtures" / "build_demo.py").read_text(encoding="utf-8")
    assert "SIMULATED" in script.splitlines()[1]


def test_pii_boxes_masks_and_anonymized_images_agree():
    pii = json.loads((DEMO / "pii.json").read_text(encoding="utf-8"))
    assert len(pii) == 8
    for rel, boxes in pii.items():
        original = np.asarray(Image.open(IMAGES / rel))
        dataset_name = rel.removeprefix("originals/")
        mask = np.asarray(Image.open(DEMO / "masks" / dataset_name)) == 255
        expected = np.zeros(original.shape[:2], dtype=bool)
        for x0, y0, x1, y1 in boxes:
            expected[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(mask, expected)
        (x0, y0, x1, y1), = boxes
        local = np.asarray(Image.open(IMAGES / "originals_local" / dataset_name))
        np.testing.assert_array_equal(local, original[y0:y1, x0:x1])
        for method in ("mask", "blur", "pixelate", "inpaint"):
            path = IMAGES / "anonymized" / method / "global" / dataset_name
            anonymized = np.asarray(Image.open(path))
            np.testing.assert_array_equal(anonymized[~mask], original[~mask])
            assert (anonymized[mask] != original[mask]).any()
