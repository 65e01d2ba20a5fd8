"""Result tables laid out like the paper's Tables 1 and 2, rendered to Markdown, LaTeX and CSV/JSON.

A table is built ONCE from the long results (see reports/SCHEMA.md) into a `Table` model -- rows
= split x statistic, columns = metrics, cells that already know their value, CI, significance
marks, "best" flag and n/a reason -- and each renderer only decorates that model in its own
syntax. The HTML report renders the same model through its template.

Every rendering carries the two warnings a reader must not miss: the human scores are SIMULATED
(provenance["simulated_scores"]) and a metric computed with unverified or stand-in weights (its
MetricInfo's weights_status is marked) has a dagger on its header and a footnote.

This module also holds what all report modules share: the result bundle and the atomic file
writer; metric metadata (MetricInfo) is metrics.schema's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from metrics.atomic import write_atomic  # noqa: F401  (re-exported: plots and html write through it)
from metrics.csvsafe import to_csv_text
from metrics.schema import MetricInfo, MetricInfos, metric_infos, to_json_text

SIMULATED_NOTE = "SIMULATED annotator scores — not human judgments."
DAGGER_NOTE = "† computed with unverified or stand-in weights"
#: The view a report shows first: the paper's headline (mean score, regression).
PRIMARY_VIEW = ("mean", "regression")
#: "interval" prints [low, high]; "halfwidth" prints ± only where the interval is symmetric
#: (a percentile interval rarely is), else [low, high] as well.
CI_STYLES = ("interval", "halfwidth")
#: Splits with fewer distinct originals than this carry FEW_CLUSTERS_MARK: a cluster bootstrap
#: over so few clusters has few distinct resamples and its interval is too narrow.
FEW_CLUSTERS = 10
#: Below this many originals no interval is shown at all (4 originals: 35 distinct resamples).
NO_INTERVAL_CLUSTERS = 5
FEW_CLUSTERS_MARK = "‡"
FEW_CLUSTERS_NOTE = (f"{FEW_CLUSTERS_MARK} fewer than {FEW_CLUSTERS} originals in this split: its cluster-bootstrap "
                     "intervals and tests rest on few distinct resamples (intervals likely too narrow).")
#: Values closer than this (relative) are ties: in ranks and in "best".
TIE_TOLERANCE = 1e-12
CONVENTIONS = ("default", "paper")

CORRELATION_COLUMNS = (
    "split", "granularity", "form", "metric", "statistic", "value", "ci_low", "ci_high",
    "n", "n_clusters", "p_vs_best", "is_best", "fraction_of_ceiling", "reason",
)
CEILING_COLUMNS = (
    "split", "granularity", "form", "split_half", "loo", "cronbach_alpha", "n", "n_annotators", "reason",
)
# Ceiling measures shown as table columns: (column, header, tooltip, is a count).
_CEILING_MEASURES = (
    ("split_half", "Split-half", "split-half Spearman, Spearman-Brown corrected", False),
    ("loo", "LOO ρ", "mean leave-one-annotator-out Spearman", False),
    ("cronbach_alpha", "Cronbach α", "Cronbach's alpha over annotators", False),
    ("n", "n", "pairs in the test set", True),
    ("n_annotators", "Annotators", "annotators per pair", True),
)


# --------------------------------------------------------------------------- shared inputs
@dataclass(frozen=True)
class NotComputed:
    """A requested or default metric that produced no values, and the one line saying why and
    what to do (e.g. "weights alexnet not found ...; run `bench weights fetch alexnet`")."""

    name: str
    label: str
    reason: str
    status: str = "unavailable"  # or "failed"

    @property
    def line(self) -> str:
        return f"{self.label}: not computed — {self.reason}" if self.reason else f"{self.label}: not computed"


def not_computed_records(items: Iterable[Mapping[str, Any] | NotComputed] | None) -> list[NotComputed]:
    """NotComputed records from records or their dicts (as stored in results.json)."""
    records = []
    for item in items or ():
        if isinstance(item, NotComputed):
            records.append(item)
        else:
            name = str(item["name"])
            records.append(NotComputed(name=name, label=str(item.get("label") or name),
                                       reason=str(item.get("reason") or ""),
                                       status=str(item.get("status") or "unavailable")))
    return records


def not_computed_notes(items: Iterable[NotComputed]) -> list[str]:
    """One note per metric that did not run, for every table's notes."""
    return [item.line for item in items]


