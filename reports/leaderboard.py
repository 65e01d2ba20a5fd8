"""The anonymization leaderboard, rendered as Markdown, LaTeX, CSV, JSON and HTML.

`Leaderboard` is the model (built by bench/analysis/leaderboard.py from stored scores): rows = method
x scope, one column per metric, each cell a mean over originals with its 95% bootstrap CI, or
a set-level value (FID, KID), or the reason there is none. `leaderboard_table` turns it ONCE
into a `reports.tables.Table` -- arrows, daggers, bold best values and lettered footnotes --
which the Markdown, LaTeX and HTML renderers of reports/tables.py and its template render, so
the outputs cannot disagree. CSV and JSON carry the same numbers unrounded.

Rows are grouped by scope (global first) and sorted within a scope by the sort metric, most
anonymous first. "Best" (bold) is the most anonymous value of a column within a scope, and only
where it stands out of the noise: its 95% interval overlaps no other row's. A value without an
interval (FID, KID: one number per group) is therefore bold only when it is alone. Values
equal within a relative TIE_TOLERANCE are ties. Metrics requested but not computed are named,
with their reason and fix, in every format.

The privacy block (`PrivacyBlock`: attack rates with Wilson intervals, same rows) is a second
table in Markdown, LaTeX and HTML, rows of level "privacy" in CSV, and the "privacy" key of
the JSON; the HTML examples draw the face detector's boxes when the attacks ran.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from metrics.atomic import write_atomic
from metrics.csvsafe import to_csv_text
from reports import tradeoff
from reports.html import Thumbnail, environment, thumbnail
from metrics.schema import MetricInfo, to_json_text
from reports.tables import (
    Cell,
    Column,
    Footnotes,
    TIE_TOLERANCE,
    NotComputed,
    Row,
    Table,
    convention_note,
    dagger_note,
    format_number,
    markdown_escape,
    not_computed_notes,
    ties,
    to_latex,
    to_markdown,
)

SCOPE_ORDER = ("global", "local")
EXAMPLE_THUMBNAIL = (96, 96)
#: Output files, by format.
FILE_NAMES = {"markdown": "leaderboard.md", "latex": "leaderboard.tex", "csv": "leaderboard.csv",
              "json": "leaderboard.json", "html": "leaderboard.html"}


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Entry:
    """One cell: the mean of a pair metric (with its CI) or a set metric's value, or why not."""

    value: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    #: Pairs with a value (set metrics: pairs in the group).
    n: int = 0
    #: Pairs whose value is infinite (PSNR of identical images), left out of the mean.
    n_infinite: int = 0
    #: Why there is no value, or a caveat beside one.
    note: str = ""
    #: "pair" (a mean over originals with its CI) or "set" (FID, KID: one value for the group).
    level: str = "pair"

    @property
    def defined(self) -> bool:
        return math.isfinite(self.value)


@dataclass(frozen=True)
class BoardRow:
    method: str
    scope: str
    #: metric name -> its entry.
    entries: Mapping[str, Entry]
    #: A sweep's setting: (parameter, value as the row name shows it); () for a method's defaults.
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Failure:
    """One line on what failed: a method on an image, a metric on a pair."""

    method: str
    message: str


@dataclass(frozen=True)
class Example:
    """One original and each method's global result (None where the method failed on it)."""

    label: str
    original: Path
    anonymized: tuple[tuple[str, Path | None], ...]
    #: The face detector's boxes (x0, y0, x1, y1, confidence) on the original and per method on
    #: its result, when the privacy attacks ran (None: not known).
    original_faces: tuple[tuple[float, ...], ...] | None = None
    faces: Mapping[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PrivacyBlock:
    """The privacy attacks beside the perceptual block: one column per attack statistic (a rate
    with its 95% Wilson interval, `level` "privacy"), rows in the board's row order."""

    columns: tuple[MetricInfo, ...]
    rows: tuple[BoardRow, ...]
    notes: tuple[str, ...] = ()
    #: Attacks that did not run (a package or model file missing), with reason and fix.
    not_computed: tuple[NotComputed, ...] = ()


@dataclass(frozen=True)
class Leaderboard:
    title: str
    dataset: str
    columns: tuple[MetricInfo, ...]
    #: In display order: by scope, then most anonymous first by `sort_metric`.
    rows: tuple[BoardRow, ...]
    sort_metric: str
    #: How the CIs were made, for the notes: {"n_boot": 2000, "seed": 0}.
    bootstrap: Mapping[str, int]
    failures: tuple[Failure, ...] = ()
    #: Further notes: metrics not computed and why, folder files that matched nothing, ...
    notes: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)
    #: Metrics requested (or default) that produced no column, with their reason and fix.
    not_computed: tuple[NotComputed, ...] = ()
    #: "default" or "paper" (see `reports.tables.convention_note`).
    convention: str = "default"
    #: The privacy attacks (None: not run for any method of the board).
    privacy: PrivacyBlock | None = None
    #: Privacy–utility trade-off views (`reports.tradeoff.Tradeoff`), one per scope; () for none.
    tradeoffs: tuple[Any, ...] = ()

    def column(self, name: str) -> MetricInfo:
        return next(info for info in self.columns if info.name == name)


