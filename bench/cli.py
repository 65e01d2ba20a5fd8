"""The `bench` command line: thin subcommands that parse options and call library functions.

No logic lives here. Every `_cmd_*` returns the process exit code. A `BenchError` anywhere
below becomes one line on stderr and exit code 2; nothing user-caused shows a traceback.
Under torchrun the commands that can be shared (score, run, correlate, train) run as one job
of all its processes (`bench.scoring.dist.run_command`); the others refuse to.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import TextIO

from bench.data.demo import DEMO_DATASET
from bench.errors import BenchError, InputError, printable
from bench.options import Bootstrap, ScoringOptions
from metrics.errors import MetricError
from metrics.registry import DEFAULT_METRICS, PAPER_METRICS


# --------------------------------------------------------------------------- paths
# The one place that sees the working directory: every path the user typed is made absolute
# here, once, and every default output is placed under ./runs here. What this module passes
# down is absolute, so nothing below depends on the working directory and a run started from
# one folder resumes from any other.
RUNS = "runs"
#: Values of --dataset that name a built-in set rather than a folder.
_NAMED_DATASETS = (DEMO_DATASET,)


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def _runs_dir() -> Path:
    """Where outputs go unless the user says otherwise: ./runs of the folder bench runs in."""
    return _absolute(RUNS)


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed, for provenance records (`main` keeps it on the namespace)."""
    return getattr(args, "command_line", None) or shlex.join(["bench", *sys.argv[1:]])


def _scoring_options(args: argparse.Namespace, *, store: Path | None) -> ScoringOptions:
    """The scoring options every scoring command shares (run, run --method, correlate, score)."""
    return ScoringOptions(metrics=args.metrics, device=args.device, batch_size=args.batch_size, workers=args.workers,
                          size_policy=args.size_policy, store=store, progress=not args.no_progress,
                          command=_command_line(args))


def _bootstrap(args: argparse.Namespace) -> Bootstrap:
    return Bootstrap(n_boot=args.n_boot, seed=args.seed)


def _resolve_method(spec: str) -> str:
    name, is_folder, folder = spec.partition("=")
    return f"{name}={_absolute(folder)}" if is_folder and folder.strip() else spec


def _resolve_paths(args: argparse.Namespace) -> None:
    """Every Path option (single or repeated) absolute; also --dataset DIR and --method NAME=DIR."""
    for key, value in vars(args).items():
        if isinstance(value, Path):
            setattr(args, key, _absolute(value))
        elif isinstance(value, list) and value and all(isinstance(item, Path) for item in value):
            setattr(args, key, [_absolute(item) for item in value])
    if isinstance(getattr(args, "dataset", None), str) and args.dataset not in _NAMED_DATASETS:
        args.dataset = str(_absolute(args.dataset))
    if getattr(args, "method", None):
        args.method = [_resolve_method(spec) for spec in args.method]


def _exit_status(shortfalls: list[str], file: TextIO | None = None) -> int:
    """1, after a last line saying why, when a command ran but did not do all it was asked; else 0."""
    if shortfalls:
        print(f"exit status 1: {'; '.join(shortfalls)}", file=file)
    return 1 if shortfalls else 0


def _check_inputs(args: argparse.Namespace) -> None:
    """Input files every command needs, checked once paths are resolved and before any work:
    a missing checkpoint would otherwise be found only after the other metrics were scored."""
    for option in ("checkpoint_ha1", "checkpoint_ha2"):
        path = getattr(args, option, None)
        if path is not None and not path.is_file():
            raise InputError(
                f"--{option.replace('_', '-')} {path}: {'a folder' if path.is_dir() else 'no such file'}; give a "
                "PerceptAnon checkpoint file (the paper's .pth.tar, or the best.pt that `bench train` writes)")


# --------------------------------------------------------------------------- one-line output
class _OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line (usage lives in --help), like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {printable(message)}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def _resamples(text: str) -> int:
    """--n-boot: a whole number of bootstrap resamples, at least 1 (checked before any scoring)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} resamples: give at least 1 (the default is 2000)")
    return value


def _seed(text: str) -> int:
    """A random seed: an integer from 0 to 2**32 - 1 (what numpy accepts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..4294967295; give a non-negative seed")
    return value


# --------------------------------------------------------------------------- torchrun
def _add_dist_options(p: argparse.ArgumentParser) -> None:
    """Options that matter only under torchrun (see `bench.scoring.dist`)."""
    p.add_argument("--backend", choices=("auto", "nccl", "gloo"), default=None,
                   help="torchrun only: torch.distributed backend (default auto: nccl on GPUs, gloo on CPUs; "
                        "or $BENCH_DIST_BACKEND)")
    p.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                   help="torchrun only: how long a rank waits for the others before the job fails "
                        "(default 1800; or $BENCH_DIST_TIMEOUT)")