_WANG_SSIM = ("SSIM is Wang et al. 2004 (K1 = 0.01, K2 = 0.03, Gaussian window 11, σ = 1.5), not the released "
              "code's squared constants.")


def convention_note(convention: str = "default", *, of: str = "correlations") -> str:
    """The one line every table carries on the convention that produced its numbers.

    of: "correlations" (the correlation tables) or "values" (a leaderboard of metric values,
    whose signs no convention changes)."""
    if of not in ("correlations", "values"):
        raise ValueError(f"of must be 'correlations' or 'values', got {of!r}")
    if convention == "default" and of == "values":
        return f"Convention: default. Values as computed; the arrows give each metric's direction. {_WANG_SSIM}"
    if convention == "paper" and of == "values":
        return ("Convention: paper (as released). Values as computed; SSIM with the released code's constants (0.01² "
                "and 0.03² passed to scikit-image, which squares them again).")
    if convention == "default":
        return ("Convention: default (oriented). PSNR and SSIM are oriented (lower = more anonymous, so their "
                "correlations have the opposite sign of the paper's Tables 1–2) and the binary label is reversed "
                f"relative to the released code. {_WANG_SSIM} `--convention paper` gives the paper's.")
    if convention == "paper":
        return ("Convention: paper (as released). Raw signs as printed in the paper's Tables 1–2, the released "
                "binary mapping and label transforms, SSIM with the released code's constants (0.01² and 0.03² "
                "passed to scikit-image, which squares them again).")
    raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")


def convention_of(provenance: Mapping[str, Any] | None) -> str:
    return str((provenance or {}).get("convention") or "default")


def rows_of(provenance: Mapping[str, Any] | None) -> str:
    """Which rows the correlations used ("test" unless the producer recorded otherwise)."""
    return str((provenance or {}).get("rows") or "test")


def rows_note(rows: str = "test") -> str:
    """Which rows a correlation table uses; n and orig. in each row count them."""
    if rows == "test":
        return ("Rows: the test set of each split as the protocol defines it (not all pairs); "
                "n = test pairs, orig. = distinct originals among them.")
    if rows == "all":
        return "Rows: all pairs of each split (no train/test division); n = pairs, orig. = distinct originals."
    raise ValueError(f"rows must be 'test' or 'all', got {rows!r}")


def ties(values: Sequence[float], best: float, *, tolerance: float = TIE_TOLERANCE) -> list[bool]:
    """Which values tie with `best` within a relative `tolerance` (MSE and PSNR, monotone
    transforms of each other, must not be told apart by float rounding)."""
    return [_finite(value) and math.isfinite(best)
            and abs(float(value) - best) <= tolerance * max(abs(float(value)), abs(best), 1e-300)
            for value in values]


def is_simulated(provenance: Mapping[str, Any] | None) -> bool:
    return bool((provenance or {}).get("simulated_scores", False))


def dagger_note(infos: Iterable[MetricInfo]) -> str:
    """The footnote naming every unverified metric and its weights, or "" when all are verified."""
    unverified = [info for info in infos if not info.verified]
    if not unverified:
        return ""
    named = "; ".join(f"{info.label} ({info.weights_note})" if info.weights_note else info.label for info in unverified)
    return f"{DAGGER_NOTE}: {named}."


@dataclass(frozen=True)
class StatisticInfo:
    """What a report shows of one statistic of the correlations table (bench.analysis.stats.Statistic
    is the producer's record; reports never import it): its name in the table, the symbol of
    its table rows, its word on plots, and whether the tables show it (the paper convention
    adds Pearson to the long table and the plots only)."""

    name: str
    symbol: str
    label: str
    tabulated: bool = True

    @classmethod
    def from_json(cls, stored: StatisticInfo | Mapping[str, Any]) -> StatisticInfo:
        if isinstance(stored, StatisticInfo):
            return stored
        try:
            return cls(str(stored["name"]), str(stored["symbol"]), str(stored["label"]),
                       bool(stored.get("tabulated", True)))
        except KeyError as exc:
            raise ValueError(f"statistic {dict(stored)} lacks {exc}; each needs name, symbol and label") from None

    def to_json(self) -> dict[str, Any]:
        return vars(self).copy()


