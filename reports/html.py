"""One self-contained HTML report: tables, figures, sample pairs and provenance in a single file.

Nothing is fetched when the file is opened: CSS is inline, figures and thumbnails are base64
data URIs, there is no JavaScript, and a Content-Security-Policy forbids anything else. Every
name from the results is escaped by jinja2 (autoescape is always on); callers who add a section
pass either plain text (escaped) or `markupsafe.Markup` they built safely themselves.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from PIL import Image, ImageOps

from reports.plots import Plot, all_plots
from metrics.schema import MetricInfo, MetricInfos, metric_infos
from reports.tables import (
    SIMULATED_NOTE,
    NotComputed,
    Results,
    StatisticInfos,
    convention_note,
    convention_of,
    dagger_note,
    is_simulated,
    not_computed_records,
    tables_by_view,
    write_atomic,
)

TEMPLATES = Path(__file__).parent / "templates"
THUMBNAIL_SIZE = (128, 128)
DEFAULT_TITLE = "Image anonymization metrics vs human judgment"

#: (original image, anonymized image, that pair's row: pair, dataset, scope, method, score_mean, metrics...)
SamplePair = tuple[Path, Path, Mapping[str, Any]]
#: An extra section: (title, body); a plain-text body is escaped, a Markup body is inserted as is.
Section = tuple[str, Markup | str]


@dataclass(frozen=True)
class Thumbnail:
    src: str  # data URI, "" when the image could not be read
    alt: str
    error: str = ""


@dataclass(frozen=True)
class SampleRow:
    original: Thumbnail
    anonymized: Thumbnail
    pair: str
    facts: tuple[str, ...]  # dataset, scope, method
    human: str
    scores: tuple[str, ...]  # one per metric, in the metrics' order


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    """The one jinja2 environment of every HTML output (built once: templates are cached in it)."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # always: every name in a report comes from user data
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail(path: Path, size: tuple[int, int] = THUMBNAIL_SIZE, *, boxes: Any = None,
              colour: str = "#cf222e") -> Thumbnail:
    """A small JPEG of an image as a data URI, with `boxes` ((x0, y0, x1, y1, ...) in the image's
    pixels) drawn when given. An unreadable image becomes a visible note in its cell rather
    than a failed report: the rest of the report is still worth having."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if boxes is None:  # a reduced-scale decode would move the boxes' pixels
                image.draft("RGB", size)  # JPEGs decode at a reduced scale: far less work for a thumbnail
            small = ImageOps.exif_transpose(image).convert("RGB")
        if boxes is not None:
            from PIL import ImageDraw

            draw = ImageDraw.Draw(small)
            width = max(2, round(2 * max(small.size) / max(size)))  # about 2 px once thumbnailed
            for box in boxes:
                draw.rectangle([box[0], box[1], box[2], box[3]], outline=colour, width=width)
        small.thumbnail(size)
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=85)
    except FileNotFoundError:
        return Thumbnail(src="", alt=path.name, error=f"{path.name}: file not found")
    except (OSError, ValueError, Image.DecompressionBombError):
        return Thumbnail(src="", alt=path.name, error=f"{path.name}: not a readable image")
    return Thumbnail(src=data_uri(buffer.getvalue(), "image/jpeg"), alt=path.name)


def score_text(value: Any) -> str:
    """A per-pair score for display: 4 significant digits, ∞ for an infinite PSNR, n/a if missing."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(number):
        return "n/a"
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    return f"{number:.4g}".replace("-", "−")


def _sample_rows(sample_pairs: Iterable[SamplePair] | Callable[[], Iterable[SamplePair]] | None,
                 infos: Sequence[MetricInfo]) -> list[SampleRow]:
    if sample_pairs is None:
        return []
    pairs = sample_pairs() if callable(sample_pairs) else sample_pairs
    rows = []
    for original, anonymized, row in pairs:
        rows.append(SampleRow(
            original=thumbnail(original),
            anonymized=thumbnail(anonymized),
            pair=str(row.get("pair", "")),
            facts=tuple(str(row[key]) for key in ("dataset", "scope", "method") if key in row),
            human=score_text(row.get("score_mean")),
            scores=tuple(score_text(row.get(info.name)) for info in infos),
        ))
    return rows


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={item}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "not recorded" if value is None or value == "" else str(value)


