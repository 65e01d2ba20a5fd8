"""`bench score ORIGINALS ANONYMIZED`, `bench.api` and `bench metrics`, run as a user types them:
the real CLI in a subprocess, from a fresh working directory, with relative paths and default
outputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.errors import InputError
from bench.flows import folders
from bench.options import ScoringOptions
from metrics.base import SetMetric
from tests.metrics.test_fid import inception_dir  # noqa: F401 - the session's converted TF-Inception

REPO = Path(__file__).resolve().parents[3]
N_PAIRS = 20
FAST_METRICS = "mse,psnr,ssim"


def bench(cwd: Path, *args: str, weights: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if weights is not None:
        env["BENCH_WEIGHTS_DIR"] = str(weights)
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random content (a blurred noise field), so the metrics see structure."""
    coarse = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


@pytest.fixture
def work(tmp_path) -> Path:
    """A fresh working directory with originals/ (20 images, some under faces/) and
    anonymized/: the 20 anonymized images (a few as .jpg, one identical to its original)
    plus stray.png, which pairs with nothing."""
    rng = np.random.default_rng(11)
    work = tmp_path / "work"
    for i in range(N_PAIRS):
        relative = Path("faces" if i % 3 == 0 else ".") / f"img{i:02d}.png"
        original = _image(rng, 32, 40 if i % 2 else 32)
        noise = rng.normal(0, 12 + i, original.shape)
        anonymized = original if i == 0 else np.clip(original + noise, 0, 255).astype(np.uint8)
        for folder, pixels, suffix in (("originals", original, ".png"),
                                       ("anonymized", anonymized, ".jpg" if i % 5 == 4 else ".png")):
            path = (work / folder / relative).with_suffix(suffix)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, quality=95)
    Image.fromarray(_image(rng, 32, 32)).save(work / "anonymized" / "stray.png")
    return work


def _pairs_csv(work: Path) -> Path:
    """The same pairs written by hand as an annotation table: image paths only, no scores."""
    rows = []
    for original in sorted((work / "originals").rglob("*.png")):
        relative = original.relative_to(work / "originals")
        [anonymized] = sorted((work / "anonymized" / relative.parent).glob(f"{relative.stem}.*"))
        rows.append({"img1": original.relative_to(work).as_posix(), "img2": anonymized.relative_to(work).as_posix()})
    path = work / "pairs_only.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _keyed(scores_csv: Path, metrics: list[str]) -> pd.DataFrame:
    return pd.read_csv(scores_csv).set_index(["original", "anonymized"])[metrics].sort_index()


# ----------------------------------------------------------------------------- the CLI
def test_two_folders_print_the_table_name_the_unpaired_file_and_equal_the_annotations_path(work):
    scored = bench(work, "score", "originals", "anonymized", "--metrics", FAST_METRICS, "--device", "cpu",
                   "--no-progress")
    assert scored.returncode == 0, scored.stderr
    out = scored.stdout
    assert "Traceback" not in out + scored.stderr
    assert f"pairs: {N_PAIRS} (" in out
    [unpaired] = [line for line in out.splitlines() if line.startswith("unpaired:")]
    assert "anonymized image without an original" in unpaired and unpaired.endswith("stray.png")
    header = next(line for line in out.splitlines() if line.startswith("metric "))
    for column in ("direction", "mean", "median", "95% CI", "n", "note"):
        assert column in header
    psnr_row = next(line for line in out.splitlines() if line.startswith("psnr "))
    assert "1 pair(s) +inf/-inf, not averaged" in psnr_row and f"  {N_PAIRS - 1}  " in psnr_row
    assert "percentile bootstrap over pairs, 2000 resamples" in out
    default_out = work / "runs" / "score-anonymized"
    for name in ("scores.csv", "scores.json", "summary.json", "pairs.csv", "results.sqlite"):
        assert (default_out / name).is_file(), name

    annotations = bench(work, "score", "--annotations", _pairs_csv(work).name, "--metrics", FAST_METRICS,
                        "--device", "cpu", "--no-progress", "--out", "runs/by-csv")
    assert annotations.returncode == 0, annotations.stderr
    metrics = FAST_METRICS.split(",")
    from_folders = _keyed(default_out / "scores.csv", metrics)
    from_csv = _keyed(work / "runs" / "by-csv" / "scores.csv", metrics)
    assert len(from_folders) == N_PAIRS and from_folders.index.equals(from_csv.index)
    # Two separate stores, so each path computed its own values: equal exactly, +inf included.
    pd.testing.assert_frame_equal(from_folders, from_csv, check_exact=True)
    assert np.isinf(from_folders["psnr"]).sum() == 1
    # Neither the folders nor the score-less CSV have human scores: no empty score column.
    assert "score_mean" not in pd.read_csv(default_out / "scores.csv").columns