StatisticInfos = Iterable[StatisticInfo | Mapping[str, Any]]


def statistic_infos(statistics: StatisticInfos | None, correlations: pd.DataFrame | None = None) -> list[StatisticInfo]:
    """StatisticInfo records from records or stored dicts; none given: every statistic of
    `correlations`, labelled by its name (a table made without its producer's records)."""
    if statistics:
        return [StatisticInfo.from_json(item) for item in statistics]
    names = unique_in_order(correlations["statistic"]) if correlations is not None else []
    return [StatisticInfo(str(name), str(name), str(name)) for name in names]


@dataclass(frozen=True)
class Results:
    """The result bundle renderers take; `coerce` also accepts a mapping or any object with
    these attributes (e.g. bench's own result class)."""

    correlations: pd.DataFrame
    ceiling: pd.DataFrame
    metrics: Sequence[MetricInfo]
    provenance: Mapping[str, Any]
    pairs: pd.DataFrame | None = None
    #: Metrics requested (or default) that did not run, each with its reason and fix.
    not_computed: Sequence[NotComputed] = ()
    #: Every statistic of `correlations`, in order (empty: each labelled by its name).
    statistics: Sequence[StatisticInfo] = ()
    #: What the HTML report shows besides the tables: its title, sample pairs (original path,
    #: anonymized path, row dict), and extra (title, body) sections.
    title: str = ""
    sample_pairs: Any = None
    sections: Sequence[tuple[str, Any]] = ()

    @property
    def tabulated(self) -> list[StatisticInfo]:
        """The statistics the correlation tables show, in order."""
        return [info for info in statistic_infos(self.statistics, self.correlations) if info.tabulated]

    @classmethod
    def coerce(cls, result: Any) -> Results:
        if isinstance(result, Results):
            return result
        get = result.get if isinstance(result, Mapping) else (lambda key, default=None: getattr(result, key, default))
        fields = {key: get(key) for key in ("correlations", "ceiling", "metrics", "provenance")}
        missing = [key for key, value in fields.items() if value is None]
        if missing:
            raise ValueError(f"results lack {', '.join(missing)}")
        fields["metrics"] = tuple(metric_infos(fields["metrics"]))
        return cls(**fields, pairs=get("pairs"), not_computed=tuple(not_computed_records(get("not_computed"))),
                   statistics=tuple(statistic_infos(get("statistics"))), title=get("title") or "",
                   sample_pairs=get("sample_pairs"), sections=tuple(get("sections") or ()))


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} table lacks column(s) {', '.join(missing)}; see reports/SCHEMA.md")


def unique_in_order(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def views(correlations: pd.DataFrame) -> list[tuple[str, str]]:
    """(granularity, form) pairs in the producer's order, the primary view first."""
    found = unique_in_order(zip(correlations["granularity"], correlations["form"]))
    return sorted(found, key=lambda view: view != PRIMARY_VIEW)


# --------------------------------------------------------------------------- table model
@dataclass(frozen=True)
class Column:
    header: str  # plain text; may contain ↑ ↓ † which each renderer spells its own way
    tooltip: str = ""


@dataclass(frozen=True)
class Cell:
    text: str  # formatted number (with a true minus sign) or "n/a"
    ci: str = ""  # "[0.410, 0.600]" (or "± 0.081" where symmetric)
    flag: str = ""  # FEW_CLUSTERS_MARK, set right after the number
    marks: str = ""  # "*" / "**": significantly worse than the row's best
    best: bool = False
    footnote: str = ""  # key of the footnote explaining an n/a or a caveat
    reason: str = ""

    @property
    def missing(self) -> bool:
        return self.text == "n/a"

    @property
    def superscript(self) -> str:
        """Marks and footnote key together, as LaTeX and HTML set them."""
        return ",".join(part for part in (self.marks, self.footnote) if part)


@dataclass(frozen=True)
class Row:
    labels: tuple[str, ...]  # (split, statistic symbol) or (split,)
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Table:
    key: str  # file-name-safe identifier, e.g. "correlations-mean-regression"
    title: str
    row_header: tuple[str, ...]
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...]  # plain-text notes, SIMULATED first when it applies
    footnotes: tuple[tuple[str, str], ...]  # (key, reason)

    def row_groups(self) -> list[tuple[str, list[Row]]]:
        """Consecutive rows sharing their first label (a split), for row-spanning headers."""
        groups: list[tuple[str, list[Row]]] = []
        for row in self.rows:
            if groups and groups[-1][0] == row.labels[0]:
                groups[-1][1].append(row)
            else:
                groups.append((row.labels[0], [row]))
        return groups


