"""LPIPS (Zhang et al. 2018) as the `lpips` package computes it: AlexNet trunk, v0.1 linear heads.

The linear heads ship inside the lpips package and are checked against a pinned sha256; the
ImageNet AlexNet trunk comes from the weights manager, because lpips would download it. The
network is lpips' own layout, built here (`_LPIPSNetwork`: importing lpips costs a third of a
second of start-up); tests compare its values with lpips.LPIPS.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import torch

from metrics.base import FeaturePairMetric, WeightsRecord
from metrics.errors import WeightsError
from metrics.hashing import file_sha256

# sha256 of lpips/weights/v0.1/alex.pth as shipped in lpips 0.1.4.
LINEAR_HEADS_SHA256 = "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"
LINEAR_HEADS_NAME = "lpips-v0.1-alex-linear-heads"
TRUNK_WEIGHTS_NAME = "alexnet"


# lpips' ScalingLayer constants: the ImageNet-style shift and scale of [-1, 1] inputs (v0.1).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# lpips' five AlexNet taps: torchvision `features` split after each ReLU.
_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
_CHANNELS = (64, 192, 384, 256, 256)
# lpips.normalize_tensor's epsilon.
_EPS = 1e-10


class _ScalingLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT, device="cpu").view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE, device="cpu").view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.shift) / self.scale


class _AlexNetTaps(torch.nn.Module):
    """torchvision's AlexNet `features` as lpips slices them; returns the five ReLU outputs."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        features = torchvision.models.alexnet().features
        for index, (start, stop) in enumerate(_SLICES, start=1):
            # Layers keep their index in `features` as their name, as in lpips.
            self.add_module(f"slice{index}", torch.nn.Sequential(
                OrderedDict((str(layer), features[layer]) for layer in range(start, stop))))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        taps, x = [], images
        for index in range(1, len(_SLICES) + 1):
            x = getattr(self, f"slice{index}")(x)
            taps.append(x)
        return taps


class _LinearHead(torch.nn.Module):
    """lpips' NetLinLayer (dropout, inactive in eval, then a 1x1 convolution to one channel)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _LPIPSNetwork(torch.nn.Module):
    """lpips.LPIPS(net="alex", version="0.1") with its module names (so its trunk mapping and
    head files load strictly), built here rather than imported: importing lpips imports
    scipy.ndimage (for its trainer), about a third of a second of every run's start-up. The
    reference test compares it with lpips.LPIPS itself."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = _ScalingLayer()
        self.net = _AlexNetTaps()
        self.lins = torch.nn.ModuleList(_LinearHead(channels) for channels in _CHANNELS)


def normalize_tensor(activation: torch.Tensor) -> torch.Tensor:
    """Unit length along channels, as lpips.normalize_tensor computes it."""
    return activation / (torch.sqrt(torch.sum(activation ** 2, dim=1, keepdim=True)) + _EPS)


def _build_network() -> torch.nn.Module:
    """The LPIPS network without weights, on the meta device: nothing is downloaded, loaded or
    initialised here (torchvision builds a whole AlexNet, classifier included: randomly
    initialising it cost more than loading the weights). The scaling constants are made on
    the CPU explicitly, so they are real."""
    with torch.device("meta"):
        return _LPIPSNetwork()


def _lpips_package_dir() -> Path | None:
    """The installed lpips package's folder, found without importing it."""
    found = importlib.util.find_spec("lpips")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(found.submodule_search_locations[0])


def _load_linear_heads(network: torch.nn.Module) -> WeightsRecord:
    """Load the v0.1 heads shipped with lpips, strictly, from the bytes whose hash is recorded."""
    from metrics.weights import as_float32

    package = _lpips_package_dir()
    if package is None:
        raise WeightsError("the lpips package is not installed; it ships LPIPS' linear heads: pip install lpips==0.1.4")
    path = package / "weights" / "v0.1" / "alex.pth"
    if not path.is_file():
        raise WeightsError(f"LPIPS linear heads {path} are missing; reinstall the package: pip install lpips==0.1.4")
    sha256 = file_sha256(path)
    try:
        heads = torch.load(path, map_location="cpu", weights_only=True)
        # The file names the heads lin0..lin4; lpips holds the same modules as the list `lins`.
        network.lins.load_state_dict(as_float32({key.removeprefix("lin"): value for key, value in heads.items()}),
                                     strict=True, assign=True)
    except Exception as exc:  # torch raises several unrelated types for bad archives and layouts
        raise WeightsError(f"LPIPS linear heads {path} do not fit lpips' AlexNet heads; "
                           "reinstall the package: pip install lpips==0.1.4") from exc
    return WeightsRecord(name=LINEAR_HEADS_NAME, sha256=sha256,
                         status="verified" if sha256 == LINEAR_HEADS_SHA256 else "unverified")