# Provenance fields in the order a reader looks for them; anything else follows as given.
_PROVENANCE_LABELS = {
    "git_commit": "Git commit",
    "device": "Device",
    "seeds": "Seeds",
    "dataset_hash": "Dataset hash",
    "annotations": "Annotations",
    "simulated_scores": "Human scores",
    "created": "Created",
    "command": "Command",
}


def _provenance_items(provenance: Mapping[str, Any]) -> list[tuple[str, str]]:
    items = []
    for key, label in _PROVENANCE_LABELS.items():
        value = provenance.get(key)
        if key == "simulated_scores":
            value = "SIMULATED (not human judgments)" if value else "human annotations"
        items.append((label, _text(value)))
    shown = set(_PROVENANCE_LABELS) | {"package_versions", "weights"}
    items += [(key.replace("_", " ").capitalize(), _text(value)) for key, value in provenance.items() if key not in shown]
    return items


def _weights(provenance: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    return [(str(entry.get("name", "")), str(entry.get("sha256", "")), str(entry.get("status", "unknown")))
            for entry in provenance.get("weights") or []]


def _anchor(title: str, index: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f"section-{index}-{slug}" if slug else f"section-{index}"


def render_html(
    *,
    correlations: pd.DataFrame,
    ceiling: pd.DataFrame,
    pairs: pd.DataFrame | None,
    metrics: MetricInfos,
    provenance: Mapping[str, Any],
    sample_pairs: Iterable[SamplePair] | Callable[[], Iterable[SamplePair]] | None = None,
    title: str = DEFAULT_TITLE,
    sections: Sequence[Section] = (),
    statistics: StatisticInfos = (),
    plots: Sequence[Plot] | None = None,
    not_computed: Iterable[NotComputed | Mapping[str, Any]] = (),
) -> str:
    """The report as one HTML string (see `render_report`). `plots` defaults to `all_plots`."""
    missing = tuple(not_computed_records(not_computed))
    results = Results.coerce({"correlations": correlations, "ceiling": ceiling, "metrics": metrics,
                              "provenance": provenance, "pairs": pairs, "not_computed": missing,
                              "statistics": statistics})
    infos = metric_infos(metrics)
    grouped = tables_by_view(results)
    if plots is None:
        plots = all_plots(correlations=correlations, metrics=metrics, provenance=provenance, pairs=pairs,
                          statistics=results.statistics)
    context = {
        "title": title,
        "simulated_note": SIMULATED_NOTE if is_simulated(provenance) else "",
        "dagger_note": dagger_note(infos),
        "unverified": [info for info in infos if not info.verified],
        "not_computed": missing,
        "convention": convention_note(convention_of(provenance)),
        "views": [(f"{granularity} labels, {form}", tables) for (granularity, form), tables in grouped],
        "figures": [(plot, data_uri(plot.png, "image/png")) for plot in plots],
        "metric_headers": [info.header for info in infos],
        "samples": _sample_rows(sample_pairs, infos),
        "sections": [(_anchor(name, index), name, body) for index, (name, body) in enumerate(sections, start=1)],
        "provenance": _provenance_items(provenance),
        "package_versions": sorted((provenance.get("package_versions") or {}).items()),
        "weights": _weights(provenance),
    }
    return environment().get_template("report.html.j2").render(**context)


def render_report(
    *,
    correlations: pd.DataFrame,
    ceiling: pd.DataFrame,
    pairs: pd.DataFrame | None,
    metrics: MetricInfos,
    provenance: Mapping[str, Any],
    sample_pairs: Iterable[SamplePair] | Callable[[], Iterable[SamplePair]] | None = None,
    title: str = DEFAULT_TITLE,
    out_path: Path,
    sections: Sequence[Section] = (),
    statistics: StatisticInfos = (),
    not_computed: Iterable[NotComputed | Mapping[str, Any]] = (),
) -> Path:
    """Write the self-contained report to out_path (atomically) and return it.

    sample_pairs: (original_path, anonymized_path, row dict) triples, or a callable returning
    them; the images are thumbnailed here. sections: extra (title, body) sections after the
    built-in ones, for later features (leaderboard, Grad-CAM). not_computed: the requested
    metrics that did not run, shown with their reason and fix."""
    html = render_html(correlations=correlations, ceiling=ceiling, pairs=pairs, metrics=metrics,
                       provenance=provenance, sample_pairs=sample_pairs, title=title, sections=sections,
                       statistics=statistics, not_computed=not_computed)
    return write_atomic(Path(out_path), html)