# --------------------------------------------------------------------------- shared options
def _add_table_options(p: argparse.ArgumentParser, *, outside_root: bool = True) -> None:
    """How to read an annotation table: its image root and, for a generic CSV, its columns."""
    p.add_argument("--root", type=Path, default=None, help="image root (default: the CSV's folder)")
    p.add_argument("--columns", default=None,
                   help="column mapping for a generic CSV, e.g. original=src,anonymized=dst,score_mean=mos")
    if outside_root:
        p.add_argument("--allow-outside-root", action="store_true",
                       help="accept absolute paths and paths that leave --root")


# --------------------------------------------------------------------------- validate
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check an annotation file and its images, print a summary")
    p.add_argument("annotations", type=Path, help="HA1.csv / HA2.csv (released format) or a generic CSV")
    _add_table_options(p)
    p.add_argument("--size-policy", choices=("error", "resize"), default="error",
                   help="when original and anonymized sizes differ (default: error)")
    p.add_argument("--no-images", action="store_true", help="check the table only, do not open images")
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from bench.data import dataset

    report = dataset.validate(
        args.annotations,
        root=args.root,
        columns=dataset.parse_column_mapping(args.columns),
        allow_outside_root=args.allow_outside_root,
        size_policy=args.size_policy,
        check_images=not args.no_images,
    )
    print(report.render())
    return 1 if report.problems else 0


# --------------------------------------------------------------------------- splits
def _add_splits(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("splits", help="write train/val/test CSVs exactly as the paper's protocol")
    p.add_argument("annotations", type=Path, nargs="+", help="HA1.csv and/or HA2.csv")
    p.add_argument("--out", type=Path, required=True, help="folder that receives dataset_splits/<HA>/<split>/")
    p.add_argument("--root", type=Path, default=None, help="image root (default: the CSV's folder)")
    p.add_argument("--split", action="append", default=None,
                   help="only these splits (repeatable); default: all ten of the paper")
    p.add_argument("--seed", type=_seed, default=42, help="random_state of the split (paper: 42)")
    p.set_defaults(func=_cmd_splits)


def _cmd_splits(args: argparse.Namespace) -> int:
    from bench.data import dataset, protocol

    for path in args.annotations:
        table = dataset.load_pairs(path, root=args.root)
        for line in protocol.write_splits(table, args.out, splits=args.split, seed=args.seed):
            print(line)
    return 0


# --------------------------------------------------------------------------- score
def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score two folders of images pair by pair (bench score ORIGINALS ANONYMIZED), or every pair of an "
             "annotation table (--annotations), reusing stored scores",
    )
    p.add_argument("originals", type=Path, nargs="?", default=None,
                   help="folder of original images (pairs with ANONYMIZED by path, extension ignored)")
    p.add_argument("anonymized", type=Path, nargs="?", default=None,
                   help="folder of anonymized images, at the same paths as their originals")
    p.add_argument("--annotations", type=Path, default=None,
                   help="instead of two folders: HA1.csv / HA2.csv or a generic CSV (a score column is not needed)")
    _add_table_options(p)
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated metric names or module:Class (default: {','.join(PAPER_METRICS)}; for two "
                        f"folders {','.join(DEFAULT_METRICS)}); see `bench metrics`")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per batch (never changes a value; default 32)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes (default 0: in-process)")
    p.add_argument("--size-policy", choices=("error", "resize"), default="error",
                   help="when original and anonymized sizes differ (default: error)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for scores.csv / scores.json / summary.json (default: runs/score-<ANONYMIZED's path "
                        "under the two folders' common parent, with - for />, e.g. runs/score-anonymized-blur-global; "
                        "with --annotations: runs/score-<file stem>)")
    p.add_argument("--store", type=Path, default=None, help="results store (default: <out>/results.sqlite)")
    p.add_argument("--n-boot", type=_resamples, default=2000, help="bootstrap resamples of the summary's 95%% CIs")
    p.add_argument("--seed", type=_seed, default=0, help="bootstrap seed")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (the summary and every pair's values) on stdout, and nothing else")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_dist_options(p)
    p.set_defaults(func=_cmd_score, distributed="driven", uses_torch=True)


def _cmd_score(args: argparse.Namespace) -> int:
    from bench.flows import folders
    from metrics.registry import parse_metric_list
    from metrics.schema import to_json_text

    folder_args = [path for path in (args.originals, args.anonymized) if path is not None]
    if args.annotations is not None and folder_args:
        raise BenchError("bench score takes two folders (bench score ORIGINALS ANONYMIZED) or --annotations FILE, "
                         "not both; drop one")
    if args.annotations is None and len(folder_args) != 2:
        raise BenchError("bench score needs two folders (bench score ORIGINALS ANONYMIZED) or --annotations FILE"
                         + (f"; only {folder_args[0]} was given" if folder_args else ""))
    if args.annotations is None:
        if args.root or args.columns or args.allow_outside_root:
            raise BenchError("--root, --columns and --allow-outside-root belong to --annotations; "
                             "leave them out with two folders")
        originals, anonymized = folder_args
        out = args.out or _runs_dir() / folders.default_out_name(originals, anonymized)
    else:
        out = args.out or _runs_dir() / f"score-{args.annotations.stem}"
    config = folders.FolderScoreConfig(out=out, scoring=_scoring_options(args, store=args.store),
                                       bootstrap=_bootstrap(args))
    if args.annotations is None:
        report = folders.score_folders(originals, anonymized, config)
    else:
        report = folders.score_annotations(args.annotations, config, root=args.root, columns=args.columns,
                                           allow_outside_root=args.allow_outside_root)
    human = sys.stderr if args.json else sys.stdout
    print("\n".join(report.summary_lines()), file=human)
    print("\n".join(report.table_lines()), file=human)
    print(f"wrote {', '.join(str(path) for path in report.files.values())}; results store "
          f"{report.result.store_path}", file=human)
    if args.json:
        print(to_json_text(report.to_json()), end="")
    return _exit_status(report.shortfalls(parse_metric_list(args.metrics) if args.metrics else ()), file=human)


# --------------------------------------------------------------------------- metrics
def _add_metrics(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="every registered metric: level, direction, range, weights and their "
                                       "status here, convention")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    p.set_defaults(func=_cmd_metrics)


def _cmd_metrics(args: argparse.Namespace) -> int:
    from metrics import catalog
    from metrics.schema import to_json_text

    facts = catalog.all_metric_facts()
    if args.json:
        print(to_json_text([fact.to_json() for fact in facts], indent=2), end="")
    else:
        print("\n".join(catalog.table_lines(facts)))
    return 0


# --------------------------------------------------------------------------- weights
def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list, download, verify or import pretrained weight files")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every known weight file, its status here, licence and URL")
    fetch = actions.add_parser("fetch", help="download a weight file into the cache, checking its sha256")
    fetch.add_argument("name", help="weights name, as `bench weights list` shows it")
    fetch.add_argument("--url", default=None, help="download from this mirror instead (still hash-checked)")
    fetch.add_argument("--deadline", type=_positive_seconds, default=3600.0, metavar="SECONDS",
                       help="give up (removing the partial file) if the download takes longer (default 3600)")
    verify = actions.add_parser("verify", help="re-hash cached weight files; exit 1 if one is corrupt or missing")
    verify.add_argument("name", nargs="?", default=None, help="only these weights (default: all)")
    imported = actions.add_parser("import", help="copy a weight file you have into the cache")
    imported.add_argument("file", type=Path, help="the weight file")
    imported.add_argument("--as", dest="name", required=True, help="weights name it stands for")
    p.set_defaults(func=_cmd_weights)


