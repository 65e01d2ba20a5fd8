"""Face detection attacks: MTCNN boxes equal facenet-pytorch's own, batch-size invariance,
the pair value, and one-line errors for missing or corrupt model files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metrics import weights
from metrics.errors import WeightsError

pytest.importorskip("facenet_pytorch", reason="facenet-pytorch not installed (pip install --no-deps facenet-pytorch)")

from metrics.detection import (  # noqa: E402
    LBPCascadeDetection, MTCNNDetection, box_iou, match_confidence, pack_detections,
)
from tests.metrics.common import assert_batch_size_invariant  # noqa: E402

DEMO = Path(__file__).resolve().parents[2] / "fixtures" / "demo" / "images"
FACES = ["originals/lfw/astronaut_face.png", "originals/lfw/grace_hopper_face.png"]


def load(relative: str) -> torch.Tensor:
    pixels = np.array(Image.open(DEMO / relative).convert("RGB"))
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)[None]


@pytest.fixture(scope="module")
def mtcnn(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))
        yield MTCNNDetection()


def test_mtcnn_boxes_equal_facenet_pytorch_to_one_pixel(mtcnn):
    from facenet_pytorch import MTCNN

    reference = MTCNN(keep_all=True, select_largest=False, device="cpu")
    for relative in FACES + ["originals/coco/astronaut.png"]:
        ours = mtcnn.detect(load(relative))[0]
        boxes, probs = reference.detect(Image.open(DEMO / relative).convert("RGB"))
        assert len(ours) == len(boxes) >= 1, relative
        np.testing.assert_allclose(np.array(ours)[:, :4], np.asarray(boxes, dtype=np.float64), atol=1.0, rtol=0, err_msg=relative)
        np.testing.assert_allclose(np.array(ours)[:, 4], np.asarray(probs, dtype=np.float64), atol=1e-4, rtol=0)


def test_mtcnn_pair_values_are_batch_size_invariant(mtcnn):
    originals = torch.cat([load(p) for p in FACES] * 2)
    anonymized = torch.cat([load(p) for p in FACES] + [load(p.replace("originals/", "anonymized/blur/global/"))
                                                        for p in FACES])
    values = mtcnn.score(originals, anonymized)
    assert values[:2].min() > 0.99 and np.all(values[2:] == 0)
    assert_batch_size_invariant(mtcnn, originals, anonymized, atol=1e-6)


def test_mtcnn_convention_card_and_key(mtcnn):
    card = mtcnn.card().to_dict()
    assert card["higher_is_more_anonymous"] is False
    assert card["details"]["thresholds"] == [0.6, 0.7, 0.7] and card["details"]["min_face_size"] == 20
    assert [w["name"] for w in card["weights"]] == ["mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"]
    assert all(w["status"] == "verified" for w in card["weights"])
    assert MTCNNDetection(iou_threshold=0.3).key() != mtcnn.key()


def test_unchanged_image_is_found_and_masked_face_is_not(mtcnn):
    original = load(FACES[0])
    assert mtcnn.score(original, original)[0] > 0.99
    masked = original.clone()
    masked[..., 20:110, 20:100] = 0
    assert mtcnn.score(original, masked)[0] == 0


def test_lbp_cascade_agrees_with_mtcnn_on_the_face(tmp_path, monkeypatch, mtcnn):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    lbp = LBPCascadeDetection()
    original = load(FACES[0])
    lbp_box = np.array(lbp.detect(original)[0][0][:4])
    mtcnn_box = np.array(mtcnn.detect(original)[0][0][:4])
    assert box_iou(lbp_box, mtcnn_box[None])[0] > 0.5
    assert lbp.score(original, original)[0] == 1.0
    card = lbp.card().to_dict()
    assert card["weights"][0]["status"] == "verified" and "LBP" in card["details"]["detector"]


def test_match_confidence_rules():
    original = pack_detections([[(10, 10, 50, 50, 0.99)]])[0].numpy()
    far = pack_detections([[(60, 60, 90, 90, 0.95)]])[0].numpy()
    near = pack_detections([[(60, 60, 90, 90, 0.95), (12, 12, 52, 52, 0.8)]])[0].numpy()
    assert match_confidence(original, far) == 0.0
    assert match_confidence(original, near) == pytest.approx(0.8)
    assert np.isnan(match_confidence(pack_detections([[]])[0].numpy(), near))


def test_corrupt_package_file_is_named_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "pnet.pt"
    bad.write_bytes(b"not a network")
    key = weights.SPECS["mtcnn_pnet"].offline
    monkeypatch.setitem(weights.OFFLINE_CONVERTERS, key,
                        weights.OFFLINE_CONVERTERS[key].__class__(**{**weights.OFFLINE_CONVERTERS[key].__dict__,
                                                                     "source": lambda: bad}))
    with pytest.raises(WeightsError) as caught:
        MTCNNDetection()
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_package_file_is_named_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    key = weights.SPECS["lbp_frontal_face"].offline
    monkeypatch.setitem(weights.OFFLINE_CONVERTERS, key,
                        weights.OFFLINE_CONVERTERS[key].__class__(**{**weights.OFFLINE_CONVERTERS[key].__dict__,
                                                                     "source": lambda: None}))
    with pytest.raises(WeightsError, match="lbp_frontal_face not found"):
        LBPCascadeDetection()


def test_bench_weights_list_shows_privacy_files(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    main(["weights", "list"])
    listed = capsys.readouterr().out
    for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "lbp_frontal_face",
                 "dlib_face_recognition_resnet_v1", "dlib_shape_predictor_5"):
        assert name in listed
    assert json.dumps(weights.SPECS["dlib_shape_predictor_5"].sha256).strip('"') == (
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888")


def test_images_smaller_than_the_minimum_face_find_nothing(mtcnn, tmp_path, monkeypatch):
    """A local-scope crop can be smaller than MTCNN's 20-px minimum face: no face, no error."""
    from metrics.detection import LBPCascadeDetection

    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    tiny = torch.rand(3, 3, 14, 18)
    assert mtcnn.detect(tiny) == [[], [], []]
    assert LBPCascadeDetection().detect(tiny) == [[], [], []]
    assert np.isnan(mtcnn.score(tiny, tiny)).all()  # no original face: the pair has no value