class Footnotes:
    """Gives each distinct reason one letter, in order of first use."""

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}

    def key(self, reason: str) -> str:
        if reason not in self._keys:
            index = len(self._keys)
            self._keys[reason] = chr(ord("a") + index) if index < 26 else str(index + 1)
        return self._keys[reason]

    def items(self) -> tuple[tuple[str, str], ...]:
        return tuple((key, reason) for reason, key in self._keys.items())


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def format_number(value: float, decimals: int) -> str:
    # A true minus sign: a hyphen is too short next to digits in every typeface.
    return f"{float(value):.{decimals}f}".replace("-", "−")


def _ci_text(low: Any, high: Any, decimals: int, style: str, value: Any = math.nan) -> str:
    """[low, high]; "± half-width" only when asked for and the interval is symmetric about the value
    at the printed precision -- a percentile interval read as ± would claim a range it does not cover."""
    if not (_finite(low) and _finite(high)):
        return ""
    if style == "halfwidth" and _finite(value):
        below, above = float(value) - float(low), float(high) - float(value)
        if format_number(below, decimals) == format_number(above, decimals):
            return f"± {format_number(above, decimals)}"
    return f"[{format_number(low, decimals)}, {format_number(high, decimals)}]"


def _clusters(record: Mapping[str, Any]) -> int | None:
    value = record.get("n_clusters")
    return int(value) if _finite(value) else None


def _marks(p_value: Any) -> str:
    if not _finite(p_value):
        return ""
    return "**" if p_value < 0.01 else "*" if p_value < 0.05 else ""


def _reason(record: Mapping[str, Any] | None, fallback: str) -> str:
    reason = "" if record is None else record.get("reason")
    return str(reason) if isinstance(reason, str) and reason.strip() else fallback


def _quantity_cell(record: Mapping[str, Any] | None, quantity: str, footnotes: Footnotes, *,
                   decimals: int, ci: str | None, fallback: str, best: bool = False) -> Cell:
    """One metric's cell: value (+ CI) with marks, or n/a with its reason as a footnote.

    A split with fewer than FEW_CLUSTERS originals is flagged; below NO_INTERVAL_CLUSTERS its
    interval is withheld and a footnote says why."""
    if record is None or not _finite(record.get(quantity)):
        reason = _reason(record, "not computed" if record is None else fallback)
        return Cell(text="n/a", footnote=footnotes.key(reason), reason=reason)
    caveats = [_reason(record, "")]  # e.g. "NaN scores: 3 pairs dropped" next to a defined value
    clusters = _clusters(record)
    few = clusters is not None and clusters < FEW_CLUSTERS
    interval = ""
    if ci:
        if clusters is not None and clusters < NO_INTERVAL_CLUSTERS:
            caveats.append(f"no interval: only {clusters} original(s) in this split (fewer than "
                           f"{NO_INTERVAL_CLUSTERS}: too few distinct bootstrap resamples)")
        else:
            interval = _ci_text(record.get("ci_low"), record.get("ci_high"), decimals, ci, record.get("value"))
    caveats = [caveat for caveat in caveats if caveat]
    return Cell(
        text=format_number(record[quantity], decimals),
        ci=interval,
        flag=FEW_CLUSTERS_MARK if few else "",
        marks=_marks(record.get("p_vs_best")),
        best=best,
        footnote=",".join(footnotes.key(caveat) for caveat in caveats),
        reason="; ".join(caveats),
    )


def _row_best(records: Sequence[Mapping[str, Any] | None]) -> list[bool]:
    """Best cells of one row: the producer's best and every value tied with it (TIE_TOLERANCE)."""
    best = [record for record in records if record is not None and record.get("is_best") in (True, 1)]
    if not best or not _finite(best[0].get("value")):  # NaN (read back from CSV) is not best
        return [False] * len(records)
    return ties([math.nan if record is None else record.get("value") for record in records], float(best[0]["value"]))


