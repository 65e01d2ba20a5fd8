"""The leaderboard: cell statistics, merging runs, `bench leaderboard`, caveats in every output."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from bench.analysis.leaderboard import merge_records, summarize
from bench.cli import main
from bench.flows.benchmark import BenchmarkConfig, run_benchmark
from bench.options import Bootstrap, ScoringOptions
from tests.bench.benchset import BUILTINS, SIZES, THIS, write_benchmark_set


# ----------------------------------------------------------------------------- cells
def test_infinite_and_nan_values_are_counted_not_averaged():
    entry = summarize([math.inf, 10.0, 20.0, math.nan, 30.0], ["a", "b", "c", "d", "e"], n_boot=200, seed=0)
    assert entry.value == pytest.approx(20.0)
    assert (entry.n, entry.n_infinite) == (3, 1)
    assert "1 NaN value(s) left out" in entry.note
    assert 10.0 <= entry.ci_low <= entry.value <= entry.ci_high <= 30.0

    only_infinite = summarize([math.inf, math.inf], ["a", "b"], n_boot=50, seed=0)
    assert not only_infinite.defined and (only_infinite.n, only_infinite.n_infinite) == (0, 2)


def test_the_ci_matches_the_normal_approximation_for_a_large_sample():
    # Independent reference: mean +- 1.96 standard errors; the percentile bootstrap of a mean
    # of 400 normal values agrees within 10% of the half-width.
    values = np.random.default_rng(1).normal(5.0, 2.0, 400)
    entry = summarize(values, [str(i) for i in range(400)], n_boot=4000, seed=3)
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert entry.value == pytest.approx(values.mean())
    assert entry.ci_low == pytest.approx(values.mean() - half_width, abs=0.1 * half_width)
    assert entry.ci_high == pytest.approx(values.mean() + half_width, abs=0.1 * half_width)


def test_the_ci_is_seeded():
    values, clusters = [1.0, 4.0, 2.0, 8.0, 5.0], list("abcde")
    first = summarize(values, clusters, n_boot=300, seed=7)
    assert summarize(values, clusters, n_boot=300, seed=7) == first
    assert summarize(values, clusters, n_boot=300, seed=8) != first


# ----------------------------------------------------------------------------- merging
def test_merged_records_keep_each_methods_latest_run_and_each_metrics_latest_version():
    old = {"dataset": {"name": "d"}, "methods": {"a": {"identity": "a1"}, "b": {"identity": "b1"}},
           "metrics": {"mse": {"status": "ok", "key": "mse@1"}, "lpips": {"status": "ok", "key": "lpips@1"}}}
    new = {"dataset": {"name": "d"}, "methods": {"a": {"identity": "a2"}},
           "metrics": {"mse": {"status": "ok", "key": "mse@2"}, "lpips": {"status": "unavailable", "key": None}}}
    merged = merge_records([old, new])
    assert {name: entry["identity"] for name, entry in merged["methods"].items()} == {"a": "a2", "b": "b1"}
    assert merged["metrics"]["mse"]["key"] == "mse@2"
    assert merged["metrics"]["lpips"]["key"] == "lpips@1"  # an unavailable run does not hide computed values


# ----------------------------------------------------------------------------- bench leaderboard
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two benchmark runs of different methods into one store."""
    tmp_path = tmp_path_factory.mktemp("runs")
    benchset = write_benchmark_set(tmp_path / "set")
    common = BenchmarkConfig(methods=(), dataset=benchset, out=tmp_path / "runs", bootstrap=Bootstrap(n_boot=50),
                             scoring=ScoringOptions(metrics=f"mse,psnr,ssim,{THIS}:StandInDistance",
                                                    store=tmp_path / "r.sqlite", progress=False))
    first = run_benchmark(replace(common, methods=(f"{THIS}:invert",)))
    second = run_benchmark(replace(common, methods=(f"{THIS}:identity",)))
    return tmp_path, benchset, first, second


def test_bench_leaderboard_shows_every_method_ever_run(two_runs, capsys):
    tmp_path, benchset, _, second = two_runs
    assert {row.method for row in second.board.rows} == {*BUILTINS, f"{THIS}:identity"}  # a run shows its own
    code = main(["leaderboard", "--dataset", str(benchset), "--store", str(tmp_path / "r.sqlite"),
                 "--out", str(tmp_path / "board"), "--n-boot", "50"])
    assert code == 0
    document = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert {row["method"] for row in document["rows"]} == {*BUILTINS, f"{THIS}:invert", f"{THIS}:identity"}
    assert document["sort_metric"] == "ssim"  # no PerceptAnon, LPIPS or Inception distance here
    assert f"| local | {THIS}:invert |" in capsys.readouterr().out


