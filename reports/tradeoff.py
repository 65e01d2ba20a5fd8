"""The privacy–utility trade-off, rendered: a plot, and one table in Markdown, LaTeX, CSV, JSON, HTML.

The records (`Axis`, `Point`, `Curve`, `Tradeoff`) are built by bench/analysis/tradeoff.py from a
leaderboard; this module only renders them. `trade_off_table` turns a view ONCE into a
`reports.tables.Table` that the Markdown, LaTeX and HTML renderers share; CSV and JSON carry
the same numbers unrounded.

The plot: x = the privacy metric, y = the utility metric, both in their own units, each axis
turned so that right = more anonymous and up = more useful. One curve per method (its points
sorted by privacy, with their 95% intervals as error bars), the Pareto front as a thick grey
step line under them, the anchor rows (no anonymization, full mask) as large stars.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from metrics.atomic import write_atomic
from metrics.csvsafe import to_csv_text
from reports.html import data_uri, environment
from metrics.schema import to_json_text
from reports.tables import Cell, Column, Row, Table, format_number, markdown_escape, to_latex, to_markdown

#: Output files of the trade-off views, by format; "{scope}" is each view's scope.
FILE_NAMES = {"markdown": "tradeoff.md", "latex": "tradeoff.tex", "csv": "tradeoff.csv", "json": "tradeoff.json",
              "plot": "tradeoff_{scope}.png"}


@dataclass(frozen=True)
class Axis:
    name: str
    label: str
    #: "privacy" or "utility".
    role: str
    #: Oriented: True when a higher value is more anonymous (privacy) or more useful (utility).
    higher_is_better: bool
    utility_view: str = ""

    @property
    def header(self) -> str:
        return f"{self.label} {'↑' if self.higher_is_better else '↓'}"

    @property
    def direction(self) -> str:
        better = "more anonymous" if self.role == "privacy" else "more useful"
        return f"{'higher' if self.higher_is_better else 'lower'} = {better}"


@dataclass(frozen=True)
class Point:
    """One leaderboard row of the view: a method (one setting of a sweep) at its mean x and y."""

    method: str
    #: The curve it belongs to (the method without its setting) and the setting's values.
    base: str
    params: tuple[tuple[str, str], ...]
    x: float
    x_low: float
    x_high: float
    y: float
    y_low: float
    y_high: float
    #: Oriented and min-max normalised over the view: 0 = least, 1 = most anonymous / useful.
    x_unit: float
    y_unit: float
    on_front: bool
    dominated_by: tuple[str, ...]
    #: "" or what the anchor row stands for ("no anonymization", "full mask").
    anchor: str = ""


@dataclass(frozen=True)
class Curve:
    base: str
    #: Its points' methods, sorted by normalised privacy.
    methods: tuple[str, ...]
    #: Trapezoid area under the normalised curve; None for a single point.
    area: float | None
    #: None of its points is on the Pareto front.
    dominated: bool
    anchor: str = ""


@dataclass(frozen=True)
class Tradeoff:
    dataset: str
    scope: str
    privacy: Axis
    utility: Axis
    points: tuple[Point, ...]
    curves: tuple[Curve, ...]
    #: Methods on the Pareto front, by increasing privacy.
    front: tuple[str, ...]
    #: (method, why it is not drawn): an undefined or infinite value on an axis.
    excluded: tuple[tuple[str, str], ...] = ()
    #: Anchor rows absent from the leaderboard (never benchmarked here).
    missing_anchors: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return (f"Privacy–utility trade-off: {self.dataset}, {self.scope} scope "
                f"({self.privacy.label} vs {self.utility.label})")

    def point(self, method: str) -> Point:
        return next(p for p in self.points if p.method == method)

    def notes(self) -> list[str]:
        notes = [
            f"x: {self.privacy.label} ({self.privacy.direction}); y: {self.utility.label} ({self.utility.direction}); "
            "values are means over originals [95% bootstrap CI], as in the leaderboard.",
            "Front: on the Pareto front (no other row is at least as anonymous and as useful, and better on one). "
            "A method is dominated when none of its settings is on the front.",
            "Area: trapezoid rule under the method's curve (its settings sorted by privacy), both axes oriented and "
            "min-max normalised over this view to [0, 1]; one point has no area.",
            "Anchors: identity = no anonymization (no privacy, full utility); mask = full mask (full privacy, "
            "least utility).",
        ]
        notes += [f"{method}: not drawn, {reason}." for method, reason in self.excluded]
        notes += [f"{name}: anchor row not in this leaderboard." for name in self.missing_anchors]
        return notes


# --------------------------------------------------------------------------- tables
def _decimals(values: Sequence[float]) -> int:
    finite = [abs(v) for v in values if math.isfinite(v)]
    largest = max(finite, default=0.0)
    return 2 if largest >= 10 else 3 if largest >= 0.01 or largest == 0 else 4


def _value_cell(value: float, low: float, high: float, decimals: int) -> Cell:
    ci = f"[{format_number(low, decimals)}, {format_number(high, decimals)}]" \
        if math.isfinite(low) and math.isfinite(high) else ""
    return Cell(text=format_number(value, decimals), ci=ci)


def _setting(point: Point) -> str:
    return ", ".join(f"{name}={value}" for name, value in point.params) or "default"


def trade_off_table(view: Tradeoff) -> Table:
    """One row per point, curve by curve: setting, x and y with CIs, front, dominated by; and
    the curve's area and whether it is dominated."""
    x_decimals = _decimals([p.x for p in view.points])
    y_decimals = _decimals([p.y for p in view.points])
    rows = []
    for curve in view.curves:
        for method in curve.methods:
            point = view.point(method)
            area = "" if curve.area is None else format_number(curve.area, 3)
            rows.append(Row(labels=(curve.base, _setting(point)), cells=(
                _value_cell(point.x, point.x_low, point.x_high, x_decimals),
                _value_cell(point.y, point.y_low, point.y_high, y_decimals),
                Cell(text="yes" if point.on_front else "no", best=point.on_front),
                Cell(text=", ".join(point.dominated_by[:3]) + (" …" if len(point.dominated_by) > 3 else "") or "—"),
                Cell(text=area if method == curve.methods[0] else ""),
                Cell(text=("yes" if curve.dominated else "no") if method == curve.methods[0] else ""),
                Cell(text=point.anchor),
            )))
    columns = (Column(view.privacy.header, view.privacy.direction), Column(view.utility.header, view.utility.direction),
               Column("Front"), Column("Dominated by"), Column("Area"), Column("Method dominated"), Column("Anchor"))
    return Table(key=f"tradeoff-{view.scope}", title=view.title, row_header=("Method", "Setting"), columns=columns,
                 rows=tuple(rows), notes=tuple(view.notes()), footnotes=())


