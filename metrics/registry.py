"""Names -> things the suite builds by name: metrics here, and (through the same `Registry`)
anonymization methods and statistics in bench/ (bench.methods, bench.analysis.stats) and report
formats in reports/ (reports.formats).

A registry is one greppable dict of lazy "module:attr" strings (nothing is imported until a
name is asked for), plus explicit `register` calls, merged with third-party plugins from one
entry-point group (`bench.metrics` for metrics). A name offered twice is an error, never a
silent override. An unknown name is one line: the close matches (difflib), every name, and
where to read about them.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING, Any

from metrics.errors import MetricError, MetricInputError
from metrics.installed import entry_points

if TYPE_CHECKING:  # importing metrics.base imports torch: bench.methods' workers start without it
    from metrics.base import Metric


def distribution_of(ep: EntryPoint) -> str:
    """The installed package that offers `ep`, for error messages and provenance."""
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


class Registry:
    """Names of one kind of thing -> lazy "module:attr" targets.

    `kind` words the errors ("metric", "anonymization method"); `listing` says where every
    name is described (e.g. "`bench metrics` describes each"); `error` is the one-line error
    class of the layer that owns the registry (metrics/ cannot raise bench's errors).
    """

    def __init__(self, kind: str, builtins: Mapping[str, str], group: str, *, listing: str = "",
                 error: type[Exception] = MetricInputError) -> None:
        self.kind, self.group, self.listing, self.error = kind, group, listing, error
        self.builtins = dict(builtins)
        self._registered: dict[str, str] = {}

    def register(self, name: str, target: str) -> None:
        """Add `name` -> "module:attr" in this process (a test, a notebook); entry points are
        how a plugin reaches every process of a run (bench perf, isolated workers)."""
        known = self.targets()
        if name in known:
            raise self.error(f"{self.kind} {name!r} is registered twice ({known[name]} and {target}); "
                             "give the new one another name")
        self._registered[name] = target

    def unregister(self, name: str) -> None:
        self._registered.pop(name, None)

    def entry_points(self) -> dict[str, EntryPoint]:
        """Installed plugins by name; a name of the suite's own, or one offered by two packages, is an error."""
        own = {**self.builtins, **self._registered}
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            if ep.name in own:
                raise self.error(f"{self.kind} plugin {ep.name!r} ({ep.value}, from {distribution_of(ep)}) reuses "
                                 f"the name of {own[ep.name]}; rename the entry point in that package's metadata")
            if ep.name in found and found[ep.name].value != ep.value:
                raise self.error(f"two installed packages offer the {self.kind} {ep.name!r}: {found[ep.name].value} "
                                 f"({distribution_of(found[ep.name])}) and {ep.value} ({distribution_of(ep)}); "
                                 "uninstall one")
            found[ep.name] = ep
        return found

    def targets(self) -> dict[str, str]:
        """Every name -> "module:attr": built-ins, then registrations, then plugins."""
        return {**self.builtins, **self._registered, **{name: ep.value for name, ep in self.entry_points().items()}}

    def close_matches(self, name: str, known: Iterable[str] | None = None) -> list[str]:
        return difflib.get_close_matches(name, list(self.targets() if known is None else known), n=3, cutoff=0.6)

    def suggestion(self, name: str, known: Iterable[str] | None = None) -> str:
        """"did you mean 'lpips'?" for a near miss, else ""."""
        close = self.close_matches(name, known)
        return f"did you mean {' or '.join(repr(match) for match in close)}?" if close else ""

    def unknown(self, names: Iterable[str], known: Iterable[str] | None = None) -> str:
        """The one-line message for names that are not registered."""
        known = list(self.targets() if known is None else known)
        described = []
        for name in names:
            hint = self.suggestion(name, known)
            described.append(f"{name} ({hint})" if hint else name)
        listing = f"; {self.listing}" if self.listing else ""
        plural = "(s)" if len(described) > 1 or self.kind == "metric" else ""
        return f"unknown {self.kind}{plural} {', '.join(described)}; choose from: {', '.join(sorted(known))}{listing}"

    def check(self, names: Iterable[str], *, allow_references: bool = False) -> None:
        """Raise the one-line error for any name not registered ("module:attr" passes with `allow_references`)."""
        known = self.targets()
        unknown = [name for name in names if name not in known and not (allow_references and ":" in name)]
        if unknown:
            raise self.error(self.unknown(unknown, known))

    def target(self, name: str, *, allow_references: bool = False) -> str:
        known = self.targets()
        if name in known:
            return known[name]
        if allow_references and ":" in name:
            return name
        raise self.error(self.unknown([name], known))

    def load(self, name: str, *, allow_references: bool = False) -> Any:
        """The object `name` stands for, imported now."""
        target = self.target(name, allow_references=allow_references)
        module_name, _, attribute = target.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            raise self.error(f"{self.kind} {name!r}: cannot import {target} ({exc})") from exc
        return found


#: The suite's metrics. A new metric is a module and one line here (or one `bench.metrics`
#: entry point in its own package): every fact the suite needs is a class attribute.
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

METRICS = Registry("metric", BUILTIN_METRICS, ENTRY_POINT_GROUP, listing="`bench metrics` describes each")


def available_metrics() -> dict[str, str]:
    """Built-ins plus registered and installed plugins, name -> "module:Class"."""
    return METRICS.targets()


def metric_class(name: str) -> type[Metric]:
    """A registered name, or an explicit "package.module:Class" for unregistered plugins."""
    from metrics.base import Metric

    cls = METRICS.load(name, allow_references=True)
    if not (isinstance(cls, type) and issubclass(cls, Metric)):
        raise MetricInputError(f"metric {name!r} points to {METRICS.target(name, allow_references=True)}, "
                               "which is not a metrics.base.Metric")
    return cls


def metric_label(name: str, given: str = "") -> str:
    """The column title of a metric: `given`, else its class's label (a metric that could not be
    built still has one), else its name."""
    if given and given != name:
        return given
    try:
        return metric_class(name).label or name
    except MetricError:  # an unknown or unimportable plugin: its name is all there is
        return name


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
    METRICS.check(names, allow_references=True)
    return list(dict.fromkeys(names))


def checkpoint_metric(option: str) -> str:
    """The registered metric whose `checkpoint_option` is `option` (e.g. "checkpoint_ha1")."""
    fed = []
    for name in METRICS.targets():
        try:
            if metric_class(name).checkpoint_option == option:
                fed.append(name)
        except MetricError:
            continue  # a plugin that cannot be imported feeds nothing; `bench metrics` says why
    if len(fed) != 1:
        raise MetricInputError(f"{len(fed) or 'no'} registered metrics take their checkpoint from {option} "
                               f"({', '.join(fed) or 'none'}); exactly one must")
    return fed[0]
