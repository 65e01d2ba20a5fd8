"""The whole evaluation flow on the demo set: scores -> correlations -> tables, plots, report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.data import protocol
from bench.flows import evaluate
from bench.options import Bootstrap, ScoringOptions
from bench.scoring import runner
from bench.scoring.store import ResultsStore
from tests.browser import CONSOLE_ERROR, needs_chromium, render

REPO = Path(__file__).resolve().parents[3]
FAST_METRICS = ("mse", "psnr", "ssim")
NO_PROGRESS = ScoringOptions(progress=False)
# Characters that are markup in HTML, Markdown or LaTeX.
ODD_DATASET = "v<o>c&_%$#{x}"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    with ResultsStore(out / "results.sqlite") as store:
        evaluation = evaluate.evaluate(
            evaluate.DEMO_FOLDER / "HA1.csv", out_dir=out / "HA1", store=store, root=evaluate.DEMO_IMAGES,
            metrics=FAST_METRICS, bootstrap=Bootstrap(n_boot=200), simulated=True, scoring=NO_PROGRESS,
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
            table = evaluate.dataset.load_pairs(evaluate.DEMO_FOLDER / "HA2.csv", root=evaluate.DEMO_IMAGES)
            runs.append(runner.score_pairs(table, ["mse"], store=store, progress=False))
    assert runs[0].metrics[0].computed == 48 and runs[1].metrics[0].computed == 0
    assert runs[1].metrics[0].reused == 48


def test_names_with_markup_characters_are_escaped_everywhere(tmp_path):
    frame = pd.read_csv(evaluate.DEMO_FOLDER / "HA1.csv")
    frame["dataset"] = frame["dataset"].replace("voc", ODD_DATASET)
    annotations = tmp_path / "HA1.csv"
    frame.to_csv(annotations, index=False)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        evaluation = evaluate.evaluate(annotations, out_dir=tmp_path / "out", store=store, root=evaluate.DEMO_IMAGES,
                                       metrics=("mse",), bootstrap=Bootstrap(n_boot=50), scoring=NO_PROGRESS)
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
    # Everything is written; lpips was asked for by name, so the command says so and exits 1.
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout.rstrip().splitlines()[-1] == "exit status 1: lpips asked for but unavailable"
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
            evaluate.evaluate(evaluate.DEMO_FOLDER / f"{name}.csv", out_dir=tmp_path / name, store=store,
                              root=evaluate.DEMO_IMAGES, metrics=("mse", "psnr"), bootstrap=Bootstrap(n_boot=100),
                              simulated=True, scoring=NO_PROGRESS)
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


@pytest.mark.slow
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
            evaluate.DEMO_FOLDER / "HA1.csv", out_dir=tmp_path / "out", store=store, root=evaluate.DEMO_IMAGES,
            metrics=evaluate.metric_names("mse", options), options=options, bootstrap=Bootstrap(n_boot=50),
            simulated=True, scoring=NO_PROGRESS,
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


# --------------------------------------------------------------------------- metric columns, paper convention
RELEASED_METRIC_COLUMNS = ("MSE", "PSNR", "SSIM", "LPIPS", "FID")
DATASETS = ("coco", "voc", "lfw", "celeba")


def released_format_file(path: Path, n_originals: int = 60, seed: int = 0) -> pd.DataFrame:
    """A file as the released get_metrics.py writes it: HA1.csv's columns (img1, img2, dataset,
    scope, method, annotators, score_mean) plus one column per metric. 4 annotators, so mean
    scores hit x.5 (round half to even) and the label thresholds 3, 5, 8 exactly; MSE rounded
    to 3 decimals, so it has ties."""
    rng = np.random.default_rng(seed)
    rows = [(f"{DATASETS[i % 4]}/{i}.png", f"{DATASETS[i % 4]}/{method}/{i}.png", DATASETS[i % 4], "local", method)
            for i in range(n_originals) for method in ("mask", "inpaint", "blur", "pixelate")]
    frame = pd.DataFrame(rows, columns=["img1", "img2", "dataset", "scope", "method"])
    latent = rng.uniform(1, 10, len(frame))
    ratings = np.clip(np.rint(latent[:, None] + rng.normal(0, 1.5, (len(frame), 4))), 1, 10).astype(int)
    for k in range(4):
        frame[f"annotator{k}"] = ratings[:, k]
    frame["score_mean"] = ratings.mean(axis=1)
    frame["MSE"] = np.round(0.01 * latent + rng.normal(0, 0.01, len(frame)), 3)
    frame["PSNR"] = 30 - latent + rng.normal(0, 2, len(frame))
    frame["SSIM"] = 1 - latent / 10 + rng.normal(0, 0.1, len(frame))
    frame["LPIPS"] = latent / 10 + rng.normal(0, 0.05, len(frame))
    frame["FID"] = 10 * latent + rng.normal(0, 20, len(frame))
    frame.to_csv(path, index=False)
    return frame


def released_label(score: float, label_type: str, is_classification: bool) -> float:
    """The released utils.py label transforms as documented there: 'mean' (score - 1) / 9;
    labels10 round(score) - 1; labels5 thresholds 3, 5, 7, 9; labels3 thresholds 5, 8; binary
    0 if score > 5 else 1. Regression targets are normalised by the top class (binary: kept)
    and stored as float32 tensors, read back with .item()."""
    if label_type == "mean":
        return float(np.float32((score - 1) / (10 - 1)))
    if label_type == "labels10":
        label, top = round(score) - 1, 9
    elif label_type == "labels5":
        label, top = (0 if score < 3 else 1 if score < 5 else 2 if score < 7 else 3 if score < 9 else 4), 4
    elif label_type == "labels3":
        label, top = (0 if score < 5 else 1 if score < 8 else 2), 2
    else:
        label, top = (0 if score > 5.0 else 1), 1
    if is_classification:
        return label
    return float(np.float32(label / top))


def released_test_rows(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """The released generate_splits.py test part: loov-X holds dataset X out; 'all' is
    train_test_split(test_size=0.2, stratify=round(score_mean) binned 1-4 / 5 / ... / 10,
    random_state=42)."""
    if split.startswith("loov-"):
        return frame[frame["dataset"] == split.split("-")[1]]
    from sklearn.model_selection import train_test_split

    rounded = frame["score_mean"].round().astype(int)
    _, test = train_test_split(frame, test_size=0.2, stratify=rounded.where(rounded > 4, 4) - 4, random_state=42)
    return test


def released_correlations(frame: pd.DataFrame, split: str) -> dict[tuple[str, str, str, str], float]:
    """(granularity, form, metric, statistic) -> value, as the released metric_corr.py logic:
    the Mean block (raw score_mean), REG (5 label types, regression) and CLF (4, classes),
    each metric's raw column against the label with scipy's pearsonr, spearmanr, kendalltau."""
    test = released_test_rows(frame, split)
    blocks = [("mean", "raw", test["score_mean"].to_numpy())]
    for label_type in protocol.GRANULARITIES:
        blocks.append((label_type, "regression",
                       np.array([released_label(s, label_type, False) for s in test["score_mean"]])))
    for label_type in protocol.GRANULARITIES[1:]:
        blocks.append((label_type, "classification",
                       np.array([released_label(s, label_type, True) for s in test["score_mean"]])))
    values = {}
    for granularity, form, labels in blocks:
        for metric in RELEASED_METRIC_COLUMNS:
            scores = test[metric].to_numpy()
            values[(granularity, form, metric, "pearson")] = stats.pearsonr(labels, scores)[0]
            values[(granularity, form, metric, "spearman")] = stats.spearmanr(labels, scores)[0]
            values[(granularity, form, metric, "kendall")] = stats.kendalltau(labels, scores)[0]
    return values


def test_paper_convention_on_metric_columns_reproduces_the_released_correlations(tmp_path, monkeypatch):
    """`bench correlate --metric-columns ... --convention paper`, as typed in a fresh folder,
    writes tables/correlations.csv whose every Pearson, Spearman and Kendall value for the
    Mean, REG and CLF blocks of the splits all and loov-* equals the released logic to 1e-12."""
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    frame = released_format_file(tmp_path / "HA1.csv")
    splits = ["all", "loov-coco", "loov-voc", "loov-lfw", "loov-celeba"]
    argv = ["correlate", "--annotations", "HA1.csv", "--metric-columns", ",".join(RELEASED_METRIC_COLUMNS),
            "--convention", "paper", "--n-boot", "20", "--no-progress", "--out", "out"]
    assert main(argv + [arg for split in splits for arg in ("--split", split)]) == 0
    table = pd.read_csv(tmp_path / "out" / "HA1" / "tables" / "correlations.csv", keep_default_na=False,
                        na_values=[""])
    assert list(table.columns[:6]) == ["split", "granularity", "form", "metric", "statistic", "value"]
    checked = 0
    for split in splits:
        expected = released_correlations(frame, split)
        ours = table[table["split"] == split].set_index(["granularity", "form", "metric", "statistic"])["value"]
        assert len(ours) == len(expected) == 10 * 5 * 3
        for key, value in expected.items():
            assert ours[key] == pytest.approx(value, abs=1e-12, rel=0), (split, key)
            checked += 1
    assert checked == 5 * 150
    bundle = json.loads((tmp_path / "out" / "HA1" / "results.json").read_text())
    assert bundle["convention"] == "paper" and bundle["provenance"]["convention"] == "paper"
    assert bundle["provenance"]["metric_columns"]["PSNR"].startswith("down")


def test_metric_columns_default_convention_is_oriented(tmp_path, monkeypatch):
    """The default convention on the same file: every metric oriented (PSNR and SSIM negated,
    positive = agrees), the binary label higher = more anonymous, no 'raw' form."""
    monkeypatch.chdir(tmp_path)
    frame = released_format_file(tmp_path / "HA1.csv")
    frame["mine"] = frame["LPIPS"]
    frame.to_csv(tmp_path / "HA1.csv", index=False)
    [evaluation] = evaluate.run_evaluation(evaluate.EvaluateConfig(
        out=Path("out"), annotations=(Path("HA1.csv"),), splits=("loov-voc",), metric_columns="PSNR,mine",
        directions=("mine=up",), scoring=ScoringOptions(device="cpu", batch_size=8, progress=False),
        bootstrap=Bootstrap(n_boot=20),
    ))
    bundle, _ = evaluate.load_bundle(evaluation.out_dir)
    table = bundle["correlations"]
    assert bundle["convention"] == "default" and "raw" not in set(table["form"])
    test = frame[frame["dataset"] == "voc"]
    row = table[(table.granularity == "binary") & (table.form == "classification") & (table.statistic == "spearman")]
    psnr = row.loc[row.metric == "PSNR", "value"].item()
    assert psnr == pytest.approx(stats.spearmanr(-test["PSNR"], test["score_mean"] > 5).statistic, abs=1e-12)
    assert psnr > 0


def test_metric_columns_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    frame = released_format_file(tmp_path / "HA1.csv")
    base = ["correlate", "--annotations", "HA1.csv", "--split", "all", "--n-boot", "5", "--no-progress"]
    cases = [
        (["--metric-columns", "PSNR,mine"], "metric column 'mine': its direction is unknown", "--direction mine=up"),
        (["--metric-columns", "PSNR,nothere", "--direction", "nothere=up"], "no column 'nothere'", "HA1.csv"),
        (["--metric-columns", "PSNR", "--direction", "PSNR=sideways"], "bad --direction 'PSNR=sideways'", "up"),
        (["--metric-columns", "PSNR", "--metrics", "mse"], "drop --metrics", "--metric-columns"),
        (["--direction", "PSNR=up"], "--direction applies to --metric-columns", ""),
    ]
    for extra, message, hint in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err and hint in err, err
    frame["FID"] = frame["FID"].astype(object)
    frame.loc[7, "FID"] = "high"
    frame.to_csv(tmp_path / "HA1.csv", index=False)
    assert main(base + ["--metric-columns", "FID"]) == 2
    err = capsys.readouterr().err.strip()
    assert "line 9" in err and "'FID'" in err and "not a number" in err and "\n" not in err


def test_paper_convention_scores_the_released_ssim():
    options = evaluate.metric_options(None, Path("model.pt"), "paper")
    assert options == {"perceptanon_ha2": {"checkpoint": "model.pt", "class_rule": "argmax"}}
    assert evaluate.metric_names(None, {}, "paper") == ["mse", "psnr", "ssim_paper_compat", "lpips", "inception_dist"]
    assert evaluate.metric_names(None, {}) == list(evaluate.PAPER_METRICS)


def test_correlate_reads_a_generic_csv_through_columns_as_its_error_says(tmp_path, monkeypatch, capsys):
    """The missing-column error says "map your names with --columns": bench correlate takes it."""
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    frame = released_format_file(tmp_path / "HA1.csv")
    frame.rename(columns={"score_mean": "mos"}).to_csv(tmp_path / "mine.csv", index=False)
    base = ["correlate", "--annotations", "mine.csv", "--split", "all", "--n-boot", "5", "--no-progress",
            "--metric-columns", "PSNR"]
    assert main(base) == 2
    assert "--columns" in capsys.readouterr().err
    assert main(base + ["--columns", "score_mean=mos"]) == 0, capsys.readouterr().err
    assert pd.read_csv(tmp_path / "runs" / "evaluate" / "mine" / "pairs.csv").shape[0] == len(frame)


def test_a_checkpoint_that_does_not_load_fails_the_command_after_the_rest_is_written(tmp_path, monkeypatch, capsys):
    """Its metric is reported as not run, no Grad-CAM tries to load it again, and the command
    says why it exits 1 (as bench score does for a metric asked for by name)."""
    from bench.cli import main
    from bench.flows.evaluate import DEMO_FOLDER

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.pt").write_text("not a checkpoint\n")
    code = main(["correlate", "--annotations", str(DEMO_FOLDER / "HA1.csv"), "--root", str(DEMO_FOLDER / "images"),
                 "--metrics", "mse", "--checkpoint-ha1", "bad.pt", "--n-boot", "5", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.rstrip().splitlines()[-1] == "exit status 1: perceptanon_ha1 asked for but unavailable"
    assert (tmp_path / "runs" / "evaluate" / "HA1" / "report.html").is_file()
    from metrics.errors import WeightsError
    from metrics.perceptanon import load_checkpoint

    for text in ("not a checkpoint\n", "hi\n", "<html>404</html>"):  # torch words each differently
        (tmp_path / "bad.pt").write_text(text)
        with pytest.raises(WeightsError, match="it is not a PyTorch checkpoint"):  # not "a pickle with Python objects"
            load_checkpoint(tmp_path / "bad.pt", ha="HA1")
