"""Privacy–utility trade-off: each method's points, the Pareto front, areas, dominated methods.

A trade-off view takes one metric as the privacy axis (x) and one as the utility axis (y).
Every leaderboard row of a scope is a point: its mean x and y with their 95% bootstrap
intervals (the leaderboard's cells, so the numbers cannot disagree). Points are grouped into
one curve per method -- a method's default and every setting of its sweep (``blur``,
``blur[radius=2]``, ...) -- and the anchors are always there: ``identity`` (no anonymization:
no privacy, full utility) and ``mask`` (the PII painted out: full privacy, least utility), so
every curve is read against both ends.

Orientation, once: x is "more anonymous" in the direction the privacy metric states
(``higher_is_more_anonymous``); y is "more useful" in the direction the utility metric states
(``higher_is_more_useful``; a metric that is no utility is read the opposite way of its
anonymity direction, so any metric with a direction can serve). Both are then min-max
normalised over the view's points, 0 = least, 1 = most anonymous / useful.

- `pareto_front`: a point is on the front when no other point is at least as good on both
  axes and better on one (one sweep over the points sorted by x; equal points are all on it).
- `curve_area`: the trapezoid rule over a curve's points sorted by normalised x (ties by y),
  in normalised units: a larger area is a curve that keeps more utility across its privacy
  range. A method with one point has no area (None).
- A method is dominated when none of its points is on the front.

Pure functions of arrays; `build_tradeoffs` reads a `Leaderboard` and its record and returns
the typed records that reports/tradeoff.py renders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.errors import InputError
from bench.methods import REFERENCE_METHODS
from metrics.errors import MetricError
from metrics.registry import metric_class
from reports.leaderboard import Entry, Leaderboard
from reports.tradeoff import Axis, Curve, Point, Tradeoff

#: The anchor rows and what each stands for.
ANCHORS: dict[str, str] = {**{name: "no anonymization" for name in REFERENCE_METHODS}, "mask": "full mask"}
SCOPES = ("global", "local")


# ----------------------------------------------------------------------------- pure functions
def pareto_front(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Which points no other point dominates, both axes to be maximised (finite values).

    Sorted by x descending, a point is dominated exactly when an earlier point with a
    strictly larger x has a y at least as large, or a point with the same x has a larger y.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of one length")
    on_front = np.zeros(len(x), dtype=bool)
    order = np.lexsort((-y, -x))  # x descending, then y descending
    best_before = -math.inf  # the largest y among points of strictly larger x
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and x[order[j]] == x[order[i]]:
            j += 1
        group = order[i:j]
        group_best = y[group].max()
        for index in group:
            on_front[index] = y[index] == group_best and y[index] > best_before
        best_before = max(best_before, group_best)
        i = j
    return on_front


def dominated_by(x: Sequence[float], y: Sequence[float]) -> list[list[int]]:
    """For each point, the points that dominate it (at least as good on both axes, better on one)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    better = (x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None]) & ((x[None, :] > x[:, None]) | (y[None, :] > y[:, None]))
    return [list(np.flatnonzero(row)) for row in better]


