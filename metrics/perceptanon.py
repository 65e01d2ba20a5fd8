"""PerceptAnon (Patwari et al., ICML 2024): anonymity predicted by a network trained on human scores.

Two model layouts, named so that the paper's released checkpoints (a dict whose
'state_dict' was saved from its model classes) load here with strict=True:

- HA1 judges the anonymized image alone: a torchvision backbone whose last layer is a new
  `Linear(in_features, num_outputs)` (ResNet `fc`, DenseNet `classifier`, VGG/AlexNet
  `classifier[6]`). Its state dict is the plain torchvision one (`conv1.weight`, ..., `fc.weight`).
- HA2 judges an (original, anonymized) pair with a Siamese network: `shared_extractor` is the
  backbone with that last layer replaced by `Identity`, and `head` is
  `Linear(2F, 512) - ReLU - Linear(512, num_outputs)` on the concatenated embeddings
  (original first).

The modules hold no sigmoid or softmax, so their state dicts are exactly the released ones;
`OutputMapping` turns the raw output into a score on the paper's 1-10 scale, higher = more
anonymous:

- regression (one output): score = 1 + 9 * sigmoid(output). The paper trains 'mean' on the
  mean human score normalised from 1-10 to [0, 1], and labels10/5/3 on class / (K - 1), so
  the same map serves every regression target.
- classification (K outputs): score = the expected class score under the softmax, where class
  c of K scores 1 + 9 * c / (K - 1), the value the regression targets give that class. For
  K = 10 that is c + 1; for K = 5 it is 1, 3.25, 5.5, 7.75, 10 (not the bin centres 2, 4, 6, 8,
  9.5) so that the score stays an affine function of the expected class index and ranks
  pairs exactly as the expected class does. `predict` also returns the arg-max class.
- binary: ours is class 1 = "anonymous" (mean human score > 5). The released label transform
  has it the other way round (class 0 = score > 5); `binary_compat=True` reads such a
  checkpoint and flips its output, so scores stay "higher = more anonymous".

Preprocessing follows the paper's evaluation transform: resize to 224 x 224, then ImageNet
normalisation. The released code resized PIL images (`transforms.Resize((224, 224))`, PIL
bilinear with its built-in antialiasing, rounded to uint8); we get float tensors and use
torch's bilinear resize with antialias=True, which implements the same filter without the
uint8 rounding: the two differ by at most 1/255 per pixel (about 0.3/255 on average).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from metrics.atomic import save_torch_atomic
from metrics.base import FeaturePairMetric, WeightsRecord, check_inputs
from metrics.errors import MetricInputError, WeightsError, checkpoint_load_reason
from metrics.hashing import file_sha256

BACKBONES = ("resnet18", "resnet50", "resnet152", "densenet121", "alexnet", "vgg11")
HA_MODES = ("HA1", "HA2")
#: How a classifier's outputs become its score: expected class score, or the arg-max class's.
CLASS_RULES = ("expected", "argmax")

IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Label granularities of the paper's protocol and their number of classes.
GRANULARITIES: dict[str, int] = {"labels10": 10, "labels5": 5, "labels3": 3, "binary": 2}
LABELS = ("mean", *GRANULARITIES)

# sha256 -> name of published PerceptAnon checkpoints. The released README's checkpoint link
# is empty, so none is known yet: every checkpoint loads as "unverified" until one is added.
KNOWN_CHECKPOINTS: dict[str, str] = {}

_TORCHVISION_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": tvm.resnet18,
    "resnet50": tvm.resnet50,
    "resnet152": tvm.resnet152,
    "densenet121": tvm.densenet121,
    "alexnet": tvm.alexnet,
    "vgg11": tvm.vgg11,
}

# The classifier layer each backbone ends in, as a submodule path.
_LAST_LAYER: dict[str, str] = {
    "resnet18": "fc",
    "resnet50": "fc",
    "resnet152": "fc",
    "densenet121": "classifier",
    "alexnet": "classifier.6",
    "vgg11": "classifier.6",
}

_HA2_HEAD_OUTPUT = "head.2"
_METADATA_TYPES = (str, int, float, bool, type(None))


# -- models --------------------------------------------------------------------------------
def check_backbone(backbone: str) -> str:
    if backbone not in BACKBONES:
        raise MetricInputError(f"unknown PerceptAnon backbone {backbone!r}; choose from: {', '.join(BACKBONES)}")
    return backbone


def _backbone_with_last_layer(backbone: str, replacement: Callable[[int], nn.Module]) -> tuple[nn.Module, int]:
    """A randomly initialised torchvision model whose last layer is `replacement(in_features)`."""
    model = _TORCHVISION_BUILDERS[check_backbone(backbone)](weights=None)
    layer_path = _LAST_LAYER[backbone]
    in_features = model.get_submodule(layer_path).in_features
    model.set_submodule(layer_path, replacement(in_features))
    return model, in_features


def build_ha1(backbone: str, num_outputs: int) -> nn.Module:
    """The HA1 network: the torchvision model itself, with a `num_outputs` last layer."""
    model, _ = _backbone_with_last_layer(backbone, lambda in_features: nn.Linear(in_features, num_outputs))
    return model


class SiameseHA2(nn.Module):
    """The HA2 network: one backbone embeds both images, an MLP scores the pair."""

    def __init__(self, backbone: str, num_outputs: int) -> None:
        super().__init__()
        self.shared_extractor, feature_dim = _backbone_with_last_layer(backbone, lambda _: nn.Identity())
        self.head = nn.Sequential(nn.Linear(2 * feature_dim, 512), nn.ReLU(), nn.Linear(512, num_outputs))

    def compare_embeddings(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat((original, anonymized), dim=1))

    def forward(self, original: torch.Tensor, anonymized: torch.Tensor) -> torch.Tensor:
        return self.compare_embeddings(self.shared_extractor(original), self.shared_extractor(anonymized))


def build_ha2(backbone: str, num_outputs: int) -> SiameseHA2:
    return SiameseHA2(backbone, num_outputs)


_BUILDERS: dict[str, Callable[[str, int], nn.Module]] = {"HA1": build_ha1, "HA2": build_ha2}


def _check_ha(ha: str) -> str:
    if ha not in HA_MODES:
        raise MetricInputError(f"unknown PerceptAnon mode {ha!r}; choose from: {', '.join(HA_MODES)}")
    return ha


def _head_output_key(ha: str, backbone: str) -> str:
    """The state-dict key of the weight whose rows are the model's outputs."""
    return f"{_HA2_HEAD_OUTPUT if ha == 'HA2' else _LAST_LAYER[backbone]}.weight"


