"""Re-identification: dlib embeddings equal face_recognition's own pipeline to 1e-5; the pair
distance, its +inf/NaN rules, and batch-size invariance."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("dlib", reason="dlib not installed (pip install dlib-bin)")

from metrics.reid import DlibIdentityDistance, identity_distance  # noqa: E402
from tests.metrics.common import assert_batch_size_invariant  # noqa: E402

DEMO = Path(__file__).resolve().parents[2] / "fixtures" / "demo" / "images"
FACES = ["originals/lfw/astronaut_face.png", "originals/lfw/grace_hopper_face.png",
         "originals/celeba/grace_hopper_face_mirrored.png", "originals/voc/grace_hopper.png"]


def pixels(relative: str) -> np.ndarray:
    return np.array(Image.open(DEMO / relative).convert("RGB"))


def load(relative: str) -> torch.Tensor:
    return torch.from_numpy(pixels(relative)).permute(2, 0, 1).float().div(255)[None]


@pytest.fixture(scope="module")
def reid(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))
        yield DlibIdentityDistance()


@pytest.fixture(scope="module")
def reid_hog(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))
        yield DlibIdentityDistance(detector="hog")


@pytest.fixture(scope="module")
def face_recognition(reid, reid_hog):
    """face_recognition's API, told where face_recognition_models' files are: that package's
    own __init__ needs pkg_resources, which current setuptools no longer ships. (Our adapters
    are built first: the shim in sys.modules hides the real package from the weights manager.)"""
    found = importlib.util.find_spec("face_recognition_models")
    if importlib.util.find_spec("face_recognition") is None or found is None:
        pytest.skip("face-recognition not installed (pip install --no-deps face-recognition)")
    models = Path(found.submodule_search_locations[0]) / "models"
    shim = types.ModuleType("face_recognition_models")
    shim.__spec__ = found  # so that the weights manager still finds the package's files
    shim.pose_predictor_model_location = lambda: str(models / "shape_predictor_68_face_landmarks.dat")
    shim.pose_predictor_five_point_model_location = lambda: str(models / "shape_predictor_5_face_landmarks.dat")
    shim.face_recognition_model_location = lambda: str(models / "dlib_face_recognition_resnet_model_v1.dat")
    shim.cnn_face_detector_model_location = lambda: str(models / "mmod_human_face_detector.dat")
    saved = sys.modules.get("face_recognition_models")
    sys.modules["face_recognition_models"] = shim
    try:
        import face_recognition as module
        yield module
    finally:
        if saved is None:
            sys.modules.pop("face_recognition_models", None)
        else:
            sys.modules["face_recognition_models"] = saved


def test_embeddings_equal_face_recognition_pipeline(reid_hog, face_recognition):
    for relative in FACES:
        image = pixels(relative)
        reference = face_recognition.face_encodings(image, model="small")
        assert len(reference) == 1, relative
        ours = reid_hog.features(load(relative))[0].numpy()
        np.testing.assert_allclose(ours, reference[0], atol=1e-5, rtol=0, err_msg=relative)
        np.testing.assert_allclose(identity_distance(ours[None], reference[0][None]),
                                   face_recognition.face_distance([reference[0]], ours), atol=1e-5)


def test_mtcnn_boxes_embed_as_face_recognition_does_with_them(reid, face_recognition):
    """With MTCNN's (squared) box given as a known face location, face_recognition's own
    alignment and embedding give our values to 1e-5; its box is MTCNN's, squared."""
    from metrics.reid import square_box

    assert reid.embedder.detector == "mtcnn" and reid.config() == {"detector": "mtcnn"}
    for relative in [*FACES, "originals/coco/camera.png"]:
        image = pixels(relative)
        found = sorted(reid.embedder.mtcnn.detect(load(relative))[0], key=lambda face: -face[4])
        left, top, right, bottom = square_box(found[0])
        assert right - left == bottom - top or abs((right - left) - (bottom - top)) <= 1
        reference = face_recognition.face_encodings(image, known_face_locations=[(top, right, bottom, left)],
                                                    model="small")
        ours = reid.features(load(relative))[0].numpy()
        np.testing.assert_allclose(ours, reference[0], atol=1e-5, rtol=0, err_msg=relative)


def test_hog_misses_the_small_face_mtcnn_finds(reid, reid_hog):
    camera = load("originals/coco/camera.png")  # a 21x28-px face
    assert np.isnan(reid_hog.features(camera).numpy()).all()
    assert np.isfinite(reid.features(camera).numpy()).all()
    assert reid.score(camera, camera)[0] == 0


def test_without_mtcnn_files_falls_back_to_hog_and_says_so(monkeypatch, tmp_path):
    from metrics import weights
    from metrics.errors import WeightsError

    real = weights.resolve

    def resolve(name, *args, **kwargs):
        if name.startswith("mtcnn"):
            raise WeightsError(f"weights {name} not found; run `bench weights fetch {name}`")
        return real(name, *args, **kwargs)

    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(weights, "resolve", resolve)
    fallback = DlibIdentityDistance()
    card = fallback.card().to_dict()
    assert fallback.config() == {"detector": "hog"}
    assert "MTCNN unavailable" in card["details"]["detector"] and "bench weights fetch mtcnn" in card["details"]["detector"]
    assert fallback.key() == DlibIdentityDistance(detector="hog").key()  # the same values: the same cache key
    with pytest.raises(WeightsError, match="mtcnn"):
        DlibIdentityDistance(detector="mtcnn")


def test_same_person_close_other_person_far(reid):
    astronaut, hopper, hopper_mirrored, hopper_portrait = (load(p) for p in FACES)
    values = reid.score(torch.cat([astronaut, hopper]), torch.cat([astronaut, hopper]))
    assert np.all(values == 0)
    assert reid.score(hopper_portrait, hopper_portrait)[0] == 0
    embeddings = torch.cat([reid.features(image) for image in (hopper, hopper_mirrored, astronaut)])
    same = torch.linalg.norm(embeddings[0] - embeddings[1]).item()
    other = torch.linalg.norm(embeddings[0] - embeddings[2]).item()
    assert same < 0.6 < other


def test_unfound_faces_are_inf_and_faceless_originals_nan(reid):
    face = load(FACES[0])
    blank = torch.full_like(face, 0.5)
    values = reid.score(torch.cat([face, blank]), torch.cat([blank, face]))
    assert values[0] == np.inf and np.isnan(values[1])


@pytest.mark.slow
def test_batch_size_invariant(reid):
    originals = torch.cat([load(FACES[0]), load(FACES[1])] * 4)
    anonymized = torch.cat([load(p.replace("originals/", f"anonymized/{m}/global/"))
                            for m in ("blur", "pixelate", "mask", "inpaint") for p in FACES[:2]])
    assert_batch_size_invariant(reid, originals, anonymized)
    assert reid.card().to_dict()["weights"][0]["status"] == "verified"
