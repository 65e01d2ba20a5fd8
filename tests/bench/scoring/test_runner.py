"""The scoring runner: right values, each image decoded once, features reused, resumable."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.data import images
from bench.data.dataset import load_pairs
from bench.scoring.runner import score_pairs, to_device
from bench.scoring.store import ResultsStore
from metrics.base import FeaturePairMetric, PairMetric, SetMetric
from metrics.errors import MetricInputError, WeightsError
from metrics.registry import build_metric, metric_class

REPO = Path(__file__).resolve().parents[3]
N_ORIGINALS, N_ANONYMIZED, SIDE = 6, 4, 32
METHODS = ("mask", "blur", "pixelate", "inpaint")
DATASETS = ("coco", "voc", "lfw", "celeba")
THIS = "tests.bench.scoring.test_runner"


# ----------------------------------------------------------------------------- fixtures
def _anonymize(original: np.ndarray, method: str, rng: np.random.Generator) -> np.ndarray:
    out = original.copy()
    if method == "mask":
        out[8:24, 8:24] = 0
    elif method == "blur":
        out = np.clip(out.astype(int) + rng.integers(-20, 21, out.shape), 0, 255).astype(np.uint8)
    elif method == "pixelate":
        blocks = out.reshape(4, 8, 4, 8, 3).mean(axis=(1, 3)).astype(np.uint8)
        out = blocks.repeat(8, axis=0).repeat(8, axis=1)
    else:
        out[:, :16] = out[:, 16:][:, ::-1]
    return out


def _write_dataset(folder: Path, n_originals: int, n_anonymized: int, *, seed: int = 0) -> Path:
    """Random PNG originals, `n_anonymized` versions of each, and a released-format CSV.

    Original 0's first anonymization is a byte-identical copy (PSNR = +inf).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_originals):
        original = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        dataset = DATASETS[i % len(DATASETS)]
        original_rel = f"originals/{dataset}/img{i}.png"
        (folder / original_rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(original).save(folder / original_rel)
        for j in range(n_anonymized):
            method = METHODS[j % len(METHODS)]
            anonymized = original if (i, j) == (0, 0) else _anonymize(original, method, rng)
            anonymized_rel = f"anonymized/{method}{j}/{dataset}/img{i}.png"
            (folder / anonymized_rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(anonymized).save(folder / anonymized_rel)
            scores = rng.integers(1, 11, 2)
            rows.append([original_rel, anonymized_rel, dataset, ("global", "local")[j % 2], method,
                         *scores, scores.mean()])
    csv_path = folder / "HA1.csv"
    pd.DataFrame(rows, columns=["img1", "img2", "dataset", "scope", "method", "a1", "a2", "score_mean"]).to_csv(
        csv_path, index=False
    )
    return csv_path


@pytest.fixture
def annotations(tmp_path) -> Path:
    return _write_dataset(tmp_path / "data", N_ORIGINALS, N_ANONYMIZED)


def _score(csv_path: Path, names: list[str], store_path: Path, **options):
    with ResultsStore(store_path) as store:
        return score_pairs(load_pairs(csv_path), names, store=store, device="cpu", progress=False, **options)


def _values(result, metric: str) -> dict[int, float]:
    scores = result.scores[result.scores["metric"] == metric]
    return dict(zip(scores["row"], scores["value"]))


def _tensor(path: Path) -> torch.Tensor:
    return torch.from_numpy(images.to_float(images.load_rgb(path))).permute(2, 0, 1)[None].contiguous()


# ----------------------------------------------------------------------------- test doubles
class CountingFeatures(FeaturePairMetric):
    """Distance between per-channel means; counts the image rows it encodes."""

    name: ClassVar[str] = "counting_features"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True
    rows_encoded: ClassVar[int] = 0

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        type(self).rows_encoded += images.shape[0]
        return images.double().mean(dim=(2, 3))

    def _compare(self, original_features: torch.Tensor, anonymized_features: torch.Tensor) -> torch.Tensor:
        return (original_features - anonymized_features).abs().sum(dim=1)


class NeedsMissingWeights(PairMetric):
    name: ClassVar[str] = "needs_weights"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True

    def __init__(self, device="cpu") -> None:
        raise WeightsError("weights needs.pth not found; run `bench weights fetch needs`")


class AnonymizedOnly(PairMetric):
    """An HA1-style metric: must be called without originals."""

    name: ClassVar[str] = "anonymized_only"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = False
    needs_original: ClassVar[bool] = False

    def _score(self, original, anonymized: torch.Tensor) -> torch.Tensor:
        assert original is None
        return anonymized.double().mean(dim=(1, 2, 3))


class RejectsDarkImages(PairMetric):
    """Refuses (with a MetricError) pairs whose anonymized image is darker than 0.45 on average."""

    name: ClassVar[str] = "rejects_dark"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        means = anonymized.double().mean(dim=(1, 2, 3))
        if (means < 0.45).any():
            raise MetricInputError("rejects_dark: image too dark")
        return means


class GroupMetric(SetMetric):
    name: ClassVar[str] = "group_metric"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True

    def reset(self) -> None:
        pass


# ----------------------------------------------------------------------------- values
def test_batches_hold_exactly_the_numbers_of_to_float():
    """Every uint8 value, in NCHW order, as `images.to_float` gives it: torch's division must
    round as numpy's does, or values would depend on the path an image took."""
    every_value = np.arange(256, dtype=np.uint8).reshape(8, 32, 1)
    arrays = [np.concatenate([every_value, every_value[::-1], np.roll(every_value, 7)], axis=2),
              np.random.default_rng(0).integers(0, 256, (8, 32, 3), dtype=np.uint8)]
    batch = to_device(arrays, torch.device("cpu"))
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 8, 32) and batch.is_contiguous()
    expected = torch.from_numpy(np.stack([images.to_float(a) for a in arrays])).permute(0, 3, 1, 2)
    assert torch.equal(batch, expected)
    with pytest.raises(TypeError, match="uint8"):
        to_device([arrays[0].astype(np.float32)], torch.device("cpu"))


def test_values_equal_the_adapters_called_directly(annotations, tmp_path):
    result = _score(annotations, ["mse", "psnr", "ssim"], tmp_path / "s.sqlite")
    table = load_pairs(annotations)
    assert result.complete and len(result.scores) == 3 * len(table)
    for name in ("mse", "psnr", "ssim"):
        metric, values = build_metric(name), _values(result, name)
        for i in range(len(table)):
            expected = metric.score(_tensor(table.original_path(i)), _tensor(table.anonymized_path(i)))[0]
            assert values[int(table.frame["row"].iat[i])] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert np.isinf(_values(result, "psnr")[2])  # row 2: the byte-identical copy


def test_each_image_is_decoded_once(annotations, tmp_path, monkeypatch):
    decoded: list[Path] = []
    real_load = images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda path: decoded.append(Path(path)) or real_load(path))
    _score(annotations, ["mse", "psnr", "ssim"], tmp_path / "s.sqlite")
    assert len(decoded) == len(set(decoded)) == N_ORIGINALS * (1 + N_ANONYMIZED)


