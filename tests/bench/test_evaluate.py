"""The whole evaluation flow on the demo set: scores -> correlations -> tables, plots, report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from bench import evaluate, protocol, runner
from bench.store import ResultsStore
from tests.browser import CONSOLE_ERROR, needs_chromium, render

REPO = Path(__file__).resolve().parents[2]
FAST_METRICS = ("mse", "psnr", "ssim")
# Characters that are markup in HTML, Markdown or LaTeX.
ODD_DATASET = "v<o>c&_%$#{x}"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    with ResultsStore(out / "results.sqlite") as store:
        evaluation = evaluate.evaluate(
            evaluate.DEMO_DIR / "HA1.csv", out_dir=out / "HA1", store=store, root=evaluate.DEMO_ROOT,
            metrics=FAST_METRICS, n_boot=200, simulated=True, progress=False,
        )
    return evaluation


def test_writes_scores_tables_plots_and_report(demo_run):
    folder = demo_run.out_dir
    for name in ("scores.csv", "results.json", "pairs.csv", "report.html", "tables/tables.md",
                 "tables/correlations.csv", "plots/rank_plot.png"):
        assert (folder / name).is_file(), name
    bundle = json.loads((folder / "results.json").read_text())
    assert bundle["provenance"]["simulated_scores"] is True
    assert {m["name"] for m in bundle["metrics"]} == set(FAST_METRICS)
    assert "SIMULATED" in (folder / "tables" / "tables.md").read_text()


def test_correlations_equal_scipy_on_the_split_test_vectors(demo_run):
    bundle, pairs = evaluate.load_bundle(demo_run.out_dir)
    table = bundle["correlations"]
    split = protocol.make_split(pairs, "all")
    test = pairs.iloc[split.test]
    for metric, sign in (("mse", 1), ("ssim", -1)):
        rho = stats.spearmanr(sign * test[metric], test["score_mean"]).statistic
        tau = stats.kendalltau(sign * test[metric], test["score_mean"]).statistic
        row = table[(table.split == "all") & (table.granularity == "mean") & (table.metric == metric)]
        assert row.loc[row.statistic == "spearman", "value"].item() == pytest.approx(rho, abs=1e-12)
        assert row.loc[row.statistic == "kendall", "value"].item() == pytest.approx(tau, abs=1e-12)


def test_report_re_renders_without_recomputing(demo_run, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("`bench report` must not score anything")

    monkeypatch.setattr(runner, "score_pairs", refuse)
    out = evaluate.render(demo_run.out_dir, tmp_path / "again.html")
    assert out.read_text(encoding="utf-8").count('<table class="results">') > 0


def test_rerun_reuses_every_stored_score(tmp_path):
    store_path = tmp_path / "results.sqlite"
    runs = []
    for _ in range(2):
        with ResultsStore(store_path) as store:
            table = evaluate.dataset.load_pairs(evaluate.DEMO_DIR / "HA2.csv", root=evaluate.DEMO_ROOT)
            runs.append(runner.score_pairs(table, ["mse"], store=store, progress=False))
    assert runs[0].metrics[0].computed == 48 and runs[1].metrics[0].computed == 0
    assert runs[1].metrics[0].reused == 48


def test_names_with_markup_characters_are_escaped_everywhere(tmp_path):
    frame = pd.read_csv(evaluate.DEMO_DIR / "HA1.csv")
    frame["dataset"] = frame["dataset"].replace("voc", ODD_DATASET)
    annotations = tmp_path / "HA1.csv"
    frame.to_csv(annotations, index=False)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        evaluation = evaluate.evaluate(annotations, out_dir=tmp_path / "out", store=store, root=evaluate.DEMO_ROOT,
                                       metrics=("mse",), n_boot=50, progress=False)
    page = evaluation.report.read_text(encoding="utf-8")
    assert ODD_DATASET not in page and "v&lt;o&gt;c&amp;_%$#{x}" in page
    for tex in (evaluation.out_dir / "tables" / "latex").glob("*.tex"):
        text = tex.read_text(encoding="utf-8")
        assert "<o>" not in text and text.count("{") == text.count("}")
    # A held-out dataset with no rows is reported as empty, never as a correlation of 0.
    bundle, _ = evaluate.load_bundle(evaluation.out_dir)
    loov = bundle["correlations"][bundle["correlations"].split == "loov-voc"]
    assert loov["value"].isna().all() and (loov["reason"] == "empty test set").all()


@needs_chromium
def test_demo_report_opens_in_chromium_with_tables_and_plots(demo_run, tmp_path):
    rendered = render(demo_run.report, tmp_path)
    assert not CONSOLE_ERROR.search(rendered.log), rendered.log[-2000:]
    assert rendered.dom.count('<table class="results">') >= 10
    assert rendered.dom.count('src="data:image/png;base64,') >= 4


def test_bench_run_cli_on_the_demo_set(tmp_path):
    """The README's main job, through the real entry point (fast metrics, few resamples), on a
    machine without AlexNet weights: LPIPS is named as not computed, with the reason and the fix,
    in tables.md, report.html and not_computed.csv."""
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--metrics", "mse,psnr,lpips", "--n-boot", "50", "--out", str(out),
         "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "BENCH_WEIGHTS_DIR": str(no_weights)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    for name in ("HA1", "HA2"):
        assert f"report: {out / name / 'report.html'}" in done.stdout
        markdown = (out / name / "tables" / "tables.md").read_text(encoding="utf-8")
        html = (out / name / "report.html").read_text(encoding="utf-8")
        for text in (markdown, html):
            assert "LPIPS: not computed" in text or "<strong>LPIPS</strong>: weights alexnet not found" in text
            assert "weights alexnet not found" in text and "bench weights fetch alexnet" in text
        missing = pd.read_csv(out / name / "tables" / "not_computed.csv")
        assert missing["name"].tolist() == ["lpips"] and "bench weights fetch alexnet" in missing["reason"].item()
    ha2 = pd.read_csv(out / "HA2" / "tables" / "correlations.csv", comment=None)
    assert (ha2.loc[ha2.split == "anon-mask", "reason"] == "empty test set").all()
    assert set(ha2["weights_status"]) == {"none"}  # MSE and PSNR need no weights


def test_demo_tables_mark_few_originals_and_print_intervals_as_low_high(tmp_path):
    """HA2's loov-* splits hold 4 originals: marked, no interval, a footnote saying why; HA1's
    `all` split (10 originals) prints its percentile interval as [low, high], never as ±.
    MSE and PSNR (monotone transforms of each other) get the same tau and the same bold."""
    with ResultsStore(tmp_path / "results.sqlite") as store:
        for name in ("HA1", "HA2"):
            evaluate.evaluate(evaluate.DEMO_DIR / f"{name}.csv", out_dir=tmp_path / name, store=store,
                              root=evaluate.DEMO_ROOT, metrics=("mse", "psnr"), n_boot=100, simulated=True,
                              progress=False)
    table = (tmp_path / "HA2" / "tables" / "tables.md").read_text(encoding="utf-8")
    loov = next(line for line in table.splitlines() if line.startswith("| loov-coco | 12 / 4 | ρ |"))
    assert "‡" in loov and "[" not in loov  # marked, and no interval
    assert "no interval: only 4 original(s) in this split" in table
    assert "‡ fewer than 10 originals in this split" in table
    ha1 = (tmp_path / "HA1" / "tables" / "tables.md").read_text(encoding="utf-8")
    row = next(line for line in ha1.splitlines() if line.startswith("| all | 13 / 10 | ρ |"))
    assert re.search(r"\[−?\d\.\d{3}, −?\d\.\d{3}\]", row) and "±" not in ha1 and "‡" not in row
    assert "Convention: default (oriented)" in ha1 and "Wang et al. 2004" in ha1
    correlations = pd.read_csv(tmp_path / "HA1" / "tables" / "correlations.csv")
    kendall = correlations[correlations.statistic == "kendall"].pivot_table(
        index=["split", "granularity", "form"], columns="metric", values="value")
    assert (kendall["mse"] - kendall["psnr"]).abs().max() < 1e-12
    for line in ha1.splitlines():
        if line.startswith("| ") and ("τ" in line or "ρ" in line):
            mse, psnr = line.split("|")[4:6]
            assert ("**" in mse) == ("**" in psnr), line


def test_trained_checkpoint_is_a_column_and_its_grad_cam_is_in_the_report(tmp_path):
    from metrics import perceptanon

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    checkpoint = tmp_path / "ha1-demo.pt"
    perceptanon.save_checkpoint(perceptanon.build_ha1("resnet18", 1), checkpoint, label="mean",
                                classification=False, weights_status="stand-in")
    options = evaluate.metric_options(checkpoint, None)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        evaluation = evaluate.evaluate(
            evaluate.DEMO_DIR / "HA1.csv", out_dir=tmp_path / "out", store=store, root=evaluate.DEMO_ROOT,
            metrics=evaluate.metric_names("mse", options), options=options, n_boot=50, simulated=True,
            progress=False,
        )
    bundle, pairs = evaluate.load_bundle(evaluation.out_dir)
    labels = {m["name"]: m for m in bundle["metrics"]}
    assert labels["perceptanon_ha1"]["label"] == "PerceptAnon HA1 (ha1-demo.pt)"
    assert labels["perceptanon_ha1"]["verified"] is False  # stand-in weights are marked
    assert pairs["perceptanon_ha1"].between(1, 10).all()
    page = evaluation.report.read_text(encoding="utf-8")
    assert "Grad-CAM" in page and page.count('alt="Grad-CAM overlay"') == evaluate.SAMPLE_PAIRS
    assert "PerceptAnon HA1 (ha1-demo.pt)" in (evaluation.out_dir / "tables" / "tables.md").read_text()


def test_report_on_a_damaged_results_folder_is_one_line(demo_run, tmp_path):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(demo_run.out_dir, folder)
    bundle = json.loads((folder / "results.json").read_text())
    del bundle["metrics"][0]["name"]
    (folder / "results.json").write_text(json.dumps(bundle))
    done = subprocess.run([sys.executable, "-m", "bench", "report", str(folder)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and str(folder) in done.stderr
