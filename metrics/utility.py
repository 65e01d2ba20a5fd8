"""Utility metrics: what an anonymized image is still good for (higher = more useful).

Privacy metrics ask how much of the person is left; utility metrics ask what the
anonymization cost. Each states both directions: ``higher_is_more_useful = True`` and, being
the opposite view, ``higher_is_more_anonymous = False``.

- `BackgroundSSIM`, `BackgroundPSNR`: is the image untouched outside its PII region? They need
  each pair's PII mask (``needs_pii_mask``), which only benchmark runs have (the benchmark set's
  masks, or the union of its boxes); the runner passes it for the global scope. A method that
  changes only PII pixels scores exactly SSIM 1 and PSNR +inf.
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
    label: ClassVar[str] = "Background SSIM"
    version: ClassVar[str] = "1"

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
    label: ClassVar[str] = "Background PSNR"
    version: ClassVar[str] = "1"

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
    label: ClassVar[str] = "Task utility"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "utility"
    higher_is_more_useful: ClassVar[bool] = True
    higher_is_more_anonymous: ClassVar[bool] = False
    utility_view: ClassVar[str] = "task"
    needs_original: ClassVar[bool] = False

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
        pixels = (anonymized.detach().cpu().permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        values = []
        for image in pixels:
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
