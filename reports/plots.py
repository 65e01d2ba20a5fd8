"""Figures for the report, drawn with matplotlib's object API (no pyplot state, Agg via savefig).

Every function returns a `Plot`: PNG bytes plus the title and the caption a reader needs --
including what was done to draw values that cannot be drawn as they are (an infinite PSNR is
shown at the largest finite PSNR; a constant or empty metric is left out and named).

- `rank_plot`: the paper's Figure 2 -- pairs ranked by human score, every metric min-max
  normalised and oriented so that 1 = most anonymous, against the human curve;
- `metric_scatter`: metric value vs human score, one panel per metric;
- `correlation_bars`: correlations with their CIs per split, one panel per statistic;
- `score_distributions`: human and metric scores by method and scope.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from metrics.schema import MetricInfo, MetricInfos, metric_infos
from reports.tables import (
    CORRELATION_COLUMNS,
    NO_INTERVAL_CLUSTERS,
    StatisticInfos,
    is_simulated,
    require_columns,
    statistic_infos,
    unique_in_order,
    views,
    write_atomic,
)

# Okabe & Ito's colour-blind-safe palette, yellow last (weak on white); black is the human curve.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#999999", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HUMAN_COLOUR = "#000000"
DPI = 110
_STYLE = {
    # Names come from users ("cost_$", "x^2"): never read them as mathtext.
    "text.parse_math": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@dataclass(frozen=True)
class Plot:
    name: str  # file stem
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Displayed:
    """A column as drawn: infinities moved to the finite extremes, how many were moved."""

    values: np.ndarray
    clipped: int


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _marker(index: int) -> str:
    return MARKERS[index % len(MARKERS)]


def _short(text: str, limit: int = 20) -> str:
    """A tick label that leaves room for the data; the tables carry the full name."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def display_values(pairs: pd.DataFrame, column: str) -> Displayed:
    """A score column ready to draw: +inf at the largest finite value, -inf at the smallest,
    NaN where nothing finite is left (matplotlib would silently drop infinities)."""
    values = pd.to_numeric(pairs[column], errors="coerce").to_numpy(dtype=float, copy=True)
    infinite = np.isinf(values)
    finite = values[np.isfinite(values)]
    if infinite.any():
        values[values == np.inf] = finite.max() if finite.size else np.nan
        values[values == -np.inf] = finite.min() if finite.size else np.nan
    return Displayed(values, int(infinite.sum()))