def _cmd_weights(args: argparse.Namespace) -> int:
    from metrics import weights

    if args.action == "list":
        rows = weights.list_specs()
        columns = ("name", "status", "file", "licence", "url")
        widths = {column: max(len(column), *(len(row[column]) for row in rows)) for column in columns[:-1]}
        for row in [dict(zip(columns, columns)), *rows]:
            print("  ".join(row[column].ljust(widths.get(column, 0)) for column in columns).rstrip())
        return 0
    if args.action == "verify":
        lines = weights.verify(args.name)
        for name, text in lines:
            print(f"{name}: {text}")
        return 1 if any(text.startswith(("corrupt", "missing")) for _, text in lines) else 0
    resolved = (weights.fetch(args.name, url=args.url, deadline_s=args.deadline) if args.action == "fetch"
                else weights.import_file(args.file, args.name))
    print(f"{resolved.spec.name}: {resolved.status}: {resolved.path} sha256 {resolved.sha256}")
    return 0


# --------------------------------------------------------------------------- run
def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: with no options, the whole evaluation on the demo set; "
             "with --method, benchmark anonymization methods into a leaderboard",
    )
    p.add_argument("--method", action="append", default=None, metavar="METHOD",
                   help="benchmark this method (repeatable): a built-in (mask, blur, pixelate, inpaint), "
                        "an installed plugin name, module:function, or NAME=DIR of already-anonymized images")
    p.add_argument("--param", action=_ParamAction, default=None, metavar="NAME=V1,V2",
                   help="sweep a parameter of the --method given just before it (repeatable: several make a "
                        "grid); each setting is its own row, e.g. blur[radius=8]")
    p.add_argument("--tradeoff", default=None, metavar="PRIVACY_METRIC,UTILITY_METRIC",
                   help="with --method: the axes of the privacy-utility trade-off views (default: a face detector "
                        "or distance metric against a utility metric, when the run has both families)")
    p.add_argument("--utility", default=None, metavar="MODULE:FUNCTION",
                   help="with --method: score your task function fn(image) -> float (higher = more useful) on "
                        "every anonymized image, as the utility metric 'task'")
    p.add_argument("--dataset", default=DEMO_DATASET,
                   help="benchmark set for --method: 'fixtures' (the demo set) or a folder with images/ and pii.json")
    p.add_argument("--annotations", type=Path, action="append", default=None,
                   help="annotated pairs to evaluate (repeatable; default: the demo set's HA1.csv and HA2.csv)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/demo, runs/evaluate or runs/bench)")
    p.add_argument("--sort", default=None, metavar="METRIC",
                   help="with --method: the leaderboard's sort metric (default: PerceptAnon, else lpips, "
                        "inception_dist, ssim)")
    p.add_argument("--privacy", action=argparse.BooleanOptionalAction, default=True,
                   help="with --method: run the privacy attacks (face detection, re-identification naive and "
                        "adaptive) per method x scope, on by default: the leaderboard gets their block, and "
                        "privacy.md/.json/.html and privacy_roc.png hold the detail; --no-privacy skips them")
    _add_isolation_options(p)
    _add_evaluation_options(p)
    p.set_defaults(func=_cmd_run, distributed="driven", uses_torch=True)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return value