def to_markdown_document(views: Sequence[Tradeoff], *, escape: Callable[[str], str] = markdown_escape) -> str:
    return "\n".join(to_markdown(trade_off_table(view), escape=escape) for view in views)


def to_latex_document(views: Sequence[Tradeoff]) -> str:
    return "\n".join(to_latex(trade_off_table(view)) for view in views)


def long_frame(views: Sequence[Tradeoff]) -> pd.DataFrame:
    """One row per point of every view, numbers unrounded."""
    records = []
    for view in views:
        curves = {curve.base: curve for curve in view.curves}
        for point in view.points:
            curve = curves[point.base]
            records.append({
                "dataset": view.dataset, "scope": view.scope, "method": point.method, "curve": point.base,
                "setting": _setting(point), "privacy_metric": view.privacy.name, "utility_metric": view.utility.name,
                "x": point.x, "x_ci_low": point.x_low, "x_ci_high": point.x_high,
                "y": point.y, "y_ci_low": point.y_low, "y_ci_high": point.y_high,
                "x_normalised": point.x_unit, "y_normalised": point.y_unit, "on_front": point.on_front,
                "dominated_by": ";".join(point.dominated_by), "curve_area": curve.area,
                "curve_dominated": curve.dominated, "anchor": point.anchor,
            })
    return pd.DataFrame.from_records(records)


def to_csv(views: Sequence[Tradeoff]) -> str:
    # Method names are the user's: a cell starting with "=" must not run in a spreadsheet.
    return to_csv_text(long_frame(views))


def to_json(views: Sequence[Tradeoff]) -> str:
    document = [{
        "dataset": view.dataset, "scope": view.scope,
        "privacy": vars(view.privacy), "utility": vars(view.utility),
        "points": [{key: (dict(value) if key == "params" and isinstance(value, tuple) else value)
                    for key, value in vars(point).items()} for point in view.points],
        "curves": [{**vars(curve), "methods": list(curve.methods)} for curve in view.curves],
        "front": list(view.front),
        "dominated_methods": [curve.base for curve in view.curves if curve.dominated],
        "excluded": [{"method": method, "reason": reason} for method, reason in view.excluded],
        "notes": view.notes(),
    } for view in views]
    return to_json_text(document, indent=2)


