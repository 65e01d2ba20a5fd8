"""The evaluation flow: annotated pairs -> scores -> correlations -> tables, plots, report.

`evaluate` runs it for one annotation file and writes a results folder:

    <out>/scores.csv, scores.json        per-pair scores (runner)
    <out>/results.json                   correlations, ceiling, metrics, provenance (the bundle)
    <out>/pairs.csv                      the pairs with their metric columns (for plots)
    <out>/tables/...                     Markdown, LaTeX, CSV, JSON tables
    <out>/plots/*.png                    figures
    <out>/report.html                    one self-contained report

`render` re-creates tables, plots and report from a results folder without recomputing.

`evaluate_columns` is the same flow without images: the metric values are columns of the
annotation file itself (the released get_metrics.py appends MSE, PSNR, SSIM, LPIPS, FID to
HA1.csv / HA2.csv; any scores computed elsewhere work the same way). Each column's
direction comes from the registered metric of that name (case-insensitive) or from
`--direction NAME=up|down`; nothing is scored, so results.json has no scores.csv beside it.

Both take a `convention` (bench.analysis.correlate.CONVENTIONS). Under "paper" the correlations
carry the released signs and labels, the SSIM scored from images is the released variant
(`ssim_paper_compat`), and PerceptAnon classifiers are scored by their arg-max class (the
released eval.py). The convention is recorded in results.json (top level and provenance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.analysis.correlate import CONVENTIONS, CorrelationResult, correlate
from bench.analysis.stats import DEFAULT_STATISTICS, Statistic, resolve_statistic
from bench.data import dataset
from bench.data.demo import DEMO_FOLDER, DEMO_IMAGES
from bench.errors import InputError
from bench.options import Bootstrap, ScoringOptions
from bench.scoring import runner
from bench.scoring.store import DEFAULT_STORE_NAME, ResultsStore, run_provenance
from metrics.atomic import write_atomic
from metrics.csvsafe import restore_frame, to_csv_text
from metrics.registry import (PAPER_METRICS, available_metrics, checkpoint_metric, metric_class, metric_label,
                              parse_metric_list)
from metrics.schema import MetricInfo, WeightsStatus, decode_infinities, to_json_text
from reports.tables import TIE_TOLERANCE, NotComputed, StatisticInfo

RESULTS_FILE = "results.json"
PAIRS_FILE = "pairs.csv"
# Pairs shown with thumbnails in the report, spread over the human-score range.
SAMPLE_PAIRS = 8
DIRECTIONS = {"up": True, "down": False}


@dataclass
class Evaluation:
    """What one evaluated annotation file produced."""

    name: str
    out_dir: Path
    report: Path
    score_summary: list[str]
    skipped_splits: list[str]
    #: What happened to each metric scored (none when the values came from the file's columns).
    metrics: tuple[runner.MetricOutcome, ...] = ()


def demo_annotations() -> list[Path]:
    paths = [DEMO_FOLDER / "HA1.csv", DEMO_FOLDER / "HA2.csv"]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(
            f"demo set not found at {DEMO_FOLDER}: this installation lacks it; reinstall the suite "
            "(pip install . from a clone), or pass --annotations FILE --root DIR"
        )
    return paths


def is_demo(path: Path) -> bool:
    return DEMO_FOLDER in Path(path).resolve().parents


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise InputError(f"unknown convention {convention!r}; allowed: {', '.join(CONVENTIONS)}")
    return convention


def metric_options(checkpoint_ha1: Path | None, checkpoint_ha2: Path | None,
                   convention: str = "default") -> dict[str, dict[str, Any]]:
    """Options of the metrics fed by the checkpoint options given (`Metric.checkpoint_option`);
    under the paper convention with their `paper_options` too (PerceptAnon classifiers scored
    by the arg-max class, as the released eval.py does)."""
    paper = check_convention(convention) == "paper"
    given = {"checkpoint_ha1": checkpoint_ha1, "checkpoint_ha2": checkpoint_ha2}
    options = {}
    for option, path in given.items():
        if path is not None:
            name = checkpoint_metric(option)
            options[name] = {"checkpoint": str(path), **(metric_class(name).paper_options if paper else {})}
    return options


def metric_names(spec: str | None, options: dict[str, dict[str, Any]], convention: str = "default") -> list[str]:
    """The paper's five metrics by default, plus PerceptAnon for each checkpoint given; under
    the paper convention each metric with a released variant is that variant (`Metric.paper_variant`:
    SSIM is ssim_paper_compat)."""
    names = parse_metric_list(spec, default=PAPER_METRICS)
    if check_convention(convention) == "paper":
        names = list(dict.fromkeys(metric_class(name).paper_variant or name for name in names))
    return names + [name for name in options if name not in names]


def evaluate(
    annotations: Path,
    *,
    out_dir: Path,
    store: ResultsStore,
    root: Path | None = None,
    column_map: str | None = None,
    metrics: Sequence[str] = PAPER_METRICS,
    options: dict[str, dict[str, Any]] | None = None,
    splits: Sequence[str] | None = None,
    scoring: ScoringOptions = ScoringOptions(),
    bootstrap: Bootstrap = Bootstrap(),
    simulated: bool = False,
    convention: str = "default",
    statistics: Sequence[str] = DEFAULT_STATISTICS,
) -> Evaluation:
    """Score, correlate and report one annotation file into `out_dir` (`metrics` and `store`
    are the ones the flow resolved: `scoring` gives how to score, not which metrics or store)."""
    n_boot, seed, command, device = bootstrap.n_boot, bootstrap.seed, scoring.command, scoring.device
    table = dataset.load_pairs(annotations, root=root, columns=column_map)
    dataset.check_image_root(table)
    scored = runner.score_pairs(
        table, metrics, store=store, device=device, batch_size=scoring.batch_size, workers=scoring.workers,
        size_policy=scoring.size_policy, progress=scoring.progress, command=command, metric_options=options,
    )
    ok = [outcome for outcome in scored.metrics if outcome.status == "ok"]
    if not ok:  # nothing to correlate: say why, and leave an earlier run's results in out_dir as they are
        reasons = "; ".join(f"{outcome.name}: {outcome.reason}" for outcome in scored.metrics)
        raise InputError(f"{annotations.name}: no metric could be computed, so nothing was correlated or written "
                         f"({reasons or 'no metrics were asked for'})")
    runner.write_outputs(scored, out_dir)
    pairs = pairs_with_scores(table, scored, ok)
    infos = [outcome.info for outcome in ok]
    correlation = correlate(
        pairs, infos, annotators=table.annotators, splits=splits, n_boot=n_boot, seed=seed,
        source=table.source.name, convention=convention, statistics=statistics,
    )
    provenance = report_provenance(scored, ok, table=table, seed=seed, simulated=simulated, command=command)
    samples = sample_pairs(pairs, table.root)
    # Only checkpoints that loaded: one that did not is reported with its metric, not loaded again.
    computed = {outcome.name for outcome in ok}
    gradcam = gradcam_overlays({name: option for name, option in (options or {}).items() if name in computed},
                               samples, out_dir, device=device)
    report = _save_and_render(out_dir, table, correlation, [info.to_json() for info in infos], provenance, pairs,
                              gradcam, missing=not_computed(scored.metrics))
    return Evaluation(
        name=table.source.stem, out_dir=out_dir, report=report,
        score_summary=scored.summary_lines(), skipped_splits=list(correlation.skipped),
        metrics=tuple(scored.metrics),
    )


def _save_and_render(out_dir: Path, table: dataset.PairsTable, correlation: CorrelationResult,
                     infos: Sequence[dict[str, Any]],
                     provenance: dict[str, Any], pairs: pd.DataFrame, gradcam: list[dict[str, Any]],
                     missing: Sequence[dict[str, Any]] = ()) -> Path:
    provenance = {**provenance, "convention": correlation.convention}
    bundle = {
        "title": f"How well do metrics agree with human anonymity scores? {table.source.name}",
        "convention": correlation.convention,
        "correlations": correlation.correlations,
        "ceiling": correlation.ceiling,
        "metrics": list(infos),
        "statistics": [statistic_info(statistic, statistic.name in correlation.tabulated).to_json()
                       for statistic in correlation.statistics],
        "not_computed": list(missing),
        "provenance": provenance,
        "skipped": correlation.skipped,
        "root": str(table.root),
        "gradcam": gradcam,
    }
    save_bundle(out_dir, bundle, pairs)
    return render(out_dir)


# ------------------------------------------------------------------------- metric columns
@dataclass(frozen=True)
class MetricColumn:
    """A column of the annotation file used as a metric, and where its direction came from."""

    name: str
    higher_is_more_anonymous: bool
    direction_from: str


def parse_metric_columns(spec: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in spec.split(",") if name.strip()))
    if not names:
        raise InputError("--metric-columns is empty; give column names, e.g. --metric-columns MSE,PSNR,SSIM")
    return names


def parse_directions(items: Sequence[str] | None) -> dict[str, bool]:
    """['PSNR=down', 'mine=up,other=down'] -> {'PSNR': False, 'mine': True, 'other': False}."""
    directions: dict[str, bool] = {}
    for item in (part.strip() for entry in items or () for part in entry.split(",")):
        if not item:
            continue
        name, sep, value = (text.strip() for text in item.partition("="))
        if not sep or not name or value.lower() not in DIRECTIONS:
            raise InputError(f"bad --direction {item!r}: expected NAME=up or NAME=down "
                             "(up = a higher value means more anonymous)")
        directions[name] = DIRECTIONS[value.lower()]
    return directions


def column_directions(columns: Sequence[str], directions: dict[str, bool]) -> list[MetricColumn]:
    """Each column's direction: --direction first, else the registered metric of that name
    (case-insensitive: MSE -> mse); a column that is neither is an error naming the option."""
    unused = sorted(set(directions) - set(columns))
    if unused:
        raise InputError(f"--direction names {', '.join(unused)}, not among --metric-columns; "
                         "add them to --metric-columns or drop the --direction")
    known = available_metrics()
    resolved = []
    for name in columns:
        if name in directions:
            resolved.append(MetricColumn(name, directions[name], "--direction"))
        elif name.lower() in known:
            up = bool(metric_class(name.lower()).higher_is_more_anonymous)
            resolved.append(MetricColumn(name, up, f"metric {name.lower()}"))
        else:
            raise InputError(f"metric column {name!r}: its direction is unknown (not a known metric name); "
                             f"give --direction {name}=up (higher = more anonymous) or {name}=down")
    return resolved


def pairs_with_columns(table: dataset.PairsTable, columns: Sequence[MetricColumn]) -> pd.DataFrame:
    """The annotation table with the metric columns as read from the file (numbers only;
    empty cells are NaN, 'inf' is infinity)."""
    taken = set(dataset.CANONICAL_COLUMNS) | set(table.annotators) | {"row", "pair"}
    pairs = table.frame.copy()
    for column in columns:
        if column.name not in table.raw.columns:
            raise InputError(f"{table.source}: no column {column.name!r} for --metric-columns; "
                             f"the file has {', '.join(map(str, table.raw.columns))}")
        if column.name in taken:
            raise InputError(f"{table.source}: column {column.name!r} is an annotation column, not a metric; "
                             "drop it from --metric-columns")
        values = pd.to_numeric(table.raw.loc[pairs.index, column.name], errors="coerce")
        bad = values.isna() & table.raw.loc[pairs.index, column.name].notna()
        if bad.any():
            first = bad.to_numpy().nonzero()[0][0]
            raise InputError(f"{table.source}, line {int(pairs['row'].iloc[first])}: column {column.name!r} holds "
                             f"{table.raw.loc[pairs.index[first], column.name]!r}, not a number; fix or empty the cell")
        pairs[column.name] = values.astype(float).to_numpy()
    return pairs.rename(columns={"row": "pair"})


def column_info(column: MetricColumn) -> MetricInfo:
    # No weights of ours are involved: the values are the file's own.
    return MetricInfo(name=column.name, label=column.name, higher_is_more_anonymous=column.higher_is_more_anonymous,
                      weights_status=WeightsStatus.PRECOMPUTED, key=f"column:{column.name}")


def column_entry(column: MetricColumn, source: Path) -> dict[str, Any]:
    """A column's results.json entry: its MetricInfo and where its values and direction came from."""
    return {**column_info(column).to_json(), "source": f"column {column.name} of {source.name}",
            "direction_from": column.direction_from}