def _add_isolation_options(p: argparse.ArgumentParser) -> None:
    """How a user's method (plugin or module:function) runs: in its own process, time-limited."""
    p.add_argument("--method-timeout", type=_positive_seconds, default=120.0, metavar="SECONDS",
                   help="with --method: longest a user's method may take on one image before its worker "
                        "process is killed and the image reported as failed (default 120)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="with --method: accept --dataset originals and masks, and NAME=DIR images, that "
                        "resolve (through a symlink) outside their folder")


class _ParamAction(argparse.Action):
    """``--param`` belongs to the ``--method`` given just before it on the command line."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001 - argparse's signature
        methods = getattr(namespace, "method", None) or []
        if not methods:
            raise argparse.ArgumentError(self, "give --method before it: --param sets a parameter of the "
                                               "--method just before it, e.g. --method blur --param radius=2,4")
        params = list(getattr(namespace, self.dest, None) or [])
        params += [[] for _ in range(len(methods) - len(params))]
        params[len(methods) - 1].append(values)
        setattr(namespace, self.dest, params)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.method:
        return _benchmark(args)
    if args.utility or getattr(args, "tradeoff", None):

        raise InputError("--utility and --tradeoff belong to benchmark runs; give --method too")
    return _evaluate(args, splits=None)


def _benchmark(args: argparse.Namespace) -> int:
    """`bench run --method ...`: print the summary and the leaderboard; exit 1 when a method
    failed on an image, a pair failed, or a metric asked for by name could not be computed."""
    from bench.flows import benchmark
    from bench.errors import InputError
    from bench.scoring.store import DEFAULT_STORE_NAME
    from reports.leaderboard import to_markdown_document
    from reports.tables import as_typed

    if args.annotations or args.root or args.columns:
        raise InputError("--annotations, --root and --columns belong to the evaluation run; leave them out with "
                         "--method")
    if args.convention != "default":
        # A leaderboard has no human scores to correlate: the paper's conventions are about those.
        raise InputError("--convention paper applies to evaluating annotations (bench run without --method, "
                         "bench correlate); leave it out with --method")
    if args.statistics:
        raise InputError("--statistics applies to evaluating annotations (bench run without --method, "
                         "bench correlate); a leaderboard has no human scores to correlate")
    runs = _runs_dir()
    result = benchmark.run_benchmark(benchmark.BenchmarkConfig(
        methods=tuple(args.method),
        out=args.out or runs / "bench",
        method_params=tuple(tuple(params) for params in args.param or ()),
        dataset=args.dataset,
        checkpoint_ha1=args.checkpoint_ha1,
        checkpoint_ha2=args.checkpoint_ha2,
        utility=args.utility,
        sort=args.sort,
        privacy=args.privacy,
        method_timeout=args.method_timeout,
        allow_outside_root=args.allow_outside_root,
        tradeoff=args.tradeoff,
        scoring=_scoring_options(args, store=args.store or runs / DEFAULT_STORE_NAME),
        bootstrap=_bootstrap(args),
    ))
    print("\n".join(result.summary_lines()))
    print()
    print(to_markdown_document(result.board, escape=as_typed))  # its privacy block included
    print(f"wrote {', '.join(str(path) for path in result.written.values())}")
    return _exit_status(result.shortfalls())


def _evaluate(args: argparse.Namespace, *, splits: list[str] | None) -> int:
    from bench.flows import evaluate
    from bench.analysis.stats import parse_statistics
    from bench.scoring.runner import not_run_as_asked
    from metrics.registry import parse_metric_list

    evaluations = evaluate.run_evaluation(evaluate.EvaluateConfig(
        out=args.out or _runs_dir() / ("evaluate" if args.annotations else "demo"),
        annotations=tuple(args.annotations or ()), root=args.root, column_map=args.columns,
        checkpoint_ha1=args.checkpoint_ha1, checkpoint_ha2=args.checkpoint_ha2,
        splits=None if splits is None else tuple(splits), convention=args.convention,
        metric_columns=getattr(args, "metric_columns", None), directions=tuple(getattr(args, "direction", None) or ()),
        scoring=_scoring_options(args, store=args.store), bootstrap=_bootstrap(args),
        statistics=tuple(parse_statistics(args.statistics)),
    ))
    for evaluation in evaluations:
        print(f"== {evaluation.name}")
        print("\n".join(evaluation.score_summary))
        for line in evaluation.skipped_splits:
            print(f"  split skipped: {line}")
        print(f"  tables: {evaluation.out_dir / 'tables'}")
        print(f"  report: {evaluation.report}")
    # As bench score: a metric asked for by name, or by its checkpoint, that did not run fails the command.
    requested = set(parse_metric_list(args.metrics) if args.metrics else ())
    requested |= set(evaluate.metric_options(args.checkpoint_ha1, args.checkpoint_ha2, args.convention))
    return _exit_status(list(dict.fromkeys(
        line for evaluation in evaluations for line in not_run_as_asked(evaluation.metrics, requested))))


# --------------------------------------------------------------------------- correlate / report
def _add_evaluation_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `run` (without --method) and `correlate`."""
    p.add_argument("--root", type=Path, default=None, help="image root of --annotations (default: the CSV's folder)")
    p.add_argument("--columns", default=None,
                   help="column mapping for a generic CSV, e.g. original=src,anonymized=dst,score_mean=mos")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated metric names (default: {','.join(PAPER_METRICS)})")
    p.add_argument("--checkpoint-ha1", type=Path, default=None, help="PerceptAnon HA1 checkpoint to add as a metric")
    p.add_argument("--checkpoint-ha2", type=Path, default=None, help="PerceptAnon HA2 checkpoint to add as a metric")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per batch (never changes a value; default 32)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes (default 0)")
    p.add_argument("--size-policy", choices=("error", "resize"), default="error",
                   help="when original and anonymized sizes differ (default: error)")
    p.add_argument("--store", type=Path, default=None,
                   help="results store (default: <out>/results.sqlite; with --method: runs/results.sqlite, "
                        "shared by every benchmark run so `bench leaderboard` sees them all)")
    p.add_argument("--n-boot", type=_resamples, default=2000, help="bootstrap resamples for confidence intervals")
    p.add_argument("--seed", type=_seed, default=0, help="bootstrap seed (splits always use the paper's 42)")
    p.add_argument("--statistics", default=None, metavar="NAME[,NAME]",
                   help="correlation statistics: spearman, kendall, pearson or module:RECORD of your own "
                        "(default: spearman,kendall)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_convention_option(p)
    _add_dist_options(p)


def _add_convention_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--convention", choices=("default", "paper"), default="default",
                   help="default: every metric oriented (positive = agrees), our SSIM and labels; paper: the "
                        "released code's raw signs, binary labels, SSIM constants and classifier rule")


