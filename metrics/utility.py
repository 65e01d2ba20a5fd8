"""Utility metrics: what an anonymized image is still good for (higher = more useful).

Privacy metrics ask how much of the person is left; utility metrics ask what the
anonymization cost. Each states both directions: ``higher_is_more_useful = True`` and, being
the opposite view, ``higher_is_more_anonymous = False``.

- `BackgroundSSIM`, `BackgroundPSNR`: is the image untouched outside its PII region? They need
  each pair's PII mask (``needs_pii_mask``), which only benchmark runs have (the benchmark set's
  masks, or the union of its boxes); the runner passes it for the global scope. A method that
  changes only PII pixels scores exactly SSIM 1 and PSNR +inf.
- `LandmarkDisplacement` (``landmarks_dlib``): dlib's 5-point landmarks, placed in the
  original's face rectangle on both images; their mean displacement in inter-ocular distances
  (lower = more useful).
- `FaceKept` (``face_kept_mtcnn``): is the face still detected (MTCNN)? What generative
  anonymizers aim for.
- `TaskUtility`: a user's own function ``fn(image) -> float`` (their detector's confidence, an
  action or attribute classifier's score, ...) on the anonymized image, higher = more useful;
  ``bench run --utility module:function``.

The realism views (LPIPS, FID, KID: lower = closer to the originals, so more realistic) are
the metrics of metrics/lpips.py and metrics/fid.py, marked there with ``utility_view``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from metrics import functional
from metrics.base import PairMetric
from metrics.detection import MTCNNFaceFound, to_uint8_hwc
from metrics.errors import MetricInputError
from metrics.hashing import file_sha256


class _MaskedUtility(PairMetric):
    family: ClassVar[str] = "utility"
    higher_is_more_useful: ClassVar[bool] = True
    higher_is_more_anonymous: ClassVar[bool] = False
    utility_view: ClassVar[str] = "background"
    needs_pii_mask: ClassVar[bool] = True
    #: Scopes whose pairs get a PII mask from a benchmark run: background is a global-scope notion.
    scopes: ClassVar[tuple[str, ...]] = ("global",)

    def __init__(self, device: str | torch.device = "cpu", pii_masks_sha256: str = "") -> None:
        super().__init__(device)
        # The run's (original, mask) pairs as one digest: the store keys a score by both images,
        # so the masks that shaped it must be in the metric key (set by the runner).
        self.pii_masks_sha256 = str(pii_masks_sha256)

    def config(self) -> dict[str, Any]:
        return {"pii_masks_sha256": self.pii_masks_sha256}


class BackgroundSSIM(_MaskedUtility):
    """SSIM outside the PII region (`metrics.functional.background_ssim`): 1 = background untouched."""

    name: ClassVar[str] = "background_ssim"
    tradeoff_utility_priority: ClassVar[int | None] = 3
    label: ClassVar[str] = "Background SSIM"
    version: ClassVar[str] = "1"
    value_range: ClassVar[str] = "[-1, 1]; 1 = background untouched; NaN without background"
    convention: ClassVar[str] = ("SSIM (as ssim) averaged over window centres outside the PII mask, the anonymized "
                                 "PII pixels replaced by the original's first; global scope of benchmark runs")

    def conventions(self) -> dict[str, Any]:
        return {"region": "window centres outside the PII mask (valid region); the anonymized image's PII pixels "
                          "replaced by the original's first",
                "ssim": "Wang et al. 2004, Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data_range 1",
                "no_background": "NaN", "precision": "float64"}

    def _score_masked(self, original: torch.Tensor, anonymized: torch.Tensor, pii_mask: torch.Tensor) -> torch.Tensor:
        return functional.background_ssim(original, anonymized, pii_mask)


class BackgroundPSNR(_MaskedUtility):
    """PSNR over the pixels outside the PII region: +inf = background untouched."""

    name: ClassVar[str] = "background_psnr"
    tradeoff_utility_priority: ClassVar[int | None] = 4
    label: ClassVar[str] = "Background PSNR"
    version: ClassVar[str] = "1"
    value_range: ClassVar[str] = "[0, +inf] dB; +inf = background untouched; NaN without background"
    infinite_means: ClassVar[str] = "background untouched: Background PSNR = +inf"
    convention: ClassVar[str] = ("PSNR with data_range 1 over the pixels outside the PII mask, every channel; "
                                 "global scope of benchmark runs")

    def conventions(self) -> dict[str, Any]:
        return {"region": "pixels outside the PII mask, every channel", "data_range": 1.0,
                "unchanged_background": "+inf", "no_background": "NaN", "precision": "float64"}

    def _score_masked(self, original: torch.Tensor, anonymized: torch.Tensor, pii_mask: torch.Tensor) -> torch.Tensor:
        return functional.background_psnr(original, anonymized, pii_mask)


class TaskUtility(PairMetric):
    """A user's task function on the anonymized image: ``fn(image) -> float``, higher = more useful.

    ``image`` is H x W x 3 uint8 RGB (the file's pixels). The function is named
    ``module:function`` (the current folder is searched last, as for methods); its module's
    source is in the metric key, so an edited function is scored afresh.
    """

    name: ClassVar[str] = "task"
    tradeoff_utility_priority: ClassVar[int | None] = 0
    label: ClassVar[str] = "Task utility"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "utility"
    higher_is_more_useful: ClassVar[bool] = True
    higher_is_more_anonymous: ClassVar[bool] = False
    utility_view: ClassVar[str] = "task"
    needs_original: ClassVar[bool] = False
    value_range: ClassVar[str] = "what your function returns; higher = more useful"
    user_weights: ClassVar[str] = "your function (bench run --utility module:function)"
    convention: ClassVar[str] = ("fn(image) -> float on each anonymized image (H x W x 3 uint8 RGB); its module's "
                                 "source sha256 in the metric key")

    def __init__(self, device: str | torch.device = "cpu", function: str = "") -> None:
        super().__init__(device)
        if not function or ":" not in function:
            raise MetricInputError(f"task: give the function as module:function (--utility mymodule:score), "
                                   f"got {function!r}")
        self.function_spec = function
        self.function, self.source_sha256 = _load_function(function)

    @property
    def display_label(self) -> str:
        return f"Task utility ({self.function_spec})"

    def config(self) -> dict[str, Any]:
        return {"function": self.function_spec, "source_sha256": self.source_sha256}

    def conventions(self) -> dict[str, Any]:
        return {"function": self.function_spec, "input": "H x W x 3 uint8 RGB anonymized image",
                "value": "the function's float, higher = more useful"}

    def _score(self, original: torch.Tensor | None, anonymized: torch.Tensor) -> np.ndarray:
        values = []
        for image in to_uint8_hwc(anonymized):
            try:
                value = float(self.function(np.ascontiguousarray(image)))
            except Exception as exc:  # noqa: BLE001 - the user's function may raise anything: one pair fails
                text = " ".join(str(exc).split())
                raise MetricInputError(f"task function {self.function_spec} failed: {type(exc).__name__}: {text}") \
                    from exc
            values.append(value)
        return np.asarray(values, dtype=np.float64)


def _load_function(spec: str) -> tuple[Any, str]:
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        module = target
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything on import
        text = " ".join(str(exc).split())
        raise MetricInputError(f"--utility {spec}: cannot import it ({type(exc).__name__}: {text}); check the module "
                               "is on PYTHONPATH (or in the current folder) and the function name") from None
    if not callable(target):
        raise MetricInputError(f"--utility {spec} is a {type(target).__name__}, not a function fn(image) -> float")
    files = sorted({str(path) for path in (getattr(module, "__file__", None),
                                           getattr(sys.modules.get(getattr(target, "__module__", "") or ""),
                                                   "__file__", None)) if path and Path(path).is_file()})
    if files:
        digest = hashlib.sha256("\n".join(file_sha256(path) for path in files).encode()).hexdigest()
    else:
        try:
            digest = hashlib.sha256(inspect.getsource(target).encode()).hexdigest()
        except (OSError, TypeError):
            raise MetricInputError(f"--utility {spec}: cannot read its source to tell when it changes; "
                                   "define the function in a .py file") from None
    return target, digest


# ----------------------------------------------------------------------------- faces
#: dlib's 5-point model: points 0-1 one eye's corners, 2-3 the other's, 4 the base of the nose.
EYE_CORNERS = ((0, 1), (2, 3))


def inter_ocular_distance(points: np.ndarray) -> float:
    """Distance between the two eye centres (each the mean of its two corners) of 5 x 2 points."""
    (a, b), (c, d) = EYE_CORNERS
    return float(np.linalg.norm((points[a] + points[b]) / 2 - (points[c] + points[d]) / 2))


def landmark_displacement(original: np.ndarray, anonymized: np.ndarray) -> float:
    """Mean Euclidean displacement of corresponding landmarks (K x 2 each), in units of the
    original's inter-ocular distance (NaN when that distance is 0)."""
    scale = inter_ocular_distance(original)
    if scale <= 0:
        return float("nan")
    return float(np.linalg.norm(np.asarray(anonymized, float) - np.asarray(original, float), axis=1).mean() / scale)


class LandmarkDisplacement(PairMetric):
    """How far the anonymization moved the facial landmarks (dlib's 5-point model), per pair.

    The original's most confident face (dlib's HOG detector, upsampled once, as the
    re-identification metric finds it) gives the face rectangle; the 5-point shape predictor
    places the landmarks in that same rectangle on the original and on the anonymized image,
    so a face the detector no longer finds is still measured. The value is the mean landmark
    displacement divided by the original's inter-ocular distance: 0 = landmarks kept, lower =
    more useful (a face-analysis task downstream still works). NaN when the original has no
    detectable face.
    """

    name: ClassVar[str] = "landmarks_dlib"
    tradeoff_utility_priority: ClassVar[int | None] = 1
    label: ClassVar[str] = "Landmark displacement (IOD)"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "utility"
    higher_is_more_useful: ClassVar[bool] = False
    higher_is_more_anonymous: ClassVar[bool] = True
    utility_view: ClassVar[str] = "landmarks"
    value_range: ClassVar[str] = ">= 0 inter-ocular distances; 0 = landmarks kept; NaN without an original face"
    weights_needed: ClassVar[tuple[str, ...]] = ("dlib_shape_predictor_5",)
    preload_modules: ClassVar[tuple[str, ...]] = ("dlib",)
    convention: ClassVar[str] = ("dlib HOG face of the original (upsampled once), 5-point landmarks in that "
                                 "rectangle on both images, mean displacement / inter-ocular distance")

    def __init__(self, device: str | torch.device = "cpu") -> None:
        # dlib runs on the CPU whatever the device; the device only says where inputs arrive.
        super().__init__(device)
        from metrics.reid import import_dlib, load_dlib_model

        dlib = import_dlib(f"{self.name}: ")
        self._predictor, record = load_dlib_model(dlib.shape_predictor, "dlib_shape_predictor_5", f"{self.name}: ")
        self._records = [record]
        self._detector = dlib.get_frontal_face_detector()

    def weights(self) -> list:
        return list(self._records)

    def conventions(self) -> dict[str, Any]:
        from metrics.reid import UPSAMPLE

        return {"detector": f"dlib HOG frontal face detector on the original, upsampled {UPSAMPLE}x, most confident",
                "landmarks": "dlib 5-point shape predictor, in the original's face rectangle on both images",
                "value": "mean landmark displacement / inter-ocular distance of the original (eye centres = mean "
                         "of each eye's two corners); NaN without an original face",
                "input": "uint8 RGB (float [0, 1] x 255, rounded)"}

    def _points(self, pixels: np.ndarray, rectangle: Any) -> np.ndarray:
        shape = self._predictor(pixels, rectangle)
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> np.ndarray:
        from metrics.reid import best_hog_face

        values = []
        for original_pixels, anonymized_pixels in zip(to_uint8_hwc(original), to_uint8_hwc(anonymized)):
            original_pixels = np.ascontiguousarray(original_pixels)
            rectangle = best_hog_face(self._detector, original_pixels)
            if rectangle is None:
                values.append(float("nan"))
                continue
            values.append(landmark_displacement(self._points(original_pixels, rectangle),
                                                self._points(np.ascontiguousarray(anonymized_pixels), rectangle)))
        return np.asarray(values, dtype=np.float64)


class FaceKept(MTCNNFaceFound):
    """1 when MTCNN still finds the PII face on the anonymized image (what generative
    anonymizers aim for), else 0; NaN without an original face. The same detection as the
    privacy attack face_found_mtcnn, read as a utility: higher = more useful."""

    name: ClassVar[str] = "face_kept_mtcnn"
    tradeoff_privacy_priority: ClassVar[int | None] = None
    tradeoff_utility_priority: ClassVar[int | None] = 2
    label: ClassVar[str] = "Face still detected (MTCNN)"
    family: ClassVar[str] = "utility"
    higher_is_more_useful: ClassVar[bool] = True
    higher_is_more_anonymous: ClassVar[bool] = False
    utility_view: ClassVar[str] = "detectability"
    value_range: ClassVar[str] = "{0, 1}: 1 = MTCNN still finds the PII face (IoU >= 0.5); higher = more useful"
