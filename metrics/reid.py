"""Re-identification as a privacy attack: dlib's 128-d face embedding, original vs anonymized.

The pipeline is face_recognition's "small" one, called through dlib directly: dlib's HOG
frontal-face detector (built into dlib, upsampled once), the 5-point shape predictor for
alignment, and the ResNet embedding (no jitter). Both model files are public domain and come
pinned from face_recognition_models; the 68-point predictor is never loaded (its training
data bars commercial use). tests/metrics/test_reid.py checks the embeddings against
face_recognition's own pipeline to 1e-5.

Per image, the most confident face is embedded. Per pair, the value is the Euclidean
distance between the original's and the anonymized image's embeddings (face_recognition
calls two faces the same person below 0.6). Higher = more anonymous. When no face is found
on the anonymized image the attack fails there: the value is +inf (not re-identified: rank
statistics keep it, as they keep PSNR's +inf) and `bench.privacy` counts such pairs on their
own line. When the original has no detectable face, the pair has no value (NaN).

Features are an N x 128 float64 tensor; rows of images without a face are NaN.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from metrics.base import FeaturePairMetric, WeightsRecord
from metrics.detection import to_uint8_hwc
from metrics.errors import WeightsError

EMBEDDING_SIZE = 128
#: face_recognition's default `tolerance`: distances below it are called the same person.
SAME_PERSON_DISTANCE = 0.6
UPSAMPLE = 1


class DlibEmbedder:
    """HOG detector + 5-point alignment + dlib ResNet embedding, from the pinned files."""

    def __init__(self) -> None:
        from metrics import weights

        try:
            import dlib
        except ImportError as exc:
            raise WeightsError(f"dlib is not importable ({exc}); pip install dlib-bin (version in constraints.txt)"
                               ) from exc
        predictor = weights.resolve("dlib_shape_predictor_5")
        encoder = weights.resolve("dlib_face_recognition_resnet_v1")
        self.records = [predictor.record(), encoder.record()]
        try:
            self._predictor = dlib.shape_predictor(str(predictor.path))
            self._encoder = dlib.face_recognition_model_v1(str(encoder.path))
        except RuntimeError as exc:
            raise WeightsError(f"dlib cannot load {predictor.path} or {encoder.path} ({exc}); "
                               "reinstall face_recognition_models") from exc
        self._detector = dlib.get_frontal_face_detector()

    def faces(self, pixels: np.ndarray) -> list[tuple[Any, float]]:
        """dlib rectangles with their detector scores, most confident first."""
        rectangles, scores, _ = self._detector.run(pixels, UPSAMPLE, 0.0)
        return sorted(zip(rectangles, scores), key=lambda found: -found[1])

    def embed(self, pixels: np.ndarray, rectangle: Any) -> np.ndarray:
        shape = self._predictor(pixels, rectangle)
        return np.array(self._encoder.compute_face_descriptor(pixels, shape, 1), dtype=np.float64)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 N x H x W x 3 -> N x 128 embeddings of each image's most confident face; NaN rows
        where no face is found."""
        embeddings = np.full((len(images), EMBEDDING_SIZE), np.nan)
        for i, pixels in enumerate(images):
            pixels = np.ascontiguousarray(pixels)
            found = self.faces(pixels)
            if found:
                embeddings[i] = self.embed(pixels, found[0][0])
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
    label = "dlib identity distance"
    version = "1"
    higher_is_more_anonymous: ClassVar[bool] = True
    value_range: ClassVar[str] = ">= 0, Euclidean distance of 128-d embeddings (same person below about 0.6); +inf = no face found"
    weights_needed: ClassVar[tuple[str, ...]] = ("dlib_shape_predictor_5", "dlib_face_recognition_resnet_v1")
    convention: ClassVar[str] = ("dlib HOG detector, 5-point alignment, ResNet v1 128-d embedding (no jitter); "
                                 "distance original <-> anonymized; 0.6 is dlib's same-person threshold")

    def __init__(self, device: str | torch.device = "cpu") -> None:
        # dlib runs on the CPU whatever the device; the device only says where inputs arrive.
        super().__init__(device)
        self.embedder = DlibEmbedder()

    def weights(self) -> list[WeightsRecord]:
        return list(self.embedder.records)

    def conventions(self) -> dict[str, Any]:
        return {"detector": f"dlib HOG frontal face detector, upsampled {UPSAMPLE}x, most confident face",
                "alignment": "dlib 5-point shape predictor", "embedding": "dlib ResNet v1, 128-d, no jitter",
                "input": "uint8 RGB (float [0, 1] x 255, rounded)",
                "value": "Euclidean distance of the embeddings; +inf when the anonymized face is not found "
                         "(not re-identified), NaN when the original's is not",
                "same_person_below": SAME_PERSON_DISTANCE}

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.embedder.embed_images(to_uint8_hwc(images)))

    @staticmethod
    def select(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return features[index.cpu()]

    def _compare(self, original_features: torch.Tensor, anonymized_features: torch.Tensor) -> np.ndarray:
        return identity_distance(original_features.numpy(), anonymized_features.numpy())