def _add_correlate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("correlate", help="correlate metrics with human scores per split and granularity, with a report")
    p.add_argument("--annotations", type=Path, action="append", required=True,
                   help="HA1.csv / HA2.csv (repeatable); each gets its own folder under --out")
    p.add_argument("--split", action="append", default=None, help="only these splits (repeatable; default: all ten)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: runs/evaluate)")
    p.add_argument("--metric-columns", default=None, metavar="COL,COL",
                   help="correlate these columns of the annotation file (e.g. MSE,PSNR,SSIM,LPIPS,FID as the "
                        "released get_metrics.py writes them) instead of scoring images")
    p.add_argument("--direction", action="append", default=None, metavar="NAME=up|down",
                   help="with --metric-columns: up = a higher value means more anonymous (repeatable; needed "
                        "for a column that is not a known metric name)")
    _add_evaluation_options(p)
    p.set_defaults(func=_cmd_correlate, distributed="driven", uses_torch=True)


def _cmd_correlate(args: argparse.Namespace) -> int:
    return _evaluate(args, splits=args.split)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="re-render tables, plots and the HTML report from stored results")
    p.add_argument("results", type=Path, help="a results folder written by `bench correlate` or `bench run`")
    p.add_argument("--out", type=Path, default=None, help="report file (default: RESULTS/report.html)")
    p.add_argument("--formats", default=None, metavar="NAME[,NAME]",
                   help="what to write: md, tex, csv, json, png, html or module:function of your own "
                        "(default: all of the built-ins)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from bench.flows import evaluate

    formats = [name.strip() for name in args.formats.split(",") if name.strip()] if args.formats else None
    print(f"report: {evaluate.render(args.results, args.out, formats)}")
    return 0


# --------------------------------------------------------------------------- leaderboard
def _add_leaderboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard",
                       help="the leaderboard of every method ever benchmarked on a dataset, from the results store")
    p.add_argument("--dataset", default=DEMO_DATASET,
                   help="benchmark set: 'fixtures' (the demo set) or a folder with images/ and pii.json")
    p.add_argument("--store", type=Path, default=None, help="results store (default: runs/results.sqlite)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for leaderboard.{md,tex,csv,json,html} (default: runs/leaderboard/<dataset>)")
    p.add_argument("--sort", default=None, metavar="METRIC",
                   help="sort metric (default: PerceptAnon, else lpips, inception_dist, ssim)")
    p.add_argument("--n-boot", type=_resamples, default=2000, help="bootstrap resamples for confidence intervals")
    p.add_argument("--seed", type=_seed, default=0, help="bootstrap seed")
    p.add_argument("--tradeoff", default=None, metavar="PRIVACY_METRIC,UTILITY_METRIC",
                   help="the axes of the privacy-utility trade-off views (default: see bench run --tradeoff)")
    p.add_argument("--drop", action="append", default=None, metavar="NAME",
                   help="remove this method from the stored leaderboard (repeatable); its scores stay in the store")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept --dataset originals and masks that resolve (through a symlink) outside the set")
    p.set_defaults(func=_cmd_leaderboard)


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.analysis import leaderboard
    from bench.scoring.store import DEFAULT_STORE_NAME
    from reports.leaderboard import to_markdown_document
    from reports.tables import as_typed

    runs = _runs_dir()
    board, written, dropped = leaderboard.stored_leaderboard(
        dataset=args.dataset, store_path=args.store or runs / DEFAULT_STORE_NAME, out=args.out,
        leaderboards_dir=runs / "leaderboard", n_boot=args.n_boot, seed=args.seed, sort=args.sort,
        drop=args.drop or (), allow_outside_root=args.allow_outside_root,
        tradeoff=args.tradeoff,
    )
    for name in dropped:
        print(f"dropped {name} from the stored leaderboard")
    print(to_markdown_document(board, escape=as_typed))
    print(f"wrote {', '.join(str(path) for path in written.values())}")
    return 0


