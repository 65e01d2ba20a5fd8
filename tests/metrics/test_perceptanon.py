"""PerceptAnon adapters against models built the way the paper's released code builds them.

No trained PerceptAnon or ImageNet weights exist here, so every network is a seeded random
initialisation ("stand-in"); what is checked is the layout (strict loading of released-style
checkpoints), the arithmetic from raw output to score, and batch/feature-reuse invariance.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision import transforms

from metrics import perceptanon
from metrics.errors import MetricInputError, WeightsError
from metrics.perceptanon import (
    BACKBONES,
    OutputMapping,
    PerceptAnonHA1Metric,
    PerceptAnonHA2Metric,
    build_ha1,
    build_ha2,
    load_checkpoint,
    save_checkpoint,
)

# Scores are float32 network outputs on a 1-10 scale, and float32 kernels block a batch
# differently by its size: 1e-5 is ~10 float32 ulps at 8, far below any layout or mapping error.
TOLERANCE = 1e-5


# -- the released code's layout, written independently of metrics.perceptanon --------------------
def _released_backbone(backbone: str, last_layer: type[nn.Module] | None, num_outputs: int = 0):
    """A torchvision model with its classifier swapped as the released models.py does it."""
    model = getattr(torchvision.models, backbone)()
    if backbone.startswith("resnet"):
        in_features = model.fc.in_features
        model.fc = nn.Linear(in_features, num_outputs) if last_layer is nn.Linear else nn.Identity()
    elif backbone.startswith("densenet"):
        in_features = model.classifier.in_features
        model.classifier = nn.Linear(in_features, num_outputs) if last_layer is nn.Linear else nn.Identity()
    else:
        in_features = model.classifier[6].in_features
        model.classifier[6] = nn.Linear(in_features, num_outputs) if last_layer is nn.Linear else nn.Identity()
    return model, in_features


def released_ha1(backbone: str, num_outputs: int) -> nn.Module:
    return _released_backbone(backbone, nn.Linear, num_outputs)[0]


class ReleasedHA2(nn.Module):
    def __init__(self, backbone: str, num_outputs: int) -> None:
        super().__init__()
        self.shared_extractor, feature_dim = _released_backbone(backbone, None)
        self.head = nn.Sequential(nn.Linear(2 * feature_dim, 512), nn.ReLU(), nn.Linear(512, num_outputs))

    def forward(self, original, anonymized):
        both = torch.cat((self.shared_extractor(original), self.shared_extractor(anonymized)), dim=1)
        return self.head(both)


RELEASED = {"HA1": released_ha1, "HA2": ReleasedHA2}
OURS = {"HA1": build_ha1, "HA2": build_ha2}
METRICS = {"HA1": PerceptAnonHA1Metric, "HA2": PerceptAnonHA2Metric}

# The paper's evaluation transform, on tensors (torchvision's Resize, not our interpolate call).
released_transform = transforms.Compose([
    transforms.Resize((224, 224), antialias=True),
    transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
])


def released_scores(raw: torch.Tensor, classes: int | None) -> np.ndarray:
    """1 + 9 * sigmoid for regression; sum_c p_c * (1 + 9 c / (K - 1)) for K classes."""
    raw = raw.double()
    if classes is None:
        return (1 + 9 * torch.sigmoid(raw[:, 0])).numpy()
    class_scores = torch.tensor([1 + 9 * c / (classes - 1) for c in range(classes)], dtype=torch.float64)
    return (torch.softmax(raw, dim=1) * class_scores).sum(dim=1).numpy()


def released_checkpoint(model: nn.Module, path) -> None:
    """What the released trainer writes: state dict plus optimizer, scheduler and epoch info."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=200)
    torch.save({"epoch": 7, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "val_loss": 0.03, "lr": 0.01}, path)