def test_rows_are_sorted_most_anonymous_first_within_each_scope(two_runs):
    tmp_path, benchset, _, _ = two_runs
    assert main(["leaderboard", "--dataset", str(benchset), "--store", str(tmp_path / "r.sqlite"),
                 "--out", str(tmp_path / "by-mse"), "--sort", "mse", "--n-boot", "50"]) == 0
    rows = json.loads((tmp_path / "by-mse" / "leaderboard.json").read_text())["rows"]
    methods = len(BUILTINS) + 2  # the built-ins (with the identity reference) and the two runs' methods
    assert [row["scope"] for row in rows] == ["global"] * methods + ["local"] * methods
    for scope in ("global", "local"):
        values = [row["cells"]["mse"]["value"] for row in rows if row["scope"] == scope]
        assert values == sorted(values, reverse=True)  # higher MSE = more anonymous


def test_psnr_of_identical_images_is_never_averaged(two_runs):
    _, _, _, second = two_runs
    cells = json.loads(second.written["json"].read_text())["rows"]
    identity = [row["cells"]["psnr"] for row in cells if row["method"] == f"{THIS}:identity"]
    assert all(cell["value"] is None and cell["n_infinite"] == len(SIZES) for cell in identity)
    markdown = second.written["markdown"].read_text()
    assert f"all {len(SIZES)} pairs infinite (identical images: PSNR = +inf)" in markdown


def test_stand_in_weights_are_marked_in_every_output(two_runs):
    _, _, _, second = two_runs
    texts = {kind: path.read_text() for kind, path in second.written.items()}
    for kind in ("markdown", "latex", "json", "html", "csv"):
        assert "computed with unverified or stand-in weights" in texts[kind], kind
    assert "Stand-in dist.† ↑" in texts["markdown"]
    assert r"Stand-in dist.\textsuperscript{\dag}" in texts["latex"]
    rows = list(csv.DictReader(io.StringIO(texts["csv"])))
    stand_in = [row for row in rows if row["metric"].endswith("StandInDistance")]
    assert stand_in and all(row["weights_verified"] == "False" and "†" in row["metric_label"]
                            and "computed with unverified or stand-in weights" in row["note"] for row in stand_in)
    assert all(row["weights_verified"] == "True" for row in rows if row["metric"] == "mse")
    assert {row["weights_status"] for row in stand_in} == {"stand-in"}
    assert {row["weights_status"] for row in rows if row["metric"] == "mse"} == {"none"}  # MSE needs no weights


def test_the_identity_reference_row_shows_what_no_change_scores(two_runs):
    _, _, _, second = two_runs
    document = json.loads(second.written["json"].read_text())
    identity = [row for row in document["rows"] if row["method"] == "identity"]
    assert {row["scope"] for row in identity} == {"global", "local"}
    for row in identity:
        assert row["cells"]["mse"]["value"] == 0.0
        assert row["cells"]["psnr"]["value"] is None and row["cells"]["psnr"]["n_infinite"] == len(SIZES)
        assert row["cells"]["ssim"]["value"] == pytest.approx(1.0)
    assert any(note.startswith("identity: reference row, the originals copied unchanged") for note in document["notes"])


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--sort", "lpips"], "--sort 'lpips' is not a leaderboard column; choose from: mse, psnr, ssim"),
        (["--store", "/no/such/store.sqlite"], "no results store at /no/such/store.sqlite"),
    ],
)
def test_bench_leaderboard_errors_are_one_line(two_runs, capsys, arguments, expected):
    tmp_path, benchset, _, _ = two_runs
    options = {"--store": str(tmp_path / "r.sqlite"), "--out": str(tmp_path / "x")}
    options.update(dict(zip(arguments[::2], arguments[1::2])))
    code = main(["leaderboard", "--dataset", str(benchset), *[item for pair in options.items() for item in pair]])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