def _count_label(records: Sequence[Mapping[str, Any] | None]) -> str:
    """"n / orig." of a row: the most pairs any metric used, and their originals."""
    counts = [(int(r["n"]), int(r["n_clusters"])) for r in records
              if r is not None and _finite(r.get("n")) and _finite(r.get("n_clusters"))]
    if not counts:
        return "–"
    n, clusters = max(counts)
    return f"{n} / {clusters}"


def _common_notes(infos: Iterable[MetricInfo], simulated: bool, *, convention: str = "default",
                  not_computed: Iterable[NotComputed] = ()) -> list[str]:
    notes = [SIMULATED_NOTE] if simulated else []
    dagger = dagger_note(infos)
    notes += [dagger] if dagger else []
    return notes + not_computed_notes(not_computed) + [convention_note(convention)]


def _metric_columns(view: pd.DataFrame, infos: list[MetricInfo]) -> list[MetricInfo]:
    names = unique_in_order(view["metric"])
    known = {info.name: info for info in infos}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"metric(s) {', '.join(map(repr, unknown))} in the correlations have no MetricInfo")
    return [info for info in infos if info.name in set(names)]


def correlation_table(
    correlations: pd.DataFrame,
    metrics: MetricInfos,
    provenance: Mapping[str, Any] | None,
    granularity: str,
    form: str,
    *,
    statistics: StatisticInfos | None = None,
    quantity: str = "value",
    decimals: int = 3,
    ci: str = "interval",
    not_computed: Iterable[NotComputed] = (),
    rows_used: str = "test",
) -> Table:
    """Rows = split x statistic, columns = metrics, for one granularity x form.

    quantity "value" gives the correlation table (with CIs), "fraction_of_ceiling" the same
    layout as a fraction of each split's noise ceiling. `statistics` are the rows of each
    split, in order (default: every statistic of the table, labelled by its name). Every row
    says how many pairs and originals it rests on; `not_computed` metrics are named in the
    notes with their reason."""
    require_columns(correlations, CORRELATION_COLUMNS, "correlations")
    if ci not in CI_STYLES or quantity not in ("value", "fraction_of_ceiling"):
        raise ValueError(f"ci must be one of {', '.join(CI_STYLES)}, quantity 'value' or 'fraction_of_ceiling'; "
                         f"got {ci!r}, {quantity!r}")
    view = correlations[(correlations["granularity"] == granularity) & (correlations["form"] == form)]
    chosen = statistic_infos(statistics, view)
    infos = metric_infos(metrics)
    shown = _metric_columns(view, infos)
    records = {(r["split"], r["statistic"], r["metric"]): r for r in view.to_dict(orient="records")}
    present = [info for info in chosen if info.name in set(view["statistic"])]
    footnotes = Footnotes()
    fallback = "undefined" if quantity == "value" else "noise ceiling undefined"
    rows = []
    for split in unique_in_order(view["split"]):
        for statistic in present:
            row_records = [records.get((split, statistic.name, info.name)) for info in shown]
            best = _row_best(row_records)
            rows.append(Row(
                labels=(str(split), _count_label(row_records), statistic.symbol),
                cells=tuple(
                    _quantity_cell(record, quantity, footnotes, decimals=decimals,
                                   ci=ci if quantity == "value" else None, fallback=fallback, best=is_best)
                    for record, is_best in zip(row_records, best)
                ),
            ))
    flagged = any(cell.flag for row in rows for cell in row.cells)
    notes = _common_notes(shown, is_simulated(provenance), convention=convention_of(provenance),
                          not_computed=not_computed)
    notes.append(rows_note(rows_used))
    notes.append("↑: higher = more anonymous; ↓: lower = more anonymous. Correlations are oriented: "
                 "positive = the metric agrees with the human anonymity scores.")
    if quantity == "value":
        title = f"Correlation with human scores ({granularity}, {form})"
        notes.append("[low, high]: 95% percentile cluster-bootstrap CI (resampling originals); it is not symmetric "
                     "about the value." if ci == "interval" else
                     "[low, high]: 95% percentile cluster-bootstrap CI (resampling originals); ± only where it is "
                     "symmetric about the value.")
    else:
        title = f"Fraction of the noise ceiling ({granularity}, {form})"
        notes.append("Each correlation divided by the noise ceiling of its split (1 = as good as the annotators).")
    if flagged:
        notes.append(FEW_CLUSTERS_NOTE)
    notes.append(f"Bold: best metric in the row (values equal within a relative {TIE_TOLERANCE:g} are ties). Each metric is "
                 "ranked on the pairs where it has a value; a footnote names any metric with fewer pairs than n. "
                 "* p < .05, ** p < .01: worse than the best (paired test against the best metric on the pairs "
                 "both have, Holm-adjusted).")
    kind = "correlations" if quantity == "value" else "fraction-of-ceiling"
    return Table(
        key=f"{kind}-{granularity}-{form}",
        title=title,
        row_header=("Split", "n / orig.", "Stat."),
        columns=tuple(Column(info.header, _metric_tooltip(info)) for info in shown),
        rows=tuple(rows),
        notes=tuple(notes),
        footnotes=footnotes.items(),
    )