def test_json_is_the_only_stdout_and_summaries_match_the_per_pair_values(work):
    scored = bench(work, "score", "originals", "anonymized", "--metrics", "mse,psnr", "--device", "cpu",
                   "--no-progress", "--json", "--n-boot", "1000", "--seed", "3")
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)  # the whole of stdout is one JSON object
    assert report["folders"]["unpaired_anonymized"] == ["stray.png"]
    assert report["folders"]["unpaired_originals"] == [] and report["pairs"] == N_PAIRS
    assert len(report["per_pair"]) == N_PAIRS
    psnr = np.array([math.inf if v == "inf" else v for v in (row["psnr"] for row in report["per_pair"])])
    finite = psnr[np.isfinite(psnr)]
    summary = report["metrics"]["psnr"]
    assert (summary["n"], summary["n_infinite"], summary["n_missing"]) == (N_PAIRS - 1, 1, 0)
    assert summary["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert summary["median"] == pytest.approx(np.median(finite), rel=1e-12)
    # The CI against scipy's percentile bootstrap over the same values (other draws: 15% of its width).
    from scipy.stats import bootstrap

    reference = bootstrap((finite,), np.mean, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    width = reference.high - reference.low
    assert abs(summary["ci_low"] - reference.low) < 0.15 * width
    assert abs(summary["ci_high"] - reference.high) < 0.15 * width
    assert report["files"]["summary.json"].endswith("runs/score-anonymized/summary.json")
    assert json.loads((work / "runs" / "score-anonymized" / "summary.json").read_text())["metrics"] == report["metrics"]

    again = bench(work, "score", "originals", "anonymized", "--metrics", "mse,psnr", "--device", "cpu",
                  "--no-progress")
    assert f"psnr: computed 0, reused from the store {N_PAIRS}" in again.stdout


def test_ambiguous_names_are_one_line_and_stay_out(work):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(work / "anonymized" / "img01.jpg")
    scored = bench(work, "score", "originals", "anonymized", "--metrics", "mse", "--device", "cpu", "--no-progress")
    assert scored.returncode == 0, scored.stderr
    [line] = [line for line in scored.stdout.splitlines() if line.startswith("ambiguous:")]
    assert "img01.png" in line and "img01.jpg" in line and "keep one of them" in line
    assert f"pairs: {N_PAIRS - 1} (" in scored.stdout


@pytest.mark.parametrize("args, needle", [
    (("originals", "anonymized", "--annotations", "x.csv"), "or --annotations FILE, not both"),
    (("originals",), "originals was given"),
    ((), "needs two folders"),
    (("originals", "missing"), "missing: no such folder; give the folder of anonymized images"),
    (("originals", "originals/faces"), "lies inside"),
    (("originals", "anonymized", "--root", "."), "belong to --annotations"),
])
def test_bad_invocations_get_one_line(work, args, needle, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.chdir(work)  # in process (the entry point itself), to keep these fast
    assert main(["score", *args, "--metrics", "mse", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_correlate_still_requires_scores(work, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.chdir(work)
    assert main(["correlate", "--annotations", _pairs_csv(work).name, "--metrics", "mse", "--no-progress"]) == 2
    assert "missing required column(s) 'dataset', 'scope', 'method', 'score_mean'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pairing
def test_pairing_ignores_extensions_and_names_what_does_not_pair(tmp_path):
    for relative in ("o/a.png", "o/sub/b.png", "o/c.png", "o/notes.txt", "x/a.jpg", "x/sub/b.webp", "x/d.png"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".txt":
            path.write_text("not an image")
        else:
            Image.new("RGB", (4, 4)).save(path)
    pairing = folders.pair_folders(tmp_path / "o", tmp_path / "x")
    assert [(p.name, p.anonymized.name) for p in pairing.pairs] == [("a.png", "a.jpg"), ("sub/b.png", "b.webp")]
    assert (pairing.unpaired_originals, pairing.unpaired_anonymized) == (["c.png"], ["d.png"])
    assert pairing.skipped == ["o/notes.txt"]
    lines = pairing.report_lines(limit=1)
    assert lines[0] == f"unpaired: original without an anonymized image in {tmp_path / 'x'}: {tmp_path / 'o' / 'c.png'}"
    with pytest.raises(InputError, match="pairs with one in"):
        folders.pair_folders(tmp_path / "o" / "sub", tmp_path / "x")


def test_unpaired_files_are_listed_up_to_a_limit_then_counted(tmp_path):
    for i in range(13):
        (tmp_path / "o").mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "o" / f"{i:02d}.png")
    (tmp_path / "x").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "x" / "00.png")
    lines = folders.pair_folders(tmp_path / "o", tmp_path / "x").report_lines()
    assert len(lines) == folders.LISTED_FILES + 1 and lines[-1] == "unpaired: ... and 2 more originals"


# ----------------------------------------------------------------------------- FID and KID
@pytest.mark.slow
def test_fid_and_kid_between_the_folders_equal_pytorch_fid_and_torchmetrics(work, inception_dir):  # noqa: F811
    """The CLI's FID/KID against pytorch-fid's calculate_frechet_distance and torchmetrics'
    KernelInceptionDistance on the same pool3 features (extracted here, in the pairs' order).
    Tolerance 1e-6 relative: feature extraction here and in the run is the same network on the
    same decoded images, so what differs is float rounding in the reductions."""
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torchmetrics.image.kid import KernelInceptionDistance

    from bench.data import images
    from bench.scoring.runner import to_device
    from metrics.fid import InceptionExtractor

    scored = bench(work, "score", "originals", "anonymized", "--metrics", "fid,kid", "--device", "cpu",
                   "--no-progress", "--json", weights=inception_dir)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    fid, kid = report["set_metrics"]["fid"], report["set_metrics"]["kid"]
    assert fid["status"] == kid["status"] == "ok" and fid["n"] == kid["n"] == N_PAIRS
    assert fid["weights_status"] == "verified"

    pairing = folders.pair_folders(work / "originals", work / "anonymized")
    os.environ["BENCH_WEIGHTS_DIR"] = str(inception_dir)
    try:
        extractor = InceptionExtractor(torch.device("cpu"))
    finally:
        del os.environ["BENCH_WEIGHTS_DIR"]

    def features(paths: list[Path]) -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate([extractor(to_device([images.load_rgb(p)], torch.device("cpu"))).double().numpy()
                                   for p in paths])

    original = features([p.original for p in pairing.pairs])
    anonymized = features([p.anonymized for p in pairing.pairs])
    expected_fid = calculate_frechet_distance(original.mean(0), np.cov(original, rowvar=False),
                                              anonymized.mean(0), np.cov(anonymized, rowvar=False))
    reference = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=10, subset_size=N_PAIRS)
    reference.update(torch.from_numpy(original), real=True)
    reference.update(torch.from_numpy(anonymized), real=False)
    kid_mean, kid_std = (float(v) for v in reference.compute())
    print(f"FID {fid['value']!r} vs pytorch-fid {expected_fid!r}; KID {kid['value']!r} +- {kid['spread']['std']!r} "
          f"vs torchmetrics {kid_mean!r} +- {kid_std!r}")
    assert fid["value"] == pytest.approx(expected_fid, rel=1e-6)
    assert kid["value"] == pytest.approx(kid_mean, rel=1e-6)
    # Subsets of the whole group (subset_size is capped at n): every draw is the same, std 0.
    assert kid["spread"]["std"] == 0.0 and kid_std == pytest.approx(0.0, abs=1e-9)

    again = bench(work, "score", "originals", "anonymized", "--metrics", "fid,kid", "--device", "cpu",
                  "--no-progress", "--json", weights=inception_dir)
    reused = json.loads(again.stdout)
    assert reused["set_metrics"]["kid"]["spread"] == kid["spread"]
    assert reused["set_metrics"]["fid"]["value"] == fid["value"]
    assert "groups computed 0, reused from the store 1" in again.stderr


def test_fid_refuses_too_few_pairs(tmp_path, inception_dir):  # noqa: F811
    for folder in ("o", "x"):
        (tmp_path / folder).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / folder / f"{i}.png")
    proc = bench(tmp_path, "score", "o", "x", "--metrics", "fid", "--device", "cpu", "--no-progress",
                 weights=inception_dir)
    assert proc.returncode == 0, proc.stderr
    fid_row = next(line for line in proc.stdout.splitlines() if line.startswith("fid (set)"))
    assert "too few pairs (3 < 10)" in fid_row


class MeanGap(SetMetric):
    """A set metric that measures its own spread, as KID does: cheap, no network."""

    name = "mean_gap"
    version = "1"
    higher_is_more_anonymous = True

    def reset(self) -> None:
        self.gaps: list[torch.Tensor] = []
        self.estimate = None

    def update(self, original: torch.Tensor, anonymized: torch.Tensor) -> None:
        self.gaps.append((anonymized - original).abs().flatten(1).mean(1).double())

    def compute(self) -> float:
        gaps = torch.cat(self.gaps)
        mean, std = float(gaps.mean()), float(gaps.std())
        stderr = std / len(gaps) ** 0.5
        self.estimate = SimpleNamespace(std=std, stderr=stderr, ci_low=mean - 1.96 * stderr, ci_high=mean + 1.96 * stderr)
        return mean


def test_set_metric_spread_is_stored_and_reused(work):
    name = f"{__name__}:MeanGap"
    config = folders.FolderScoreConfig(out=work / "out", scoring=ScoringOptions(metrics=name, device="cpu",
                                                                                 progress=False))
    first = folders.score_folders(work / "originals", work / "anonymized", config)
    [summary] = first.set_summaries
    assert summary.value > 0 and summary.spread["std"] > 0 and first.set_scores.metrics[0].computed == 1
    assert summary.spread["ci_low"] < summary.value < summary.spread["ci_high"]
    again = folders.score_folders(work / "originals", work / "anonymized", config)
    assert again.set_scores.metrics[0].reused == 1 and again.set_summaries == first.set_summaries
    # The store's set_scores table holds values only; the spread beside it has its own table.
    import sqlite3

    db = sqlite3.connect(work / "out" / "results.sqlite")
    assert db.execute("SELECT COUNT(*) FROM set_scores").fetchone()[0] == 1
    stored = dict(db.execute("SELECT name, value FROM set_score_spreads").fetchall())
    db.close()
    assert stored == pytest.approx(dict(summary.spread), rel=1e-15)


# ----------------------------------------------------------------------------- the Python API
def test_api_resolves_paths_at_the_call_and_equals_the_cli(work, monkeypatch, tmp_path):
    from bench.api import score_folders, score_pairs_csv

    cli = bench(work, "score", "originals", "anonymized", "--metrics", FAST_METRICS, "--device", "cpu",
                "--no-progress", "--json")
    monkeypatch.chdir(work)
    result = score_folders("originals", "anonymized", metrics=FAST_METRICS.split(","), device="cpu")
    from_csv = score_pairs_csv(_pairs_csv(work).name, metrics=FAST_METRICS, device="cpu", out="runs/api-csv")
    monkeypatch.chdir(tmp_path)  # nothing depends on the working directory after the call
    assert result["folders"]["unpaired_anonymized"] == ["stray.png"] and result["files"] == {}
    expected = json.loads(cli.stdout)
    assert result["metrics"] == expected["metrics"]
    for key in ("per_pair",):
        assert [{m: r[m] for m in FAST_METRICS.split(",")} for r in result[key]] == \
               [{m: r[m] for m in FAST_METRICS.split(",")} for r in expected[key]]
    assert from_csv["metrics"] == expected["metrics"]
    assert Path(from_csv["files"]["scores.csv"]) == work / "runs" / "api-csv" / "scores.csv"


def test_api_csv_under_a_wrong_root_is_an_error_not_an_empty_result(work, monkeypatch, tmp_path):
    # From another folder the CSV's relative image paths find nothing: as the CLI does, the
    # API says so, instead of returning every value missing with status "ok".
    from bench.api import score_pairs_csv
    from bench.errors import InputError

    csv_path = _pairs_csv(work)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(InputError, match="none of the .* images exists under the image root"):
        score_pairs_csv(csv_path, root=elsewhere, metrics=FAST_METRICS, device="cpu")


def test_n_boot_below_one_is_refused_before_any_scoring(work):
    finished = bench(work, "score", "originals", "anonymized", "--metrics", "mse", "--n-boot", "0", "--device", "cpu")
    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == [
        "bench score: error: argument --n-boot: 0 resamples: give at least 1 (the default is 2000); "
        "see `bench score --help`"]
    assert not (work / "runs").exists()


def test_score_tensors_equals_the_adapters_and_counts_infinities():
    from bench.api import score_tensors
    from metrics.pixel import PSNR
    from metrics.ssim import SSIM

    generator = torch.Generator().manual_seed(0)
    originals = torch.rand(7, 3, 16, 16, generator=generator)
    anonymized = (originals + 0.1 * torch.rand(7, 3, 16, 16, generator=generator)).clamp(0, 1)
    anonymized[2] = originals[2]
    result = score_tensors(originals, anonymized, metrics=["psnr", "ssim"], device="cpu", batch_size=3)
    psnr = PSNR().score(originals, anonymized)
    assert [r["psnr"] for r in result["per_pair"]] == [("inf" if math.isinf(v) else v) for v in psnr]
    assert [r["ssim"] for r in result["per_pair"]] == SSIM().score(originals, anonymized).tolist()
    summary = result["metrics"]["psnr"]
    assert (summary["n"], summary["n_infinite"]) == (6, 1)
    assert summary["mean"] == pytest.approx(psnr[np.isfinite(psnr)].mean(), rel=1e-12)
    json.dumps(result, allow_nan=False)  # JSON-ready as it is


# ----------------------------------------------------------------------------- bench metrics
@pytest.mark.slow
def test_bench_metrics_lists_every_registered_metric_from_its_class(tmp_path, inception_dir):  # noqa: F811
    from metrics.registry import BUILTIN_METRICS, metric_class

    listed = bench(tmp_path, "metrics", "--json", weights=inception_dir)
    assert listed.returncode == 0, listed.stderr
    facts = {fact["name"]: fact for fact in json.loads(listed.stdout)}
    assert set(BUILTIN_METRICS) <= set(facts)
    for name in BUILTIN_METRICS:
        cls = metric_class(name)
        fact = facts[name]
        assert fact["level"] == cls.level in ("pair", "set")
        assert fact["higher_is_more_anonymous"] == cls.higher_is_more_anonymous
        assert fact["value_range"] == cls.value_range != "not stated" and fact["convention"] == cls.convention != ""
        assert [w["name"] for w in fact["weights"]] == list(cls.weights_needed)
    assert facts["fid"]["weights"] == [{"name": "fid_inception", "status": "verified"}]
    assert facts["lpips"]["weights"][0]["status"] in ("verified", "unverified", "stand-in", "missing")
    assert facts["kid"]["min_samples"] == 2 and facts["psnr"]["direction"] == "lower = more anonymous"
    assert "checkpoint" in facts["perceptanon_ha1"]["user_weights"]

    table = bench(tmp_path, "metrics", weights=inception_dir)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["name", "level", "direction"]
    for name in BUILTIN_METRICS:
        assert any(line.startswith(f"{name} ") for line in table.stdout.splitlines())
