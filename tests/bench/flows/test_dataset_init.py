"""`bench dataset init FOLDER`: faces found with MTCNN become pii.json and masks, a folder per
person becomes identities.json, photos without a face are listed; the new set benchmarks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("facenet_pytorch", reason="facenet-pytorch not installed")

from bench.cli import main  # noqa: E402

DEMO = Path(__file__).resolve().parents[3] / "fixtures" / "demo" / "images" / "originals"


@pytest.fixture
def photos(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.chdir(tmp_path)
    for person, files in {"eileen_collins": ["lfw/astronaut_face.png", "voc/astronaut_mirrored.png"],
                          "grace_hopper": ["lfw/grace_hopper_face.png"]}.items():
        (tmp_path / "photos" / person).mkdir(parents=True)
        for name in files:
            shutil.copyfile(DEMO / name, tmp_path / "photos" / person / Path(name).name)
    Image.new("RGB", (64, 64), (120, 120, 120)).save(tmp_path / "photos" / "grace_hopper" / "wall.png")
    return tmp_path


def test_init_writes_pii_masks_identities_and_lists_misses(photos, capsys):
    assert main(["dataset", "init", "photos", "--out", "mine"]) == 0
    printed = capsys.readouterr().out
    assert "3 originals with a face, 2 identities" in printed and "grace_hopper/wall.png" in printed
    pii = json.loads((photos / "mine" / "pii.json").read_text())
    key = "originals/photos/eileen_collins/astronaut_face.png"
    assert sorted(pii) == sorted([key, "originals/photos/eileen_collins/astronaut_mirrored.png",
                                  "originals/photos/grace_hopper/grace_hopper_face.png"])
    (x0, y0, x1, y1), = pii[key]
    assert 20 <= x0 < x1 <= 100 and 20 <= y0 < y1 <= 110  # the face, not the whole 128x128 image
    mask = np.asarray(Image.open(photos / "mine" / "masks" / "photos" / "eileen_collins" / "astronaut_face.png"))
    assert mask[y0:y1, x0:x1].min() == 255 and mask.sum() == 255 * (x1 - x0) * (y1 - y0)
    assert (photos / "mine" / "images" / key).read_bytes() == (DEMO / "lfw" / "astronaut_face.png").read_bytes()
    identities = json.loads((photos / "mine" / "identities.json").read_text())
    assert identities[key] == "eileen_collins"
    assert main(["dataset", "init", "photos", "--out", "mine"]) == 2  # refuses to overwrite
    assert "exists already" in capsys.readouterr().err


def test_init_of_a_folder_without_images_is_one_line(photos, capsys):
    (photos / "empty").mkdir()
    assert main(["dataset", "init", "empty"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_initialised_set_benchmarks_with_privacy_block(photos, capsys):
    assert main(["dataset", "init", "photos"]) == 0  # default --out: photos-bench beside it
    capsys.readouterr()
    out = photos / "runs"
    # Relative paths, as a user types them from the working directory.
    code = main(["run", "--method", "mask", "--dataset", "photos-bench", "--metrics", "mse",
                 "--privacy", "--no-progress", "--out", "runs", "--store", "store.sqlite"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "### Privacy attacks: photos-bench" in printed and "MTCNN detection rate ↓" in printed
    document = json.loads((out / "photos-bench" / "privacy.json").read_text())
    rows = {(row["method"], row["scope"]): row for row in document["rows"]}
    assert rows[("mask", "global")]["detection_rate"]["value"] == 0
    assert rows[("mask", "global")]["chance_rank1"] == pytest.approx(1 / 2)
    assert (out / "photos-bench" / "privacy_roc.png").read_bytes().startswith(b"\x89PNG")
    assert "### Privacy attacks" in (out / "photos-bench" / "leaderboard.md").read_text()
    assert "1 face found" in (out / "photos-bench" / "leaderboard.html").read_text()  # the detector's boxes
    page = (out / "photos-bench" / "privacy.html").read_text()
    assert "What the detector sees" in page and page.count("data:image/jpeg;base64,") >= 2
