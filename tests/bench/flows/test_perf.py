"""`bench perf`: end to end on a tiny config, the naive baseline's values, flat memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.data import dataset, images
from bench.errors import InputError
from bench.flows import perf
from bench.scoring.runner import score_pairs
from bench.scoring.store import ResultsStore
from metrics import functional
from metrics.base import FeaturePairMetric
from metrics.registry import metric_class
from metrics.errors import MetricInputError

# The naive baseline runs scikit-image's SSIM in float64 and our adapters otherwise: it must
# agree with the runner as closely as tests/metrics/test_ssim.py holds SSIM to scikit-image.
AGREEMENT_TOLERANCE = 1e-10
# Peak RSS of a runner process at 10x the pairs may exceed the smaller run's by at most 10%
# plus this slack: allocator and import noise, a few MB, while the per-pair score table of
# 400 pairs is well under 1 MB. Holding every decoded 64x64 image would add ~20 MB.
MEMORY_SLACK_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> tuple[dict, str]:
    """One full `bench perf` run: 8 pairs of 64x64, every phase, two fast metrics."""
    folder = tmp_path_factory.mktemp("perf")
    json_path = folder / "perf.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        code = main(["perf", "--pairs", "8", "--size", "64x64", "--metrics", "mse,ssim", "--out", str(folder / "run"),
                     "--json", str(json_path)])
    assert code == 0
    return json.loads(json_path.read_text(encoding="utf-8")), (folder / "run" / "perf.txt").read_text(encoding="utf-8")


@pytest.mark.slow
def test_report_records_the_conditions_of_the_run(tiny_report):
    report, _ = tiny_report
    assert report["config"]["pairs"] == 8 and report["config"]["originals"] == 2
    assert report["config"]["size"] == "64x64" and report["config"]["metrics"] == ["mse", "ssim"]
    assert report["config"]["precision"] == "float32"
    machine = report["machine"]
    for key in ("device", "cpu_model", "cpu_capability", "logical_cpus", "torch_threads", "torch", "numpy",
                "load_average_before"):
        assert machine[key] not in (None, "")
    assert machine["device"] == "cpu"


def test_every_metric_and_the_full_set_have_three_timings_and_their_ratios(tiny_report):
    report, _ = tiny_report
    for entry in [*report["metrics"].values(), report["full_set"]]:
        naive, runner, floor = entry["naive"], entry["runner"], entry["floor"]
        for timing in (naive, runner, floor):
            assert timing["seconds"] > 0 and timing["pairs_per_s"] > 0
            assert timing["pairs_per_s"] == pytest.approx(timing["pairs"] / timing["seconds"])
        assert entry["speedup_vs_naive"] == pytest.approx(naive["seconds_per_pair"] / runner["seconds_per_pair"])
        assert entry["runner_over_floor"] == pytest.approx(runner["seconds_per_pair"] / floor["seconds_per_pair"])
    full = report["full_set"]
    assert full["floor"]["seconds"] == pytest.approx(sum(m["floor"]["seconds"] for m in report["metrics"].values()))
    assert full["naive"]["peak_rss_mb"] > 0 and full["runner"]["peak_rss_mb"] > 0


def test_floor_counts_the_work_the_runner_does(tiny_report):
    report, _ = tiny_report
    for name in ("mse", "ssim"):
        floor = report["metrics"][name]["floor"]
        assert floor["kind"] == "pairs" and floor["items"] == 8
        # Batch sizes above the 8 pairs there are cannot be tried.
        assert set(floor["seconds_per_item_by_batch_size"]) == {"2", "4", "8"} and floor["batch_size"] in (2, 4, 8)


def test_naive_baseline_gives_the_runners_values(tiny_report):
    report, _ = tiny_report
    assert set(report["agreement_max_abs_diff"]) == {"mse", "ssim"}
    for name, difference in report["agreement_max_abs_diff"].items():
        assert difference is not None and difference <= AGREEMENT_TOLERANCE, name


def test_table_shows_rates_ratios_and_conventions(tiny_report):
    report, table = tiny_report
    assert "naive (a) pairs/s" in table and "speedup (b) vs (a)" in table and "(b)/(c) time" in table
    assert "load average" in table.splitlines()[0]
    if Path("/proc/cpuinfo").is_file():
        assert " model " in report["machine"]["cpu_family_model"] and report["machine"]["cpu_family_model"] in table
    assert "full set" in table and "each unique original ONCE" in table
    assert table.splitlines()[0].startswith("bench perf: 8 pairs of 64x64 (2 originals)")


@pytest.mark.slow
def test_runner_memory_stays_flat_as_pairs_grow(tmp_path):
    """Peak RSS of the runner process: 40 vs 400 pairs (each in its own fresh process)."""
    peaks = {}
    for pairs in (40, 400):
        report = perf.run_perf(metric_names=["mse", "psnr", "ssim"], work=tmp_path / str(pairs), pairs=pairs,
                               size=(64, 64), phases=["runner"], device="cpu")
        assert report.full.runner.pairs == pairs
        peaks[pairs] = report.full.runner.peak_rss_bytes
    assert peaks[400] <= 1.10 * peaks[40] + MEMORY_SLACK_BYTES, peaks


def test_synthetic_pairs_are_deterministic_with_four_anonymizations_per_original(tmp_path):
    first = perf.write_synthetic_pairs(tmp_path / "a", 6, (32, 24))
    second = perf.write_synthetic_pairs(tmp_path / "b", 6, (32, 24))
    table = dataset.load_pairs(first)
    assert len(table) == 6 and table.frame["original"].value_counts().tolist() == [4, 2]
    assert table.frame["method"].tolist() == ["mask", "blur", "pixelate", "noise", "mask", "blur"]
    for relative in table.frame["original"].tolist() + table.frame["anonymized"].tolist():
        assert (first.parent / relative).read_bytes() == (second.parent / relative).read_bytes()
    assert first.read_bytes() == second.read_bytes()


def test_missing_pretrained_weights_become_marked_stand_ins(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "empty"))
    setup = perf.prepare_weights(["mse", "lpips", "perceptanon_ha1"], tmp_path / "weights")
    assert setup.stand_ins == ["alexnet", "perceptanon_ha1"]
    assert (tmp_path / "weights" / "alexnet-owt-7be5be79.pth").is_file()
    checkpoint = Path(setup.metric_options["perceptanon_ha1"]["checkpoint"])
    from metrics.perceptanon import load_checkpoint

    _, info = load_checkpoint(checkpoint, ha="HA1")
    assert info.status == "stand-in" and info.backbone == metric_class("perceptanon_ha1").stand_in_backbone


@pytest.mark.parametrize("argv, message", [
    (["--size", "256"], "--size '256' is not WIDTHxHEIGHT"),
    (["--metrics", "fid"], "fid is a set metric"),
    (["--phases", "runner,fast"], "bad --phases 'runner,fast'"),
    (["--pairs", "0"], "--pairs must be at least 1"),
    (["--metrics", "nope"], "unknown metric(s) nope"),
])
def test_bad_options_are_one_line_errors(argv, message, tmp_path, capsys):
    assert main(["perf", "--out", str(tmp_path), *argv]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1


def test_agreement_treats_equal_infinities_as_equal():
    found = perf._agreement({"psnr": [float("inf"), 1.0]}, {"psnr": [float("inf"), 1.5]})
    assert found == {"psnr": 0.5}
    assert perf._agreement({"psnr": [1.0]}, {}) == {"psnr": float("inf")}


def test_errors_inside_a_phase_reach_the_caller_as_one_line(tmp_path):
    csv_path = perf.write_synthetic_pairs(tmp_path / "data", 4, (32, 32))
    (csv_path.parent / dataset.load_pairs(csv_path).frame["anonymized"].iat[1]).write_bytes(b"not an image")
    with pytest.raises(InputError, match="did not score every pair"):
        perf.run_perf(metric_names=["mse"], work=tmp_path / "run", annotations=csv_path, phases=["runner"],
                      device="cpu")


def test_unknown_precision_and_float16_on_cpu_are_refused(tmp_path):
    with pytest.raises(InputError, match="unknown --precision"):
        perf.run_perf(metric_names=["mse"], work=tmp_path, precision="int8", device="cpu")
    with pytest.raises((InputError, MetricInputError), match="float16 needs a CUDA device"):
        perf.run_perf(metric_names=["mse"], work=tmp_path, precision="float16", device="cpu")


# ----------------------------------------------------------------------------- what makes the runner fast
class LayeredFeatures(FeaturePairMetric):
    """Features as a list of per-layer tensors (as LPIPS has them); counts forward passes."""

    name: ClassVar[str] = "layered_features"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True
    calls: ClassVar[list[int]] = []
    #: (original's, anonymized image's) first feature of each pair compared.
    compared: ClassVar[list[tuple[tuple[float, ...], tuple[float, ...]]]] = []

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        type(self).calls.append(len(images))
        return [images.double().mean(dim=(2, 3)), images.double().std(dim=(2, 3))]

    def _compare(self, original_features: list[torch.Tensor], anonymized_features: list[torch.Tensor]) -> torch.Tensor:
        type(self).compared.extend((tuple(o.tolist()), tuple(a.tolist()))
                                   for o, a in zip(original_features[0], anonymized_features[0]))
        return sum((o - a).abs().sum(dim=1) for o, a in zip(original_features, anonymized_features))


def test_runner_tries_each_pass_size_on_cpu_with_the_same_values(tmp_path):
    # bench.scoring.chunking: 4, 8, 16 images per pass, each twice, a short last pass not
    # counting; 6 originals (4, then 2 of a 4) and 24 anonymized images (4, 8, 8, then 4 of a 16).
    csv_path = perf.write_synthetic_pairs(tmp_path / "data", 24, (32, 32))
    table = dataset.load_pairs(csv_path)
    LayeredFeatures.calls = []
    with ResultsStore(tmp_path / "store.sqlite") as store:
        result = score_pairs(table, ["tests.bench.flows.test_perf:LayeredFeatures"], store=store, device="cpu",
                             batch_size=24, progress=False)
    assert LayeredFeatures.calls == [4, 2, 4, 8, 8, 4] and sum(LayeredFeatures.calls) == 6 + 24
    direct = LayeredFeatures()
    for i, value in enumerate(result.scores.sort_values("row")["value"]):
        pair = [torch.from_numpy(images.to_float(images.load_rgb(path))).permute(2, 0, 1)[None].contiguous()
                for path in (table.original_path(i), table.anonymized_path(i))]
        assert value == pytest.approx(direct.score(*pair)[0], rel=1e-12)


def test_floor_of_a_feature_metric_encodes_each_original_once_and_compares_every_pair(tmp_path, monkeypatch):
    csv_path = perf.write_synthetic_pairs(tmp_path / "data", 12, (32, 32))
    table = dataset.load_pairs(csv_path)
    name = "tests.bench.flows.test_perf:LayeredFeatures"
    job = {"annotations": str(csv_path), "root": str(csv_path.parent), "device": "cpu", "precision": "float32",
           "metric_options": {}, "floor_batch_sizes": [2, 4], "metrics": [name]}
    # The size trials (forward passes on a sample) are left out: size 4 "won" them.
    monkeypatch.setattr(perf, "_best_batch_size", lambda *args: {2: 2.0, 4: 1.0})
    LayeredFeatures.calls, LayeredFeatures.compared = [], []
    floor = perf._phase_floor(job, torch.device("cpu"))
    assert floor["kind"] == "images" and floor["items"] == 3 + 12 and floor["batch_size"] == 4
    assert 0 < floor["forward_seconds"] <= floor["seconds"]
    # The 3 originals once (4 at most per pass), then the 12 anonymized images once.
    assert LayeredFeatures.calls == [3, 4, 4, 4]
    # Every pair, and only its own original, was compared (the trials compare nothing).
    def key(features: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(round(value, 6) for value in features)

    mean = {path: key(images.to_float(images.load_rgb(path)).astype(np.float64).mean(axis=(0, 1)))
            for path in {*table.paths("original"), *table.paths("anonymized")}}
    expected = sorted((mean[table.original_path(i)], mean[table.anonymized_path(i)]) for i in range(len(table)))
    assert sorted((key(o), key(a)) for o, a in LayeredFeatures.compared) == expected


def test_cpu_steps_of_the_float64_maths_change_no_value(monkeypatch):
    """MSE and SSIM run a few images at a time on CPUs: the values are the whole batch's."""
    generator = torch.Generator().manual_seed(0)
    original, anonymized = (torch.rand(5, 3, 160, 150, generator=generator) for _ in range(2))
    in_steps = {function: function(original, anonymized).numpy() for function in (functional.mse, functional.ssim)}
    monkeypatch.setattr(functional, "_CPU_STEP_ELEMENTS", 1 << 40)  # the whole batch in one step
    for function, stepped in in_steps.items():
        np.testing.assert_allclose(stepped, function(original, anonymized).numpy(), rtol=0, atol=1e-15)