@lru_cache(maxsize=None)
def _state_keys(ha: str, backbone: str) -> frozenset[str]:
    # Built on the meta device: the layout costs neither memory nor initialisation time.
    with torch.device("meta"):
        return frozenset(_BUILDERS[ha](backbone, 1).state_dict())


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] NCHW -> 224 x 224, ImageNet-normalised, as the paper's evaluation transform."""
    if images.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False,
                               antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


# -- raw output -> anonymity score -------------------------------------------------------------
@dataclass(frozen=True)
class OutputMapping:
    """How a checkpoint's raw output becomes a 1-10 anonymity score (see the module docstring)."""

    label: str = "mean"
    classification: bool = False
    binary_compat: bool = False

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise MetricInputError(f"unknown PerceptAnon label {self.label!r}; choose from: {', '.join(LABELS)}")
        if self.classification and self.label == "mean":
            raise MetricInputError(
                "PerceptAnon label 'mean' is a regression target; a classifier needs label "
                f"{', '.join(GRANULARITIES)}"
            )
        if self.binary_compat and self.label != "binary":
            raise MetricInputError(f"binary_compat applies only to label 'binary', not {self.label!r}; drop it")

    @property
    def num_outputs(self) -> int:
        return GRANULARITIES[self.label] if self.classification else 1

    def class_scores(self) -> torch.Tensor:
        """The 1-10 score of each class, least anonymous first (classification only)."""
        return torch.linspace(1.0, 10.0, self.num_outputs, dtype=torch.float64)

    def probabilities(self, raw: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes, ordered least to most anonymous (classification only)."""
        probabilities = torch.softmax(raw.double(), dim=1)
        return probabilities.flip(1) if self.binary_compat else probabilities

    def scores(self, raw: torch.Tensor) -> torch.Tensor:
        if self.classification:
            return self.probabilities(raw) @ self.class_scores().to(raw.device)
        anonymity = torch.sigmoid(raw.double()[:, 0])
        return 1.0 + 9.0 * (1.0 - anonymity if self.binary_compat else anonymity)

    def predicted_class(self, raw: torch.Tensor) -> torch.Tensor:
        """Arg-max class, 0 = least anonymous (classification only)."""
        return self.probabilities(raw).argmax(dim=1)

    def describe(self) -> str:
        if self.classification:
            scores = ", ".join(f"{s:g}" for s in self.class_scores().tolist())
            flip = ""
            if self.binary_compat:
                flip = "; classes read in reverse (released binary labels: class 0 = score > 5)"
            return f"expected class score under softmax, class scores {scores}{flip}; predict() gives the arg-max class"
        if self.binary_compat:
            return "1 + 9 * (1 - sigmoid(output)) (released binary labels: 0 = score > 5)"
        return "1 + 9 * sigmoid(output)"


# -- checkpoints ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file is: layout, outputs, scalar metadata and provenance."""

    path: Path
    sha256: str
    ha: str
    backbone: str
    num_outputs: int
    # Scalar entries saved next to the state dict: ours ('label', 'classification',
    # 'weights_status', ...) and the released trainer's ('epoch', 'val_loss', 'lr').
    metadata: dict[str, Any]
    status: str

    def weights_record(self) -> WeightsRecord:
        return WeightsRecord(name=KNOWN_CHECKPOINTS.get(self.sha256, self.path.name), sha256=self.sha256,
                             status=self.status)


def save_checkpoint(model: nn.Module, path: str | Path, **metadata: Any) -> None:
    """Write {'state_dict': ..., **metadata} atomically, loadable by the released code too.

    Metadata values must be scalars (str, int, float, bool, None) so that the file loads with
    torch.load(weights_only=True); e.g. ha='HA2', backbone='resnet50', label='mean',
    classification=False, weights_status='stand-in'.
    """
    if "state_dict" in metadata:
        raise MetricInputError("save_checkpoint: 'state_dict' is written from the model; drop it from the metadata")
    not_scalar = sorted(key for key, value in metadata.items() if not isinstance(value, _METADATA_TYPES))
    if not_scalar:
        raise MetricInputError(
            f"save_checkpoint: metadata {', '.join(not_scalar)} must be str, int, float, bool or None"
        )
    path = Path(path)
    state = {key: tensor.detach().cpu() for key, tensor in model.state_dict().items()}
    # A crash mid-write must never leave a truncated checkpoint under the final name.
    save_torch_atomic({"state_dict": state, **metadata}, path)


def load_checkpoint(
    path: str | Path, *, ha: str, backbone: str | None = None, num_outputs: int | None = None
) -> tuple[nn.Module, CheckpointInfo]:
    """Load a PerceptAnon checkpoint strictly into a fresh CPU model in eval mode.

    The backbone and number of outputs come from the arguments, else the file's metadata,
    else its keys and head shape.
    """
    ha = _check_ha(ha)
    path = Path(path)
    state, metadata = _read_checkpoint(path)
    found_ha = "HA2" if any(key.startswith("shared_extractor.") for key in state) else "HA1"
    if found_ha != ha:
        raise WeightsError(f"{path} holds a PerceptAnon {found_ha} model, not {ha}: use perceptanon_{found_ha.lower()}")
    backbone = _choose(path, "backbone", backbone, metadata.get("backbone")) or _infer_backbone(state, ha, path)
    check_backbone(backbone)
    head_key = _head_output_key(ha, backbone)
    num_outputs = _choose(path, "num_outputs", num_outputs, metadata.get("num_outputs"))
    if num_outputs is None:
        if head_key not in state:
            raise WeightsError(f"{path}: not a PerceptAnon {ha} {backbone} checkpoint: missing key {head_key}")
        num_outputs = state[head_key].shape[0]
    with torch.device("meta"):
        model = _BUILDERS[ha](backbone, num_outputs)
    _load_strictly(model, state, path, f"PerceptAnon {ha} {backbone} checkpoint with {num_outputs} output(s)")
    sha256 = file_sha256(path)
    info = CheckpointInfo(path=path, sha256=sha256, ha=ha, backbone=backbone, num_outputs=num_outputs,
                          metadata=metadata, status=_weights_status(sha256, metadata))
    return model.float().eval(), info


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict without any DataParallel prefix, scalar metadata) of a checkpoint file."""
    if not path.is_file():
        raise WeightsError(f"PerceptAnon checkpoint {path} not found; pass the path of a checkpoint file "
                           "(the paper's .pth.tar, or the best.pt that `bench train` writes)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable or unsafe pickles
        raise WeightsError(f"{path} is not a readable torch checkpoint ({checkpoint_load_reason(exc, path)})") from exc
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        state, metadata = loaded["state_dict"], {k: v for k, v in loaded.items() if k != "state_dict"}
    elif isinstance(loaded, Mapping) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        state, metadata = loaded, {}
    else:
        raise WeightsError(f"{path} holds no state dict: expected a dict with a 'state_dict' entry")
    scalar_metadata = {key: value for key, value in metadata.items() if isinstance(value, _METADATA_TYPES)}
    return _strip_data_parallel(state), scalar_metadata


def _strip_data_parallel(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "module."
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return dict(state)


def _choose(path: Path, option: str, given: Any, recorded: Any) -> Any:
    """The caller's value for `option`, else the one the checkpoint records; never two that differ."""
    if given is not None and recorded is not None and given != recorded:
        raise MetricInputError(
            f"{path} was saved with {option}={recorded!r}, but {option}={given!r} was asked for; "
            "drop the option or pass the recorded value"
        )
    return given if given is not None else recorded