def sort_rows(rows: Sequence[BoardRow], metric: MetricInfo | None) -> list[BoardRow]:
    """By scope (global, local, then others), then most anonymous first by `metric` (if any);
    rows without a value last, ties by method name."""
    def key(row: BoardRow) -> tuple[Any, ...]:
        entry = row.entries.get(metric.name, Entry()) if metric is not None else Entry()
        scope = SCOPE_ORDER.index(row.scope) if row.scope in SCOPE_ORDER else len(SCOPE_ORDER)
        oriented = -entry.value if metric is not None and metric.higher_is_more_anonymous else entry.value
        return (scope, row.scope, not entry.defined, oriented if entry.defined else 0.0, row.method)

    return sorted(rows, key=key)


# --------------------------------------------------------------------------- table
def _decimals(values: Sequence[float]) -> int:
    """Enough decimals for the column's scale: 1 for FID-like values, 4 for KID-like ones."""
    largest = max((abs(v) for v in values if math.isfinite(v)), default=1.0)
    if largest >= 100:
        return 1
    if largest >= 10:
        return 2
    return 3 if largest >= 0.1 else 4


def _tied(a: float, b: float) -> bool:
    return ties([a], b)[0]


def _interval(entry: Entry) -> tuple[float, float] | None:
    if math.isfinite(entry.ci_low) and math.isfinite(entry.ci_high):
        return entry.ci_low, entry.ci_high
    return None


def _stands_out(best: Entry, others: Sequence[Entry]) -> bool:
    """True when `best` differs from every other value by more than the noise: its interval
    overlaps none of theirs. Without intervals only a lone value stands out."""
    if not others:
        return True
    mine = _interval(best)
    if mine is None:
        return False
    for other in others:
        theirs = _interval(other)
        if theirs is None or _tied(other.value, best.value) or (theirs[0] <= mine[1] and mine[0] <= theirs[1]):
            return False
    return True


def _best_values(board: Leaderboard) -> dict[tuple[str, str], float]:
    """(scope, metric) -> the most anonymous defined value, where it stands out of the noise."""
    return _best_of(board.columns, board.rows)


def _best_of(columns: Sequence[MetricInfo], board_rows: Sequence[BoardRow]) -> dict[tuple[str, str], float]:
    best: dict[tuple[str, str], float] = {}
    scopes = list(dict.fromkeys(row.scope for row in board_rows))
    for info in columns:
        for scope in scopes:
            entries = [row.entries[info.name] for row in board_rows
                       if row.scope == scope and info.name in row.entries and row.entries[info.name].defined]
            if not entries:
                continue
            sign = 1.0 if info.higher_is_more_anonymous else -1.0
            top = max(entries, key=lambda entry: sign * entry.value)
            if _stands_out(top, [entry for entry in entries if entry is not top]):
                best[(scope, info.name)] = top.value
    return best


def _infinite_note(entry: Entry, meaning: str) -> str:
    total = entry.n + entry.n_infinite
    if entry.defined:
        return f"{entry.n_infinite} of {total} pairs infinite ({meaning}), left out of the mean"
    return f"all {total} pairs infinite ({meaning}); no finite mean"


def _cell(entry: Entry | None, decimals: int, best: float | None, footnotes: Footnotes,
          infinite_means: str = "infinite value") -> Cell:
    if entry is None:
        entry = Entry(note="not computed")
    if entry.level == "set" and not entry.defined and entry.n:
        entry = replace(entry, note="; ".join(part for part in (entry.note, f"n = {entry.n} pairs") if part))
    infinite = _infinite_note(entry, infinite_means) if entry.n_infinite else ""
    reasons = [reason for reason in (entry.note, infinite) if reason]
    footnote = ",".join(footnotes.key(reason) for reason in reasons)
    if not entry.defined:
        return Cell(text="n/a", footnote=footnote, reason="; ".join(reasons) or "undefined")
    ci = ""
    if math.isfinite(entry.ci_low) and math.isfinite(entry.ci_high):
        ci = f"[{format_number(entry.ci_low, decimals)}, {format_number(entry.ci_high, decimals)}]"
    if entry.level in ("set", "privacy"):
        ci = " ".join(part for part in (ci, f"(n = {entry.n})") if part)
    return Cell(text=format_number(entry.value, decimals), ci=ci, best=best is not None and _tied(entry.value, best),
                footnote=footnote, reason="; ".join(reasons))


