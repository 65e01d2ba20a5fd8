"""Metric names -> adapter classes.

One greppable dict of lazy "module:Class" strings (nothing is imported until a metric is
asked for), merged with third-party plugins from the `bench.metrics` entry-point group.
A plugin may not reuse a built-in name: that is an error, never a silent override.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from metrics.base import Metric
from metrics.errors import MetricInputError

BUILTIN_METRICS: dict[str, str] = {
    "mse": "metrics.pixel:MSE",
    "psnr": "metrics.pixel:PSNR",
    "ssim": "metrics.ssim:SSIM",
    "ssim_paper_compat": "metrics.ssim:SSIMPaperCompat",
    "lpips": "metrics.lpips:LPIPS",
    "inception_dist": "metrics.fid:InceptionDistance",
    "fid": "metrics.fid:FID",
    "kid": "metrics.fid:KID",
    "perceptanon_ha1": "metrics.perceptanon:PerceptAnonHA1Metric",
    "perceptanon_ha2": "metrics.perceptanon:PerceptAnonHA2Metric",
    "face_detection_mtcnn": "metrics.detection:MTCNNDetection",
    "face_detection_lbp": "metrics.detection:LBPCascadeDetection",
    "face_found_mtcnn": "metrics.detection:MTCNNFaceFound",
    "reid_dlib": "metrics.reid:DlibIdentityDistance",
    "background_ssim": "metrics.utility:BackgroundSSIM",
    "background_psnr": "metrics.utility:BackgroundPSNR",
    "task": "metrics.utility:TaskUtility",
    "landmarks_dlib": "metrics.utility:LandmarkDisplacement",
    "face_kept_mtcnn": "metrics.utility:FaceKept",
}

# The paper's five traditional metrics, in its table order: what `bench correlate`, `bench run`
# and `bench score --annotations` compute without --metrics.
PAPER_METRICS = ("mse", "psnr", "ssim", "lpips", "inception_dist")
#: The paper's metrics plus FID and KID: `bench score A B` and `bench run --method` without --metrics.
DEFAULT_METRICS = (*PAPER_METRICS, "fid", "kid")

ENTRY_POINT_GROUP = "bench.metrics"


def available_metrics() -> dict[str, str]:
    """Built-ins plus installed plugins, name -> "module:Class"."""
    merged = dict(BUILTIN_METRICS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in merged:
            raise MetricInputError(
                f"metric plugin {ep.name!r} ({ep.value}) reuses the name of {merged[ep.name]}; "
                "rename the entry point in the plugin's package metadata"
            )
        merged[ep.name] = ep.value
    return merged


def metric_class(name: str) -> type[Metric]:
    """A registered name, or an explicit "package.module:Class" for unregistered plugins."""
    known = available_metrics()
    target = known.get(name) or (name if ":" in name else None)
    if target is None:
        raise MetricInputError(f"unknown metric {name!r}; choose from: {', '.join(sorted(known))}")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise MetricInputError(f"metric {name!r}: cannot import {target} ({exc})") from exc
    if not (isinstance(cls, type) and issubclass(cls, Metric)):
        raise MetricInputError(f"metric {name!r} points to {target}, which is not a metrics.base.Metric")
    return cls


def build_metric(name: str, *, device: str = "cpu", **options) -> Metric:
    """Construct an adapter; options are validated by the adapter's own constructor."""
    cls = metric_class(name)
    try:
        return cls(device=device, **options)
    except TypeError as exc:
        # An option the adapter does not take: say so in one line instead of a traceback.
        raise MetricInputError(f"metric {name!r} does not accept options {sorted(options)}: {exc}") from exc


def parse_metric_list(spec: str | None, default: tuple[str, ...] = PAPER_METRICS) -> list[str]:
    """'psnr,ssim' -> ['psnr', 'ssim'], checked against the registry; duplicates dropped.

    "module:Class" entries pass through; they are checked when the metric is built.
    """
    names = [n.strip() for n in spec.split(",") if n.strip()] if spec else list(default)
    known = available_metrics()
    unknown = [n for n in names if n not in known and ":" not in n]
    if unknown:
        raise MetricInputError(f"unknown metric(s) {', '.join(unknown)}; choose from: {', '.join(sorted(known))}")
    return list(dict.fromkeys(names))