# --------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train PerceptAnon on annotated pairs (the paper's recipe) and evaluate it")
    p.add_argument("--annotations", type=Path, required=True, help="HA1.csv / HA2.csv or a generic CSV")
    _add_table_options(p, outside_root=False)
    p.add_argument("--ha", choices=("HA1", "HA2"), default="HA1",
                   help="HA1: the anonymized image alone; HA2: the (original, anonymized) pair (default HA1)")
    p.add_argument("--split", default="all", help="the paper's split: all, task-*, loov-*, anon-* (default all)")
    p.add_argument("--label", default="mean", help="target: mean, labels10, labels5, labels3 or binary (default mean)")
    p.add_argument("--classification", action="store_true", help="classify (cross-entropy) instead of regress (MSE)")
    p.add_argument("--class-weighted", action="store_true", help="weight the cross-entropy by inverse class frequency")
    p.add_argument("--binary-compat", action="store_true",
                   help="the released binary labels (class 0 = score > 5); scores stay higher = more anonymous")
    p.add_argument("--backbone", default="resnet50",
                   help="resnet18, resnet50, resnet152, densenet121, alexnet or vgg11 (default resnet50)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="start from random weights instead of ImageNet ones")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this PerceptAnon checkpoint instead of ImageNet weights "
                        "(fine-tune it; with --epochs 0: only evaluate it)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random flip / rotation of training images")
    p.add_argument("--epochs", type=int, default=200, help="epochs of the cosine schedule (default 200)")
    p.add_argument("--batch-size", type=int, default=128, help="pairs per step (default 128)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate, momentum 0.9 (default 0.01)")
    p.add_argument("--seed", type=_seed, default=42, help="seed of initialisation, order and augmentation (default 42)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: auto)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader workers decoding images (default 0: in-process, inputs cached when they fit)")
    p.add_argument("--size-policy", choices=("error", "resize"), default="error",
                   help="HA2: when original and anonymized sizes differ (default: error)")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder (default: runs/train/<ha>-<split>-<label>-<backbone>[-cls])")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--stop-after", type=int, default=None, metavar="EPOCH",
                   help="end this invocation after EPOCH (e.g. a time-limited job); continue with --resume")
    p.add_argument("--convention", choices=("default", "paper"), default="default",
                   help="test-set correlations: default, the predicted 1-10 score vs score_mean; paper, the released "
                        "eval.py (arg-max class or sigmoid output vs the training label)")
    _add_dist_options(p)
    p.set_defaults(func=_cmd_train, distributed="every-rank", uses_torch=True)


def _cmd_train(args: argparse.Namespace) -> int:
    from bench.data import dataset
    from bench.flows import train

    config = train.TrainConfig(
        annotations=args.annotations, root=args.root, columns=dataset.parse_column_mapping(args.columns),
        ha=args.ha, split=args.split, label=args.label, classification=args.classification,
        class_weighted=args.class_weighted, binary_compat=args.binary_compat, backbone=args.backbone,
        pretrained=args.pretrained, init=args.init, augment=args.augment, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device, workers=args.workers,
        size_policy=args.size_policy, out=args.out, resume=args.resume, stop_after=args.stop_after,
        convention=args.convention,
    )
    if config.out is None:
        config = dataclasses.replace(config, out=_runs_dir() / "train" / config.run_name)
    train.train(config)
    return 0