def _infer_backbone(state: Mapping[str, torch.Tensor], ha: str, path: Path) -> str:
    keys = set(state)
    for backbone in BACKBONES:
        if _state_keys(ha, backbone) == keys:
            return backbone
    raise WeightsError(
        f"{path}: its keys match no PerceptAnon {ha} backbone ({', '.join(BACKBONES)}); check that it is a "
        f"PerceptAnon {ha} checkpoint (the paper's, or the best.pt of `bench train --ha {ha}`); in Python, "
        "backbone=NAME shows which keys differ"
    )


def _load_strictly(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, expected: str) -> None:
    model_keys = model.state_dict().keys()
    missing = [key for key in model_keys if key not in state]
    unexpected = [key for key in state if key not in model_keys]
    if missing or unexpected:
        problems = [f"{kind} keys {_some(keys)}" for kind, keys in (("missing", missing), ("unexpected", unexpected))
                    if keys]
        raise WeightsError(f"{path}: not a {expected}: {'; '.join(problems)}")
    try:
        # assign=True adopts the loaded tensors as the (meta-built) model's parameters.
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise WeightsError(f"{path}: not a {expected}: {lines[1] if len(lines) > 1 else lines[0]}") from exc


def _some(keys: list[str], shown: int = 3) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _weights_status(sha256: str, metadata: Mapping[str, Any]) -> str:
    # Only a published hash verifies a file; a file may only ever downgrade itself to stand-in.
    if sha256 in KNOWN_CHECKPOINTS:
        return "verified"
    return "stand-in" if metadata.get("weights_status") == "stand-in" else "unverified"


