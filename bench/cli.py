"""The `bench` command line: thin subcommands that parse options and call library functions.

No logic lives here. Every `_cmd_*` returns the process exit code. A `BenchError` anywhere
below becomes one line on stderr and exit code 2; nothing user-caused shows a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import BenchError
from metrics.errors import MetricError


# --------------------------------------------------------------------------- validate
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check an annotation file and its images, print a summary")
    p.add_argument("annotations", type=Path, help="HA1.csv / HA2.csv (released format) or a generic CSV")
    p.add_argument("--root", type=Path, default=None, help="image root (default: the CSV's folder)")
    p.add_argument("--columns", default=None,
                   help="column mapping for a generic CSV, e.g. original=src,anonymized=dst,score_mean=mos")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept absolute paths and paths that leave --root")
    p.add_argument("--size-policy", choices=("error", "resize"), default="error",
                   help="when original and anonymized sizes differ (default: error)")
    p.add_argument("--no-images", action="store_true", help="check the table only, do not open images")
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from bench import dataset

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
    p.add_argument("--seed", type=int, default=42, help="random_state of the split (paper: 42)")
    p.set_defaults(func=_cmd_splits)


def _cmd_splits(args: argparse.Namespace) -> int:
    from bench import dataset, protocol

    for path in args.annotations:
        table = dataset.load_pairs(path, root=args.root)
        for line in protocol.write_splits(table, args.out, splits=args.split, seed=args.seed):
            print(line)
    return 0


# --------------------------------------------------------------------------- score
def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score every annotated pair with pair metrics (reusing stored scores)")
    p.add_argument("--annotations", type=Path, required=True, help="HA1.csv / HA2.csv or a generic CSV")
    p.add_argument("--root", type=Path, default=None, help="image root (default: the CSV's folder)")
    p.add_argument("--columns", default=None,
                   help="column mapping for a generic CSV, e.g. original=src,anonymized=dst,score_mean=mos")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept absolute paths and paths that leave --root")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metric names or module:Class (default: mse,psnr,ssim,lpips,inception_dist)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per batch (never changes a value; default 32)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes (default 0: in-process)")
    p.add_argument("--size-policy", choices=("error", "resize"), default="error",
                   help="when original and anonymized sizes differ (default: error)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for scores.csv / scores.json (default: runs/score-<annotation file stem>)")
    p.add_argument("--store", type=Path, default=None, help="results store (default: <out>/results.sqlite)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    import shlex

    from bench import dataset, runner
    from bench.store import DEFAULT_STORE_NAME, ResultsStore
    from metrics.registry import parse_metric_list

    metric_names = parse_metric_list(args.metrics)
    table = dataset.load_pairs(
        args.annotations,
        root=args.root,
        columns=dataset.parse_column_mapping(args.columns),
        allow_outside_root=args.allow_outside_root,
    )
    out = args.out or Path("runs") / f"score-{args.annotations.stem}"
    with ResultsStore(args.store or out / DEFAULT_STORE_NAME) as store:
        result = runner.score_pairs(
            table,
            metric_names,
            store=store,
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            size_policy=args.size_policy,
            progress=not args.no_progress,
            command=shlex.join(["bench", *sys.argv[1:]]),
        )
    csv_path, json_path = runner.write_outputs(result, out)
    print("\n".join(result.summary_lines()))
    print(f"wrote {csv_path} and {json_path}; results store {result.store_path}")
    return 0 if result.complete else 1


# --------------------------------------------------------------------------- weights
def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list, download, verify or import pretrained weight files")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every known weight file, its status here, licence and URL")
    fetch = actions.add_parser("fetch", help="download a weight file into the cache, checking its sha256")
    fetch.add_argument("name", help="weights name, as `bench weights list` shows it")
    fetch.add_argument("--url", default=None, help="download from this mirror instead (still hash-checked)")
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
        failed = ("corrupt", "missing") if args.name else ("corrupt",)
        return 1 if any(text.startswith(failed) for _, text in lines) else 0
    resolved = (weights.fetch(args.name, url=args.url) if args.action == "fetch"
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
    p.add_argument("--dataset", default="fixtures",
                   help="benchmark set for --method: 'fixtures' (the demo set) or a folder with images/ and pii.json")
    p.add_argument("--annotations", type=Path, action="append", default=None,
                   help="annotated pairs to evaluate (repeatable; default: the demo set's HA1.csv and HA2.csv)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/demo, runs/evaluate or runs/bench)")
    _add_evaluation_options(p)
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.method:
        from bench import benchmark

        return benchmark.run_from_cli(args)
    return _evaluate(args, splits=None)


def _evaluate(args: argparse.Namespace, *, splits: list[str] | None) -> int:
    from bench import evaluate

    evaluations = evaluate.run_demo_or_annotations(
        annotations=args.annotations, root=args.root, metrics_spec=args.metrics,
        checkpoint_ha1=args.checkpoint_ha1, checkpoint_ha2=args.checkpoint_ha2, splits=splits,
        out=args.out, store_path=args.store, device=args.device, batch_size=args.batch_size,
        workers=args.workers, size_policy=args.size_policy, n_boot=args.n_boot, seed=args.seed,
        progress=not args.no_progress,
    )
    for evaluation in evaluations:
        print(f"== {evaluation.name}")
        print("\n".join(evaluation.score_summary))
        for line in evaluation.skipped_splits:
            print(f"  split skipped: {line}")
        print(f"  tables: {evaluation.out_dir / 'tables'}")
        print(f"  report: {evaluation.report}")
    return 0


# --------------------------------------------------------------------------- correlate / report
def _add_evaluation_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `run` (without --method) and `correlate`."""
    p.add_argument("--root", type=Path, default=None, help="image root of --annotations (default: the CSV's folder)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metric names (default: mse,psnr,ssim,lpips,inception_dist)")
    p.add_argument("--checkpoint-ha1", type=Path, default=None, help="PerceptAnon HA1 checkpoint to add as a metric")
    p.add_argument("--checkpoint-ha2", type=Path, default=None, help="PerceptAnon HA2 checkpoint to add as a metric")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per batch (never changes a value; default 32)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes (default 0)")
    p.add_argument("--size-policy", choices=("error", "resize"), default="error",
                   help="when original and anonymized sizes differ (default: error)")
    p.add_argument("--store", type=Path, default=None, help="results store (default: <out>/results.sqlite)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for confidence intervals")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (splits always use the paper's 42)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_correlate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("correlate", help="correlate metrics with human scores per split and granularity, with a report")
    p.add_argument("--annotations", type=Path, action="append", required=True,
                   help="HA1.csv / HA2.csv (repeatable); each gets its own folder under --out")
    p.add_argument("--split", action="append", default=None, help="only these splits (repeatable; default: all ten)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: runs/evaluate)")
    _add_evaluation_options(p)
    p.set_defaults(func=_cmd_correlate)


def _cmd_correlate(args: argparse.Namespace) -> int:
    return _evaluate(args, splits=args.split)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="re-render tables, plots and the HTML report from stored results")
    p.add_argument("results", type=Path, help="a results folder written by `bench correlate` or `bench run`")
    p.add_argument("--out", type=Path, default=None, help="report file (default: RESULTS/report.html)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from bench import evaluate

    print(f"report: {evaluate.render(args.results, args.out)}")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    _add_weights(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (BenchError, MetricError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted; results written so far are kept and a re-run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