# --------------------------------------------------------------------------- explain
def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="Grad-CAM heatmaps of a PerceptAnon checkpoint, overlaid on the images")
    p.add_argument("images", type=Path, nargs="+", help="anonymized images to explain")
    p.add_argument("--checkpoint", type=Path, required=True, help="PerceptAnon checkpoint (e.g. best.pt)")
    p.add_argument("--ha", choices=("HA1", "HA2"), default=None, help="model kind (default: read from the checkpoint)")
    p.add_argument("--original", type=Path, default=None, help="HA2: the original the images anonymize")
    p.add_argument("--out", type=Path, required=True, help="folder for the overlay PNGs")
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity over the image (default 0.5)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: auto)")
    p.set_defaults(func=_cmd_explain, uses_torch=True)


def _cmd_explain(args: argparse.Namespace) -> int:
    from bench.flows import explain

    for line in explain.explain_files(args.checkpoint, args.images, args.out, ha=args.ha, original=args.original,
                                      device=args.device, alpha=args.alpha):
        print(line)
    return 0


# --------------------------------------------------------------------------- perf
def _add_perf(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("perf", help="measure scoring speed and memory against a naive pipeline and the compute floor")
    p.add_argument("--pairs", type=int, default=None,
                   help="pairs to measure (default: 200 synthetic; with --annotations, all rows, else the first N)")
    p.add_argument("--size", default="256x256", metavar="WxH", help="synthetic image size (default 256x256)")
    p.add_argument("--per-original", type=int, default=4,
                   help="synthetic anonymizations per original (default 4, as in the paper)")
    p.add_argument("--annotations", type=Path, default=None, help="measure on this dataset instead of synthetic pairs")
    p.add_argument("--root", type=Path, default=None, help="image root of --annotations (default: the CSV's folder)")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated pair metrics (default: {','.join(PAPER_METRICS)}; `bench metrics` "
                        "lists them all)")
    p.add_argument("--checkpoint-ha1", type=Path, default=None,
                   help="PerceptAnon HA1 checkpoint (default: a stand-in ResNet-50, if perceptanon_ha1 is measured)")
    p.add_argument("--checkpoint-ha2", type=Path, default=None,
                   help="PerceptAnon HA2 checkpoint (default: a stand-in ResNet-50, if perceptanon_ha2 is measured)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=32, help="the runner's pairs per batch (default 32)")
    p.add_argument("--workers", type=int, default=0, help="the runner's image-decoding processes (default 0)")
    p.add_argument("--baseline-pairs", type=int, default=None,
                   help="pairs the naive baseline is measured on, at most (default 20)")
    p.add_argument("--phases", default=None,
                   help="comma-separated subset of naive,runner,per-metric,floor (default: all)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each phase this many times and count the fastest (default 1; a shared machine's "
                        "load only slows)")
    p.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="float32 (default), or autocast every phase to bfloat16 (CPU or CUDA) or float16 (CUDA only); "
                        "for timing only: scoring always runs in float32")
    p.add_argument("--out", type=Path, default=None,
                   help="keep data, weights and stores here and write perf.json / perf.txt (default: a temp folder, "
                        "removed; only the table is printed)")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON report (every figure) here")
    p.set_defaults(func=_cmd_perf)


def _cmd_perf(args: argparse.Namespace) -> int:
    from bench.flows import perf
    from metrics.registry import parse_metric_list

    with perf.work_folder(args.out) as work:
        report = perf.run_perf(
            metric_names=parse_metric_list(args.metrics),
            work=work,
            pairs=args.pairs,
            size=perf.parse_size(args.size),
            per_original=args.per_original,
            annotations=args.annotations,
            root=args.root,
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            baseline_pairs=perf.DEFAULT_BASELINE_PAIRS if args.baseline_pairs is None else args.baseline_pairs,
            phases=perf.parse_phases(args.phases),
            precision=args.precision,
            checkpoints={"checkpoint_ha1": args.checkpoint_ha1, "checkpoint_ha2": args.checkpoint_ha2},
            repeat=args.repeat,
            command=_command_line(args),
        )
    print("\n".join(report.table_lines()))
    for path in perf.write_report(report, args.json, args.out):
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- dataset
def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="make a benchmark set (images/, pii.json, masks/) from a folder of photos")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="detect faces (MTCNN) in every photo under FOLDER; a folder per person "
                                           "gives identities.json")
    init.add_argument("folder", type=Path, help="folder of photos (LFW's FOLDER/<person>/<photo> layout or flat)")
    init.add_argument("--out", type=Path, default=None, help="the new set's folder (default: FOLDER-bench beside it)")
    init.add_argument("--device", default="cpu", help="auto, cpu or cuda:N (default: cpu)")
    p.set_defaults(func=_cmd_dataset, uses_torch=True)