def resolve_output_mapping(
    info: CheckpointInfo, *, label: str | None = None, classification: bool | None = None,
    binary_compat: bool | None = None,
) -> OutputMapping:
    """The mapping for a checkpoint: options, else its metadata, else its number of outputs."""
    binary_compat = _choose(info.path, "binary_compat", binary_compat, info.metadata.get("binary_compat"))
    classification = _choose(info.path, "classification", classification, info.metadata.get("classification"))
    if classification is None:
        classification = info.num_outputs > 1
    label = _choose(info.path, "label", label, info.metadata.get("label"))
    if label is None:
        label = _classifier_label(info) if classification else "mean"
    mapping = OutputMapping(label=label, classification=bool(classification), binary_compat=bool(binary_compat))
    if mapping.num_outputs != info.num_outputs:
        kind = "classification" if mapping.classification else "regression"
        raise WeightsError(
            f"{info.path} has {info.num_outputs} output(s), but label {label!r} {kind} needs "
            f"{mapping.num_outputs}; pass the label and classification the checkpoint was trained with"
        )
    return mapping


def _classifier_label(info: CheckpointInfo) -> str:
    for label, classes in GRANULARITIES.items():
        if classes == info.num_outputs:
            return label
    raise WeightsError(
        f"{info.path} has {info.num_outputs} outputs; PerceptAnon classifiers have "
        f"{', '.join(str(k) for k in GRANULARITIES.values())}: pass label= and classification="
    )


# -- adapters --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """Per-pair outputs: `score` on 1-10; class outputs only for classifiers (0 = least anonymous)."""

    score: np.ndarray
    predicted_class: np.ndarray | None
    probabilities: np.ndarray | None


