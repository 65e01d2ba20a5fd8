"""`bench train`: the paper's recipe on CPU with tiny data, checkpoints that load into the
released layout, exact resumption, evaluation, and the trained model as a metric column.

Every run trains ResNet-18 from scratch at the paper's 224 x 224 input on a 16-pair subset of
the demo set (two score strata: 9 train, 3 val, 4 test pairs).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF_v1

from bench.cli import main
from bench.data import images, protocol
from bench.data.dataset import load_pairs
from bench.errors import InputError
from bench.flows import train
from bench.scoring.runner import score_pairs
from bench.scoring.store import ResultsStore
from metrics import weights
from metrics.errors import MetricError, WeightsError
from metrics.perceptanon import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PerceptAnonHA2Metric,
    load_checkpoint,
    preprocess,
)
from tests.metrics.test_perceptanon import RELEASED, released_transform

CHECKOUT = Path(__file__).resolve().parents[3]
DEMO = CHECKOUT / "fixtures" / "demo"
IMAGES = DEMO / "images"
# Scores are float32 network outputs mapped to 1-10; the runner and the trainer batch the
# test pairs differently, which moves float32 results by a few ulps.
SCORE_TOLERANCE = 1e-4

torch.set_num_threads(2)


def _subset(source: Path, target: Path, keep) -> Path:
    frame = pd.read_csv(source)
    rounded = frame["score_mean"].round()
    pd.concat([frame[rounded <= 4].head(8), frame[keep(rounded)].head(8)]).sort_index().to_csv(target, index=False)
    return target


@pytest.fixture(scope="module")
def ha1_csv(tmp_path_factory) -> Path:
    """16 HA1 pairs: 8 scored 1-4 (blur), 8 scored 10 (mask)."""
    return _subset(DEMO / "HA1.csv", tmp_path_factory.mktemp("ha1") / "HA1.csv", lambda rounded: rounded >= 10)


@pytest.fixture(scope="module")
def ha2_csv(tmp_path_factory) -> Path:
    """16 HA2 pairs: 8 scored 1-4, 8 scored 7-8."""
    return _subset(DEMO / "HA2.csv", tmp_path_factory.mktemp("ha2") / "HA2.csv", lambda rounded: rounded >= 7)


def _config(annotations: Path, out: Path, **changes) -> train.TrainConfig:
    base = train.TrainConfig(annotations=annotations, root=IMAGES, backbone="resnet18", pretrained=False,
                             epochs=3, batch_size=4, device="cpu", out=out)
    return replace(base, **changes)


@pytest.fixture(scope="module")
def trained(ha1_csv, tmp_path_factory) -> train.TrainResult:
    """Full-batch gradient descent without augmentation, so the training loss must fall."""
    config = _config(ha1_csv, tmp_path_factory.mktemp("run") / "out", epochs=5, batch_size=16, augment=False)
    return train.train(config, echo=None)


# --------------------------------------------------------------------------- a short run
@pytest.mark.slow
def test_short_run_lowers_the_training_loss_and_writes_its_files(trained):
    losses = trained.progress.history["train_loss"]
    assert len(losses) == 5
    assert losses[-1] < 0.75 * losses[0], losses
    assert trained.best.is_file() and trained.last.is_file()
    assert (trained.out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (trained.out / "train.log").read_text().splitlines()
    epoch_lines = [line for line in log if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == [f"{e}/5" for e in range(1, 6)]
    pattern = re.compile(r"epoch \d/5  train loss [\d.]+  val loss [\d.]+  lr [\d.e-]+  [\d.]+ s(  \(best\))?")
    assert all(pattern.fullmatch(line) for line in epoch_lines), epoch_lines
    assert "seed 42" in log[0] and "cached in memory" in log[0]


def test_evaluation_reports_the_papers_numbers(trained):
    document = json.loads(trained.eval_path.read_text())
    assert document["n_test"] == 4 and document["split"] == "all"
    assert set(document["metrics"]) == {"mse", "pearson", "spearman", "kendall"}
    assert document["epoch"] == trained.progress.best_epoch
    assert document["provenance"]["seeds"] == {"train": 42, "split": 42}
    assert all(math.isfinite(value) for value in document["metrics"].values())
    assert torch.load(trained.best, weights_only=True)["epoch"] == trained.progress.best_epoch
    # mse is the test loss on the [0, 1] target: recompute it from the scores (1 + 9 * sigmoid).
    table = load_pairs(trained.config.annotations, root=IMAGES)
    targets = (table.frame["score_mean"].to_numpy()[trained.evaluation.rows] - 1) / 9
    predicted = (trained.evaluation.scores - 1) / 9
    assert document["metrics"]["mse"] == pytest.approx(np.mean((predicted - targets) ** 2), rel=1e-5)


def test_checkpoints_load_with_weights_only_and_hold_the_run(trained):
    for path in (trained.best, trained.last):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert {"state_dict", "epoch", "optimizer", "scheduler", "val_loss"} <= checkpoint.keys()
        assert checkpoint["ha"] == "HA1" and checkpoint["backbone"] == "resnet18"
        assert checkpoint["label"] == "mean" and checkpoint["classification"] is False
        assert checkpoint["num_outputs"] == 1 and checkpoint["split"] == "all" and checkpoint["seed"] == 42
        assert checkpoint["weights_status"] == "scratch" and checkpoint["versions"]["torch"] == version("torch")
        assert len(checkpoint["dataset_hash"]) == 64
        model = RELEASED["HA1"]("resnet18", 1)
        model.load_state_dict(checkpoint["state_dict"], strict=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
        scheduler.load_state_dict(checkpoint["scheduler"])
        assert scheduler.last_epoch == checkpoint["epoch"]
    assert torch.load(trained.last, weights_only=True)["epoch"] == 5


def test_trained_checkpoint_is_a_metric_column_of_the_score_table(trained, tmp_path):
    table = load_pairs(trained.config.annotations, root=IMAGES)
    protocol.write_splits(table, tmp_path, splits=["all"])
    test_pairs = load_pairs(tmp_path / "dataset_splits" / "HA1" / "all" / "test.csv", root=IMAGES)
    with ResultsStore(tmp_path / "results.sqlite") as store:
        result = score_pairs(test_pairs, ["perceptanon_ha1", "mse"], store=store, device="cpu", progress=False,
                             batch_size=3, metric_options={"perceptanon_ha1": {"checkpoint": str(trained.best)}})
    wide = result.wide()
    column = next(c for c in wide.columns if c.startswith("perceptanon_ha1"))
    assert column == "perceptanon_ha1 [unverified weights]"
    values = wide[column].to_numpy()
    assert np.isfinite(values).all() and len(values) == 4
    # The trainer's test scores are the metric's scores, pair for pair.
    np.testing.assert_allclose(values, trained.evaluation.scores, rtol=0, atol=SCORE_TOLERANCE)


# --------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("ha", ["HA1", "HA2"])
@pytest.mark.parametrize("label,classification,outputs", [("mean", False, 1), ("labels5", True, 5)])
def test_models_trained_here_load_strictly_into_the_released_layout(ha, label, classification, outputs, tmp_path):
    config = _config(tmp_path / "unused.csv", tmp_path, ha=ha, label=label, classification=classification)
    model, initial = train.build_model(config)
    assert initial.status == "scratch"
    released = RELEASED[ha]("resnet18", outputs)
    released.load_state_dict(model.state_dict(), strict=True)
    pictures = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    inputs = (preprocess(pictures[:1]), preprocess(pictures[1:])) if ha == "HA2" else (preprocess(pictures),)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(*inputs), released.eval()(*inputs), rtol=0, atol=0)
    assert released(*inputs).shape[1] == outputs


@pytest.mark.slow
def test_ha2_classifier_run_loads_as_the_released_model_and_as_a_metric(ha2_csv, tmp_path):
    config = _config(ha2_csv, tmp_path / "out", ha="HA2", label="labels3", classification=True,
                     class_weighted=True, epochs=1, batch_size=8)
    result = train.train(config, echo=None)
    checkpoint = torch.load(result.best, weights_only=True)
    released = RELEASED["HA2"]("resnet18", 3)
    released.load_state_dict(checkpoint["state_dict"], strict=True)
    _, info = load_checkpoint(result.best, ha="HA2")
    assert (info.backbone, info.num_outputs, info.metadata["label"]) == ("resnet18", 3, "labels3")
    metric = PerceptAnonHA2Metric(checkpoint=result.best)
    assert metric.mapping.classification and metric.mapping.label == "labels3"
    numbers = json.loads(result.eval_path.read_text())["metrics"]
    assert set(numbers) == {"accuracy", "precision", "recall", "pearson", "spearman", "kendall"}
    assert 0 <= numbers["accuracy"] <= 1


@pytest.mark.parametrize("ha,label,classification,outputs", [("HA1", "mean", False, 1),
                                                             ("HA2", "labels10", True, 10)])
def test_released_layout_checkpoint_is_evaluated_here(ha, label, classification, outputs, ha1_csv, ha2_csv,
                                                      tmp_path):
    torch.manual_seed(3)
    released = RELEASED[ha]("resnet18", outputs).eval()
    path = tmp_path / "released.pth.tar"
    torch.save({"state_dict": released.state_dict()}, path)
    annotations = ha1_csv if ha == "HA1" else ha2_csv
    config = _config(annotations, tmp_path / "out", ha=ha, label=label, classification=classification,
                     init=path, epochs=0)
    result = train.train(config, echo=None)
    assert result.best is None and result.eval_path.is_file()

    # Reference: the released evaluation transform on the same decoded images.
    table = load_pairs(annotations, root=IMAGES)

    def tensor(path: Path) -> torch.Tensor:
        return released_transform(torch.from_numpy(images.to_float(images.load_rgb(path))).permute(2, 0, 1))[None]

    rows = result.evaluation.rows
    with torch.no_grad():
        anonymized = torch.cat([tensor(table.anonymized_path(i)) for i in rows])
        if ha == "HA2":
            raw = released(torch.cat([tensor(table.original_path(i)) for i in rows]), anonymized)
        else:
            raw = released(anonymized)
    if classification:
        expected = torch.softmax(raw.double(), 1) @ torch.linspace(1, 10, outputs, dtype=torch.float64)
    else:
        expected = 1 + 9 * torch.sigmoid(raw.double()[:, 0])
    np.testing.assert_allclose(result.evaluation.scores, expected.numpy(), rtol=0, atol=SCORE_TOLERANCE)


def test_init_checkpoint_for_another_task_is_refused(tmp_path, ha1_csv):
    path = tmp_path / "released.pth.tar"
    torch.save({"state_dict": RELEASED["HA1"]("resnet18", 10).state_dict()}, path)
    config = _config(ha1_csv, tmp_path / "out", init=path, epochs=0)
    with pytest.raises(MetricError, match="released.pth.tar"):
        train.train(config, echo=None)


# --------------------------------------------------------------------------- resume
def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_run(first: Path, second: Path) -> None:
    a, b = _state(first), _state(second)
    assert a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"]
    for key in ("train_loss", "val_loss", "lr"):
        assert a["progress"]["history"][key] == b["progress"]["history"][key]


@pytest.fixture(scope="module")
def uninterrupted(ha1_csv, tmp_path_factory) -> train.TrainResult:
    return train.train(_config(ha1_csv, tmp_path_factory.mktemp("whole") / "out"), echo=None)


@pytest.mark.slow
def test_resumed_run_ends_with_the_same_weights(uninterrupted, ha1_csv, tmp_path):
    config = _config(ha1_csv, tmp_path / "out")
    stopped = train.train(replace(config, stop_after=1), echo=None)
    assert stopped.progress.epoch == 1
    # The rest runs with DataLoader workers (no cache): order and augmentation do not change.
    resumed = train.train(replace(config, resume=True, workers=2), echo=None)
    assert resumed.progress.epoch == 3
    _assert_same_run(uninterrupted.last, resumed.last)
    _assert_same_run(uninterrupted.best, resumed.best)
    assert "stopped after epoch 1 of 3" in (tmp_path / "out" / "train.log").read_text()


@pytest.mark.slow
def test_run_killed_mid_training_resumes_to_the_same_weights(uninterrupted, ha1_csv, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bench", "train", "--annotations", str(ha1_csv), "--root", str(IMAGES),
               "--backbone", "resnet18", "--no-pretrained", "--epochs", "3", "--batch-size", "4",
               "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT), "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    process = subprocess.Popen(command, cwd=CHECKOUT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "train.log"
    deadline = time.monotonic() + 120
    while not (log.is_file() and "epoch 1/3" in log.read_text()):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no epoch finished in 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _state(out / "last.pt")["epoch"]
    assert killed_at in (1, 2), "the run finished before it could be killed"
    assert main(command[3:] + ["--resume"]) == 0
    _assert_same_run(uninterrupted.last, out / "last.pt")


def test_resume_refuses_another_recipe_and_a_fresh_start_refuses_an_existing_run(uninterrupted, ha1_csv,
                                                                                  capsys):
    arguments = ["train", "--annotations", str(ha1_csv), "--root", str(IMAGES), "--backbone", "resnet18",
                 "--no-pretrained", "--epochs", "3", "--batch-size", "4", "--device", "cpu",
                 "--out", str(uninterrupted.out)]
    assert main(arguments + ["--lr", "0.02", "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "recipe" in error and "'lr': 0.02" in error
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--resume" in error


def test_resume_without_a_run_is_an_error(ha1_csv, tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        train.train(_config(ha1_csv, tmp_path / "empty", resume=True), echo=None)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_undecodable_image_stops_the_run_with_one_line(workers, ha1_csv, tmp_path, capsys):
    frame = pd.read_csv(ha1_csv)
    for column in ("img1", "img2"):
        for relative in frame[column]:
            target = tmp_path / "images" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((IMAGES / relative).read_bytes())
    broken = tmp_path / "images" / frame["img2"].iloc[0]
    broken.write_bytes(broken.read_bytes()[:100])
    code = main(["train", "--annotations", str(ha1_csv), "--root", str(tmp_path / "images"), "--backbone",
                 "resnet18", "--no-pretrained", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                 "--workers", str(workers), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert f"cannot decode image {broken}" in error and "bench validate" in error


# --------------------------------------------------------------------------- pretrained
@pytest.mark.parametrize("ha", ["HA1", "HA2"])
def test_imagenet_weights_initialise_the_backbone(ha, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    torch.manual_seed(11)
    imagenet = torchvision.models.resnet18().state_dict()
    weights.write_stand_in("resnet18", imagenet, tmp_path)
    model, initial = train.build_model(_config(tmp_path / "unused.csv", tmp_path, ha=ha, pretrained=True))
    assert initial.status == "stand-in" and initial.sha256
    backbone = (model.shared_extractor if ha == "HA2" else model).state_dict()
    copied = [key for key in imagenet if key in backbone and torch.equal(backbone[key], imagenet[key])]
    assert set(imagenet) - set(copied) == {"fc.weight", "fc.bias"}


def test_missing_imagenet_weights_say_how_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError) as caught:
        train.build_model(_config(tmp_path / "unused.csv", tmp_path, pretrained=True))
    message = str(caught.value)
    assert "\n" not in message
    assert "bench weights fetch resnet18" in message and "--no-pretrained" in message


# --------------------------------------------------------------------------- pieces
def test_class_weights_are_the_released_inverse_frequencies():
    classes = np.array([0, 0, 0, 1, 2, 2, 4])
    counts = Counter(classes.tolist())
    expected = [len(classes) / counts[c] if c in counts else 1.0 for c in range(5)]
    np.testing.assert_allclose(train.class_weights(classes, 5).numpy(), expected, rtol=1e-6)


def test_macro_precision_recall_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        true, predicted = rng.integers(0, 5, 30), rng.integers(0, 6, 30)
        precision, recall = train.macro_precision_recall(true, predicted)
        assert precision == pytest.approx(metrics.precision_score(true, predicted, average="macro", zero_division=0))
        assert recall == pytest.approx(metrics.recall_score(true, predicted, average="macro", zero_division=0))


def test_epoch_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        return [i for _, i in train.EpochOrder(20, epoch, seed)]

    assert order(42, 3) == order(42, 3)
    assert sorted(order(42, 3)) == list(range(20))
    assert order(42, 3) != order(42, 4) and order(42, 3) != order(43, 3)
    assert order(None, 3) == list(range(20))


def test_augmentation_is_the_released_transform_with_draws_from_seed_epoch_row():
    rgb = np.asarray(torch.randint(0, 256, (50, 70, 3), generator=torch.Generator().manual_seed(1)),
                     dtype=np.uint8)
    resized = torch.nn.functional.interpolate(torch.from_numpy(rgb / np.float32(255)).permute(2, 0, 1)[None],
                                              size=(224, 224), mode="bilinear", antialias=True)[0]
    normalised = train.network_input(rgb)
    torch.testing.assert_close(normalised, preprocess(resized[None])[0])
    augmentation = train.Augmentation(seed=42)
    (first,) = augmentation((normalised,), epoch=2, row=5)
    (again,) = augmentation((normalised,), epoch=2, row=5)
    (other,) = augmentation((normalised,), epoch=3, row=5)
    assert torch.equal(first, again) and not torch.equal(first, other)

    # Reference: the same draws, applied as the released code orders them (flip, rotate with
    # black fill on the [0, 1] image, then normalise), with torchvision's v1 functions.
    flips = set()
    for row in range(8):
        generator = augmentation.generator(2, row)
        flip = torch.rand(1, generator=generator).item() < 0.5
        angle = torch.empty(1).uniform_(-10, 10, generator=generator).item()
        image = TF_v1.hflip(resized) if flip else resized
        image = TF_v1.rotate(image, angle, interpolation=InterpolationMode.NEAREST, fill=[0.0, 0.0, 0.0])
        expected = TF_v1.normalize(image, IMAGENET_MEAN, IMAGENET_STD)
        (augmented,) = augmentation((normalised,), epoch=2, row=row)
        torch.testing.assert_close(augmented, expected, rtol=0, atol=1e-5)
        flips.add(flip)
    assert flips == {True, False}


@pytest.mark.parametrize("arguments,needle", [
    (["--label", "mean", "--classification"], "regression target"),
    (["--label", "labels5", "--binary-compat"], "--binary-compat"),
    (["--backbone", "resnet7"], "resnet18, resnet50"),
    (["--split", "loov-mars"], "loov-coco"),
    (["--epochs", "0"], "--epochs"),
])
def test_bad_options_are_one_line_errors(arguments, needle, ha1_csv, tmp_path, capsys):
    code = main(["train", "--annotations", str(ha1_csv), "--out", str(tmp_path / "out"), *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and needle in error
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- --convention paper
@pytest.mark.parametrize("label", ["labels5", "binary"])
def test_paper_convention_evaluates_as_the_released_eval_py(label):
    """The released eval.py correlates the training label with the arg-max class (classifier)
    or the sigmoid output (regression); ours by default, the expected 1-10 score with score_mean.
    Oracle: scipy on those very vectors (binary with the released labels, score > 5 -> 0)."""
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(7)
    score_mean = rng.uniform(1, 10, 40)
    compat = label == "binary"
    for classification in (True, False):
        mapping = train.OutputMapping(label=label, classification=classification, binary_compat=compat)
        targets = torch.from_numpy(protocol.labels(score_mean, label, classification=classification,
                                                   binary_compat=compat))
        raw = torch.randn(40, mapping.num_outputs, generator=torch.Generator().manual_seed(3))
        criterion = train.Criterion(classification)
        paper = train.summarise(raw, targets, score_mean, np.arange(40), mapping, criterion, "paper")
        ours = train.summarise(raw, targets, score_mean, np.arange(40), mapping, criterion)
        predicted = raw.argmax(dim=1).numpy() if classification else torch.sigmoid(raw[:, 0]).numpy()
        human = targets.numpy()
        assert paper.numbers["spearman"] == pytest.approx(scipy_stats.spearmanr(human, predicted)[0], abs=1e-12)
        assert paper.numbers["kendall"] == pytest.approx(scipy_stats.kendalltau(human, predicted)[0], abs=1e-12)
        assert paper.numbers["pearson"] == pytest.approx(
            scipy_stats.pearsonr(human.astype(np.float64), predicted.astype(np.float64))[0], abs=1e-12)
        expected = mapping.scores(raw).numpy()
        assert ours.numbers["spearman"] == pytest.approx(scipy_stats.spearmanr(expected, score_mean)[0], abs=1e-12)
    with pytest.raises(InputError, match="--convention"):
        train.TrainConfig(annotations=Path("HA1.csv"), convention="released")