def _metric_tooltip(info: MetricInfo) -> str:
    direction = "higher" if info.higher_is_more_anonymous else "lower"
    tooltip = f"{info.name}: {direction} = more anonymous"
    if not info.verified:
        tooltip += f"; unverified weights{': ' + info.weights_note if info.weights_note else ''}"
    return tooltip


def ceiling_table(ceiling: pd.DataFrame, provenance: Mapping[str, Any] | None, granularity: str, form: str,
                  *, decimals: int = 3) -> Table:
    """Rows = split, columns = the annotator-consistency measures, for one granularity x form."""
    require_columns(ceiling, CEILING_COLUMNS, "ceiling")
    view = ceiling[(ceiling["granularity"] == granularity) & (ceiling["form"] == form)]
    footnotes = Footnotes()
    rows = []
    for record in view.to_dict(orient="records"):
        cells = []
        for column, _, _, is_count in _CEILING_MEASURES:
            if _finite(record[column]):
                value = record[column]
                cells.append(Cell(text=str(int(value)) if is_count else format_number(value, decimals)))
            else:
                reason = _reason(record, "undefined")
                cells.append(Cell(text="n/a", footnote=footnotes.key(reason), reason=reason))
        rows.append(Row(labels=(str(record["split"]),), cells=tuple(cells)))
    notes = [SIMULATED_NOTE] if is_simulated(provenance) else []
    notes.append(convention_note(convention_of(provenance)))
    notes.append(rows_note("test"))
    notes.append("How well annotators agree with each other: the best a metric can be expected to correlate.")
    return Table(
        key=f"noise-ceiling-{granularity}-{form}",
        title=f"Noise ceiling from annotators ({granularity}, {form})",
        row_header=("Split",),
        columns=tuple(Column(header, tooltip) for _, header, tooltip, _ in _CEILING_MEASURES),
        rows=tuple(rows),
        notes=tuple(notes),
        footnotes=footnotes.items(),
    )


def tables_by_view(result: Any, *, statistics: StatisticInfos | None = None, decimals: int = 3,
                   ci: str = "interval") -> list[tuple[tuple[str, str], list[Table]]]:
    """For every (granularity, form), primary first: correlations, fraction of ceiling, noise
    ceiling; rows for `statistics` (default: the results' tabulated ones)."""
    results = Results.coerce(result)
    statistics = results.tabulated if statistics is None else statistics
    require_columns(results.ceiling, CEILING_COLUMNS, "ceiling")
    grouped = []
    for granularity, form in views(results.correlations):
        tables = [
            correlation_table(results.correlations, results.metrics, results.provenance, granularity, form,
                              statistics=statistics, quantity=quantity, decimals=decimals, ci=ci,
                              not_computed=results.not_computed, rows_used=rows_of(results.provenance))
            for quantity in ("value", "fraction_of_ceiling")
        ]
        in_ceiling = (results.ceiling["granularity"] == granularity) & (results.ceiling["form"] == form)
        if in_ceiling.any():
            tables.append(ceiling_table(results.ceiling, results.provenance, granularity, form, decimals=decimals))
        grouped.append(((granularity, form), tables))
    return grouped


