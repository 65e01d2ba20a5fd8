"""Re-identification as a privacy attack: dlib's 128-d face embedding, original vs anonymized.

The pipeline is face_recognition's "small" one, called through dlib directly: a face box,
the 5-point shape predictor for alignment, and the ResNet embedding (no jitter). Both model
files are public domain and come pinned from face_recognition_models; the 68-point predictor
is never loaded (its training data bars commercial use). tests/metrics/test_reid.py checks
the embeddings against face_recognition's own pipeline to 1e-5, with its HOG boxes and with
MTCNN's boxes passed to it as known face locations.

The face box comes from MTCNN (`metrics.detection`) when its files are there, else from
dlib's HOG frontal-face detector (built into dlib, upsampled once); the convention card and
the cache key say which. Why MTCNN: HOG misses small faces (the 21x28-px face of the demo's
coco/camera.png), so an unchanged original counted as "not re-identified". MTCNN's box is
taller than HOG's square one (it takes in chin and forehead); it is squared around its
centre (side = the mean of width and height) because the 5-point predictor was trained on
dlib's square detector boxes. On the demo's 7 faces both detectors find, the embeddings of
the two boxes differ by 0.10 on average (0 to 0.26; face_recognition calls < 0.6 the same
person).

Per image, the most confident face is embedded. Per pair, the value is the Euclidean
distance between the original's and the anonymized image's embeddings (face_recognition
calls two faces the same person below 0.6). Higher = more anonymous. When no face is found
on the anonymized image the attack fails there: the value is +inf (not re-identified: rank
statistics keep it, as they keep PSNR's +inf) and `bench.scoring.privacy` counts such pairs on their
own line. When the original has no detectable face, the pair has no value (NaN).

Features are an N x 128 float64 tensor; rows of images without a face are NaN.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from metrics.base import FeaturePairMetric, WeightsRecord
from metrics.detection import to_uint8_hwc
from metrics.errors import MetricInputError, WeightsError

EMBEDDING_SIZE = 128
#: face_recognition's default `tolerance`: distances below it are called the same person.
SAME_PERSON_DISTANCE = 0.6
UPSAMPLE = 1


#: Face detectors for the embedding's box: "auto" = MTCNN, or HOG when MTCNN's files are missing.
DETECTORS = ("auto", "mtcnn", "hog")


def square_box(face: Any) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square with the box's centre and the mean of its sides."""
    x0, y0, x1, y1 = (float(v) for v in face[:4])
    half = ((x1 - x0) + (y1 - y0)) / 4
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


def import_dlib(who: str = "") -> Any:
    """The dlib module, or a `WeightsError` saying how to install it (`who`: "name: " prefix)."""
    try:
        import dlib
    except ImportError as exc:
        raise WeightsError(f"{who}dlib is not importable ({exc}); pip install dlib-bin (version in constraints.txt)"
                           ) from exc
    return dlib


def load_dlib_model(load: Any, weights_name: str, who: str = "") -> tuple[Any, WeightsRecord]:
    """(model, its weights record): the pinned file `weights_name` loaded with dlib's `load`."""
    from metrics import weights

    resolved = weights.resolve(weights_name)
    try:
        return load(str(resolved.path)), resolved.record()
    except RuntimeError as exc:
        raise WeightsError(f"{who}dlib cannot load {resolved.path} ({exc}); reinstall face_recognition_models"
                           ) from exc


def best_hog_face(detector: Any, pixels: np.ndarray) -> Any:
    """The most confident face rectangle of dlib's HOG detector on uint8 RGB `pixels`, or None."""
    rectangles, scores, _ = detector.run(pixels, UPSAMPLE, 0.0)
    return rectangles[int(np.argmax(scores))] if len(rectangles) else None


