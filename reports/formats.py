"""Report formats: what `bench report` (and every `bench run` / `bench correlate`) writes from
a results bundle, one registry of lazy "module:function" names merged with the
`bench.report_formats` entry points, like metrics and methods (metrics.registry.Registry).

A format is a function ``write(results, out_dir) -> list[Path]``: `results` is the
`reports.tables.Results` record every built-in renders (correlations, ceiling, metrics,
statistics, provenance, pairs, not_computed, title, sample_pairs, sections), `out_dir` the
results folder; it writes its files under that folder and returns them. A user's format is
named by entry point or as an explicit "module:function".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from metrics.registry import Registry
from reports.tables import Results, write_latex, write_long_tables, write_markdown

#: Where the built-in tables, plots and page go inside a results folder.
TABLES_DIR, PLOTS_DIR, REPORT_FILE = "tables", "plots", "report.html"

FormatWriter = Callable[[Results, Path], list[Path]]


class FormatError(ValueError):
    """An unknown or unloadable report format (one line; bench shows it as an input error)."""


def markdown(results: Results, out_dir: Path) -> list[Path]:
    return write_markdown(results, out_dir / TABLES_DIR)


def latex(results: Results, out_dir: Path) -> list[Path]:
    return write_latex(results, out_dir / TABLES_DIR)


def csv(results: Results, out_dir: Path) -> list[Path]:
    return write_long_tables(results, out_dir / TABLES_DIR, "csv")


def json(results: Results, out_dir: Path) -> list[Path]:
    return write_long_tables(results, out_dir / TABLES_DIR, "json")


def png(results: Results, out_dir: Path) -> list[Path]:
    from reports import plots  # matplotlib: only a run that draws pays for it

    figures = plots.all_plots(correlations=results.correlations, metrics=results.metrics,
                              provenance=results.provenance, pairs=results.pairs, statistics=results.statistics)
    return plots.write_plots(figures, out_dir / PLOTS_DIR)


def html(results: Results, out_dir: Path) -> list[Path]:
    return [html_file(results, out_dir / REPORT_FILE)]


def html_file(results: Results, path: Path) -> Path:
    """The self-contained HTML report at `path` (`bench report --out`)."""
    from reports import html as page

    return page.render_report(
        correlations=results.correlations, ceiling=results.ceiling, pairs=results.pairs, metrics=results.metrics,
        provenance=results.provenance, sample_pairs=results.sample_pairs, title=results.title or page.DEFAULT_TITLE,
        out_path=path, sections=results.sections, statistics=results.statistics, not_computed=results.not_computed,
    )


#: The suite's formats, in the order they are written. A new one is a function and one line
#: here, or one `bench.report_formats` entry point in its own package.
BUILTIN_FORMATS: dict[str, str] = {
    "md": "reports.formats:markdown",
    "tex": "reports.formats:latex",
    "csv": "reports.formats:csv",
    "json": "reports.formats:json",
    "png": "reports.formats:png",
    "html": "reports.formats:html",
}
FORMATS = Registry("report format", BUILTIN_FORMATS, "bench.report_formats",
                   listing="or module:function for a format of your own", error=FormatError)


def parse_formats(spec: str | None) -> list[str]:
    """'md,html' -> ['md', 'html'] (default: every built-in), checked against the registry
    with did-you-mean; "module:function" entries pass through and are checked when loaded."""
    names = [name.strip() for name in spec.split(",") if name.strip()] if spec else list(BUILTIN_FORMATS)
    FORMATS.check(names, allow_references=True)
    return list(dict.fromkeys(names))


def writers(names: Iterable[str]) -> dict[str, FormatWriter]:
    """Each format's function, imported now (a plugin that is not a function is an error)."""
    found = {}
    for name in names:
        writer = FORMATS.load(name, allow_references=True)
        if not callable(writer):
            raise FormatError(f"report format {name!r} points to {FORMATS.target(name, allow_references=True)}, "
                              "which is not a function (results, out_dir) -> list of paths")
        found[name] = writer
    return found


def write_formats(results: Results, out_dir: Path, chosen: Mapping[str, FormatWriter]) -> dict[str, list[Path]]:
    """Run each chosen format (name -> function, see `writers`) into `out_dir`; the files each wrote."""
    return {name: [Path(path) for path in writer(results, Path(out_dir)) or ()] for name, writer in chosen.items()}