# --------------------------------------------------------------------------- plot
def plot_png(view: Tradeoff) -> bytes:
    """The view as a PNG (see the module docstring)."""
    from matplotlib.figure import Figure

    from reports.plots import DPI, _STYLE, _colour, _marker

    import matplotlib

    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(7.5, 5.2), dpi=DPI)
        axes = figure.add_subplot()
        front = [view.point(method) for method in view.front]
        if front:
            axes.plot([p.x for p in front], [p.y for p in front], color="#bbbbbb", linewidth=7, alpha=0.6,
                      solid_capstyle="round", zorder=1, label="Pareto front")
        for index, curve in enumerate(c for c in view.curves if not c.anchor):
            points = [view.point(method) for method in curve.methods]
            colour, marker = _colour(index), _marker(index)
            axes.errorbar([p.x for p in points], [p.y for p in points],
                          xerr=_errors([(p.x, p.x_low, p.x_high) for p in points]),
                          yerr=_errors([(p.y, p.y_low, p.y_high) for p in points]),
                          color=colour, marker=marker, markersize=6, linewidth=1.4, capsize=2, elinewidth=0.8,
                          zorder=3, label=curve.base + (" (dominated)" if curve.dominated else ""))
            for point in points:
                if point.params:
                    axes.annotate(_setting(point), (point.x, point.y), textcoords="offset points", xytext=(4, 4),
                                  fontsize=7, color=colour)
        for point in (p for p in view.points if p.anchor):
            axes.plot([point.x], [point.y], marker="*", markersize=16, color="#000000", linestyle="none", zorder=4)
            axes.annotate(f"{point.method} ({point.anchor})", (point.x, point.y), textcoords="offset points",
                          xytext=(8, -10), fontsize=8)
        if not view.privacy.higher_is_better:
            axes.invert_xaxis()
        if not view.utility.higher_is_better:
            axes.invert_yaxis()
        axes.set_xlabel(f"{view.privacy.label}  (→ more anonymous)")
        axes.set_ylabel(f"{view.utility.label}  (↑ more useful)")
        axes.set_title(view.title)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", frameon=False)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _errors(triples: Sequence[tuple[float, float, float]]) -> list[list[float]] | None:
    if not all(math.isfinite(low) and math.isfinite(high) for _, low, high in triples):
        return None
    return [[max(0.0, value - low) for value, low, _ in triples], [max(0.0, high - value) for value, _, high in triples]]


# --------------------------------------------------------------------------- HTML
def html_section(views: Sequence[Tradeoff], plots: Sequence[bytes] | None = None) -> Markup:
    """The views as an HTML fragment (plot as a data URI, then the table), autoescaped."""
    plots = list(plots) if plots is not None else [plot_png(view) for view in views]
    items = [{"title": view.title, "plot": data_uri(png, "image/png"), "table": trade_off_table(view)}
             for view, png in zip(views, plots)]
    return Markup(environment().get_template("_tradeoff_section.html.j2").render(views=items, simulated_note=""))


# --------------------------------------------------------------------------- files
def write_tradeoffs(views: Sequence[Tradeoff], out_dir: Path, plots: Sequence[bytes] | None = None) -> dict[str, Path]:
    """Every format into `out_dir` (atomically): tradeoff.md/.tex/.csv/.json and one PNG per scope
    (`plots`: those PNGs, when already drawn)."""
    if not views:
        return {}
    out_dir = Path(out_dir)
    written = {
        "tradeoff_markdown": write_atomic(out_dir / FILE_NAMES["markdown"], to_markdown_document(views)),
        "tradeoff_latex": write_atomic(out_dir / FILE_NAMES["latex"], to_latex_document(views)),
        "tradeoff_csv": write_atomic(out_dir / FILE_NAMES["csv"], to_csv(views)),
        "tradeoff_json": write_atomic(out_dir / FILE_NAMES["json"], to_json(views)),
    }
    plots = list(plots) if plots is not None else [plot_png(view) for view in views]
    for view, png in zip(views, plots):
        written[f"tradeoff_plot_{view.scope}"] = write_atomic(out_dir / FILE_NAMES["plot"].format(scope=view.scope),
                                                              png)
    return written