def curve_area(x: Sequence[float], y: Sequence[float]) -> float | None:
    """The trapezoid rule over the points sorted by x (ties by y); None for fewer than two points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return None
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    return float(sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2.0 for i in range(len(xs) - 1)))


def normalise(values: Sequence[float], higher_is_better: bool) -> np.ndarray:
    """Oriented min-max scaling to [0, 1], 1 = best; all 0.5 when the values are all equal."""
    values = np.asarray(values, dtype=np.float64)
    oriented = values if higher_is_better else -values
    low, high = oriented.min(), oriented.max()
    if high == low:
        return np.full(len(values), 0.5)
    return (oriented - low) / (high - low)


# ----------------------------------------------------------------------------- axes
def _axis(name: str, info: Mapping[str, Any], role: str) -> Axis:
    anonymous = bool(info["higher_is_more_anonymous"])
    useful = info.get("higher_is_more_useful")
    higher_is_better = anonymous if role == "privacy" else (not anonymous if useful is None else bool(useful))
    return Axis(name=name, label=info.get("label") or name, role=role, higher_is_better=higher_is_better,
                utility_view=str(info.get("utility_view") or ""))


def choose_axes(spec: str | None, metrics: Mapping[str, Mapping[str, Any]], *,
                among: str = "the computed metrics of this leaderboard") -> tuple[str, str] | None:
    """The (privacy, utility) metric names: `spec` ("PRIVACY,UTILITY") checked against the
    computed `metrics` (`among` says what they are, for the error), or the defaults when both
    families are present (else None)."""
    computed = {name: info for name, info in metrics.items() if info.get("status", "ok") == "ok"}
    if spec is not None:
        parts = [part.strip() for part in spec.split(",")]
        if len(parts) != 2 or not all(parts):
            raise InputError(f"--tradeoff {spec!r}: give two metrics, PRIVACY_METRIC,UTILITY_METRIC "
                             "(e.g. mse,background_ssim)")
        unknown = [part for part in parts if part not in computed]
        if unknown:
            raise InputError(f"--tradeoff {spec!r}: {', '.join(unknown)} not among {among} "
                             f"({', '.join(computed) or 'none'}); add it to --metrics")
        if parts[0] == parts[1]:
            raise InputError(f"--tradeoff {spec!r}: the privacy and utility axes must be two different metrics")
        return parts[0], parts[1]
    # Default axes: by the metric classes' tradeoff priorities (privacy attacks first, then
    # learned and perceptual metrics), any plugin without one after.
    family = _by_priority([name for name, info in computed.items() if info.get("family") == "utility"],
                          "tradeoff_utility_priority")
    if not family:
        return None
    utility = family[0]
    privacy = _by_priority([name for name, info in computed.items()
                            if info.get("family") != "utility" and name != utility], "tradeoff_privacy_priority")
    return (privacy[0], utility) if privacy else None


def _by_priority(names: list[str], attribute: str) -> list[str]:
    """`names` by their metric classes' `attribute` (lowest first), those without one after, in
    their given order; a plugin that no longer imports has none."""
    def rank(name: str) -> tuple[bool, int]:
        try:
            priority = getattr(metric_class(name), attribute)
        except MetricError:
            priority = None
        return priority is None, priority or 0
    return sorted(names, key=rank)  # stable: equal ranks keep their given order


# ----------------------------------------------------------------------------- the views
def build_tradeoffs(board: Leaderboard, record: Mapping[str, Any], spec: str | None = None) -> tuple[Tradeoff, ...]:
    """One trade-off view per scope that has drawable points, on the axes of `spec` (or the
    defaults, `choose_axes`); () when no axes apply."""
    axes = choose_axes(spec, record["metrics"])
    if axes is None:
        return ()
    privacy = _axis(axes[0], record["metrics"][axes[0]], "privacy")
    utility = _axis(axes[1], record["metrics"][axes[1]], "utility")
    views = []
    for scope in SCOPES:
        view = _view(board, record, scope, privacy, utility)
        if view is not None:
            views.append(view)
    return tuple(views)


def _base(method: str, record: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    entry = record["methods"].get(method, {})
    return str(entry.get("base") or method), tuple((str(k), str(v)) for k, v in (entry.get("params") or {}).items())


def _finite(entry: Entry | None) -> bool:
    return entry is not None and math.isfinite(entry.value)


def _why_not(entry: Entry | None, label: str) -> str:
    if entry is None:
        return f"no {label} value"
    if entry.n_infinite and not math.isfinite(entry.value):
        return f"{label} is infinite on every pair"
    return f"no {label} value ({entry.note})" if entry.note else f"no {label} value"


def _view(board: Leaderboard, record: Mapping[str, Any], scope: str, privacy: Axis, utility: Axis) -> Tradeoff | None:
    rows = [row for row in board.rows if row.scope == scope]
    drawable, excluded = [], []
    for row in rows:
        x_entry, y_entry = row.entries.get(privacy.name), row.entries.get(utility.name)
        if _finite(x_entry) and _finite(y_entry):
            drawable.append((row.method, x_entry, y_entry))
        else:
            reason = _why_not(x_entry, privacy.label) if not _finite(x_entry) else _why_not(y_entry, utility.label)
            excluded.append((row.method, reason))
    if not drawable:
        return None
    x = np.array([x_entry.value for _, x_entry, _ in drawable])
    y = np.array([y_entry.value for _, _, y_entry in drawable])
    x_unit, y_unit = normalise(x, privacy.higher_is_better), normalise(y, utility.higher_is_better)
    front = pareto_front(x_unit, y_unit)
    beaten = dominated_by(x_unit, y_unit)
    names = [method for method, _, _ in drawable]
    points = []
    for i, (method, x_entry, y_entry) in enumerate(drawable):
        base, params = _base(method, record)
        points.append(Point(method=method, base=base, params=params, x=x_entry.value, x_low=x_entry.ci_low,
                            x_high=x_entry.ci_high, y=y_entry.value, y_low=y_entry.ci_low, y_high=y_entry.ci_high,
                            x_unit=float(x_unit[i]), y_unit=float(y_unit[i]), on_front=bool(front[i]),
                            dominated_by=tuple(names[j] for j in beaten[i]), anchor=ANCHORS.get(method, "")))
    curves = []
    for base in dict.fromkeys(point.base for point in points):
        members = sorted((p for p in points if p.base == base), key=lambda p: (p.x_unit, p.y_unit))
        area = curve_area([p.x_unit for p in members], [p.y_unit for p in members])
        curves.append(Curve(base=base, methods=tuple(p.method for p in members), area=area,
                            dominated=not any(p.on_front for p in members),
                            anchor=ANCHORS.get(base, "")))
    front_points = tuple(p.method for p in sorted((p for p in points if p.on_front), key=lambda p: p.x_unit))
    return Tradeoff(dataset=board.dataset, scope=scope, privacy=privacy, utility=utility, points=tuple(points),
                    curves=tuple(curves), front=front_points, excluded=tuple(excluded),
                    missing_anchors=tuple(name for name in ANCHORS if name not in names))
