"""Face detection as a privacy attack: is a face still found where the original's face was?

Per pair, the detector runs on the original and on the anonymized image. The original's most
confident face is the PII face; the pair's value is the confidence of the best anonymized
detection that overlaps it (IoU >= `iou_threshold`), or 0 when none does. Higher values mean
the face is still found, so LESS anonymous (`higher_is_more_anonymous = False`). A pair whose
original has no detectable face has no value (NaN): the attack says nothing about it, and the
set-level report counts such pairs on their own line (`bench.scoring.privacy`).

Two detector families, both offline from files inside pinned registry packages:

- MTCNN (Zhang et al. 2016; facenet-pytorch's port): a CNN cascade with probabilities. We
  build its three networks ourselves and load the pinned files with weights_only=True
  (facenet-pytorch's own constructor calls torch.load without it), then call its
  `detect_face`, so boxes are facenet-pytorch's to the pixel (tests/metrics/test_detection.py).
- The LBP frontal-face cascade (OpenCV's, shipped by scikit-image): a boosted cascade with no
  score, so every detection has confidence 1.

Per-image detections travel as one tensor N x MAX_FACES x 5 (x0, y0, x1, y1, confidence;
rows past the found faces have confidence 0), so the runner can select and join them like
any other features.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from metrics.base import FeaturePairMetric, WeightsRecord
from metrics.errors import MetricInputError, WeightsError

#: Faces kept per image, most confident first; the PII face is the first of the original.
MAX_FACES = 8
IOU_THRESHOLD = 0.5


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (x0, y0, x1, y1) with each of `boxes` (K x 4), in continuous coordinates."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    intersection = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def match_confidence(original: np.ndarray, anonymized: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> float:
    """The pair's value from two MAX_FACES x 5 detection arrays: NaN without an original face,
    else the best confidence among anonymized faces overlapping it, else 0."""
    if original[0, 4] <= 0:
        return float("nan")
    found = anonymized[anonymized[:, 4] > 0]
    if not len(found):
        return 0.0
    overlapping = box_iou(original[0, :4], found[:, :4]) >= iou_threshold
    return float(found[overlapping, 4].max()) if overlapping.any() else 0.0


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """float [0, 1] NCHW -> uint8 NHWC, rounded as an 8-bit image file would store it."""
    return (images.detach().cpu().permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def pack_detections(per_image: list[list[tuple[float, float, float, float, float]]]) -> torch.Tensor:
    """Detections per image -> N x MAX_FACES x 5 float64, most confident first."""
    packed = torch.zeros(len(per_image), MAX_FACES, 5, dtype=torch.float64)
    for i, faces in enumerate(per_image):
        ranked = sorted(faces, key=lambda face: -face[4])[:MAX_FACES]
        if ranked:
            packed[i, :len(ranked)] = torch.tensor(ranked, dtype=torch.float64)
    return packed


class _FaceDetection(FeaturePairMetric):
    higher_is_more_anonymous: ClassVar[bool] = False
    detector: ClassVar[str]

    def __init__(self, device: str | torch.device = "cpu", iou_threshold: float = IOU_THRESHOLD) -> None:
        super().__init__(device)
        if not 0 < iou_threshold <= 1:
            raise MetricInputError(f"{self.name}: iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold = float(iou_threshold)
        self._records: list[WeightsRecord] = []

    def config(self) -> dict[str, Any]:
        return {"iou_threshold": self.iou_threshold, **self.detector_config()}

    def detector_config(self) -> dict[str, Any]:
        return {}

    def weights(self) -> list[WeightsRecord]:
        return list(self._records)

    def conventions(self) -> dict[str, Any]:
        return {"detector": self.detector, "input": "uint8 RGB (float [0, 1] x 255, rounded)",
                "pii_face": "the original's most confident detection",
                "value": f"confidence of the best anonymized detection with IoU >= {self.iou_threshold} "
                         "with the PII face, 0 if none; NaN when the original has no detectable face",
                "max_faces_kept": MAX_FACES, **self.detector_config()}

    def detect(self, images: torch.Tensor) -> list[list[tuple[float, float, float, float, float]]]:
        """(x0, y0, x1, y1, confidence) per face, per image, in pixels of the input."""
        raise NotImplementedError

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return pack_detections(self.detect(images))

    @staticmethod
    def select(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return features[index.cpu()]

    def _compare(self, original_features: torch.Tensor, anonymized_features: torch.Tensor) -> np.ndarray:
        return np.array([match_confidence(o.numpy(), a.numpy(), self.iou_threshold)
                         for o, a in zip(original_features, anonymized_features)], dtype=np.float64)


def _resolve(name: str) -> Any:
    from metrics import weights

    return weights.resolve(name)


class MTCNNDetection(_FaceDetection):
    name = "face_detection_mtcnn"
    tradeoff_privacy_priority = 0
    label = "MTCNN face confidence"
    version = "1"
    detector = "MTCNN (facenet-pytorch 2.6.0 port of Zhang et al. 2016)"
    preload_modules = ("facenet_pytorch.models.mtcnn", "facenet_pytorch.models.utils.detect_face")
    value_range = "[0, 1] confidence of the face overlapping the original's (IoU >= 0.5); 0 = not found"
    weights_needed = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")
    convention = ("MTCNN thresholds 0.6/0.7/0.7, min face 20 px, factor 0.709; uint8 RGB; IoU >= 0.5 with the "
                  "original's most confident face; NaN when the original has no face")
    # facenet-pytorch's defaults.
    MIN_FACE_SIZE = 20
    THRESHOLDS = (0.6, 0.7, 0.7)
    FACTOR = 0.709

    def __init__(self, device: str | torch.device = "cpu", iou_threshold: float = IOU_THRESHOLD) -> None:
        super().__init__(device, iou_threshold)
        try:
            from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
        except ImportError as exc:
            raise WeightsError(f"{self.name}: facenet-pytorch is not importable ({exc}); "
                               "pip install -c constraints.txt --no-deps facenet-pytorch (see the README's privacy section)") from exc
        self.networks = []
        for network, weights_name in ((PNet, "mtcnn_pnet"), (RNet, "mtcnn_rnet"), (ONet, "mtcnn_onet")):
            resolved = _resolve(weights_name)
            module = network(pretrained=False)
            module.load_state_dict(resolved.state_dict(), strict=True)
            self.networks.append(module.eval().requires_grad_(False).to(self.device))
            self._records.append(resolved.record())

    def detector_config(self) -> dict[str, Any]:
        return {"min_face_size": self.MIN_FACE_SIZE, "thresholds": list(self.THRESHOLDS), "factor": self.FACTOR}

    def detect(self, images: torch.Tensor) -> list[list[tuple[float, float, float, float, float]]]:
        from facenet_pytorch.models.utils.detect_face import detect_face

        if not len(images):
            return []
        if min(images.shape[-2:]) < self.MIN_FACE_SIZE:
            # No face of the minimum size fits; facenet-pytorch's detect_face would fail on an
            # empty image pyramid instead of finding nothing.
            return [[] for _ in range(len(images))]
        pixels = torch.from_numpy(to_uint8_hwc(images)).to(self.device)
        pnet, rnet, onet = self.networks
        boxes, _ = detect_face(pixels, self.MIN_FACE_SIZE, pnet, rnet, onet, list(self.THRESHOLDS),
                               self.FACTOR, self.device)
        return [[tuple(float(v) for v in face[:5]) for face in np.asarray(found).reshape(-1, 5)]
                for found in boxes]


class LBPCascadeDetection(_FaceDetection):
    name = "face_detection_lbp"
    label = "LBP cascade face found"
    version = "1"
    detector = "LBP frontal-face cascade (OpenCV's lbpcascade_frontalface, via scikit-image Cascade)"
    preload_modules = ("skimage.feature",)
    value_range = "{0, 1}: 1 = a face overlapping the original's (IoU >= 0.5) is found"
    weights_needed = ("lbp_frontal_face",)
    convention = ("scikit-image Cascade.detect_multi_scale, scale 1.1, step 1.0, min size 24, min neighbours 4, "
                  "grey levels; IoU >= 0.5 with the original's face")
    SCALE_FACTOR = 1.1
    STEP_RATIO = 1.0
    MIN_SIZE = 24
    MIN_NEIGHBOURS = 4

    def __init__(self, device: str | torch.device = "cpu", iou_threshold: float = IOU_THRESHOLD) -> None:
        super().__init__(device, iou_threshold)
        from skimage.feature import Cascade

        resolved = _resolve("lbp_frontal_face")
        self._cascade = Cascade(str(resolved.path))
        self._records.append(resolved.record())

    def detector_config(self) -> dict[str, Any]:
        return {"scale_factor": self.SCALE_FACTOR, "step_ratio": self.STEP_RATIO, "min_size": self.MIN_SIZE,
                "min_neighbour_number": self.MIN_NEIGHBOURS, "confidence": "1 for every detection (no score)"}

    def detect(self, images: torch.Tensor) -> list[list[tuple[float, float, float, float, float]]]:
        found = []
        for pixels in to_uint8_hwc(images):
            height, width = pixels.shape[:2]
            faces = self._cascade.detect_multi_scale(
                img=pixels, scale_factor=self.SCALE_FACTOR, step_ratio=self.STEP_RATIO,
                min_size=(self.MIN_SIZE, self.MIN_SIZE), max_size=(height, width),
                min_neighbor_number=self.MIN_NEIGHBOURS)
            found.append([(float(f["c"]), float(f["r"]), float(f["c"] + f["width"]), float(f["r"] + f["height"]), 1.0)
                          for f in faces])
        return found


class MTCNNFaceFound(MTCNNDetection):
    """1 when MTCNN finds the PII face on the anonymized image, else 0 (NaN without an original
    face): its mean over a method x scope is the detection rate, with the leaderboard's CI."""

    name = "face_found_mtcnn"
    tradeoff_privacy_priority = 1
    label = "MTCNN detection rate"
    value_range = "{0, 1}: 1 = MTCNN finds the PII face (IoU >= 0.5); its mean is the detection rate"

    def _compare(self, original_features: torch.Tensor, anonymized_features: torch.Tensor) -> np.ndarray:
        confidence = super()._compare(original_features, anonymized_features)
        return np.where(np.isnan(confidence), np.nan, (confidence > 0).astype(np.float64))