def oriented_unit(values: np.ndarray, higher_is_more_anonymous: bool) -> np.ndarray | None:
    """Min-max normalised to [0, 1] with 1 = most anonymous; None when the range is empty."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.max() == finite.min():
        return None
    unit = (values - finite.min()) / (finite.max() - finite.min())
    return unit if higher_is_more_anonymous else 1.0 - unit


def _clip_note(clipped: Mapping[str, int]) -> str:
    moved = [f"{label}: {count}" for label, count in clipped.items() if count]
    if not moved:
        return ""
    return (f" Infinite values (e.g. PSNR of identical images) are drawn at the largest finite value "
            f"of their metric, for display only ({', '.join(moved)}).")


def _skipped_note(skipped: Sequence[str]) -> str:
    return f" Not drawn: {'; '.join(skipped)}." if skipped else ""


DAGGER_LEGEND = "† = unverified or stand-in weights"
HATCH_LEGEND = "hatched = unverified or stand-in weights (†)"


def _dagger_handles(infos: Iterable[MetricInfo], *, hatched: bool = False) -> list[Any]:
    """A legend entry explaining † (and hatching) when some metric is unverified."""
    if all(info.verified for info in infos):
        return []
    return [Patch(facecolor="white", edgecolor="#333333", hatch="//" if hatched else "",
                  fill=hatched, linewidth=0.5 if hatched else 0)]


def _dagger_labels(infos: Iterable[MetricInfo], *, hatched: bool = False) -> list[str]:
    return [] if all(info.verified for info in infos) else [HATCH_LEGEND if hatched else DAGGER_LEGEND]


def _dagger_caption(infos: Iterable[MetricInfo]) -> str:
    unverified = [info.label for info in infos if not info.verified]
    return f" † after a name: computed with unverified or stand-in weights ({', '.join(unverified)})." if unverified else ""


def _title(text: str, simulated: bool) -> str:
    return f"{text} — SIMULATED human scores" if simulated else text


def _human_scores(pairs: pd.DataFrame) -> pd.DataFrame:
    require_columns(pairs, ("score_mean",), "pairs")
    scores = pd.to_numeric(pairs["score_mean"], errors="coerce")
    return pairs[np.isfinite(scores.to_numpy(dtype=float))].reset_index(drop=True)


def _drawable(pairs: pd.DataFrame, infos: Iterable[MetricInfo]) -> tuple[list[MetricInfo], list[str]]:
    """Metrics with a column in `pairs`, and a note for each one without."""
    present = [info for info in infos if info.name in pairs.columns]
    missing = [f"{info.label} (no per-pair scores)" for info in infos if info.name not in pairs.columns]
    return present, missing


def _grid(figure: Figure, panels: int, columns: int = 3) -> list[Any]:
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for unused in axes[panels:]:
        unused.set_visible(False)
    return axes[:panels]


def _group_column(pairs: pd.DataFrame, column: str) -> np.ndarray:
    """A grouping column as text; one group "all" when the column is absent."""
    if column not in pairs.columns:
        return np.full(len(pairs), "all", dtype=object)
    return pairs[column].astype(str).to_numpy(dtype=object)


# --------------------------------------------------------------------------- (a) rank plot
def rank_plot(pairs: pd.DataFrame, metrics: MetricInfos, *, simulated: bool = False) -> Plot:
    """Pairs ranked by mean human score; each metric normalised, oriented and smoothed over them."""
    pairs = _human_scores(pairs)
    infos, skipped = _drawable(pairs, metric_infos(metrics))
    order = np.argsort(pairs["score_mean"].to_numpy(dtype=float), kind="stable")
    rank = np.arange(1, len(order) + 1)
    window = max(3, len(order) // 15)
    clipped = {}
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(10, 5.2), layout="constrained")
        axes = figure.add_subplot()
        for index, info in enumerate(infos):
            shown = display_values(pairs, info.name)
            unit = oriented_unit(shown.values[order], info.higher_is_more_anonymous)
            if unit is None:
                skipped.append(f"{info.label} (constant or missing)")
                continue
            clipped[info.label] = shown.clipped
            axes.scatter(rank, unit, s=9, alpha=0.3, color=_colour(index), marker=_marker(index), linewidths=0)
            smooth = pd.Series(unit).rolling(window, center=True, min_periods=1).mean()
            axes.plot(rank, smooth, color=_colour(index), linewidth=1.6, label=info.header)
        human = oriented_unit(pairs["score_mean"].to_numpy(dtype=float)[order], True)
        if human is not None:
            axes.plot(rank, human, color=HUMAN_COLOUR, linewidth=2.6, label="Human score (mean)")
        axes.set_xlabel("Pairs ranked by mean human score (1 = least anonymous)")
        axes.set_ylabel("Normalised, oriented value (1 = most anonymous)")
        axes.set_ylim(-0.03, 1.03)
        axes.grid(alpha=0.3)
        handles, labels = axes.get_legend_handles_labels()
        axes.legend(handles + _dagger_handles(infos), labels + _dagger_labels(infos), loc="upper left",
                    bbox_to_anchor=(1.01, 1.0), frameon=False)
        title = _title("Metrics along the human ranking", simulated)
        axes.set_title(title)
        png = _png(figure)
    caption = (f"The paper's Figure 2 for these {len(order)} pairs: pairs sorted by mean human score (x = rank); "
               f"each metric min-max normalised over the pairs and oriented so that 1 = most anonymous "
               f"(points = pairs, line = moving average over {window} pairs).") + _dagger_caption(infos) + _clip_note(clipped) + _skipped_note(skipped)
    return Plot("rank_plot", title, caption, png)


# --------------------------------------------------------------------------- (b) scatter
def _number(value: Any) -> float:
    """A table cell as a float; NaN for a missing one (None, as JSON's null reads back)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def drawn_spearman(metric: np.ndarray, human: np.ndarray, higher_is_more_anonymous: bool) -> tuple[float, int]:
    """Oriented Spearman ρ over exactly the points drawn (pairs with a metric value), and their count.

    Infinite values keep their rank (an infinite PSNR is the largest), as in the tables."""
    used = ~np.isnan(metric) & np.isfinite(human)
    n = int(used.sum())
    if n < 3:
        return math.nan, n
    oriented = metric[used] if higher_is_more_anonymous else -metric[used]
    x, y = pd.Series(oriented).rank().to_numpy(), pd.Series(human[used]).rank().to_numpy()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, n
    return float(np.corrcoef(x, y)[0, 1]), n


def metric_scatter(pairs: pd.DataFrame, metrics: MetricInfos, *, simulated: bool = False) -> Plot:
    """Metric value (x) against mean human score (y), one panel per metric, coloured by method;
    each panel's ρ is computed on the points it shows."""
    pairs = _human_scores(pairs)
    infos, skipped = _drawable(pairs, metric_infos(metrics))
    methods = _group_column(pairs, "method")
    method_names = unique_in_order(methods)
    human = pairs["score_mean"].to_numpy(dtype=float)
    clipped = {}
    with matplotlib.rc_context(_STYLE):
        columns = min(3, max(1, len(infos)))
        figure = Figure(figsize=(4.2 * columns, 3.4 * math.ceil(max(1, len(infos)) / columns) + 0.6),
                        layout="constrained")
        for axes, info in zip(_grid(figure, len(infos)), infos):
            shown = display_values(pairs, info.name)
            clipped[info.label] = shown.clipped
            for index, method in enumerate(method_names):
                chosen = methods == method
                axes.scatter(shown.values[chosen], human[chosen], s=14, alpha=0.75, color=_colour(index),
                             marker=_marker(index), linewidths=0, label=_short(method, 30))
            panel = info.header
            rho, n = drawn_spearman(pd.to_numeric(pairs[info.name], errors="coerce").to_numpy(dtype=float), human,
                                    info.higher_is_more_anonymous)
            if math.isfinite(rho):
                panel += f"   ρ = {rho:.2f} (n = {n})"
            axes.set_title(panel)
            axes.set_xlabel(f"{info.label} ({'higher' if info.higher_is_more_anonymous else 'lower'} = more anonymous)")
            axes.set_ylabel("Mean human score")
            axes.grid(alpha=0.3)
        title = _title("Metric vs human score", simulated)
        figure.suptitle(title)
        if infos:
            handles, labels = figure.axes[0].get_legend_handles_labels()
            figure.legend(handles + _dagger_handles(infos), labels + _dagger_labels(infos), loc="outside lower center",
                          ncols=min(len(labels) + 1, 6), frameon=False, title="Method")
        png = _png(figure)
    caption = (f"Each point is one pair ({len(pairs)} pairs: all rows, not a split's test set); ρ is the oriented "
               "Spearman correlation of the pairs drawn in that panel (n of them), so it differs from the tables, "
               "which use each split's test set." + _dagger_caption(infos) + _clip_note(clipped) + _skipped_note(skipped))
    return Plot("metric_scatter", title, caption, png)


# --------------------------------------------------------------------------- (c) bars
def correlation_bars(correlations: pd.DataFrame, metrics: MetricInfos, *, granularity: str | None = None,
                     form: str | None = None, statistics: StatisticInfos | None = None,
                     simulated: bool = False) -> Plot:
    """Grouped bars (one per metric) per split with 95% CI error bars, one panel per statistic
    (`statistics`, default: every one in the table, labelled by its name)."""
    require_columns(correlations, CORRELATION_COLUMNS, "correlations")
    present_views = views(correlations)
    granularity = granularity or (present_views[0][0] if present_views else "")
    form = form or (present_views[0][1] if present_views else "")
    view = correlations[(correlations["granularity"] == granularity) & (correlations["form"] == form)]
    if view.empty:
        available = ", ".join(f"{g}/{f}" for g, f in present_views) or "none"
        raise ValueError(f"no correlations for granularity {granularity!r}, form {form!r}; available: {available}")
    present = set(view["statistic"])
    chosen = [info for info in statistic_infos(statistics, view) if info.name in present]
    splits = unique_in_order(view["split"])
    infos = [info for info in metric_infos(metrics) if info.name in set(view["metric"])]
    records = {(r["split"], r["statistic"], r["metric"]): r for r in view.to_dict(orient="records")}
    width = 0.8 / max(1, len(infos))
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(min(16.0, max(8.0, 1.3 * len(splits) + 2)), 2.9 * len(chosen) + 1.2),
                        layout="constrained")
        panels = figure.subplots(max(1, len(chosen)), 1, sharex=True, squeeze=False)[:, 0]
        for axes, statistic in zip(panels, chosen):
            for index, info in enumerate(infos):
                rows = [records.get((split, statistic.name, info.name), {}) for split in splits]
                _bar_series(axes, rows, index, width, info)
            axes.axhline(0, color="black", linewidth=0.8)
            axes.set_ylabel(f"{statistic.symbol} ({statistic.label})")
            axes.grid(axis="y", alpha=0.3)
        panels[-1].set_xticks(range(len(splits)), [_short(split) for split in splits], rotation=30, ha="right")
        title = _title(f"Correlation with human scores per split ({granularity}, {form})", simulated)
        figure.suptitle(title)
        handles, labels = panels[0].get_legend_handles_labels()
        if handles:
            handles += _dagger_handles(infos, hatched=True)
            labels += _dagger_labels(infos, hatched=True)
            figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), frameon=False)
        png = _png(figure)
    caption = ("Bars: correlation oriented so that positive = agrees with the human scores, on each split's test "
               f"set; whiskers: 95% percentile cluster-bootstrap CI (asymmetric), none for a split with fewer than "
               f"{NO_INTERVAL_CLUSTERS} originals. n/a: undefined for that split (see the tables for the reason)."
               + (" Hatched bars and † after a name: unverified or stand-in weights." if _dagger_labels(infos) else ""))
    return Plot(f"correlation_bars-{granularity}-{form}", title, caption, png)