def table_notes(board: Leaderboard) -> list[str]:
    """The notes every rendering carries (the dagger footnote among them)."""
    sorted_by = f" Sorted by {board.column(board.sort_metric).label} within each scope." if board.columns else ""
    notes = [
        "↑: higher = more anonymous; ↓: lower = more anonymous.",
        (f"Pair metrics: mean over originals [95% percentile bootstrap CI, resampling originals, "
         f"{board.bootstrap.get('n_boot')} resamples, seed {board.bootstrap.get('seed')}]. "
         "Set metrics: one value per method and scope over its n pairs; KID with its 95% interval (jackknife over "
         "pairs), FID without one."),
        ("Bold: the most anonymous value of each column within a scope, only where its interval overlaps no other "
         "row's (a value without an interval, such as FID, is bold only when alone); values equal within "
         f"a relative {TIE_TOLERANCE:g} are ties.{sorted_by}"),
        convention_note(board.convention, of="values"),
    ]
    dagger = dagger_note(board.columns)
    if dagger:
        notes.append(dagger)
    notes += not_computed_notes(board.not_computed)
    if board.failures:
        counts = Counter(failure.method for failure in board.failures)
        notes.append(f"Failures ({len(board.failures)}, listed with the leaderboard): "
                     + ", ".join(f"{method} {count}" for method, count in counts.items()) + ".")
    return notes + list(board.notes)


def leaderboard_table(board: Leaderboard) -> Table:
    """The board as a reports.tables.Table: labels (scope, method), one column per metric."""
    footnotes = Footnotes()
    best = _best_values(board)
    decimals = {info.name: _decimals([row.entries[info.name].value for row in board.rows if info.name in row.entries])
                for info in board.columns}
    rows = tuple(
        Row(labels=(row.scope, row.method),
            cells=tuple(_cell(row.entries.get(info.name), decimals[info.name], best.get((row.scope, info.name)),
                              footnotes, info.infinite_means) for info in board.columns))
        for row in board.rows
    )
    return Table(
        key=f"leaderboard-{_slug(board.dataset)}",
        title=board.title,
        row_header=("Scope", "Method"),
        columns=tuple(Column(info.header, _tooltip(info)) for info in board.columns),
        rows=rows,
        notes=tuple(table_notes(board)),
        footnotes=footnotes.items(),
    )


PRIVACY_DECIMALS = 2


def privacy_notes(board: Leaderboard) -> list[str]:
    block = board.privacy
    if block is None:
        return []
    notes = ["↓: lower = more anonymous. Each cell: a rate over the method x scope's pairs [95% Wilson interval] "
             "(n = pairs; TAR: genuine pairs accepted at the threshold of that false accept rate, the threshold "
             "taken as fixed). Bold as in the table above.",
             *block.notes]
    return notes + not_computed_notes(block.not_computed)


def privacy_table(board: Leaderboard) -> Table | None:
    """The privacy block as a reports.tables.Table (None without one), rendered like the board."""
    block = board.privacy
    if block is None:
        return None
    footnotes = Footnotes()
    best = _best_of(block.columns, block.rows)
    rows = tuple(
        Row(labels=(row.scope, row.method),
            cells=tuple(_cell(row.entries.get(info.name), PRIVACY_DECIMALS, best.get((row.scope, info.name)),
                              footnotes, info.infinite_means) for info in block.columns))
        for row in block.rows
    ) if block.columns else ()  # no attack ran: the notes say why
    return Table(
        key=f"privacy-{_slug(board.dataset)}",
        title=f"Privacy attacks: {board.dataset}",
        row_header=("Scope", "Method"),
        columns=tuple(Column(info.header, _tooltip(info)) for info in block.columns),
        rows=rows,
        notes=tuple(privacy_notes(board)),
        footnotes=footnotes.items(),
    )


def _tooltip(info: MetricInfo) -> str:
    direction = "higher" if info.higher_is_more_anonymous else "lower"
    caveat = "" if info.verified else f"; unverified or stand-in weights {info.weights_note}".rstrip()
    return f"{info.name}: {direction} = more anonymous{caveat}"