@pytest.mark.parametrize("batch_size", [7, 32])
def test_feature_metric_encodes_each_original_once(annotations, tmp_path, batch_size):
    name = f"{THIS}:CountingFeatures"
    metric = metric_class(name)
    metric.rows_encoded = 0
    result = _score(annotations, [name], tmp_path / "s.sqlite", batch_size=batch_size)
    assert metric.rows_encoded == N_ORIGINALS + N_ORIGINALS * N_ANONYMIZED
    table, values = load_pairs(annotations), _values(result, name)
    direct = metric()
    for i in range(len(table)):
        expected = direct.score(_tensor(table.original_path(i)), _tensor(table.anonymized_path(i)))[0]
        assert values[int(table.frame["row"].iat[i])] == pytest.approx(expected, rel=1e-12)


def test_rerun_computes_nothing(annotations, tmp_path, monkeypatch):
    first = _score(annotations, ["psnr", "ssim"], tmp_path / "s.sqlite")
    decoded = []
    real_load = images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda path: decoded.append(path) or real_load(path))
    second = _score(annotations, ["psnr", "ssim"], tmp_path / "s.sqlite")
    assert decoded == []
    assert [(m.computed, m.reused) for m in second.metrics] == [(0, 24), (0, 24)]
    pd.testing.assert_frame_equal(first.scores, second.scores)