def build_tables(result: Any, *, statistics: StatisticInfos | None = None, decimals: int = 3,
                 ci: str = "interval") -> list[Table]:
    """Every table of `tables_by_view`, in order."""
    return [table for _, tables in tables_by_view(result, statistics=statistics, decimals=decimals, ci=ci)
            for table in tables]


# --------------------------------------------------------------------------- Markdown
_MARKDOWN_SPECIAL = str.maketrans({char: "\\" + char for char in "\\`*_[]<>|#~!"})


def markdown_escape(text: str) -> str:
    return str(text).translate(_MARKDOWN_SPECIAL)


def as_typed(text: str) -> str:
    """The escape of text printed to a terminal, where no Markdown is rendered: none."""
    return str(text)


def _markdown_cell(cell: Cell, escape: Callable[[str], str]) -> str:
    text = (f"**{cell.text}**" if cell.best else cell.text) + cell.flag
    parts = [text, cell.ci, escape(cell.marks), f"({cell.footnote})" if cell.footnote else ""]
    return " ".join(part for part in parts if part)


def to_markdown(table: Table, *, escape: Callable[[str], str] = markdown_escape) -> str:
    """A GitHub table with its title as a heading and its notes as a list below it; with
    `escape=as_typed`, the same for a terminal (`face_detection`, not `face\\_detection`)."""
    header = [*table.row_header, *(column.header for column in table.columns)]
    lines = [
        f"### {escape(table.title)}",
        "",
        "| " + " | ".join(escape(text) for text in header) + " |",
        "|" + "|".join([":---"] * len(table.row_header) + ["---:"] * len(table.columns)) + "|",
    ]
    for row in table.rows:
        cells = [escape(label) for label in row.labels] + [_markdown_cell(cell, escape) for cell in row.cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {escape(note)}" for note in table.notes]
    lines += [f"- ({key}) {escape(reason)}" for key, reason in table.footnotes]
    return "\n".join(lines) + "\n"


def markdown_document(tables: Sequence[Table], provenance: Mapping[str, Any] | None,
                      not_computed: Sequence[NotComputed] = ()) -> str:
    head = ["# Results tables", ""]
    if is_simulated(provenance):
        head += [f"> **{SIMULATED_NOTE}**", ""]
    head += [f"> {markdown_escape(line)}" for line in not_computed_notes(not_computed)]
    head += [""] if not_computed else []
    return "\n".join(head) + "\n" + "\n".join(to_markdown(table) for table in tables)


# --------------------------------------------------------------------------- LaTeX
# One pass over the text both escapes LaTeX's specials and spells our symbols in ASCII LaTeX,
# so no replacement is ever escaped twice.
_LATEX = str.maketrans({
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}", "²": r"\textsuperscript{2}",
    "σ": r"$\sigma$", "–": "--", "`": r"\textasciigrave{}", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "±": r"$\pm$",
    "−": r"$-$", "—": "---", "ρ": r"$\rho$", "τ": r"$\tau$", "α": r"$\alpha$",
})


def latex_escape(text: str) -> str:
    return str(text).translate(_LATEX)


def _latex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text)
    parts = [rf"\textbf{{{text}}}" if cell.best else text]
    if cell.flag:
        parts.append(latex_escape(cell.flag))
    if cell.ci:
        # A smaller CI keeps a many-metric table within the page width.
        parts.append(rf"\,{{\scriptsize {latex_escape(cell.ci)}}}")
    if cell.superscript:
        parts.append(f"$^{{{cell.superscript}}}$")
    return "".join(parts)