def evaluate_columns(
    annotations: Path,
    *,
    out_dir: Path,
    columns: Sequence[str],
    directions: dict[str, bool] | None = None,
    root: Path | None = None,
    column_map: str | None = None,
    splits: Sequence[str] | None = None,
    bootstrap: Bootstrap = Bootstrap(),
    simulated: bool = False,
    command: str = "evaluate",
    convention: str = "default",
    statistics: Sequence[str] = DEFAULT_STATISTICS,
) -> Evaluation:
    """Correlate, tabulate and report metric values read from the annotation file's columns."""
    n_boot, seed = bootstrap.n_boot, bootstrap.seed
    check_convention(convention)
    resolved = column_directions(columns, directions or {})
    table = dataset.load_pairs(annotations, root=root, columns=column_map)
    table.annotators = [a for a in table.annotators if a not in {c.name for c in resolved}]
    pairs = pairs_with_columns(table, resolved)
    infos = [column_info(column) for column in resolved]
    correlation = correlate(
        pairs, infos, annotators=table.annotators, splits=splits, n_boot=n_boot, seed=seed,
        source=table.source.name, convention=convention, statistics=statistics,
    )
    run = run_provenance(device="none (no images scored)", dataset_hash=table.dataset_hash)
    provenance = {
        "package_versions": {"bench": run["bench"], "python": run["python"], **run["packages"]},
        "git_commit": run["git_commit"],
        "device": run["device"],
        "seeds": {"split": 42, "bootstrap": seed},
        "weights": [],
        "dataset_hash": table.dataset_hash,
        "annotations": str(table.source),
        "metric_columns": {c.name: ("up" if c.higher_is_more_anonymous else "down") + f" ({c.direction_from})"
                           for c in resolved},
        "simulated_scores": simulated,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }
    report = _save_and_render(out_dir, table, correlation, [column_entry(c, table.source) for c in resolved],
                              provenance, pairs, [])
    summary = [f"  {c.name}: read from the file, {'higher' if c.higher_is_more_anonymous else 'lower'} = more "
               f"anonymous ({c.direction_from}), {int(pairs[c.name].notna().sum())} values" for c in resolved]
    return Evaluation(name=table.source.stem, out_dir=out_dir, report=report, score_summary=summary,
                      skipped_splits=list(correlation.skipped))