def _bar_series(axes: Any, rows: Sequence[Mapping[str, Any]], index: int, width: float, info: MetricInfo) -> None:
    def column(name: str) -> np.ndarray:
        return np.array([_number(row.get(name)) for row in rows], dtype=float)

    value, low, high = column("value"), column("ci_low"), column("ci_high")
    # As in the tables: below NO_INTERVAL_CLUSTERS originals an interval means little; draw none.
    few = column("n_clusters") < NO_INTERVAL_CLUSTERS
    low[few], high[few] = np.nan, np.nan
    positions = np.arange(len(rows)) - 0.4 + width * (index + 0.5)
    # A CI that does not contain its point estimate (possible with percentile bootstraps) draws no whisker side.
    errors = np.nan_to_num(np.clip(np.vstack([value - low, high - value]), 0, None))
    axes.bar(positions, np.nan_to_num(value), width, yerr=errors, color=_colour(index), label=info.header,
             hatch="" if info.verified else "//", edgecolor="white", linewidth=0.5,
             error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"})
    for position in positions[np.isnan(value)]:
        axes.text(position, 0.01, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="#555555")


# --------------------------------------------------------------------------- (d) distributions
def score_distributions(pairs: pd.DataFrame, metrics: MetricInfos, *, simulated: bool = False) -> Plot:
    """Box plots of the human score and every metric, by method (x) and scope (colour)."""
    pairs = _human_scores(pairs)
    infos, skipped = _drawable(pairs, metric_infos(metrics))
    panels = [("score_mean", "Human score (mean)", "human score")]
    panels += [(info.name, info.header, info.label) for info in infos]
    methods, scopes = _group_column(pairs, "method"), _group_column(pairs, "scope")
    method_names, scope_names = unique_in_order(methods), unique_in_order(scopes)
    width = 0.8 / max(1, len(scope_names))
    clipped = {}
    with matplotlib.rc_context(_STYLE):
        columns = min(3, len(panels))
        figure = Figure(figsize=(4.2 * columns, 3.3 * math.ceil(len(panels) / columns) + 0.6), layout="constrained")
        for axes, (column, panel, label) in zip(_grid(figure, len(panels)), panels):
            shown = display_values(pairs, column)
            clipped[label] = shown.clipped
            for index, scope in enumerate(scope_names):
                groups = [shown.values[(methods == method) & (scopes == scope)] for method in method_names]
                groups = [(position, data[np.isfinite(data)]) for position, data in enumerate(groups)]
                groups = [(position, data) for position, data in groups if data.size]
                if not groups:
                    continue
                offset = (index - (len(scope_names) - 1) / 2) * width
                boxes = axes.boxplot([data for _, data in groups], positions=[p + offset for p, _ in groups],
                                     widths=width * 0.85, patch_artist=True, manage_ticks=False,
                                     flierprops={"markersize": 2}, medianprops={"color": "black"})
                for box in boxes["boxes"]:
                    box.set_facecolor(_colour(index))
                    box.set_alpha(0.8)
            axes.set_xticks(range(len(method_names)), [_short(name) for name in method_names], rotation=30, ha="right")
            axes.set_title(panel)
            axes.grid(axis="y", alpha=0.3)
        title = _title("Scores by method and scope", simulated)
        figure.suptitle(title)
        legend = [Patch(facecolor=_colour(index), alpha=0.8, label=scope) for index, scope in enumerate(scope_names)]
        legend += [Patch(facecolor="white", linewidth=0, label=label) for label in _dagger_labels(infos)]
        figure.legend(handles=legend, loc="outside lower center", ncols=len(legend), frameon=False, title="Scope")
        png = _png(figure)
    caption = ("Boxes: quartiles and median of each method x scope; whiskers 1.5 IQR; points beyond them are single pairs."
               + _dagger_caption(infos) + _clip_note(clipped) + _skipped_note(skipped))
    return Plot("score_distributions", title, caption, png)


# --------------------------------------------------------------------------- all together
def all_plots(*, correlations: pd.DataFrame, metrics: MetricInfos, provenance: Mapping[str, Any] | None,
              pairs: pd.DataFrame | None = None, statistics: StatisticInfos | None = None) -> list[Plot]:
    """Every figure the data allows: the per-pair figures need `pairs`; `statistics` label
    the correlation panels."""
    simulated = is_simulated(provenance)
    plots = []
    if pairs is not None and not pairs.empty:
        plots += [
            rank_plot(pairs, metrics, simulated=simulated),
            metric_scatter(pairs, metrics, simulated=simulated),
        ]
    if not correlations.empty:
        plots.append(correlation_bars(correlations, metrics, statistics=statistics, simulated=simulated))
    if pairs is not None and not pairs.empty:
        plots.append(score_distributions(pairs, metrics, simulated=simulated))
    return plots


def write_plots(plots: Iterable[Plot], out_dir: Path) -> list[Path]:
    return [write_atomic(Path(out_dir) / f"{plot.name}.png", plot.png) for plot in plots]