def to_latex(table: Table) -> str:
    """A booktabs `table` environment, ready for \\input (needs \\usepackage{booktabs})."""
    spec = "l" * len(table.row_header) + "c" * len(table.columns)
    header = [*table.row_header, *(column.header for column in table.columns)]
    lines = ["% Generated by perceptanon-bench; needs \\usepackage{booktabs}."]
    if SIMULATED_NOTE in table.notes:
        lines.append(f"% {SIMULATED_NOTE}")
    lines += [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(table.title)}}}",
        rf"\label{{tab:{table.key}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(text) for text in header) + r" \\",
        r"\midrule",
    ]
    for row in table.rows:
        cells = [latex_escape(label) for label in row.labels] + [_latex_cell(cell) for cell in row.cells]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"{\footnotesize"]
    notes = [latex_escape(note) for note in table.notes]
    notes += [f"$^{{{key}}}$ {latex_escape(reason)}" for key, reason in table.footnotes]
    lines += [note + r"\par" for note in notes]
    lines += ["}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CSV / JSON
def long_table(frame: pd.DataFrame, *, provenance: Mapping[str, Any] | None,
               metrics: MetricInfos | None = None) -> pd.DataFrame:
    """The long table with the caveats as columns, so that every row carries them: the metric's
    label and whether its weights are verified, and whether the human scores are simulated."""
    out = frame.copy()
    if metrics is not None and "metric" in out.columns:
        infos = {info.name: info for info in metric_infos(metrics)}
        out["metric_label"] = [infos[name].label if name in infos else str(name) for name in out["metric"]]
        out["weights_verified"] = [bool(infos[name].verified) if name in infos else False for name in out["metric"]]
        out["weights_status"] = [infos[name].weights_status.value if name in infos else "unknown"
                                 for name in out["metric"]]
    out["human_scores"] = "SIMULATED (not human judgments)" if is_simulated(provenance) else "human"
    return out


def to_csv(frame: pd.DataFrame, *, provenance: Mapping[str, Any] | None,
           metrics: MetricInfos | None = None) -> str:
    return to_csv_text(long_table(frame, provenance=provenance, metrics=metrics))


def to_json(frame: pd.DataFrame, *, provenance: Mapping[str, Any] | None,
            metrics: MetricInfos | None = None) -> str:
    """Records (one object per row) under the one JSON rule (metrics.schema.json_number)."""
    table = long_table(frame, provenance=provenance, metrics=metrics)
    records = [{str(key): value for key, value in record.items()} for record in table.to_dict(orient="records")]
    return to_json_text(records, indent=1, ensure_ascii=False)


# --------------------------------------------------------------------------- all files
def write_markdown(result: Any, out_dir: Path, *, statistics: StatisticInfos | None = None, decimals: int = 3,
                   ci: str = "interval") -> list[Path]:
    """tables.md: every table of `build_tables`."""
    results = Results.coerce(result)
    tables = build_tables(results, statistics=statistics, decimals=decimals, ci=ci)
    return [write_atomic(Path(out_dir) / "tables.md", markdown_document(tables, results.provenance,
                                                                         results.not_computed))]


def write_latex(result: Any, out_dir: Path, *, statistics: StatisticInfos | None = None, decimals: int = 3,
                ci: str = "interval") -> list[Path]:
    """latex/<table key>.tex, one file per table."""
    tables = build_tables(result, statistics=statistics, decimals=decimals, ci=ci)
    return [write_atomic(Path(out_dir) / "latex" / f"{table.key}.tex", to_latex(table)) for table in tables]


def write_long_tables(result: Any, out_dir: Path, extension: str) -> list[Path]:
    """The long correlations and ceiling tables (and not_computed, when a metric did not run)
    as "csv" or "json"."""
    results = Results.coerce(result)
    render = {"csv": to_csv, "json": to_json}[extension]
    frames = [("correlations", results.correlations, results.metrics), ("ceiling", results.ceiling, None)]
    if results.not_computed:
        frames.append(("not_computed", not_computed_frame(results.not_computed), None))
    return [write_atomic(Path(out_dir) / f"{name}.{extension}", render(frame, provenance=results.provenance,
                                                                        metrics=metrics))
            for name, frame, metrics in frames]


def render_all(result: Any, out_dir: Path, *, statistics: StatisticInfos | None = None,
               decimals: int = 3, ci: str = "interval") -> list[Path]:
    """Write tables.md, latex/<table>.tex per table, and the long correlations/ceiling tables
    as CSV and JSON; return the written paths. Each file is written atomically."""
    options = {"statistics": statistics, "decimals": decimals, "ci": ci}
    return [*write_markdown(result, out_dir, **options), *write_latex(result, out_dir, **options),
            *write_long_tables(result, out_dir, "csv"), *write_long_tables(result, out_dir, "json")]


def not_computed_frame(items: Iterable[NotComputed]) -> pd.DataFrame:
    """The metrics that did not run, one row each (empty with its columns when all ran)."""
    return pd.DataFrame([vars(item) for item in items], columns=["name", "label", "status", "reason"])