def test_bench_leaderboard_of_a_dataset_never_run(two_runs, tmp_path, capsys):
    store_path = two_runs[0] / "r.sqlite"
    other = write_benchmark_set(tmp_path / "other", seed=5)
    assert main(["leaderboard", "--dataset", str(other), "--store", str(store_path)]) == 2
    assert "no benchmark run of other" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the privacy block
def _fake_attacks(benchmark_set, table, out_root, device):
    """Attack results shaped like bench.scoring.privacy's, without its models: the identity method is
    found and re-identified everywhere, every other method nowhere; LBP did not run."""
    from metrics.attacks import (
        AdaptiveAttack, DetectionExample, Identification, PrivacyReport, PrivacyRow, Rate, verify,
    )

    rows = []
    for (method, scope), group in table.frame.groupby(["method", "scope"], sort=False):
        n = len(group)
        found = n if method == "identity" else 0
        ranks = np.ones(n) if found else np.full(n, np.inf)
        genuine = np.zeros(n) if found else np.full(n, -np.inf)
        rows.append(PrivacyRow(
            method=method, scope=scope, n_pairs=n, detection=Rate.of(found, n),
            identification=Identification(ranks=ranks, n_identities=n, not_found=n - found),
            verification=verify(genuine, np.full(3 * n, -1.0)),
            adaptive=AdaptiveAttack(rank1=None, reason="no identity has two photos: nothing to train on")))
    first = table.frame[table.frame["scope"] == "global"]
    image = first["image"].iat[0]
    members = first[first["image"] == image]
    example = DetectionExample(
        label=image, original=str(table.root / members["original"].iat[0]), original_faces=((1, 1, 9, 9, 0.99),),
        anonymized=tuple((m, str(table.root / a), ((1, 1, 9, 9, 0.9),) if m == "identity" else ())
                         for m, a in zip(members["method"], members["anonymized"])))
    return PrivacyReport(rows=rows, examples=[example],
                         unavailable={"detection (LBP cascade)": "lbp_frontal_face not found; reinstall scikit-image"})