def pairs_with_scores(table: dataset.PairsTable, scored: runner.ScoreResult, ok) -> pd.DataFrame:
    """The annotation table with one column per metric, named by the metric (NaN where missing).

    Values equal within a relative TIE_TOLERANCE are made equal: float rounding must not break
    ties in one metric that a monotone transform of it keeps (MSE and PSNR got Kendall's tau
    0.0733 and 0.0736 on the demo from values one ulp apart)."""
    pairs = table.frame.copy()
    for outcome in ok:
        values = scored.scores.loc[scored.scores["metric"] == outcome.name, ["row", "value"]]
        column = pairs["row"].map(dict(zip(values["row"], values["value"]))).astype(float)
        # Named as correlate looks it up: the metric's own name, also when asked for as module:Class.
        name = outcome.info.name if outcome.info else outcome.name
        pairs[name] = merge_near_ties(column.to_numpy(dtype=np.float64))
    return pairs.rename(columns={"row": "pair"})


def merge_near_ties(values: np.ndarray, tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """Each run of sorted finite values whose neighbours differ by at most `tolerance` (relative)
    takes the run's smallest value; order is kept, so only exact ties are added."""
    out = np.array(values, dtype=np.float64, copy=True)
    finite = np.flatnonzero(np.isfinite(out))
    order = finite[np.argsort(out[finite], kind="stable")]
    for previous, current in zip(order[:-1], order[1:]):
        a, b = out[previous], out[current]
        if b - a <= tolerance * max(abs(a), abs(b)):
            out[current] = a
    return out


def not_computed(outcomes: Sequence[runner.MetricOutcome]) -> list[dict[str, Any]]:
    """Requested metrics without values, with the runner's one-line reason and fix, for every table."""
    return [vars(NotComputed(name=outcome.name, label=metric_label(outcome.name, outcome.label),
                             reason=outcome.reason, status=outcome.status))
            for outcome in outcomes if outcome.status != "ok"]


def report_provenance(scored: runner.ScoreResult, ok, *, table: dataset.PairsTable, seed: int,
                      simulated: bool, command: str) -> dict[str, Any]:
    run = scored.provenance
    weights = [
        {"metric": outcome.name, **record}
        for outcome in ok
        for record in (outcome.card or {}).get("weights", [])
    ]
    return {
        "package_versions": {"bench": run.get("bench"), "python": run.get("python"), **run.get("packages", {})},
        "git_commit": run.get("git_commit"),
        "device": run.get("device"),
        "seeds": {"split": 42, "bootstrap": seed},
        "weights": weights,
        "dataset_hash": table.dataset_hash,
        "annotations": str(table.source),
        "simulated_scores": simulated,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "results_store": str(scored.store_path),
        "run_id": scored.run_id,
    }


# ------------------------------------------------------------------------- the bundle
def save_bundle(out_dir: Path, bundle: dict[str, Any], pairs: pd.DataFrame) -> None:
    payload = dict(bundle)
    payload["correlations"] = bundle["correlations"].to_dict(orient="records")
    payload["ceiling"] = bundle["ceiling"].to_dict(orient="records")
    write_atomic(out_dir / PAIRS_FILE, to_csv_text(pairs))
    write_atomic(out_dir / RESULTS_FILE, to_json_text(payload, indent=1))


def statistic_info(statistic: str | Statistic, tabulated: bool = True) -> StatisticInfo:
    """What the reports show of a statistic (stored in results.json, so `bench report` needs
    no plugin statistic installed to re-render)."""
    statistic = resolve_statistic(statistic)
    return StatisticInfo(statistic.name, statistic.symbol, statistic.label, tabulated)


def load_bundle(results: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    folder = results if results.is_dir() or not results.exists() else results.parent
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise InputError(_no_results_message(folder, path))
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        pairs = restore_frame(pd.read_csv(folder / PAIRS_FILE, keep_default_na=True))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable results ({exc}); re-run `bench correlate`") from exc
    for key in ("correlations", "ceiling"):
        bundle[key] = decode_infinities(pd.DataFrame.from_records(bundle[key]))
    if "statistics" not in bundle:  # written before results.json named its statistics: the built-ins, as then
        bundle["statistics"] = [statistic_info(name, name in DEFAULT_STATISTICS)
                                for name in dict.fromkeys(bundle["correlations"].get("statistic", []))]
    return bundle, pairs


def _no_results_message(folder: Path, path: Path) -> str:
    """What to pass instead, for the folders users mistake for a results folder."""
    if not folder.exists():
        return f"{folder}: no such folder; give the folder that `bench correlate` or `bench run` wrote, such as runs/demo/HA1"
    if (folder / "leaderboard.json").is_file() or any(folder.glob("*/leaderboard.json")):
        return (f"{folder} holds a `bench run --method` leaderboard, not correlation results; re-render it with "
                "`bench leaderboard` (with that run's --dataset and --store); `bench report` takes a folder of "
                "`bench run` without --method or of `bench correlate`, such as runs/demo/HA1")
    inside = sorted(child for child in folder.glob(f"*/{RESULTS_FILE}")) if folder.is_dir() else []
    if inside:
        choices = ", ".join(str(child.parent) for child in inside)
        return f"{folder} holds one results folder per annotation file; pass one of them: {choices}"
    return f"{path}: no results here; give the folder that `bench correlate` or `bench run` wrote"


def render(results: Path, out: Path | None = None, formats: Sequence[str] | None = None) -> Path:
    """Tables, plots and the HTML report (or the `formats` named, see reports.formats) from a
    results folder; nothing is recomputed. `out` is the HTML report's file. Returns the HTML
    report, or the folder when no HTML was asked for."""
    from reports import formats as report_formats

    folder = results if results.is_dir() else results.parent
    try:
        chosen = report_formats.writers(report_formats.parse_formats(",".join(formats) if formats else None))
    except report_formats.FormatError as exc:
        raise InputError(str(exc)) from None
    if out is not None and "html" in chosen:
        chosen["html"] = lambda bundle, _: [report_formats.html_file(bundle, out)]  # --out names the page
    bundle, pairs = load_bundle(folder)
    try:
        written = _render_bundle(bundle, pairs, folder, chosen)
    except ValueError as exc:  # reports name what is missing in a results bundle
        raise InputError(f"{folder}: these results cannot be rendered ({exc}); re-run `bench correlate`") from exc
    return written.get("html", [folder])[0]


def _render_bundle(bundle: dict[str, Any], pairs: pd.DataFrame, folder: Path,
                   chosen: dict[str, Any]) -> dict[str, list[Path]]:
    from reports.formats import write_formats
    from reports.tables import Results

    skipped = bundle.get("skipped") or []
    sections = [("Splits that could not be made", "\n".join(skipped))] if skipped else []
    if bundle.get("gradcam"):
        sections.append(("Where PerceptAnon looks (Grad-CAM)", gradcam_section(bundle["gradcam"], folder)))
    results = Results.coerce({**bundle, "pairs": pairs, "sections": sections,
                              "sample_pairs": lambda: sample_pairs(pairs, Path(bundle["root"]))})
    return write_formats(results, folder, chosen)


def sample_pairs(pairs: pd.DataFrame, root: Path, count: int = SAMPLE_PAIRS) -> list[tuple[Path, Path, dict]]:
    """Pairs spread evenly over the human-score range, for the report's thumbnails."""
    ordered = pairs.sort_values(["score_mean", "pair"], kind="stable").reset_index(drop=True)
    if ordered.empty:
        return []
    picks = sorted(set(np.linspace(0, len(ordered) - 1, min(count, len(ordered))).round().astype(int)))
    samples = [(root / row["original"], root / row["anonymized"], row)
               for row in (ordered.iloc[i].to_dict() for i in picks)]
    # Precomputed metric columns need no images: show thumbnails only where both exist.
    return [sample for sample in samples if sample[0].is_file() and sample[1].is_file()]


# ------------------------------------------------------------------------- Grad-CAM
def gradcam_overlays(options: dict[str, dict[str, Any]], samples: list[tuple[Path, Path, dict]], out_dir: Path,
                     *, device: str) -> list[dict[str, Any]]:
    """Grad-CAM overlays of each PerceptAnon checkpoint on the report's sample pairs."""
    from bench.flows.explain import explain_pairs

    records = []
    for name, option in options.items():
        ha = metric_class(name).ha
        pairs = [(original if ha == "HA2" else None, anonymized) for original, anonymized, _ in samples]
        explained = explain_pairs(Path(option["checkpoint"]), pairs, out_dir / "gradcam" / name, ha=ha, device=device)
        for item, (_, _, row) in zip(explained, samples):
            records.append({
                "metric": name, "checkpoint": Path(option["checkpoint"]).name, "pair": int(row["pair"]),
                "method": row.get("method"), "score_mean": row.get("score_mean"), "score": item.score,
                "overlays": [str(path.relative_to(out_dir)) for path in item.overlays],
            })
    return records


def gradcam_section(records: list[dict[str, Any]], folder: Path):
    """HTML for the report: one figure per overlay, embedded, every text escaped."""
    from markupsafe import Markup, escape

    from reports.html import data_uri

    figures = [
        Markup('<figure class="gradcam"><img alt="Grad-CAM overlay" src="{}"><figcaption>{}</figcaption></figure>')
        .format(data_uri((folder / overlay).read_bytes(), "image/png"),
                f"{role} image, {record['metric']} ({record['checkpoint']}), line {record['pair']}, "
                f"{record['method']}: predicted {record['score']:.2f}, human {record['score_mean']}")
        for record in records for role, overlay in zip(("anonymized", "original"), record["overlays"])
    ]
    intro = escape("Heatmaps of the last convolutional block (Grad-CAM) for the sample pairs: red marks the "
                   "regions that drive the predicted anonymity score.")
    return Markup("<p>{}</p><div class=\"gradcam-grid\">{}</div>").format(intro, Markup("").join(figures))


# ------------------------------------------------------------------------- the flow
@dataclass(frozen=True)
class EvaluateConfig:
    """`bench run` without --method and `bench correlate`: which annotation files, and how to
    score and correlate them. Paths are absolute (the CLI resolves them)."""

    #: The results folder; each annotation file gets out/<file stem>.
    out: Path
    #: The annotation files; empty: the demo set's HA1.csv and HA2.csv (with its image root).
    annotations: tuple[Path, ...] = ()
    #: The image root of `annotations` (default: each CSV's folder).
    root: Path | None = None
    #: A generic CSV's header mapping (``original=src,anonymized=dst,score_mean=mos``: --columns).
    column_map: str | None = None
    checkpoint_ha1: Path | None = None
    checkpoint_ha2: Path | None = None
    #: Only these splits (default: all ten of the paper).
    splits: tuple[str, ...] | None = None
    convention: str = "default"
    #: Correlate these columns of each file (``"MSE,PSNR"``) instead of scoring images.
    metric_columns: str | None = None
    #: ``NAME=up|down`` per metric column whose direction is not a known metric's.
    directions: tuple[str, ...] = ()
    scoring: ScoringOptions = ScoringOptions()
    bootstrap: Bootstrap = Bootstrap()
    #: The correlation statistics' names (built-ins, plugins or ``module:attr``).
    statistics: tuple[str, ...] = DEFAULT_STATISTICS

    @property
    def uses_demo(self) -> bool:
        return not self.annotations

    @property
    def image_root(self) -> Path | None:
        return DEMO_IMAGES if self.uses_demo else self.root

    def annotation_files(self) -> list[Path]:
        return demo_annotations() if self.uses_demo else list(self.annotations)

    def simulated(self, path: Path) -> bool:
        """Whether the file's human scores are the demo set's simulated ones."""
        return self.uses_demo or is_demo(path)


def run_evaluation(config: EvaluateConfig) -> list[Evaluation]:
    """Evaluate each annotation file into out/<stem>: score its images, or (with
    `metric_columns`) read their metric values from its columns."""
    for statistic in config.statistics:  # a "module:attr" that does not load fails before any scoring
        resolve_statistic(statistic)
    files = config.annotation_files()
    if config.metric_columns is not None:
        return correlate_columns(config, files)
    return score_and_correlate(config, files)


def correlate_columns(config: EvaluateConfig, files: Sequence[Path]) -> list[Evaluation]:
    """`bench correlate --metric-columns`: each file's own metric columns, nothing scored."""
    if config.scoring.metrics or config.checkpoint_ha1 or config.checkpoint_ha2:
        raise InputError("--metric-columns reads the metric values from the file; drop --metrics and "
                         "--checkpoint-ha1/--checkpoint-ha2 (or drop --metric-columns to score images)")
    columns, chosen = parse_metric_columns(config.metric_columns or ""), parse_directions(config.directions)
    return [evaluate_columns(path, out_dir=config.out / path.stem, columns=columns, directions=chosen,
                             root=config.image_root, column_map=config.column_map, splits=config.splits,
                             bootstrap=config.bootstrap,
                             simulated=config.simulated(path), command=config.scoring.command,
                             convention=config.convention, statistics=config.statistics)
            for path in files]


def score_and_correlate(config: EvaluateConfig, files: Sequence[Path]) -> list[Evaluation]:
    """Score every file's pairs into one store (default: out/results.sqlite), then correlate each."""
    if config.directions:
        raise InputError("--direction applies to --metric-columns; add --metric-columns or drop --direction")
    options = metric_options(config.checkpoint_ha1, config.checkpoint_ha2, config.convention)
    names = metric_names(config.scoring.metrics, options, config.convention)
    with ResultsStore(config.scoring.store or config.out / DEFAULT_STORE_NAME) as store:
        return [evaluate(path, out_dir=config.out / path.stem, store=store, root=config.image_root,
                         column_map=config.column_map, metrics=names,
                         options=options, splits=config.splits, scoring=config.scoring,
                         bootstrap=config.bootstrap, simulated=config.simulated(path),
                         convention=config.convention, statistics=config.statistics)
                for path in files]