def _cmd_dataset(args: argparse.Namespace) -> int:
    from bench.flows.dataset_init import init_dataset

    # Paths are absolute already (_resolve_paths); resolving follows a symlinked folder to its target.
    folder = args.folder.resolve()
    out = (args.out or folder.with_name(folder.name + "-bench")).resolve()
    result = init_dataset(folder, out, device=args.device)
    print("\n".join(result.summary_lines()))
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="bench",
        description="Benchmark image anonymization against human anonymity judgments (PerceptAnon).",
    )
    from bench import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_correlate(sub)
    _add_report(sub)
    _add_validate(sub)
    _add_splits(sub)
    _add_score(sub)
    _add_metrics(sub)
    _add_weights(sub)
    _add_perf(sub)
    _add_train(sub)
    _add_explain(sub)
    _add_leaderboard(sub)
    _add_dataset(sub)
    return parser


def main(argv: list[str] | None = None, *, owns_process: bool | None = None) -> int:
    """`bench ARGV...`; `owns_process` (default: whether ARGV is the process's own command line,
    argv None) lets the command tune the process (`_settle`); a library or test caller's is
    left as it was."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _resolve_paths(args)
    args.command_line = shlex.join(["bench", *(sys.argv[1:] if argv is None else argv)])
    # module:attr references (methods, metrics, statistics, formats, --utility) are found in the
    # current folder, searched last, whether the suite was started as `bench` or `python -m bench`.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        _check_inputs(args)
        if argv is None if owns_process is None else owns_process:
            _settle(args)
        code = _call(args)
        sys.stdout.flush()  # a reader that left surfaces here, where it is handled, not at exit
        return code
    except BrokenPipeError:  # `bench score A B | head -1`: the reader left; nothing to report to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141
    except (BenchError, MetricError) as exc:
        print(f"bench: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the disk or the OS refused (read-only, full, name too long, ...): name the path
        where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
        reason = exc.strerror or type(exc).__name__
        print(printable(f"bench: error: {where or 'a file'}: {reason}; check the path, its permissions and "
                        "the free disk space (files written before this one are complete)"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; results written so far are kept and a re-run resumes", file=sys.stderr)
        return 130


def _settle(args: argparse.Namespace) -> None:
    """For a command that computes with torch: import it now and exclude what exists from
    garbage collection (gc.freeze); keep large freed blocks for the next forward pass
    (`bench.allocator`).

    Importing torch and torchvision leaves about 330,000 objects that live as long as the
    process. Every full collection walks all of them (about 0.1 s each on a 2-core EPYC), and
    importing pandas and the metrics right after triggers several: frozen, `import pandas`
    after torch took 0.18 s instead of 0.37 s. Frozen objects are never freed, which is what
    modules' objects are anyway; so only a process started as `bench` does this.
    """
    if not getattr(args, "uses_torch", False):
        return
    import gc
    import importlib

    from bench.allocator import keep_large_blocks

    importlib.import_module("torch")  # for its objects to be frozen; the command imports it again
    gc.freeze()
    keep_large_blocks()


def _call(args: argparse.Namespace) -> int:
    """The subcommand; under torchrun (which sets WORLD_SIZE in every process it starts), one
    job of all its processes."""
    if os.environ.get("WORLD_SIZE", "1") == "1":
        return int(args.func(args) or 0)
    from bench.scoring import dist

    return dist.run_command(lambda: int(args.func(args) or 0), name=args.command,
                            mode=getattr(args, "distributed", None), device=getattr(args, "device", "auto"),
                            backend=getattr(args, "backend", None), timeout_s=getattr(args, "dist_timeout", None))


# --------------------------------------------------------------------------- python -m bench.flows.startup
def startup_main(argv: list[str] | None = None) -> int:
    """`python -m bench.flows.startup`: its own command line, parsed here like every other."""
    import tempfile

    from bench.flows import startup

    parser = argparse.ArgumentParser(prog="python -m bench.flows.startup", description=startup.__doc__.splitlines()[0])
    parser.add_argument("--metrics", default=",".join(startup.MEASURED_METRICS), help="comma-separated pair metrics")
    parser.add_argument("--repeat", type=int, default=startup.DEFAULT_REPEAT,
                        help="fresh runs (the first fills the cache)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-startup-") as work:
            report = startup.measure_startup(Path(work), [m for m in args.metrics.split(",") if m],
                                             repeat=args.repeat, device=args.device, threads=args.threads)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print("\n".join(report.lines()))
    if args.json:
        from metrics.atomic import write_atomic
        from metrics.schema import to_json_text

        write_atomic(_absolute(args.json), to_json_text(report.to_json(), indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