def _is_trunk_key(key: str) -> bool:
    return key.startswith("features.")


def trunk_state_dict(network: torch.nn.Module, alexnet_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision AlexNet `features.<i>.<param>` keys -> lpips' `slice<k>.<i>.<param>` keys.

    lpips names each layer inside a slice by its index in torchvision's `features`, so the
    mapping is read off the network. Every trunk parameter must be found, and every
    `features.*` tensor must be used (the classifier is not part of LPIPS).
    """
    mapping = {f"features.{key.split('.', 1)[1]}": key for key in network.net.state_dict()}
    offered = {key for key in alexnet_state if _is_trunk_key(key)}
    missing = sorted(set(mapping) - offered)
    unexpected = sorted(offered - set(mapping))
    if missing or unexpected:
        raise WeightsError(
            f"alexnet weights do not fit the LPIPS trunk (missing {missing}, unexpected {unexpected}); "
            "check them with: bench weights verify alexnet"
        )
    return {trunk_key: alexnet_state[source_key] for source_key, trunk_key in mapping.items()}


class LPIPS(FeaturePairMetric):
    """Learned perceptual distance: a distance, so larger means more anonymous.

    Features are lpips' five unit-normalised AlexNet activations of the image mapped to
    [-1, 1]; the distance is the v0.1 linear heads on their squared differences, averaged
    over space and summed over layers, exactly as lpips.LPIPS.forward computes it.
    """

    name: ClassVar[str] = "lpips"
    tradeoff_privacy_priority: ClassVar[int | None] = 5
    tradeoff_utility_priority: ClassVar[int | None] = 5
    label: ClassVar[str] = "LPIPS"
    version: ClassVar[str] = "1"
    higher_is_more_anonymous: ClassVar[bool] = True
    value_range: ClassVar[str] = "[0, +inf); 0 for identical images, about 0-1 in practice"
    weights_needed: ClassVar[tuple[str, ...]] = (TRUNK_WEIGHTS_NAME,)
    convention: ClassVar[str] = ("lpips 0.1.4: AlexNet trunk, v0.1 linear heads (shipped with lpips), "
                                 "inputs mapped to [-1, 1], spatial mean summed over 5 layers")
    # As a utility (trade-off views): perceptually closer to the original = more realistic.
    higher_is_more_useful: ClassVar[bool] = False
    utility_view: ClassVar[str] = "realism"
    sort_priority: ClassVar[int | None] = 30
    preload_modules: ClassVar[tuple[str, ...]] = ("torchvision",)

    @classmethod
    def stand_in_state(cls, weights_name: str) -> dict[str, torch.Tensor] | None:
        import torchvision

        return torchvision.models.alexnet().state_dict() if weights_name == TRUNK_WEIGHTS_NAME else None

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        from metrics.weights import as_float32, load_state_dict

        network = _build_network()
        alexnet_state, self._trunk_record = load_state_dict(TRUNK_WEIGHTS_NAME, keep=_is_trunk_key)
        try:
            network.net.load_state_dict(as_float32(trunk_state_dict(network, alexnet_state)), strict=True, assign=True)
        except RuntimeError as exc:
            raise WeightsError(f"alexnet weights do not fit the LPIPS trunk ({exc}); "
                               "check them with: bench weights verify alexnet") from exc
        self._heads_record = _load_linear_heads(network)
        # NHWC ("channels_last") convolutions are faster, on CPUs (oneDNN) too: 25% less time per
        # image on a 2-core EPYC; distances differ from NCHW's by float32 rounding.
        self._network = network.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)

    def weights(self) -> list[WeightsRecord]:
        return [self._trunk_record, self._heads_record]

    def conventions(self) -> dict[str, Any]:
        return {
            "package": "lpips",
            "trunk": "AlexNet (torchvision layout), ImageNet weights",
            "linear_heads": "v0.1",
            "network_input": "[0, 1] mapped to [-1, 1] (2x - 1), then lpips' ScalingLayer",
            "reduction": "spatial mean per layer, summed over 5 layers",
            "precision": "float32",
        }

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        scaled = self._network.scaling_layer(2 * images.to(self.device) - 1)
        scaled = scaled.contiguous(memory_format=torch.channels_last)
        return [normalize_tensor(activation) for activation in self._network.net(scaled)]

    def _compare(self, original_features: list[torch.Tensor], anonymized_features: list[torch.Tensor]) -> torch.Tensor:
        per_layer = [
            head((original - anonymized) ** 2).mean(dim=(2, 3))
            for head, original, anonymized in zip(self._network.lins, original_features, anonymized_features)
        ]
        # Summed in layer order, as lpips does, so float32 rounding matches it too.
        return sum(per_layer).flatten()
