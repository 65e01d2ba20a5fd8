"""`bench metrics`' facts: a metric whose code is not installed says it cannot run."""

from __future__ import annotations

from typing import ClassVar

import torch

from metrics import catalog
from metrics.base import PairMetric
from metrics.registry import METRICS


class NeedsAbsentPackage(PairMetric):
    """A metric whose runtime package is not installed (as reid's dlib can be, beside verified weights)."""

    name: ClassVar[str] = "needs_absent"
    higher_is_more_anonymous: ClassVar[bool] = True
    preload_modules: ClassVar[tuple[str, ...]] = ("torch.nn", "no_such_package_for_tests.models")

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        return (original - anonymized).abs().mean(dim=(1, 2, 3))


def test_a_metric_whose_package_is_missing_says_it_cannot_run():
    METRICS.register("needs_absent", f"{__name__}:NeedsAbsentPackage")
    try:
        facts = catalog.metric_facts("needs_absent")
    finally:
        METRICS.unregister("needs_absent")
    assert facts.missing_modules == ("no_such_package_for_tests",)  # the package a user installs
    assert facts.weights_text == "cannot run here: no_such_package_for_tests not installed"
    assert facts.to_json()["missing_modules"] == ["no_such_package_for_tests"]


def test_installed_metrics_miss_nothing():
    assert catalog.metric_facts("ssim").missing_modules == ()


def test_the_modules_a_metric_lists_are_the_optional_ones_it_needs():
    """`bench metrics` says "cannot run here" from `preload_modules`: LBP needs neither
    facenet-pytorch nor dlib; the landmarks metric does need dlib."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['facenet_pytorch'] = sys.modules['dlib'] = None\n"
            "from metrics.registry import build_metric, metric_class\n"
            "build_metric('face_detection_lbp')\n"
            "try:\n    build_metric('landmarks_dlib')\nexcept Exception as exc:\n    print('landmarks:', exc)\n"
            "print(metric_class('face_detection_lbp').preload_modules, metric_class('landmarks_dlib').preload_modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "landmarks:" in out and "dlib" in out.split("landmarks:")[1].splitlines()[0]
    assert "('skimage.feature',) ('dlib',)" in out