def _slug(text: str) -> str:
    return "".join(char if char.isalnum() else "-" for char in text).strip("-") or "dataset"


# --------------------------------------------------------------------------- Markdown / LaTeX
def to_markdown_document(board: Leaderboard, *, escape: Callable[[str], str] = markdown_escape) -> str:
    """The table with its notes, then every failure on its own line (`escape`: see tables.to_markdown)."""
    text = to_markdown(leaderboard_table(board), escape=escape)
    privacy = privacy_table(board)
    if privacy is not None:
        text += "\n" + to_markdown(privacy, escape=escape)
    if board.failures:
        text += "\n#### Failures\n\n" + "".join(f"- {escape(f.message)}\n" for f in board.failures)
    if board.tradeoffs:
        text += "\n" + tradeoff.to_markdown_document(board.tradeoffs, escape=escape)
    return text


def to_latex_table(board: Leaderboard) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); failures are counted in its notes."""
    privacy = privacy_table(board)
    return to_latex(leaderboard_table(board)) + ("\n" + to_latex(privacy) if privacy is not None else "")


# --------------------------------------------------------------------------- CSV / JSON
def long_frame(board: Leaderboard) -> pd.DataFrame:
    """One row per method x scope x metric, numbers unrounded, caveats as columns (the dagger
    footnote in the note of every value from unverified or stand-in weights)."""
    records = []
    for row in board.rows:
        records += [_long_record(row, info, row.entries.get(info.name, Entry(note="not computed")))
                    for info in board.columns]
        records += [_not_computed_record(row, missing) for missing in board.not_computed]
    if board.privacy is not None:  # level "privacy": the attack rates
        for row in board.privacy.rows:
            records += [_long_record(row, info, row.entries.get(info.name, Entry(note="not computed")))
                        for info in board.privacy.columns]
            records += [_not_computed_record(row, missing) for missing in board.privacy.not_computed]
    columns = ["scope", "method", "metric", "metric_label", "higher_is_more_anonymous", "weights_verified",
               "weights_status", "level", "value", "ci_low", "ci_high", "n", "n_infinite", "note"]
    return pd.DataFrame.from_records(records, columns=columns)


def _long_record(row: BoardRow, info: MetricInfo, entry: Entry) -> dict[str, Any]:
    caveat = "" if info.verified else dagger_note([info])
    note = "; ".join(part for part in (entry.note, caveat) if part)
    return {
        "scope": row.scope, "method": row.method, "metric": info.name, "metric_label": info.header,
        "higher_is_more_anonymous": info.higher_is_more_anonymous, "weights_verified": info.verified,
        "weights_status": info.weights_status, "level": entry.level,
        "value": entry.value, "ci_low": entry.ci_low, "ci_high": entry.ci_high, "n": entry.n,
        "n_infinite": entry.n_infinite, "note": note,
    }


def _not_computed_record(row: BoardRow, missing: NotComputed) -> dict[str, Any]:
    """A row per metric that did not run, its reason as the note."""
    return {
        "scope": row.scope, "method": row.method, "metric": missing.name, "metric_label": missing.label,
        "higher_is_more_anonymous": None, "weights_verified": None, "weights_status": "", "level": "",
        "value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "n_infinite": 0,
        "note": missing.line,
    }


def to_csv(board: Leaderboard) -> str:
    return to_csv_text(long_frame(board))


def to_json(board: Leaderboard) -> str:
    """The board with every cell, the notes (dagger footnote included), failures and provenance,
    under the one JSON rule (metrics.schema.json_number)."""
    document = {
        "title": board.title,
        "dataset": board.dataset,
        "sort_metric": board.sort_metric,
        "metrics": [{"name": info.name, "label": info.label, "header": info.header,
                     "higher_is_more_anonymous": info.higher_is_more_anonymous, "verified": info.verified,
                     "weights_status": info.weights_status, "weights_note": info.weights_note}
                    for info in board.columns],
        "not_computed": [vars(item) for item in board.not_computed],
        "convention": board.convention,
        "rows": [{"scope": row.scope, "method": row.method, "params": dict(row.params),
                  "cells": {name: vars(entry)
                            for name, entry in row.entries.items()}} for row in board.rows],
        "notes": table_notes(board),
        "failures": [{"method": f.method, "message": f.message} for f in board.failures],
        "provenance": dict(board.provenance),
        "privacy": _privacy_json(board),
    }
    return to_json_text(document, indent=1, ensure_ascii=False)


def _privacy_json(board: Leaderboard) -> dict[str, Any] | None:
    block = board.privacy
    if block is None:
        return None
    return {
        "metrics": [{"name": info.name, "label": info.label, "header": info.header,
                     "higher_is_more_anonymous": info.higher_is_more_anonymous} for info in block.columns],
        "not_computed": [vars(item) for item in block.not_computed],
        "rows": [{"scope": row.scope, "method": row.method,
                  "cells": {name: vars(entry)
                            for name, entry in row.entries.items()}} for row in block.rows],
        "notes": privacy_notes(board),
    }


# --------------------------------------------------------------------------- HTML
#: Face boxes in the examples: the original's face, and where a face is still found.
ORIGINAL_BOX, FOUND_BOX = "#1a7f37", "#cf222e"


@dataclass(frozen=True)
class _ExampleRow:
    label: str
    images: tuple[Thumbnail, ...]
    #: Per image, e.g. "1 face found" (empty without the privacy attacks).
    captions: tuple[str, ...] = ()


def _faces_caption(faces: Any) -> str:
    return "" if faces is None else f"{len(faces)} face{'' if len(faces) == 1 else 's'} found"


def _example_rows(board: Leaderboard) -> tuple[list[str], list[_ExampleRow]]:
    methods = list(dict.fromkeys(method for example in board.examples for method, _ in example.anonymized))
    rows = []
    for example in board.examples:
        by_method = dict(example.anonymized)
        shown = [thumbnail(example.original, EXAMPLE_THUMBNAIL, boxes=example.original_faces, colour=ORIGINAL_BOX)]
        captions = [_faces_caption(example.original_faces)]
        for method in methods:
            path = by_method.get(method)
            faces = example.faces.get(method)
            shown.append(thumbnail(path, EXAMPLE_THUMBNAIL, boxes=faces, colour=FOUND_BOX) if path is not None
                         else Thumbnail(src="", alt=method, error=f"{method}: failed on this image"))
            captions.append(_faces_caption(faces) if path is not None else "")
        rows.append(_ExampleRow(example.label, tuple(shown), tuple(captions) if any(captions) else ()))
    return methods, rows


def _context(board: Leaderboard, tradeoff_plots: Sequence[bytes] | None = None) -> dict[str, Any]:
    methods, examples = _example_rows(board)
    return {
        "table": leaderboard_table(board),
        "privacy_table": privacy_table(board),
        "boxes_shown": any(example.original_faces is not None for example in board.examples),
        "simulated_note": "",  # the table macro asks; a leaderboard has no human scores
        "failures": [f.message for f in board.failures],
        "example_methods": methods,
        "examples": examples,
        "provenance": [(key, str(value)) for key, value in board.provenance.items()],
        "tradeoff": tradeoff.html_section(board.tradeoffs, tradeoff_plots) if board.tradeoffs else "",
    }


def _section(context: Mapping[str, Any]) -> Markup:
    # The template autoescapes every value; its output is therefore safe markup.
    return Markup(environment().get_template("_leaderboard_section.html.j2").render(**context))


def html_section(board: Leaderboard) -> Markup:
    """The leaderboard and its examples as an HTML fragment for another page (its own styles
    inline), e.g. a `reports.html.render_report` section."""
    return _section(_context(board))


def to_html(board: Leaderboard, tradeoff_plots: Sequence[bytes] | None = None) -> str:
    """A self-contained page: inline CSS, images as data URIs, no script (`tradeoff_plots`: the
    trade-off views' PNGs, when already drawn)."""
    context = _context(board, tradeoff_plots)
    return environment().get_template("leaderboard.html.j2").render(
        title=board.title, section=_section(context), provenance=context["provenance"])


# --------------------------------------------------------------------------- files
def write_leaderboard(board: Leaderboard, out_dir: Path) -> dict[str, Path]:
    """Write every format (see `FILE_NAMES`) into `out_dir`, each atomically."""
    out_dir = Path(out_dir)
    # Each trade-off plot is drawn once, for the HTML page and for its own PNG file.
    plots = [tradeoff.plot_png(view) for view in board.tradeoffs]
    renderers = {"markdown": to_markdown_document, "latex": to_latex_table, "csv": to_csv, "json": to_json,
                 "html": lambda board: to_html(board, plots)}
    written = {kind: write_atomic(out_dir / FILE_NAMES[kind], render(board)) for kind, render in renderers.items()}
    return {**written, **tradeoff.write_tradeoffs(board.tradeoffs, out_dir, plots)}