class _PerceptAnonMetric(FeaturePairMetric):
    """Shared loading and output mapping of the HA1 and HA2 adapters."""

    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True
    ha: ClassVar[str]
    value_range: ClassVar[str] = "[1, 10]: the predicted human anonymity score"
    # The released eval.py scores a classifier by its arg-max class.
    paper_options: ClassVar[dict[str, Any]] = {"class_rule": "argmax"}
    # The released pipeline built the network anew for every pair (see bench.flows.perf).
    naive_rebuild: ClassVar[str] = "network"
    #: Backbone of `stand_in_checkpoint` (the paper's default).
    stand_in_backbone: ClassVar[str] = "resnet50"

    @classmethod
    def stand_in_checkpoint(cls, folder: Path) -> Path:
        model = (build_ha1 if cls.ha == "HA1" else build_ha2)(cls.stand_in_backbone, 1)
        path = Path(folder) / f"{cls.name}_{cls.stand_in_backbone}_stand-in.pth.tar"
        save_checkpoint(model, path, ha=cls.ha, backbone=cls.stand_in_backbone, label="mean", classification=False,
                        weights_status="stand-in")
        return path

    def rebuild_network(self) -> None:
        """The network as the released code built it: torchvision's constructor (which
        initialises every weight; the released default also loaded ImageNet weights first,
        which this leaves out), then the checkpoint loaded into it."""
        info = self.checkpoint
        model = (build_ha1 if info.ha == "HA1" else build_ha2)(info.backbone, info.num_outputs)
        state, _ = _read_checkpoint(info.path)
        model.load_state_dict(state, strict=True)
        self.model = model.eval().requires_grad_(False).to(self.device, memory_format=self.memory_format)

    def __init__(
        self,
        device: str | torch.device = "cpu",
        checkpoint: str | Path | None = None,
        label: str | None = None,
        classification: bool | None = None,
        binary_compat: bool | None = None,
        backbone: str | None = None,
        class_rule: str = "expected",
    ) -> None:
        if class_rule not in CLASS_RULES:
            raise MetricInputError(
                f"{self.name}: unknown class_rule {class_rule!r}; choose from: {', '.join(CLASS_RULES)}")
        super().__init__(device)
        if checkpoint is None:
            raise MetricInputError(
                f"{self.name} needs checkpoint=PATH, a PerceptAnon {self.ha} .pth.tar file (none ships with the suite)"
            )
        model, self.checkpoint = load_checkpoint(checkpoint, ha=self.ha, backbone=backbone)
        self.mapping = resolve_output_mapping(self.checkpoint, label=label, classification=classification,
                                              binary_compat=binary_compat)
        # A classifier's score: the expected class score (ours) or the arg-max class's score (the
        # released eval.py's rule, for --convention paper). Regression has one output: no rule.
        self.class_rule = class_rule if self.mapping.classification else "expected"
        self.model = model.requires_grad_(False).to(self.device)
        # Convolutions run faster in NHWC, on GPUs and on CPUs (oneDNN) alike: a ResNet-50 takes
        # 25% less time per image on a 2-core EPYC; outputs differ from NCHW's by float32 rounding.
        self.memory_format = torch.channels_last
        self.model.to(memory_format=self.memory_format)

    def config(self) -> dict[str, Any]:
        return {
            "ha": self.ha,
            "backbone": self.checkpoint.backbone,
            "num_outputs": self.checkpoint.num_outputs,
            "label": self.mapping.label,
            "classification": self.mapping.classification,
            "binary_compat": self.mapping.binary_compat,
            "input_size": IMAGE_SIZE,
            # Only the non-default rule enters the key: stored expected-class scores stay valid.
            **({"class_rule": self.class_rule} if self.class_rule != "expected" else {}),
        }

    def weights(self) -> list[WeightsRecord]:
        return [self.checkpoint.weights_record()]

    @property
    def display_label(self) -> str:
        # Several trained models can sit side by side in one table: name each by its file.
        return f"{self.label} ({Path(self.checkpoint.path).name})"

    def conventions(self) -> dict[str, Any]:
        return {
            "reference": "Patwari et al., PerceptAnon, ICML 2024",
            "model": f"{self.ha} {self.checkpoint.backbone}, {self.checkpoint.num_outputs} output(s)",
            "resize": f"{IMAGE_SIZE}x{IMAGE_SIZE}, torch bilinear, antialias=True, align_corners=False "
            "(the released code resized uint8 PIL images: within 1/255 per pixel)",
            "normalization": f"ImageNet mean {IMAGENET_MEAN}, std {IMAGENET_STD}",
            "score": "predicted anonymity on 1-10, higher = more anonymous",
            "output_mapping": self.mapping.describe() if self.class_rule == "expected" else
            "the arg-max class's score 1 + 9 c / (K - 1) (the released eval.py correlates the arg-max class)",
            # The released model's own output runs against anonymity with the released binary
            # labels: the sign the paper convention shows for this metric (bench.analysis.correlate).
            "released_sign": -1 if self.mapping.binary_compat else 1,
        }

    def predict(self, original: torch.Tensor | None, anonymized: torch.Tensor) -> Prediction:
        """Scores plus, for classifiers, the arg-max class and class probabilities."""
        check_inputs(original if self.needs_original else None, anonymized, metric=self.name)
        with torch.inference_mode():
            original_features = self._features(original) if self.needs_original else None
            raw = self._raw_output(original_features, self._features(anonymized))
            scores = self.mapping.scores(raw).cpu().numpy()
            if not self.mapping.classification:
                return Prediction(score=scores, predicted_class=None, probabilities=None)
            return Prediction(score=scores, predicted_class=self.mapping.predicted_class(raw).cpu().numpy(),
                              probabilities=self.mapping.probabilities(raw).cpu().numpy())

    def _network_input(self, images: torch.Tensor) -> torch.Tensor:
        return preprocess(images).contiguous(memory_format=self.memory_format)

    def _compare(self, original_features: Any, anonymized_features: torch.Tensor) -> torch.Tensor:
        raw = self._raw_output(original_features, anonymized_features)
        if self.class_rule == "argmax":
            return self.mapping.class_scores().to(raw.device)[self.mapping.predicted_class(raw)]
        return self.mapping.scores(raw)

    def _raw_output(self, original_features: Any, anonymized_features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PerceptAnonHA1Metric(_PerceptAnonMetric):
    """PerceptAnon HA1: anonymity of the anonymized image alone; the original is not used."""

    name: ClassVar[str] = "perceptanon_ha1"
    tradeoff_privacy_priority: ClassVar[int | None] = 4
    label: ClassVar[str] = "PerceptAnon HA1"
    ha: ClassVar[str] = "HA1"
    needs_original: ClassVar[bool] = False
    checkpoint_option: ClassVar[str] = "checkpoint_ha1"
    sort_priority: ClassVar[int | None] = 20
    user_weights: ClassVar[str] = "a PerceptAnon HA1 checkpoint (--checkpoint-ha1 PATH; none ships with the suite)"
    convention: ClassVar[str] = ("Patwari et al. 2024, HA1: backbone on the anonymized image alone (224x224, "
                                 "ImageNet normalisation), score 1 + 9 sigmoid(output) or the expected class")

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        # HA1 has nothing to share between images, so its "features" are the raw outputs.
        return self.model(self._network_input(images))

    def _raw_output(self, original_features: Any, anonymized_features: torch.Tensor) -> torch.Tensor:
        return anonymized_features


class PerceptAnonHA2Metric(_PerceptAnonMetric):
    """PerceptAnon HA2: anonymity of a pair; features are the shared backbone's embeddings."""

    name: ClassVar[str] = "perceptanon_ha2"
    tradeoff_privacy_priority: ClassVar[int | None] = 3
    label: ClassVar[str] = "PerceptAnon HA2"
    ha: ClassVar[str] = "HA2"
    checkpoint_option: ClassVar[str] = "checkpoint_ha2"
    sort_priority: ClassVar[int | None] = 10
    user_weights: ClassVar[str] = "a PerceptAnon HA2 checkpoint (--checkpoint-ha2 PATH; none ships with the suite)"
    convention: ClassVar[str] = ("Patwari et al. 2024, HA2: Siamese shared backbone on original and anonymized, "
                                 "concatenated features, Linear-ReLU-Linear head, score on 1-10")

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.shared_extractor(self._network_input(images))

    def _raw_output(self, original_features: torch.Tensor, anonymized_features: torch.Tensor) -> torch.Tensor:
        return self.model.compare_embeddings(original_features, anonymized_features)