def test_batch_size_never_changes_a_value(annotations, tmp_path):
    names = ["mse", "psnr", "ssim", f"{THIS}:CountingFeatures"]
    results = [_score(annotations, names, tmp_path / f"s{b}.sqlite", batch_size=b).scores for b in (1, 7, 32)]
    for other in results[1:]:
        pd.testing.assert_frame_equal(results[0], other, check_exact=True)


def test_decoding_workers_give_the_same_values(annotations, tmp_path):
    in_process = _score(annotations, ["psnr", "ssim"], tmp_path / "a.sqlite", workers=0)
    with_workers = _score(annotations, ["psnr", "ssim"], tmp_path / "b.sqlite", workers=2)
    pd.testing.assert_frame_equal(in_process.scores, with_workers.scores, check_exact=True)


# ----------------------------------------------------------------------------- failures
def test_truncated_image_fails_its_pair_only(annotations, tmp_path):
    table = load_pairs(annotations)
    broken = table.anonymized_path(5)
    broken.write_bytes(broken.read_bytes()[:200])
    result = _score(annotations, ["mse", "psnr"], tmp_path / "s.sqlite")
    row = int(table.frame["row"].iat[5])
    assert [(f.row, f.metric) for f in result.failures] == [(row, None)]
    assert "cannot decode image" in result.failures[0].reason and "\n" not in result.failures[0].reason
    for metric in result.metrics:
        assert (metric.status, metric.computed, metric.failed) == ("ok", len(table) - 1, 1)
    assert row not in _values(result, "mse") and len(_values(result, "mse")) == len(table) - 1
    assert not result.complete


def test_missing_image_file_fails_its_pairs(annotations, tmp_path):
    table = load_pairs(annotations)
    table.original_path(0).unlink()
    result = _score(annotations, ["mse"], tmp_path / "s.sqlite")
    assert {f.row for f in result.failures} == {int(r) for r in table.frame["row"].iloc[:N_ANONYMIZED]}
    assert all("cannot read image" in f.reason for f in result.failures)
    assert result.metrics[0].computed == len(table) - N_ANONYMIZED


def test_unavailable_metric_does_not_stop_the_others(annotations, tmp_path):
    result = _score(annotations, ["psnr", f"{THIS}:NeedsMissingWeights"], tmp_path / "s.sqlite")
    psnr, missing = result.metrics
    assert (psnr.status, psnr.computed) == ("ok", 24)
    assert missing.status == "unavailable" and "bench weights fetch needs" in missing.reason
    assert not result.complete
    assert any("unavailable" in line and "bench weights fetch" in line for line in result.summary_lines())


def test_pairs_a_metric_rejects_fail_for_that_metric_only(annotations, tmp_path):
    result = _score(annotations, ["mse", f"{THIS}:RejectsDarkImages"], tmp_path / "s.sqlite")
    mse, rejects = result.metrics
    rejected = {f.row for f in result.failures}
    assert rejected and all(f.metric == rejects.name for f in result.failures)
    assert mse.computed == 24 and rejects.computed == 24 - len(rejected) and rejects.failed == len(rejected)


def test_set_metrics_are_left_out_with_a_note(annotations, tmp_path):
    result = _score(annotations, ["psnr", f"{THIS}:GroupMetric"], tmp_path / "s.sqlite")
    assert [m.name for m in result.metrics] == ["psnr"]
    assert len(result.notes) == 1 and "GroupMetric" in result.notes[0] and "set metric" in result.notes[0]


def test_metrics_without_originals_get_anonymized_images_only(annotations, tmp_path):
    result = _score(annotations, [f"{THIS}:AnonymizedOnly"], tmp_path / "s.sqlite")
    assert result.complete and len(result.scores) == 24