def seeded(factory, *args, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return factory(*args).eval()


def images(count: int, size: tuple[int, int] = (64, 64), seed: int = 0) -> torch.Tensor:
    """Smooth random images with noise, so that resizing and the networks see structure."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=generator)
    smooth = nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    return (smooth + 0.1 * torch.randn(count, 3, *size, generator=generator)).clamp(0, 1)


@pytest.fixture(scope="module")
def resnet18_ha1_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("perceptanon") / "ha1_resnet18_mean.pth.tar"
    released_checkpoint(seeded(released_ha1, "resnet18", 1), path)
    return path


@pytest.fixture(scope="module")
def resnet18_ha2_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("perceptanon") / "ha2_resnet18_mean.pth.tar"
    released_checkpoint(seeded(ReleasedHA2, "resnet18", 1), path)
    return path


# -- layout ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("ha", ["HA1", "HA2"])
def test_state_dict_layout_equals_released(ha, backbone):
    with torch.device("meta"):
        ours = OURS[ha](backbone, 3).state_dict()
        released = RELEASED[ha](backbone, 3).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in released.items()}


CASES = [  # backbone, ha, label, number of classes (None = regression)
    ("resnet18", "HA1", "mean", None),
    ("resnet18", "HA1", "labels10", 10),
    ("resnet18", "HA2", "mean", None),
    ("resnet18", "HA2", "labels10", 10),
    ("alexnet", "HA1", "labels3", 3),
    ("alexnet", "HA2", "mean", None),
]


@pytest.mark.parametrize("backbone, ha, label, classes", CASES)
def test_scores_equal_released_model(tmp_path, backbone, ha, label, classes):
    released = seeded(RELEASED[ha], backbone, classes or 1)
    path = tmp_path / f"{ha}_{backbone}_{label}.pth.tar"
    released_checkpoint(released, path)
    metric = METRICS[ha](checkpoint=path)
    assert (metric.checkpoint.backbone, metric.checkpoint.num_outputs) == (backbone, classes or 1)
    assert (metric.mapping.label, metric.mapping.classification) == (label if classes else "mean", classes is not None)

    # Larger than 224 and not square, so that the resize filter's antialiasing matters.
    original, anonymized = images(4, (320, 280), seed=1), images(4, (320, 280), seed=2)
    with torch.no_grad():
        anonymized_input = released_transform(anonymized)
        raw = released(anonymized_input) if ha == "HA1" else released(released_transform(original), anonymized_input)
    expected = released_scores(raw, classes)
    assert np.ptp(expected) > 1e-4  # the comparison must be able to tell images apart
    np.testing.assert_allclose(metric.score(original, anonymized), expected, rtol=0, atol=TOLERANCE)
    if classes:
        prediction = metric.predict(original, anonymized)
        np.testing.assert_array_equal(prediction.predicted_class, raw.argmax(dim=1).numpy())
        np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, atol=1e-12)


def test_resnet50_checkpoint_loads_strictly(tmp_path):
    # Key compatibility only: a forward pass would cost seconds and adds nothing over resnet18.
    path = tmp_path / "ha2_resnet50.pth.tar"
    released_checkpoint(ReleasedHA2("resnet50", 5), path)
    model, info = load_checkpoint(path, ha="HA2")
    assert (info.backbone, info.num_outputs, info.status) == ("resnet50", 5, "unverified")
    assert info.metadata["epoch"] == 7 and "optimizer" not in info.metadata
    assert isinstance(model, perceptanon.SiameseHA2) and not model.training


def test_binary_compat_reads_released_labels(tmp_path):
    released = seeded(released_ha1, "resnet18", 2)
    path = tmp_path / "ha1_binary.pth.tar"
    released_checkpoint(released, path)
    anonymized = images(5, seed=3)
    with torch.no_grad():
        probabilities = torch.softmax(released(released_transform(anonymized)).double(), dim=1).numpy()

    ours = PerceptAnonHA1Metric(checkpoint=path, label="binary")
    compat = PerceptAnonHA1Metric(checkpoint=path, label="binary", binary_compat=True)
    # Ours: class 1 = anonymous; released: class 0 = anonymous (mean score > 5).
    np.testing.assert_allclose(ours.score(None, anonymized), 1 + 9 * probabilities[:, 1], atol=TOLERANCE)
    np.testing.assert_allclose(compat.score(None, anonymized), 1 + 9 * probabilities[:, 0], atol=TOLERANCE)
    np.testing.assert_array_equal(compat.predict(None, anonymized).predicted_class, probabilities.argmax(axis=1) == 0)


def test_binary_compat_is_read_from_checkpoint_metadata(tmp_path):
    model = seeded(perceptanon.build_ha1, "resnet18", 2)
    path = tmp_path / "trained_compat.pt"
    perceptanon.save_checkpoint(model, path, label="binary", classification=True, binary_compat=True)
    assert PerceptAnonHA1Metric(checkpoint=path).mapping.binary_compat is True
    with pytest.raises(MetricInputError, match="binary_compat=True"):
        PerceptAnonHA1Metric(checkpoint=path, binary_compat=False)


def test_data_parallel_prefix_is_stripped(tmp_path):
    released = seeded(released_ha1, "resnet18", 1)
    path = tmp_path / "data_parallel.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in released.state_dict().items()}}, path)
    model, _ = load_checkpoint(path, ha="HA1")
    assert torch.equal(model.fc.weight, released.fc.weight)


# -- errors ---------------------------------------------------------------------------------------------
def _assert_one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_wrong_or_missing_keys_give_one_line_error(tmp_path, resnet18_ha1_file):
    state = torch.load(resnet18_ha1_file, weights_only=True)["state_dict"]
    state["layer9.weight"] = state.pop("layer1.0.conv1.weight")
    path = tmp_path / "renamed.pth.tar"
    torch.save({"state_dict": state}, path)

    with pytest.raises(WeightsError) as error:
        load_checkpoint(path, ha="HA1")
    _assert_one_line(error, "renamed.pth.tar", "backbone=")
    with pytest.raises(WeightsError) as error:
        load_checkpoint(path, ha="HA1", backbone="resnet18")
    _assert_one_line(error, "renamed.pth.tar", "missing keys layer1.0.conv1.weight", "unexpected keys layer9.weight")


def test_mismatched_files_and_options_are_refused(tmp_path, resnet18_ha1_file, resnet18_ha2_file):
    with pytest.raises(WeightsError) as error:
        load_checkpoint(resnet18_ha2_file, ha="HA1")
    _assert_one_line(error, resnet18_ha2_file.name, "perceptanon_ha2")
    with pytest.raises(WeightsError) as error:
        load_checkpoint(resnet18_ha1_file, ha="HA1", num_outputs=3)
    _assert_one_line(error, resnet18_ha1_file.name, "size mismatch for fc.weight")
    with pytest.raises(WeightsError) as error:
        PerceptAnonHA1Metric(checkpoint=resnet18_ha1_file, label="labels5", classification=True)
    _assert_one_line(error, resnet18_ha1_file.name, "1 output(s)")

    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint")
    for path in (garbage, tmp_path / "absent.pth.tar"):
        with pytest.raises(WeightsError) as error:
            load_checkpoint(path, ha="HA1")
        _assert_one_line(error, path.name)
    with pytest.raises(MetricInputError, match="checkpoint=PATH"):
        PerceptAnonHA2Metric()


# -- our checkpoints -----------------------------------------------------------------------------------
def test_save_checkpoint_loads_into_released_model(tmp_path):
    ours = seeded(build_ha2, "resnet18", 10, seed=4)
    path = tmp_path / "ours.pth.tar"
    save_checkpoint(ours, path, ha="HA2", backbone="resnet18", label="labels10", classification=True,
                    weights_status="stand-in")
    assert [p.name for p in tmp_path.iterdir()] == ["ours.pth.tar"]  # no temporary file left behind

    saved = torch.load(path, map_location="cpu", weights_only=True)
    released = ReleasedHA2("resnet18", 10)
    released.load_state_dict(saved["state_dict"], strict=True)
    assert torch.equal(released.head[2].weight, ours.head[2].weight)
    assert saved["label"] == "labels10"

    metric = PerceptAnonHA2Metric(checkpoint=path)
    assert metric.mapping == OutputMapping(label="labels10", classification=True)
    assert metric.weights()[0].status == "stand-in" and not metric.verified
    with pytest.raises(MetricInputError, match="label='labels10'"):
        PerceptAnonHA2Metric(checkpoint=path, label="labels5")
    with pytest.raises(MetricInputError, match="must be str, int"):
        save_checkpoint(ours, tmp_path / "bad.pth.tar", backbone=["resnet18"])


def test_weights_record_hashes_the_file(resnet18_ha1_file, monkeypatch):
    sha256 = hashlib.sha256(resnet18_ha1_file.read_bytes()).hexdigest()
    metric = PerceptAnonHA1Metric(checkpoint=resnet18_ha1_file)
    assert metric.weights()[0] == perceptanon.WeightsRecord(resnet18_ha1_file.name, sha256, "unverified")
    monkeypatch.setitem(perceptanon.KNOWN_CHECKPOINTS, sha256, "perceptanon-ha1-resnet18")
    assert PerceptAnonHA1Metric(checkpoint=resnet18_ha1_file).verified


# -- raw output -> score -------------------------------------------------------------------------------
def test_regression_mapping_is_one_plus_nine_sigmoid():
    raw = torch.tensor([[-2.0], [0.0], [3.0]])
    expected = [1 + 9 / (1 + math.exp(-x)) for x in (-2.0, 0.0, 3.0)]
    np.testing.assert_allclose(OutputMapping().scores(raw).numpy(), expected, rtol=0, atol=1e-12)
    compat = OutputMapping(label="binary", binary_compat=True)
    np.testing.assert_allclose(compat.scores(raw).numpy(), [11 - e for e in expected], rtol=0, atol=1e-12)


def test_classification_mapping_expected_class_and_argmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0]])
    probabilities = np.exp(logits.numpy()[0]) / np.exp(logits.numpy()[0]).sum()
    labels10 = OutputMapping(label="labels10", classification=True)
    np.testing.assert_allclose(labels10.scores(logits).numpy(), [(probabilities * np.arange(1, 11)).sum()], atol=1e-12)
    assert labels10.predicted_class(logits).tolist() == [9]
    labels5 = OutputMapping(label="labels5", classification=True)
    assert labels5.class_scores().tolist() == [1.0, 3.25, 5.5, 7.75, 10.0]

    binary = torch.tensor([[2.0, -1.0]])  # released labels: class 0 = anonymous
    ours = OutputMapping(label="binary", classification=True)
    compat = OutputMapping(label="binary", classification=True, binary_compat=True)
    assert ours.scores(binary).item() < 5.5 < compat.scores(binary).item()
    assert ours.scores(binary).item() + compat.scores(binary).item() == pytest.approx(11.0)
    assert (ours.predicted_class(binary).item(), compat.predicted_class(binary).item()) == (0, 1)


@pytest.mark.parametrize("options, message", [
    ({"label": "labels7"}, "choose from"),
    ({"label": "mean", "classification": True}, "regression target"),
    ({"label": "labels10", "binary_compat": True}, "only to label 'binary'"),
])
def test_invalid_mappings_are_refused(options, message):
    with pytest.raises(MetricInputError, match=message):
        OutputMapping(**options)


# -- invariance -------------------------------------------------------------------------------------
def _in_batches(score, original: torch.Tensor, anonymized: torch.Tensor, batch_size: int) -> np.ndarray:
    return np.concatenate([score(original[i:i + batch_size], anonymized[i:i + batch_size])
                           for i in range(0, len(anonymized), batch_size)])


@pytest.mark.parametrize("ha", ["HA1", "HA2"])
def test_batch_size_does_not_change_scores(ha, resnet18_ha1_file, resnet18_ha2_file):
    metric = METRICS[ha](checkpoint=resnet18_ha1_file if ha == "HA1" else resnet18_ha2_file)
    pairs = 32 if ha == "HA1" else 16  # 32 images through the backbone either way
    original, anonymized = images(pairs, seed=5), images(pairs, seed=6)
    whole = metric.score(original, anonymized)
    assert np.ptp(whole) > 1e-4
    # Only the first rows are rescored in small batches: the batch size is what is under test.
    for batch_size, rows in ((7, 14), (1, 3)):
        np.testing.assert_allclose(_in_batches(metric.score, original[:rows], anonymized[:rows], batch_size),
                                   whole[:rows], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("ha", ["HA1", "HA2"])
def test_features_of_shared_originals_are_reused(ha, resnet18_ha1_file, resnet18_ha2_file):
    metric = METRICS[ha](checkpoint=resnet18_ha1_file if ha == "HA1" else resnet18_ha2_file)
    originals, anonymized = images(3, seed=7), images(6, seed=8)
    index = torch.tensor([0, 0, 1, 2, 2, 2])
    reused = metric.compare(metric.select(metric.features(originals), index), metric.features(anonymized))
    np.testing.assert_allclose(reused, metric.score(originals[index], anonymized), rtol=0, atol=TOLERANCE)


# -- the released eval.py rule (--convention paper) ---------------------------------------------------
def test_class_rule_argmax_scores_the_arg_max_class(tmp_path):
    """class_rule='argmax' (the released eval.py correlates the arg-max class): the score is
    that class's 1-10 score; the key changes, so stored expected-class scores are not reused;
    regression checkpoints have one output and keep their score and key."""
    model = seeded(perceptanon.build_ha1, "resnet18", 5)
    path = tmp_path / "labels5.pt"
    perceptanon.save_checkpoint(model, path, label="labels5", classification=True)
    anonymized = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    expected = PerceptAnonHA1Metric(checkpoint=path)
    argmax = PerceptAnonHA1Metric(checkpoint=path, class_rule="argmax")
    classes = expected.predict(None, anonymized).predicted_class
    np.testing.assert_allclose(argmax.score(None, anonymized), 1 + 9 * classes / 4, atol=1e-12)
    assert argmax.key() != expected.key() and "class_rule" not in expected.config()
    with pytest.raises(MetricInputError, match="class_rule 'mode'; choose from: expected, argmax"):
        PerceptAnonHA1Metric(checkpoint=path, class_rule="mode")
    regression = tmp_path / "mean.pt"
    perceptanon.save_checkpoint(seeded(perceptanon.build_ha1, "resnet18", 1), regression, label="mean")
    assert (PerceptAnonHA1Metric(checkpoint=regression, class_rule="argmax").key()
            == PerceptAnonHA1Metric(checkpoint=regression).key())