class DlibEmbedder:
    """Face box (MTCNN or HOG) + 5-point alignment + dlib ResNet embedding, from the pinned files."""

    def __init__(self, detector: str = "auto", device: str | torch.device = "cpu", mtcnn: Any = None) -> None:
        """`mtcnn`: an MTCNNDetection to share (the privacy block's), instead of building one."""
        if detector not in DETECTORS:
            raise MetricInputError(f"reid_dlib: detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
        dlib = import_dlib()
        self._predictor, predictor = load_dlib_model(dlib.shape_predictor, "dlib_shape_predictor_5")
        self._encoder, encoder = load_dlib_model(dlib.face_recognition_model_v1, "dlib_face_recognition_resnet_v1")
        self.records = [predictor, encoder]
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        #: MTCNN (a metrics.detection.MTCNNDetection) or None for HOG; why HOG when MTCNN was wanted.
        self.mtcnn = None
        self.fallback_reason = ""
        if detector != "hog" and mtcnn is not None:
            self.mtcnn = mtcnn
            self.records += mtcnn.weights()
        elif detector != "hog":
            from metrics.detection import MTCNNDetection

            try:
                self.mtcnn = MTCNNDetection(device)
            except WeightsError as exc:
                if detector == "mtcnn":
                    raise
                self.fallback_reason = f"MTCNN unavailable ({exc}); dlib's HOG detector used instead"
            else:
                self.records += self.mtcnn.weights()

    @property
    def detector(self) -> str:
        return "mtcnn" if self.mtcnn is not None else "hog"

    def boxes(self, images: torch.Tensor, detections: torch.Tensor | None = None) -> list[Any]:
        """The most confident face of each float [0, 1] image as a dlib rectangle, or None.
        `detections`: MTCNN's packed detections of these images (N x K x 5, most confident
        first, as `MTCNNDetection.features` gives them), when already computed."""
        if self.mtcnn is None:
            return [best_hog_face(self._detector, np.ascontiguousarray(pixels)) for pixels in to_uint8_hwc(images)]
        if detections is None:
            detections = self.mtcnn.features(images)
        return [self._dlib.rectangle(*square_box(faces[0])) if faces[0, 4] > 0 else None
                for faces in detections.cpu()]

    def embed(self, pixels: np.ndarray, rectangle: Any) -> np.ndarray:
        shape = self._predictor(pixels, rectangle)
        return np.array(self._encoder.compute_face_descriptor(pixels, shape, 1), dtype=np.float64)

    def embed_images(self, images: torch.Tensor, detections: torch.Tensor | None = None) -> np.ndarray:
        """float [0, 1] NCHW -> N x 128 embeddings of each image's most confident face; NaN rows
        where no face is found (`detections` as in `boxes`)."""
        embeddings = np.full((len(images), EMBEDDING_SIZE), np.nan)
        for i, (pixels, box) in enumerate(zip(to_uint8_hwc(images), self.boxes(images, detections))):
            if box is not None:
                embeddings[i] = self.embed(np.ascontiguousarray(pixels), box)
        return embeddings


def identity_distance(original: np.ndarray, anonymized: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance; +inf where the anonymized face was not found, NaN where the
    original's was not."""
    distance = np.linalg.norm(original - anonymized, axis=1)
    distance[np.isnan(anonymized).any(axis=1)] = np.inf
    distance[np.isnan(original).any(axis=1)] = np.nan
    return distance


class DlibIdentityDistance(FeaturePairMetric):
    name = "reid_dlib"
    tradeoff_privacy_priority = 2
    label = "dlib identity distance"
    version = "2"
    higher_is_more_anonymous: ClassVar[bool] = True
    infinite_means: ClassVar[str] = "no face found on the anonymized image: not re-identified"
    value_range: ClassVar[str] = ">= 0, Euclidean distance of 128-d embeddings (same person below about 0.6); +inf = no face found"
    weights_needed: ClassVar[tuple[str, ...]] = ("dlib_shape_predictor_5", "dlib_face_recognition_resnet_v1")
    preload_modules: ClassVar[tuple[str, ...]] = ("dlib",)
    # MTCNN's files are not needed: without them the face box is dlib's HOG detector's.
    convention: ClassVar[str] = ("MTCNN's face box squared (dlib's HOG detector without MTCNN's files), 5-point "
                                 "alignment, ResNet v1 128-d embedding (no jitter); distance original <-> "
                                 "anonymized; 0.6 is dlib's same-person threshold")

    def __init__(self, device: str | torch.device = "cpu", detector: str = "auto", mtcnn: Any = None) -> None:
        # dlib runs on the CPU whatever the device; MTCNN's networks run on the device.
        super().__init__(device)
        self.embedder = DlibEmbedder(detector, self.device, mtcnn=mtcnn)

    def config(self) -> dict[str, Any]:
        return {"detector": self.embedder.detector}

    def weights(self) -> list[WeightsRecord]:
        return list(self.embedder.records)

    def conventions(self) -> dict[str, Any]:
        if self.embedder.mtcnn is not None:
            box = ("MTCNN (facenet-pytorch), most confident face, its box squared around its centre "
                   f"(side = mean of width and height); thresholds {list(self.embedder.mtcnn.THRESHOLDS)}, "
                   f"min face {self.embedder.mtcnn.MIN_FACE_SIZE} px")
        else:
            box = f"dlib HOG frontal face detector, upsampled {UPSAMPLE}x, most confident face"
            if self.embedder.fallback_reason:
                box += f" ({self.embedder.fallback_reason})"
        return {"detector": box,
                "alignment": "dlib 5-point shape predictor", "embedding": "dlib ResNet v1, 128-d, no jitter",
                "input": "uint8 RGB (float [0, 1] x 255, rounded)",
                "value": "Euclidean distance of the embeddings; +inf when the anonymized face is not found "
                         "(not re-identified), NaN when the original's is not",
                "same_person_below": SAME_PERSON_DISTANCE}

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.embedder.embed_images(images))

    @staticmethod
    def select(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return features[index.cpu()]

    def _compare(self, original_features: torch.Tensor, anonymized_features: torch.Tensor) -> np.ndarray:
        return identity_distance(original_features.numpy(), anonymized_features.numpy())