@pytest.fixture(scope="module")
def privacy_runs(tmp_path_factory):
    """A run with the (fake) attacks, then one of another method without them, into one store."""
    import bench.flows.benchmark

    tmp_path = tmp_path_factory.mktemp("privacy")
    benchset = write_benchmark_set(tmp_path / "set")
    common = BenchmarkConfig(methods=(), out=tmp_path, dataset=benchset, bootstrap=Bootstrap(n_boot=50),
                             scoring=ScoringOptions(metrics="mse,psnr", store=tmp_path / "r.sqlite", progress=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench.flows.benchmark, "_privacy", _fake_attacks)
        first = run_benchmark(replace(common, methods=(f"{THIS}:invert",), privacy=True, out=tmp_path / "first"))
    second = run_benchmark(replace(common, methods=(f"{THIS}:identity",), privacy=False, out=tmp_path / "second"))
    return tmp_path, benchset, first, second


def test_the_privacy_block_is_in_every_format_with_directions_and_cis(privacy_runs):
    _, _, first, _ = privacy_runs
    block = first.board.privacy
    assert [info.name for info in block.columns] == [  # LBP did not run: no column, a not-computed note
        "detection_mtcnn", "rank1_naive", "rank5_naive", "rank1_adaptive", "tar_at_far_0.01", "tar_at_far_0.001"]
    assert all(not info.higher_is_more_anonymous for info in block.columns)
    texts = {kind: path.read_text() for kind, path in first.written.items() if kind != "privacy_roc"}
    markdown = texts["markdown"]
    assert "### Privacy attacks:" in markdown and "MTCNN detection rate ↓" in markdown and "rank-1 adaptive ↓" in markdown
    n = len(SIZES)
    privacy_part = markdown[markdown.index("### Privacy attacks"):]
    assert f"| global | identity | 1.00 [0.51, 1.00] (n = {n}) |" in privacy_part  # 4/4, Wilson interval
    assert "**" not in privacy_part  # the most anonymous value (0) is shared by several rows: a tie, no bold
    assert "detection (LBP cascade): not computed — lbp\\_frontal\\_face not found; reinstall scikit-image" in markdown
    assert "no identity has two photos" in markdown
    assert texts["latex"].count(r"\begin{table}") == 2 and r"\label{tab:privacy-set}" in texts["latex"]
    document = json.loads(texts["json"])
    rows = {(row["method"], row["scope"]): row["cells"] for row in document["privacy"]["rows"]}
    identity = rows[("identity", "global")]["rank1_naive"]
    assert identity["value"] == 1.0 and identity["level"] == "privacy" and identity["n"] == n
    assert identity["ci_low"] == pytest.approx(0.5101, abs=1e-4) and identity["ci_high"] == 1.0
    assert rows[("mask", "global")]["detection_mtcnn"]["value"] == 0.0
    assert {m["name"]: m["higher_is_more_anonymous"] for m in document["privacy"]["metrics"]}["rank1_naive"] is False
    csv_rows = [row for row in csv.DictReader(io.StringIO(texts["csv"])) if row["level"] == "privacy"]
    assert {row["metric"] for row in csv_rows} >= {"detection_mtcnn", "rank1_adaptive", "tar_at_far_0.001"}
    assert any(row["metric"] == "detection (LBP cascade)" and "not computed" in row["note"]
               for row in csv.DictReader(io.StringIO(texts["csv"])))
    html = texts["html"]
    assert html.count('id="privacy-') == 1 and "MTCNN detection rate" in html
    assert "1 face found" in html and "0 faces found" in html and "Face detector's boxes" in html
    # The detail files are still written beside the board, and leaderboard.md is not appended twice.
    assert {"privacy_markdown", "privacy_json", "privacy_html", "privacy_roc"} <= set(first.written)
    assert markdown.count("### Privacy attacks") == 1


def test_bench_leaderboard_rebuilds_the_privacy_block_from_the_store(privacy_runs):
    tmp_path, benchset, first, second = privacy_runs
    assert second.board.privacy is None  # its own run had no attacks
    assert main(["leaderboard", "--dataset", str(benchset), "--store", str(tmp_path / "r.sqlite"),
                 "--out", str(tmp_path / "board"), "--n-boot", "50"]) == 0
    document = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    run = json.loads(first.written["json"].read_text())
    cells = {(row["method"], row["scope"]): row["cells"] for row in document["privacy"]["rows"]}
    # The first run's methods, the built-ins re-run without the attacks on the same images
    # included: the same cells as in its own board.
    for row in run["privacy"]["rows"]:
        assert cells[(row["method"], row["scope"])] == row["cells"]
    late = cells[(f"{THIS}:identity", "global")]["detection_mtcnn"]
    assert late["value"] is None and "privacy attacks not run for this method" in late["note"]
    html = (tmp_path / "board" / "leaderboard.html").read_text()
    assert "1 face found" in html  # the boxes come from the store too


def test_a_recorded_pair_list_reads_back_as_named_fields():
    """Stores keep a pair as a list in field order, as every record written so far does."""
    from bench.data.benchmark_set import BenchmarkPair

    stored = ["originals/coco/a.png", "local", "0a" * 32, "0b" * 32, "_originals/local/coco/a.png", "blur/local/coco/a.png"]
    pair = BenchmarkPair.from_stored(stored)
    assert (pair.image, pair.scope, pair.original_path, pair.anonymized_path) == (
        "originals/coco/a.png", "local", "_originals/local/coco/a.png", "blur/local/coco/a.png")
    assert pair.key == ("0a" * 32, "0b" * 32)
    assert pair.stored() == stored


def test_a_metric_another_run_added_is_not_requested_rather_than_missing(tmp_path):
    from bench.analysis.leaderboard import stored_leaderboard

    benchset = write_benchmark_set(tmp_path / "set")
    common = BenchmarkConfig(methods=(), dataset=benchset, out=tmp_path / "runs", bootstrap=Bootstrap(n_boot=20),
                             scoring=ScoringOptions(metrics="mse", store=tmp_path / "r.sqlite", progress=False))
    run_benchmark(replace(common, methods=(f"{THIS}:invert",)))
    run_benchmark(replace(common, methods=(f"{THIS}:identity",), scoring=replace(common.scoring, metrics="mse,psnr")))
    board, _, _ = stored_leaderboard(dataset=str(benchset), store_path=tmp_path / "r.sqlite", out=tmp_path / "board",
                                     leaderboards_dir=tmp_path / "boards", n_boot=20, seed=0)
    notes = {(row.method, row.scope): row.entries["psnr"].note for row in board.rows}
    assert notes[(f"{THIS}:invert", "global")].startswith("not requested in this method's run")
    assert notes[(f"{THIS}:identity", "global")] == ""