def test_size_policy_and_resized_scores(tmp_path):
    csv_path = _write_dataset(tmp_path / "data", 2, 1)
    table = load_pairs(csv_path)
    small = Image.open(table.anonymized_path(1)).resize((SIDE // 2, SIDE // 2))
    small.save(table.anonymized_path(1))
    store = tmp_path / "s.sqlite"
    strict = _score(csv_path, ["mse"], store)
    assert len(strict.failures) == 1 and "size mismatch" in strict.failures[0].reason
    resized = _score(csv_path, ["mse"], store, size_policy="resize")
    assert resized.complete and (resized.metrics[0].computed, resized.metrics[0].reused) == (1, 1)
    # A resized score is not reused by a run under the error policy: that pair stays an error.
    again = _score(csv_path, ["mse"], store)
    assert len(again.failures) == 1 and again.metrics[0].reused == 1


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_wide_scores_and_summary(annotations, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["score", "--annotations", str(annotations), "--metrics", "psnr,mse",
                 "--out", str(out), "--no-progress", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0 and "psnr: computed 24, reused from the store 0" in printed
    wide = pd.read_csv(out / "scores.csv")
    assert list(wide.columns) == ["row", "original", "anonymized", "dataset", "scope", "method", "score_mean",
                                  "psnr", "mse", "error"]
    assert len(wide) == 24 and np.isinf(wide["psnr"].iloc[0])
    report = json.loads((out / "scores.json").read_text())
    assert report["pairs"][0]["psnr"] == "inf" and report["metrics"]["mse"]["status"] == "ok"
    assert (out / "results.sqlite").exists()


def test_cli_marks_stand_in_weights(annotations, tmp_path, capsys, monkeypatch):
    from metrics.base import WeightsRecord

    monkeypatch.setattr(CountingFeatures, "weights",
                        lambda self: [WeightsRecord(name="net", sha256="0" * 64, status="stand-in")])
    out = tmp_path / "out"
    assert main(["score", "--annotations", str(annotations), "--metrics", f"{THIS}:CountingFeatures",
                 "--out", str(out), "--no-progress"]) == 0
    column = f"{THIS}:CountingFeatures [stand-in weights]"
    assert column in capsys.readouterr().out
    assert column in pd.read_csv(out / "scores.csv").columns


# ----------------------------------------------------------------------------- kill + resume
def _bench_score(csv_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "bench", "score", "--annotations", str(csv_path),
            "--metrics", "psnr,tests.bench.slow_metric:SlowMetric", "--batch-size", "2",
            "--no-progress", "--device", "cpu", "--out", str(out)]


def _slow_scores_stored(store: Path) -> int:
    if not store.exists():
        return 0
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM scores WHERE metric_key LIKE 'slow_mad@%'").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    finally:
        db.close()


def test_killed_run_resumes_with_identical_results(tmp_path):
    csv_path = _write_dataset(tmp_path / "data", 8, 2)
    n_pairs = 16
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    resumed, store = tmp_path / "resumed", tmp_path / "resumed" / "results.sqlite"

    killed = subprocess.Popen(_bench_score(csv_path, resumed), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _slow_scores_stored(store) == 0 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read().decode()
    stored = _slow_scores_stored(store)
    assert 0 < stored < n_pairs

    finished = subprocess.run(_bench_score(csv_path, resumed), cwd=REPO, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    fresh = subprocess.run(_bench_score(csv_path, tmp_path / "fresh"), cwd=REPO, env=env,
                           capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr

    db = sqlite3.connect(store)
    last_run = db.execute("SELECT MAX(run_id) FROM runs").fetchone()[0]
    computed_by_resume = db.execute("SELECT COUNT(*) FROM scores WHERE run_id = ?", (last_run,)).fetchone()[0]
    per_metric = db.execute("SELECT COUNT(*), COUNT(DISTINCT original_sha256 || anonymized_sha256) "
                            "FROM scores GROUP BY metric_key").fetchall()
    statuses = [row[0] for row in db.execute("SELECT status FROM runs ORDER BY run_id")]
    db.close()
    # (a) the resumed run computed only what the killed one had not stored
    assert computed_by_resume == 2 * (n_pairs - stored)
    assert f"computed {n_pairs - stored}, reused from the store {stored}" in finished.stdout
    assert statuses == ["interrupted", "finished"]  # the killed run never finished; marked when next opened
    # (b) the same values as an uninterrupted run
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "scores.csv"), pd.read_csv(tmp_path / "fresh" / "scores.csv"),
                                  check_exact=True)
    # (c) each pair once per metric
    assert per_metric == [(n_pairs, n_pairs), (n_pairs, n_pairs)]
